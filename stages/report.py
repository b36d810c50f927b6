"""DVC stage `report`: see `python stages/report.py --help`; the work is done in semivl_edge.pipeline.report."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("report")
