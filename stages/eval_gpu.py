"""DVC stage `eval_gpu`: `python stages/eval_gpu.py --help` says what it does; the work is in semivl_edge.pipeline.eval_gpu."""
from semivl_edge.pipeline import eval_gpu, main

if __name__ == "__main__":
    main(eval_gpu)
