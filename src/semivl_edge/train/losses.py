"""Pixel-wise losses of supervised, UniMatch and SemiVL training (label 255 = ignore everywhere)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.classes import IGNORE_INDEX


def supervised_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labeled (non-ignored) pixels; 0 when there are none."""
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).sum()
    return per_pixel.sum() / valid.clamp(min=1)


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: (confidence = max softmax probability, predicted class) of detached logits [B, C, H, W]."""
    confidence, label = logits.detach().float().softmax(dim=1).max(dim=1)
    return confidence, label


def confident_consistency_loss(logits: torch.Tensor, label: torch.Tensor, confidence: torch.Tensor,
                               ignore: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cross-entropy to pseudo-labels on pixels with confidence >= threshold.

    Normalised by the number of non-padded pixels (not by the confident ones), as UniMatch does: while the
    model is unsure the term stays small instead of being dominated by a few confident pixels.
    """
    valid = ignore != IGNORE_INDEX
    keep = (confidence >= threshold) & valid
    per_pixel = F.cross_entropy(logits.float(), label, reduction="none")
    return (per_pixel * keep).sum() / valid.sum().clamp(min=1)


def guidance_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the dense CLIP labels (255 where CLIP is unsure or the pixel is padding).

    Summed over the kept pixels and divided by ALL pixels (SemiVL's "mean_all"), so the weight of the guidance
    shrinks with the share of pixels CLIP is confident about.
    """
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    return per_pixel.sum() / target.numel()


def combine_losses(sup: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, fp: torch.Tensor,
                   dc_s1: torch.Tensor | None = None, dc_s2: torch.Tensor | None = None,
                   dc_fp: torch.Tensor | None = None, guidance_weight: float = 0.0) -> torch.Tensor:
    """(L_sup + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2 + lambda (0.25 DC_s1 + 0.25 DC_s2 + 0.5 DC_fp)."""
    total = (sup + 0.25 * s1 + 0.25 * s2 + 0.5 * fp) / 2
    if dc_s1 is not None:
        total = total + guidance_weight * (0.25 * dc_s1 + 0.25 * dc_s2 + 0.5 * dc_fp)
    return total
