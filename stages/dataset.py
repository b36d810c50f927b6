"""DVC stage `dataset`: `python stages/dataset.py --help` says what it does; the work is in semivl_edge.pipeline.dataset."""
from semivl_edge.pipeline import dataset, main

if __name__ == "__main__":
    main(dataset)
