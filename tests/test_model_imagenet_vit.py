"""The UniMatch(ViT) baseline's encoder: an ImageNet ViT read from a torchvision-format state dict."""
from __future__ import annotations

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.model.clip import clip_model_config
from semivl_edge.model.imagenet_vit import imagenet_vit
from semivl_edge.model.segmenter import build_model, describe_encoder

from conftest import model_config

SIZE = 64


def baseline_cfg(**changes):
    settings = dict(encoder="imagenet_vit", decoder="plain", spatial_finetune=False, image_size=SIZE, num_classes=5)
    return model_config(**{**settings, **changes})


@pytest.fixture(scope="module")
def torchvision_vit():
    """A torchvision VisionTransformer of semivl-tiny's vision shape, as a user's vit_b_16 file would hold one."""
    torch.manual_seed(3)
    vit = imagenet_vit(clip_model_config("semivl-tiny")["vision_cfg"]).eval()
    with torch.no_grad():  # torchvision zero-initialises the class token: make every tensor tell its origin
        vit.class_token.normal_()
    return vit


def test_the_baseline_builds_from_a_torchvision_state_dict_and_computes_its_features(tmp_path, torchvision_vit):
    path = tmp_path / "vit_b_16.pth"
    torch.save(torchvision_vit.state_dict(), path)  # heads.* included, as torchvision saves it
    model = build_model(baseline_cfg(imagenet_weights=str(path), image_size=224)).eval()
    encoder = model.encoder
    torch.testing.assert_close(encoder.conv_proj.weight, torchvision_vit.conv_proj.weight)
    torch.testing.assert_close(encoder.layers[3].mlp[0].weight, torchvision_vit.encoder.layers[3].mlp[0].weight)
    # Fully fine-tuned: every encoder weight learns.
    assert all(p.requires_grad for p in encoder.parameters())
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = torchvision_vit._process_input(images)
        tokens = torch.cat([torchvision_vit.class_token.expand(2, -1, -1), tokens], dim=1)
        expected = torchvision_vit.encoder(tokens)[:, 1:]  # torchvision's own blocks and final LayerNorm
        skip_a, skip_b, dense = encoder(images)
        logits = model(images, torch.zeros(5, 128))
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), expected, atol=1e-5, rtol=1e-4)
    assert skip_a.shape == skip_b.shape == dense.shape == (2, 128, 14, 14)
    assert logits.shape == (2, 5, 224, 224)
    assert describe_encoder(model.cfg) == f"ImageNet ViT shaped like semivl-tiny, ImageNet weights {path}"


def test_the_baseline_runs_at_the_training_crop_from_a_random_init():
    model = build_model(baseline_cfg()).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, SIZE, SIZE), torch.zeros(5, 128))
    assert logits.shape == (1, 5, SIZE, SIZE) and torch.isfinite(logits).all()
    assert describe_encoder(model.cfg).endswith("random init: no model.imagenet_weights")


def test_weights_of_another_shape_or_layout_are_refused_naming_the_parameter(tmp_path, torchvision_vit):
    state = {k: v for k, v in torchvision_vit.state_dict().items() if k != "encoder.ln.weight"}
    state["encoder.pos_embedding"] = torch.zeros(1, 5, 128)
    path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(PipelineError, match=r"model.imagenet_weights: .*other.safetensors is not a torchvision ViT "
                                            r"state dict of this shape \(missing encoder.ln.weight; wrong shape "
                                            r"encoder.pos_embedding\)"):
        build_model(baseline_cfg(imagenet_weights=str(path)))
    with pytest.raises(PipelineError, match="checkpoint file not found"):
        build_model(baseline_cfg(imagenet_weights=str(tmp_path / "absent.pth")))


@pytest.mark.parametrize("changes, message", [
    (dict(decoder="vlg"), "needs model.decoder plain"),
    (dict(spatial_finetune=True), "model.spatial_finetune false"),
    (dict(encoder="resnet"), "model.encoder must be one of clip, imagenet_vit"),
])
def test_settings_the_baseline_cannot_have_are_refused(changes, message):
    with pytest.raises(PipelineError, match=message):
        baseline_cfg(**changes)


def test_a_saved_model_of_before_the_baseline_reads_as_a_clip_model():
    data = model_config().to_dict()
    del data["encoder"], data["imagenet_weights"]
    cfg = type(model_config()).from_dict(data)
    assert (cfg.encoder, cfg.imagenet_weights) == ("clip", "none")
