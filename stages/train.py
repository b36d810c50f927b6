"""DVC stage `train`: `python stages/train.py --help` says what it does; the work is in semivl_edge.pipeline.train."""
from semivl_edge.pipeline import main, train

if __name__ == "__main__":
    main(train)
