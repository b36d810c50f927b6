"""DVC stage `text_embeddings`: see `python stages/text_embeddings.py --help`; the work is done in semivl_edge.pipeline.text_embeddings."""
from semivl_edge.pipeline import main

if __name__ == "__main__":
    main("text_embeddings")
