"""The SemiVL network on open_clip: dense CLIP encoder, VLG / plain decoders, CLIP loading and model files."""
from .clip import load_clip
from .config import ModelConfig, model_config_from_params
from .io import load_model, save_model
from .segmenter import SemiVLSegmenter, build_encoder, build_model
from .text import TextEmbeddings, read_text_embeddings

__all__ = [
    "ModelConfig",
    "SemiVLSegmenter",
    "build_encoder",
    "build_model",
    "load_clip",
    "load_model",
    "model_config_from_params",
    "read_text_embeddings",
    "save_model",
    "TextEmbeddings",
]
