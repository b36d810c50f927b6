"""DVC stage `text_embeddings`: `python stages/text_embeddings.py --help` says what it does; the work is in semivl_edge.pipeline.text_embeddings."""
from semivl_edge.pipeline import main, text_embeddings

if __name__ == "__main__":
    main(text_embeddings)
