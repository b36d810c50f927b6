"""AdamW with per-part learning-rate multipliers, no weight decay on normalisation layers, poly decay.

As in SemiVL: lr(group) = lr * multiplier(encoder | decoder) * (1 - it / iterations) ** power, weight decay
0 for the parameters of normalisation layers (LayerNorm, GroupNorm, BatchNorm, ...). The official optimiser
configuration matches the decoder's parameters by its `head` key before its `norm` key, so there the decoder's
norm layers do get weight decay: `train.optim.decoder_norm_decay: true` does the same (the voc-paper preset).
Frozen parameters (the text encoder, the frozen parts under spatial fine-tuning) are not in the optimiser at all.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def is_norm_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)) \
        or type(module).__name__.endswith("Norm")


def norm_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if is_norm_layer(m) for p in m.parameters(recurse=False)}


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, encoder_lr_mult: float,
                     decoder_lr_mult: float, *, decoder_norm_decay: bool) -> list[dict]:
    """Optimiser groups from model.encoder_parameters() / decoder_parameters(), split by decay / no decay."""
    norms = norm_parameter_ids(model)
    parts = {"encoder": (list(model.encoder_parameters()), encoder_lr_mult),
             "decoder": (list(model.decoder_parameters()), decoder_lr_mult)}
    seen: set[int] = set()
    groups = []
    for part, (params, mult) in parts.items():
        params = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        decay = [p for p in params if id(p) not in norms]
        no_decay = [p for p in params if id(p) in norms]
        norm_wd = weight_decay if part == "decoder" and decoder_norm_decay else 0.0
        for suffix, members, wd in (("", decay, weight_decay), ("_norm", no_decay, norm_wd)):
            if members:
                groups.append({"name": part + suffix, "params": members, "lr": lr * mult, "lr_mult": mult,
                               "base_lr": lr, "weight_decay": wd})
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"trainable parameters in neither encoder_parameters() nor decoder_parameters(): {missing[:5]}")
    return groups


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, encoder_lr_mult: float,
                    decoder_lr_mult: float, *, decoder_norm_decay: bool) -> torch.optim.AdamW:
    groups = parameter_groups(model, lr, weight_decay, encoder_lr_mult, decoder_lr_mult,
                              decoder_norm_decay=decoder_norm_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def poly_factor(iteration: int, total: int, power: float, warmup: int) -> float:
    """(1 - iteration / total) ** power for iteration in [0, total), ramped up linearly over `warmup` iterations."""
    factor = (1.0 - min(iteration, total) / total) ** power
    if iteration < warmup:
        factor *= (iteration + 1) / warmup
    return factor


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * group["lr_mult"] * factor


def linear_decay(start: float, iteration: int, total: int) -> float:
    """start at iteration 0, falling linearly to 0 at `total` (the guidance weight lambda)."""
    return start * (1.0 - min(iteration, total) / total)


def group_learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {group["name"]: group["lr"] for group in optimizer.param_groups}


def trainable(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params if p.requires_grad)
