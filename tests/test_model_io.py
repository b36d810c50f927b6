"""save_model / load_model, and tracing / export of the segmenter at a fixed input size."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from semivl_edge.errors import PipelineError
from semivl_edge.model.config import ModelConfig
from semivl_edge.model.segmenter import build_model
from semivl_edge.model.io import load_model, save_model

from conftest import model_config

SIZE = 64


@pytest.fixture(scope="module")
def trained_like():
    """A small model whose weights differ from any fresh build (as after training)."""
    torch.manual_seed(0)
    cfg = model_config(image_size=SIZE, decoder_dim=32, class_names=["a", "b", "c", "d"])
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.encoder_parameters():
            p.add_(0.01 * torch.randn_like(p))
    text = F.normalize(torch.randn(4, cfg.embed_dim), dim=-1)
    return model.eval(), cfg, text


@pytest.mark.parametrize("target", ["dir", "stem"])
def test_round_trip_gives_identical_logits(tmp_path, trained_like, target):
    model, cfg, text = trained_like
    if target == "dir":
        destination, expected = tmp_path, tmp_path / "model"
    else:
        destination, expected = tmp_path / "best", tmp_path / "best"
    weights, config = save_model(destination, model, cfg, text)
    assert weights == expected.with_suffix(".safetensors") and config == expected.with_suffix(".json")
    assert json.loads(config.read_text())["config"]["class_names"] == ["a", "b", "c", "d"]

    loaded, loaded_cfg, loaded_text = load_model(destination)
    assert not loaded.training and loaded_cfg == cfg
    torch.testing.assert_close(loaded_text, text, rtol=0, atol=0)
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, loaded_text), model(images, text), rtol=0, atol=0)
    # trainable flags are rebuilt from the config
    assert {n for n, _ in loaded.named_encoder_parameters()} == {n for n, _ in model.named_encoder_parameters()}
    # the weights file alone (config in its metadata) is enough
    config.unlink()
    again, _, _ = load_model(weights)
    torch.testing.assert_close(again.state_dict()["decoder.head.weight"], model.state_dict()["decoder.head.weight"])


def test_load_errors_name_the_file(tmp_path, trained_like):
    with pytest.raises(PipelineError, match="model.safetensors: model weights not found"):
        load_model(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(PipelineError, match="bad.safetensors: not a readable safetensors file"):
        load_model(bad)
    model, cfg, text = trained_like
    weights, _ = save_model(tmp_path / "m", model, cfg, text)
    other = ModelConfig(**{**cfg.to_dict(), "decoder_dim": 16})
    save_model(tmp_path / "small", build_model(other, load_pretrained=False), other, None)
    (tmp_path / "small.safetensors").replace(weights)  # weights of another size under m's name
    (tmp_path / "m.json").unlink()
    loaded, loaded_cfg, loaded_text = load_model(weights)  # metadata travels with the weights
    assert loaded_cfg.decoder_dim == 16 and loaded_text is None


def test_truncated_weights_and_a_mismatched_model_json_are_named(tmp_path, trained_like):
    model, cfg, text = trained_like
    weights, config = save_model(tmp_path / "m", model, cfg, text)
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(PipelineError, match=r"m.safetensors: not a readable safetensors file"):
        load_model(weights)
    weights.write_bytes(good)
    record = json.loads(config.read_text())
    record["config"]["decoder_dim"] = 64
    config.write_text(json.dumps(record))
    with pytest.raises(PipelineError) as error:
        load_model(weights)
    assert str(error.value) == (f"{config}: does not match the config stored in m.safetensors (differs in decoder_dim); "
                                "write both with save_model")


@pytest.fixture(scope="module")
def fixed_size_inputs(trained_like):
    torch.manual_seed(1)
    return torch.randn(1, 3, SIZE, SIZE), trained_like[2]


def test_traceable_at_a_fixed_size(trained_like, fixed_size_inputs):
    model = trained_like[0]
    images, text = fixed_size_inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (images, text), check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(traced(images, text), model(images, text), rtol=1e-4, atol=1e-5)


def test_exportable_at_a_fixed_size(trained_like, fixed_size_inputs):
    model = trained_like[0]
    images, text = fixed_size_inputs
    program = torch.export.export(model, (images, text))
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("contiguous" in op or "_to_copy" in op for op in ops)  # no layout changes in the graph
    with torch.no_grad():
        torch.testing.assert_close(program.module()(images, text), model(images, text), rtol=1e-4, atol=1e-5)


def test_the_official_align_corners_is_kept_by_the_saved_model(tmp_path, trained_like):
    model, cfg, text = trained_like
    official = ModelConfig(**{**cfg.to_dict(), "align_corners": True})
    network = build_model(official, load_pretrained=False).eval()
    network.load_state_dict(model.state_dict())  # same weights, other upsampling
    images = torch.randn(1, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model.eval()(images, text), network(images, text)
    assert not torch.allclose(ours, theirs, atol=1e-5)
    weights, _ = save_model(tmp_path / "m", network, official, text)
    loaded, loaded_cfg, _ = load_model(weights)
    assert loaded_cfg.align_corners is True
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, text), theirs)
