"""DVC stage `splits`: `python stages/splits.py --help` says what it does; the work is in semivl_edge.pipeline.splits."""
from semivl_edge.pipeline import main, splits

if __name__ == "__main__":
    main(splits)
