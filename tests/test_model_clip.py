"""CLIP loading: random init, local checkpoint files, pretrained tags (never touching the network), errors."""
from __future__ import annotations

import time

import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from semivl_edge.errors import PipelineError
from semivl_edge.model import clip as clip_module
from semivl_edge.model.clip import describe_pretrained, load_clip, pretrained_kind, register_configs

MODEL = "semivl-tiny"


def test_project_config_is_registered_with_open_clip():
    import open_clip

    register_configs()
    assert MODEL in open_clip.list_models()
    config = open_clip.get_model_config(MODEL)
    assert config["vision_cfg"]["patch_size"] == 16 and config["embed_dim"] == 128


def test_random_init_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_clip(MODEL, "none")
    after = torch.rand(1)
    b = load_clip(MODEL, "none")
    assert torch.equal(before, after)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_weights_arrive(tmp_path, suffix):
    source = load_clip(MODEL, "none")
    with torch.no_grad():
        source.visual.proj.mul_(3.0)
        source.token_embedding.weight[5].fill_(0.25)
    path = tmp_path / f"clip{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # DDP-style wrapper
    loaded = load_clip(MODEL, str(path))
    assert torch.equal(loaded.visual.proj, source.visual.proj)
    assert torch.all(loaded.token_embedding.weight[5] == 0.25)
    assert pretrained_kind(str(path), MODEL) == "file"


def test_unknown_model_name_says_how_to_list_names():
    with pytest.raises(PipelineError, match=r"clip.model: unknown open_clip model 'ViT-Nope'.*list_models"):
        load_clip("ViT-Nope", "none")


def test_missing_checkpoint_file(tmp_path):
    path = tmp_path / "nowhere" / "clip.safetensors"
    with pytest.raises(PipelineError, match=f"{path}: checkpoint file not found"):
        load_clip(MODEL, str(path))


def test_corrupt_checkpoint_file(tmp_path):
    path = tmp_path / "clip.pt"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(PipelineError, match="clip.pt: not a readable checkpoint"):
        load_clip(MODEL, str(path))


def test_mismatched_checkpoint_file(tmp_path):
    state = {k: v.contiguous() for k, v in load_clip(MODEL, "none").state_dict().items()}
    state["visual.proj"] = torch.zeros(3, 3)
    del state["ln_final.weight"]
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(PipelineError, match=r"other.safetensors: checkpoint does not match.*missing.*wrong shape"):
        load_clip(MODEL, str(path))


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(PipelineError, match=r"'openaii' is neither a file nor a known open_clip tag.*openai"):
        load_clip("ViT-B-16", "openaii")


def test_offline_tag_fails_quickly_with_a_local_file_hint(monkeypatch):
    def no_download(*args, **kwargs):  # the test must never reach the network
        raise AssertionError("download attempted")

    monkeypatch.setattr(clip_module, "_cached_tag_file", lambda cfg: None)
    monkeypatch.setattr(clip_module, "_host_reachable", lambda host, port=443: False)
    monkeypatch.setattr(clip_module, "download_pretrained", no_download)
    start = time.perf_counter()
    with pytest.raises(PipelineError) as info:
        load_clip("ViT-B-16", "openai")
    message = str(info.value)
    assert "clip.pretrained" in message and "ViT-B-16/openai" in message and "local file" in message
    assert "\n" not in message
    assert time.perf_counter() - start < 10


def test_failed_download_is_one_line(monkeypatch):
    def failing_download(cfg, **kwargs):
        raise OSError("Name or service not known\nmore lines")

    monkeypatch.setattr(clip_module, "_cached_tag_file", lambda cfg: None)
    monkeypatch.setattr(clip_module, "_host_reachable", lambda host, port=443: True)
    monkeypatch.setattr(clip_module, "download_pretrained", failing_download)
    with pytest.raises(PipelineError, match=r"^clip.pretrained: cannot download .*Name or service not known\)") as info:
        load_clip("ViT-B-16", "openai")
    assert "\n" not in str(info.value)


def test_tag_weights_follow_the_tag_quick_gelu(tmp_path, monkeypatch):
    """OpenAI weights were trained with QuickGELU: a tag that says so builds the model with it."""
    state = {k: v.contiguous() for k, v in load_clip(MODEL, "none").state_dict().items()}
    path = tmp_path / "cached.safetensors"
    save_file(state, str(path))
    monkeypatch.setattr(clip_module, "get_pretrained_cfg", lambda model, tag: {"hf_hub": "org/repo/", "quick_gelu": True})
    monkeypatch.setattr(clip_module, "_cached_tag_file", lambda cfg: str(path))
    model = load_clip(MODEL, "sometag")
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert not isinstance(load_clip(MODEL, "none").visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_describe_pretrained():
    assert describe_pretrained("none") == "none (random init)"
    assert describe_pretrained("openai", "ViT-B-16") == "open_clip tag openai"
    assert describe_pretrained("weights/clip.safetensors") == "file weights/clip.safetensors"
