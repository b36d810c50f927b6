"""DVC stage `train`: see `python stages/train.py --help`; the work is done in semivl_edge.pipeline.train."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("train")
