"""DVC stage `clip_pretrain`: `python stages/clip_pretrain.py --help` says what it does; the work is in semivl_edge.pipeline.clip_pretrain."""
from semivl_edge.pipeline import clip_pretrain, main

if __name__ == "__main__":
    main(clip_pretrain)
