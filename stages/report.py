"""DVC stage `report`: `python stages/report.py --help` says what it does; the work is in semivl_edge.pipeline.report."""
from semivl_edge.pipeline import main, report

if __name__ == "__main__":
    main(report)
