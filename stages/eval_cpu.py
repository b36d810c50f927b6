"""DVC stage `eval_cpu`: see `python stages/eval_cpu.py --help`; the work is done in semivl_edge.pipeline.eval_cpu."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("eval_cpu")
