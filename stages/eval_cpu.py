"""DVC stage `eval_cpu`: `python stages/eval_cpu.py --help` says what it does; the work is in semivl_edge.pipeline.eval_cpu."""
from semivl_edge.pipeline import eval_cpu, main

if __name__ == "__main__":
    main(eval_cpu)
