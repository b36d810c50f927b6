"""DVC stage `distill`: `python stages/distill.py --help` says what it does; the work is in semivl_edge.pipeline.distill."""
from semivl_edge.pipeline import distill, main

if __name__ == "__main__":
    main(distill)
