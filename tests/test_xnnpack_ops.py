"""The export-time rewrite into XNNPACK's operators: the same numbers (the lowered files' delegation is checked on
the tiny project's export, tests/test_pipeline_e2e.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from semivl_edge.export.xnnpack_ops import (
    XnnpackDenseCLIPEncoder,
    XnnpackGroupNorm,
    XnnpackLayerNorm,
    XnnpackUpBlock,
    xnnpack_friendly,
)
from semivl_edge.model.blocks import _exported_attention, l2_normalize, multi_head_attention
from semivl_edge.model.segmenter import build_model

from conftest import model_config


def randomised(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


def test_the_rewritten_norms_compute_the_library_norms():
    x = torch.randn(2, 7, 48) * 3 + 1
    layer_norm = randomised(nn.LayerNorm(48, eps=1e-5))
    torch.testing.assert_close(XnnpackLayerNorm(layer_norm)(x), layer_norm(x), atol=1e-5, rtol=1e-5)
    maps = torch.randn(3, 32, 5, 6) * 2 - 1
    group_norm = randomised(nn.GroupNorm(2, 32))
    torch.testing.assert_close(XnnpackGroupNorm(group_norm)(maps), group_norm(maps), atol=1e-5, rtol=1e-5)


def test_the_rewritten_attention_computes_scaled_dot_product_attention():
    x, qkv = torch.randn(2, 9, 64), nn.Linear(64, 192)
    out = nn.Linear(64, 64)
    expected = multi_head_attention(x, qkv.weight, qkv.bias, out, heads=4)
    torch.testing.assert_close(out(_exported_attention(qkv(x), heads=4)), expected, atol=1e-5, rtol=1e-5)


def test_the_exported_l2_normalisation_computes_f_normalize(monkeypatch):
    cases = [(torch.randn(2, 9, 32), -1), (torch.randn(2, 32, 4, 5), 1), (torch.randn(7, 32), -1)]
    expected = [F.normalize(x, dim=dim) for x, dim in cases]
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    for (x, dim), want in zip(cases, expected):
        torch.testing.assert_close(l2_normalize(x, dim), want, atol=1e-6, rtol=1e-5)


def test_the_rewrite_keeps_the_weights_and_leaves_the_model_alone():
    network = build_model(model_config(image_size=64, num_classes=5)).eval()
    friendly = xnnpack_friendly(network)
    assert not any(isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for m in friendly.modules())
    assert any(isinstance(m, nn.LayerNorm) for m in network.modules())  # the original is untouched
    assert sum(isinstance(m, XnnpackUpBlock) for m in friendly.modules()) == 2
    images, text = torch.randn(2, 3, 64, 64), F.normalize(torch.randn(5, 128), dim=-1)
    with torch.no_grad():
        for batch in (images[:1], images):  # one window (the mobile files' case) and a batch
            torch.testing.assert_close(friendly(batch, text), network(batch, text), atol=1e-4, rtol=1e-4)


def test_the_value_path_multiplies_by_weights_of_its_own():
    network = build_model(model_config(image_size=64, num_classes=5)).eval()
    encoder = xnnpack_friendly(network).encoder
    assert isinstance(encoder, XnnpackDenseCLIPEncoder)
    last = len(encoder.visual.transformer.resblocks) - 1
    for index in (*network.encoder.skip_blocks, last):
        weight, bias = encoder.value_projection(index)
        expected_weight, expected_bias = network.encoder.value_projection(index)
        assert weight._base is None and weight.data_ptr() != expected_weight.data_ptr()  # a tensor, not a slice
        torch.testing.assert_close(weight, expected_weight)
        torch.testing.assert_close(bias, expected_bias)
