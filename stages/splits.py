"""DVC stage `splits`: see `python stages/splits.py --help`; the work is done in semivl_edge.pipeline.splits."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("splits")
