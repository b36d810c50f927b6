"""Optimiser groups (multipliers, no weight decay on norms), the poly schedule and the guidance weight decay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from semivl_edge.model.segmenter import build_model
from semivl_edge.train import optim
from semivl_edge.train.config import TrainConfig
from semivl_edge.params import Params
from semivl_edge.errors import PipelineError
from test_train_support import REPO, tiny_model_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("spatial_finetune", [False, True])
def test_parameter_groups_multipliers_and_no_decay_on_norms(spatial_finetune):
    model = build_model(tiny_model_cfg(spatial_finetune=spatial_finetune), load_pretrained=False)
    groups = optim.parameter_groups(model, lr=1e-4, weight_decay=0.01, encoder_lr_mult=0.01, decoder_lr_mult=10.0,
                                    decoder_norm_decay=False)
    by_name = {g["name"]: g for g in groups}
    norms = optim.norm_parameter_ids(model)
    norm_types = (nn.LayerNorm, nn.GroupNorm)

    for group in groups:
        part = group["name"].split("_")[0]
        assert group["lr"] == pytest.approx(1e-4 * (0.01 if part == "encoder" else 10.0))
        is_norm_group = group["name"].endswith("_norm")
        assert group["weight_decay"] == (0.0 if is_norm_group else 0.01)
        assert all((id(p) in norms) == is_norm_group for p in group["params"])

    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # every trainable parameter exactly once, nothing frozen
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    encoder_ids = {id(p) for p in model.encoder_parameters()}
    assert {id(p) for p in by_name["encoder"]["params"]} <= encoder_ids
    assert "decoder_norm" in by_name  # GroupNorms of the decoder
    # Norm layers' weights and biases are in the no-decay groups; conv / linear biases keep weight decay.
    for module in model.modules():
        if isinstance(module, norm_types):
            for p in module.parameters(recurse=False):
                assert not p.requires_grad or any(p is q for q in by_name[_part(model, p) + "_norm"]["params"])
    if spatial_finetune:  # only attention projections + position embedding train: no encoder norms in the optimiser
        assert "encoder_norm" not in by_name
        assert all(not p.requires_grad for n, p in model.encoder.named_parameters() if "ln_" in n or "mlp" in n)
    else:
        assert "encoder_norm" in by_name


def test_decoder_norm_decay_gives_the_decoder_norms_weight_decay_as_the_official_optimiser():
    model = build_model(tiny_model_cfg(spatial_finetune=False), load_pretrained=False)
    groups = {g["name"]: g for g in optim.parameter_groups(model, lr=1e-4, weight_decay=0.01, encoder_lr_mult=0.01,
                                                           decoder_lr_mult=10.0, decoder_norm_decay=True)}
    assert groups["decoder_norm"]["weight_decay"] == 0.01 and groups["decoder_norm"]["lr"] == pytest.approx(1e-3)
    assert groups["encoder_norm"]["weight_decay"] == 0.0


def _part(model, param) -> str:
    return "encoder" if any(param is p for p in model.encoder.parameters()) else "decoder"


def test_optimizer_is_adamw_and_the_schedule_is_poly():
    model = build_model(tiny_model_cfg(), load_pretrained=False)
    opt = optim.build_optimizer(model, lr=1e-4, weight_decay=0.01, encoder_lr_mult=1.0, decoder_lr_mult=10.0,
                                decoder_norm_decay=False)
    assert isinstance(opt, torch.optim.AdamW)
    total, power = 100, 0.9
    assert optim.poly_factor(0, total, power, warmup=0) == 1.0
    assert optim.poly_factor(50, total, power, warmup=0) == pytest.approx(0.5**0.9)
    assert optim.poly_factor(99, total, power, warmup=0) == pytest.approx(0.01**0.9)
    assert optim.poly_factor(total, total, power, warmup=0) == 0.0
    assert optim.poly_factor(0, total, power, warmup=10) == pytest.approx(0.1)
    assert optim.poly_factor(9, total, power, warmup=10) == pytest.approx(0.91**0.9)
    assert optim.poly_factor(10, total, power, warmup=10) == pytest.approx(0.9**0.9)
    optim.set_learning_rates(opt, optim.poly_factor(50, total, power, warmup=0))
    rates = optim.group_learning_rates(opt)
    assert rates["encoder"] == pytest.approx(1e-4 * 0.5**0.9)
    assert rates["decoder"] == pytest.approx(1e-3 * 0.5**0.9)


def test_guidance_weight_decays_linearly_to_zero():
    assert optim.linear_decay(0.1, 0, 200) == pytest.approx(0.1)
    assert optim.linear_decay(0.1, 100, 200) == pytest.approx(0.05)
    assert optim.linear_decay(0.1, 200, 200) == 0.0


def test_repository_params_give_a_valid_train_config():
    cfg = TrainConfig.from_params(Params.load(REPO / "params.yaml"))
    assert cfg.method in ("supervised", "unimatch", "semivl")
    assert cfg.conf_threshold == 0.95 and cfg.guidance_zeta == 0.9 and cfg.fp_dropout == 0.5
    assert cfg.validation.stride <= cfg.validation.crop_size


def test_bad_train_params_name_the_key():
    data = Params.load(REPO / "params.yaml").data
    data["train"]["method"] = "fixmatch"
    with pytest.raises(PipelineError, match="train.method"):
        TrainConfig.from_params(Params(data))
