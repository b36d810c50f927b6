"""The SemiVL segmenter on the small configuration: shapes, open vocabulary, trainable parameters, features."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from semivl_edge.errors import PipelineError
from semivl_edge.model.config import ModelConfig
from semivl_edge.model.segmenter import SemiVLSegmenter, build_model

from conftest import model_config

SIZE = 64


def small_cfg(**changes) -> ModelConfig:
    settings = dict(image_size=SIZE, decoder_dim=32, num_classes=5)
    settings.update(changes)
    return model_config(**settings)


@pytest.fixture(scope="module")
def vlg_model() -> SemiVLSegmenter:
    torch.manual_seed(0)
    return build_model(small_cfg()).eval()


def text(num_classes: int, dim: int = 128, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("num_classes", [3, 21, 40])
def test_vlg_logits_follow_the_number_of_text_embeddings(vlg_model, num_classes):
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = vlg_model(images, text(num_classes))
    assert logits.shape == (2, num_classes, SIZE, SIZE)
    assert torch.isfinite(logits).all()


def test_class_order_is_respected(vlg_model):
    """Open vocabulary: permuting the text rows permutes the logits (weights are shared across classes)."""
    images = torch.randn(1, 3, SIZE, SIZE)
    embeddings = text(6)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        logits = vlg_model(images, embeddings)
        permuted = vlg_model(images, embeddings[order])
    torch.testing.assert_close(permuted, logits[:, order], atol=1e-5, rtol=1e-4)


def test_encode_features(vlg_model):
    with torch.no_grad():
        skip_a, skip_b, dense = vlg_model.encode(torch.randn(2, 3, SIZE, SIZE))
    grid = SIZE // 16
    assert skip_a.shape == skip_b.shape == (2, vlg_model.encoder.width, grid, grid)
    assert dense.shape == (2, 128, grid, grid)
    torch.testing.assert_close(dense.norm(dim=1), torch.ones(2, grid, grid))
    logits = vlg_model.decode((skip_a, skip_b, dense), text(4), (SIZE + 16, SIZE))
    assert logits.shape == (2, 4, SIZE + 16, SIZE)


def test_other_input_sizes_resize_the_position_embedding(vlg_model):
    with torch.no_grad():
        logits = vlg_model(torch.randn(1, 3, SIZE + 32, SIZE - 16), text(3))
    assert logits.shape == (1, 3, SIZE + 32, SIZE - 16)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vlg_model(torch.randn(1, 3, SIZE + 5, SIZE), text(3))


def test_position_embedding_is_resized_to_the_crop():
    torch.manual_seed(0)
    model = build_model(small_cfg(image_size=96), load_pretrained=False)
    assert model.encoder.visual.positional_embedding.shape == (1 + 6 * 6, model.encoder.width)


def test_plain_decoder_has_fixed_classes_and_ignores_text():
    torch.manual_seed(0)
    model = build_model(small_cfg(decoder="plain", num_classes=7)).eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        a = model(images, text(3))
        b = model(images, text(21, seed=1))
    assert a.shape == (2, 7, SIZE, SIZE)
    torch.testing.assert_close(a, b)


SPATIAL_SUFFIXES = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias")


def test_spatial_finetuning_trains_only_attention_projections_and_position_embedding(vlg_model):
    names = {name for name, _ in vlg_model.named_encoder_parameters()}
    layers = len(vlg_model.encoder.visual.transformer.resblocks)
    expected = {"encoder.visual.positional_embedding"} | {
        f"encoder.visual.transformer.resblocks.{i}.{suffix}" for i in range(layers) for suffix in SPATIAL_SUFFIXES
    }
    assert names == expected
    frozen = {n for n, p in vlg_model.encoder.named_parameters() if not p.requires_grad}
    for name in ("visual.conv1.weight", "visual.class_embedding", "visual.ln_pre.weight", "visual.ln_post.weight",
                 "visual.proj", "visual.transformer.resblocks.0.mlp.c_fc.weight", "visual.transformer.resblocks.0.ln_1.weight"):
        assert name in frozen
    # every decoder parameter trains, and the two groups cover all trainable parameters
    assert len(vlg_model.decoder_parameters()) == len(list(vlg_model.decoder.parameters()))
    trainable = {id(p) for p in vlg_model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in vlg_model.encoder_parameters() + vlg_model.decoder_parameters()}


def test_without_spatial_finetuning_the_whole_encoder_trains():
    model = build_model(small_cfg(spatial_finetune=False), load_pretrained=False)
    assert len(model.encoder_parameters()) == len(list(model.encoder.parameters()))


def test_gradients_reach_only_trainable_parameters(vlg_model):
    model = vlg_model.train()
    try:
        logits = model(torch.randn(2, 3, SIZE, SIZE), text(3))
        F.cross_entropy(logits, torch.randint(0, 3, (2, SIZE, SIZE))).backward()
        assert model.encoder.visual.positional_embedding.grad is not None
        assert model.encoder.visual.transformer.resblocks[0].attn.out_proj.weight.grad.abs().sum() > 0
        assert model.encoder.visual.conv1.weight.grad is None
        assert all(p.grad is not None for p in model.decoder_parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_clip_init_false_reinitialises_the_encoder(tmp_path):
    """With clip_init false the encoder ignores clip.pretrained (a checkpoint file) and starts from random init."""
    from semivl_edge.model.clip import load_clip

    clip = load_clip("semivl-tiny", "none")
    with torch.no_grad():
        clip.visual.conv1.weight.fill_(0.5)
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    from_clip = build_model(small_cfg(clip_pretrained=str(path)), load_pretrained=True)
    scratch = build_model(small_cfg(clip_pretrained=str(path), clip_init=False), load_pretrained=True)
    assert torch.all(from_clip.encoder.visual.conv1.weight == 0.5)
    assert not torch.all(scratch.encoder.visual.conv1.weight == 0.5)


def test_invalid_configs_are_reported():
    with pytest.raises(PipelineError, match="model.decoder"):
        small_cfg(decoder="fpn")
    with pytest.raises(PipelineError, match="model.skip_blocks"):
        small_cfg(skip_blocks=(2, 1))
    with pytest.raises(PipelineError, match="model.skip_blocks"):
        build_model(small_cfg(skip_blocks=(0, 5)), load_pretrained=False)  # block 5 is the last of 6
    with pytest.raises(PipelineError, match="clip.model"):
        small_cfg(clip_model="ViT-Q-99")


def test_config_round_trip():
    cfg = small_cfg(class_names=["a", "b"], skip_blocks=(1, 3))
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.embed_dim == 128
    assert dataclasses.replace(cfg, decoder_dim=64).decoder_dim == 64
    with pytest.raises(PipelineError, match="unknown key"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize("dilation,size", [(12, 8), (18, 8), (6, 8), (12, 13)])
def test_atrous_conv_shortcut_is_exact(dilation, size):
    from semivl_edge.model.blocks import AtrousConv2d

    torch.manual_seed(0)
    conv = AtrousConv2d(4, 5, 3, padding=dilation, dilation=dilation, bias=False)
    x = torch.randn(2, 4, size, size)
    expected = F.conv2d(x, conv.weight, None, padding=dilation, dilation=dilation)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)
