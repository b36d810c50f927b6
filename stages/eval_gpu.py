"""DVC stage `eval_gpu`: see `python stages/eval_gpu.py --help`; the work is done in semivl_edge.pipeline.eval_gpu."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("eval_gpu")
