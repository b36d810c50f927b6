"""OpenAI's CLIP weights from a local file are built with QuickGELU, as open_clip builds its `openai` tag."""
from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from semivl_edge.data.classes import load_classes
from semivl_edge.model.clip import get_tokenizer, load_clip, register_configs, uses_quick_gelu
from semivl_edge.model.text import mean_embeddings, read_text_embeddings
from semivl_edge.params import Params
from semivl_edge.pipeline import text_embeddings as stage

REPO = Path(__file__).resolve().parents[1]
CLASSES_FILE = REPO / "data" / "classes" / "voc.yaml"
OPENAI_EXTRA_KEYS = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
                     "vocab_size": torch.tensor(49408)}


def openai_checkpoint(model_name: str, folder: Path) -> tuple[torch.nn.Module, Path, Path]:
    """A random CLIP built with QuickGELU, saved as OpenAI's original state dict and as a converted file."""
    register_configs()
    torch.manual_seed(0)
    reference = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=True).eval()
    state = reference.state_dict()
    original = folder / f"{model_name}-openai.pt"
    torch.save({**state, **OPENAI_EXTRA_KEYS}, original)
    converted = folder / f"{model_name}-converted.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(converted))
    return reference, original, converted


def class_embeddings(clip, model_name: str) -> torch.Tensor:
    texts = load_classes(CLASSES_FILE).texts("names")
    return mean_embeddings(clip, get_tokenizer(model_name), texts, ["a photo of a {}"])


def test_quick_gelu_is_detected_from_openai_keys_or_set_explicitly(tmp_path):
    reference, original, converted = openai_checkpoint("semivl-tiny", tmp_path)
    assert uses_quick_gelu("semivl-tiny", str(original)) is True
    assert uses_quick_gelu("semivl-tiny", str(converted)) is False  # no telltale keys: say so explicitly
    assert uses_quick_gelu("semivl-tiny", str(converted), True) is True
    assert uses_quick_gelu("semivl-tiny", "none") is False
    expected = class_embeddings(reference, "semivl-tiny")
    torch.testing.assert_close(class_embeddings(load_clip("semivl-tiny", str(original)), "semivl-tiny"), expected)
    torch.testing.assert_close(
        class_embeddings(load_clip("semivl-tiny", str(converted), quick_gelu=True), "semivl-tiny"), expected)
    wrong = class_embeddings(load_clip("semivl-tiny", str(converted), quick_gelu=False), "semivl-tiny")
    assert not torch.allclose(wrong, expected, atol=1e-4)
    with pytest.raises(Exception, match="clip.quick_gelu must be auto, true or false"):
        uses_quick_gelu("semivl-tiny", "none", "yes")


@pytest.mark.slow
def test_text_embeddings_of_a_local_openai_vit_b_16_equal_open_clips_quick_gelu_model(tmp_path):
    reference, original, _ = openai_checkpoint("ViT-B-16", tmp_path)
    params = Params({"clip": {"model": "ViT-B-16", "pretrained": str(original), "quick_gelu": "auto"},
                     "classes": {"file": str(CLASSES_FILE), "definitions": "names", "guidance": "concepts",
                                 "templates": ["a photo of a {}"]}})
    stage.run(params, output_dir=tmp_path / "te")
    result = read_text_embeddings(tmp_path / "te")
    assert result.meta["quick_gelu"] is True
    torch.testing.assert_close(result.classes, class_embeddings(reference, "ViT-B-16"))
