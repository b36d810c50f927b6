"""DVC stage `dataset`: see `python stages/dataset.py --help`; the work is done in semivl_edge.pipeline.dataset."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("dataset")
