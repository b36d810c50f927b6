"""DVC stage `clip_pretrain`: see `python stages/clip_pretrain.py --help`; the work is done in semivl_edge.pipeline.clip_pretrain."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("clip_pretrain")
