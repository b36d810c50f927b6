"""CLIP's contrastive objective on the captioned views of data/captions.py.

In a batch of B views and their captions, the symmetric InfoNCE loss makes each view's embedding most similar to
its own caption and each caption's to its own view. Two image embeddings are aligned with the captions:
- CLIP's own (the class token), so that the result is an ordinary open_clip CLIP, and
- the mean of the dense value-path embeddings, the features that SemiVL's dense guidance compares with the class
  concepts. A large CLIP gets usable dense features for free; a tiny one trained for minutes does not (measured:
  reports/method_comparison.md), so the tiny one is also trained through the read-out that guidance uses.
Optimiser as in CLIP: AdamW (beta2 0.98, eps 1e-6; no weight decay on gains, biases, embeddings and the logit
scale), linear warm-up then cosine decay, learnable temperature capped at 100.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..basics import normalize
from ..data.captions import CaptionedViews
from ..errors import PipelineError
from ..model.encoder import DenseCLIPEncoder

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass(frozen=True)
class PretrainConfig:
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    seed: int


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows of image [B, E] and text [B, E] (normalised here)."""
    logits = logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to 0 at `steps` (step counts from 1)."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_for(clip: nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in clip.named_parameters():
        # Matrices decay; gains, biases, embeddings (token, position, class) and the logit scale do not.
        (decay if param.ndim >= 2 and "embedding" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def to_batch(views: list[np.ndarray], mean: tuple, std: tuple, device: torch.device) -> torch.Tensor:
    """uint8 HWC views -> a float batch normalised as training crops are (basics.normalize)."""
    return normalize(torch.from_numpy(np.stack(views)).to(device).permute(0, 3, 1, 2), mean, std)


def pretrain(clip: nn.Module, tokenizer: Callable, views: CaptionedViews, cfg: PretrainConfig,
             pixel_mean: tuple, pixel_std: tuple, device: torch.device,
             on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train `clip` in place for cfg.steps; returns a summary (final loss, time, speed)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    clip.to(device).train()
    encoder = DenseCLIPEncoder(clip.visual, views.config.view_size, skip_blocks=(0, 0))  # shares clip's weights
    optimizer = optimizer_for(clip, cfg)
    recent: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), desc="clip_pretrain", unit="step", disable=None)
    for step in bar:
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = [views.sample(rng) for _ in range(cfg.batch_size)]
        images = to_batch([view for view, _ in batch], pixel_mean, pixel_std, device)
        text = clip.encode_text(tokenizer([caption for _, caption in batch]).to(device))
        global_embedding, dense_embedding = encoder.pooled_embeddings(images)
        loss_global = contrastive_loss(global_embedding, text, clip.logit_scale)
        loss_dense = contrastive_loss(dense_embedding, text, clip.logit_scale)
        loss = loss_global + loss_dense
        if not torch.isfinite(loss):
            raise PipelineError(f"clip_pretrain: the loss is {loss.item()} at step {step} "
                                "(try a lower clip_pretrain.lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        values = {"loss": loss.item(), "loss_global": loss_global.item(), "loss_dense": loss_dense.item(), "lr": lr,
                  "logit_scale": clip.logit_scale.exp().item()}
        recent = (recent + [values["loss"]])[-50:]
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        if on_step:
            on_step(step, values)
        if step % 100 == 0 or step == cfg.steps:
            log.info("step %d/%d: loss %.3f (class token %.3f, dense %.3f), lr %.2e", step, cfg.steps,
                     values["loss"], values["loss_global"], values["loss_dense"], lr)
    seconds = time.perf_counter() - started
    clip.eval()
    return {"steps": cfg.steps, "batch_size": cfg.batch_size, "final_loss": round(float(np.mean(recent)), 4),
            "wall_time_s": round(seconds, 2), "seconds_per_step": round(seconds / cfg.steps, 4),
            "views_per_second": round(cfg.steps * cfg.batch_size / seconds, 2)}
