"""DVC stage `bench_mobile`: see `python stages/bench_mobile.py --help`; the work is done in semivl_edge.pipeline.bench_mobile."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("bench_mobile")
