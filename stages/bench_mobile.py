"""DVC stage `bench_mobile`: `python stages/bench_mobile.py --help` says what it does; the work is in semivl_edge.pipeline.bench_mobile."""
from semivl_edge.pipeline import bench_mobile, main

if __name__ == "__main__":
    main(bench_mobile)
