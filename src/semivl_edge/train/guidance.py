"""Dense CLIP guidance (SemiVL strategy 4).

A frozen copy of the initial CLIP image encoder produces dense value-path features; their cosine similarity with
the guidance concept embeddings, maximised over each class's concepts, is a per-pixel class score. softmax(T *
score) with T = 100 gives a confidence; pixels below zeta (0.9) are ignored (255). The training loss pulls the
segmentation model's unlabeled predictions towards these labels with a weight that decays linearly to 0, so that
CLIP's open-vocabulary knowledge anchors early self-training without limiting the final model.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.classes import IGNORE_INDEX


def class_scores(dense: torch.Tensor, concepts: torch.Tensor, concept_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cosine similarity of dense features [B, E, h, w] with concepts [K, E], max over each class's concepts.

    Both inputs are L2-normalised along E. Returns [B, num_classes, h, w].
    """
    sim = torch.einsum("behw,ke->bkhw", dense.float(), concepts.float())
    index = concept_class.view(1, -1, 1, 1).expand_as(sim)
    base = sim.new_full((sim.shape[0], num_classes, *sim.shape[2:]), float("-inf"))
    return base.scatter_reduce(1, index, sim, reduce="amax", include_self=True)


def guidance_targets(scores: torch.Tensor, out_size: tuple[int, int], temperature: float,
                     zeta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel (label with 255 where confidence < zeta, confidence) at out_size from class scores [B, C, h, w]."""
    scores = F.interpolate(scores, size=out_size, mode="bilinear", align_corners=False)
    confidence, label = (temperature * scores).softmax(dim=1).max(dim=1)
    label = label.masked_fill(confidence < zeta, IGNORE_INDEX)
    return label, confidence


class DenseClipGuidance(nn.Module):
    """Frozen CLIP that labels the confident pixels of a batch of (normalised) training images."""

    def __init__(self, clip_model: nn.Module, concepts: torch.Tensor, concept_class: torch.Tensor,
                 num_classes: int, temperature: float, zeta: float):
        super().__init__()
        self.clip = clip_model
        for parameter in self.clip.parameters():
            parameter.requires_grad_(False)
        self.clip.eval()
        self.register_buffer("concepts", concepts.float(), persistent=False)
        self.register_buffer("concept_class", concept_class.long(), persistent=False)
        self.num_classes, self.temperature, self.zeta = num_classes, temperature, zeta
        if int(concept_class.max()) >= num_classes or int(concept_class.min()) < 0:
            raise ValueError("concept class index outside the class list")

    def train(self, mode: bool = True) -> "DenseClipGuidance":
        super().train(mode)
        self.clip.eval()  # always frozen, whatever the trainer does
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dense = self.clip.encode(images)[-1]
        # Similarities in float32 even under bf16 autocast: x100 before the softmax would amplify bf16 rounding.
        with torch.autocast(device_type=dense.device.type, enabled=False):
            scores = class_scores(dense.float(), self.concepts, self.concept_class, self.num_classes)
            label, _ = guidance_targets(scores, tuple(images.shape[-2:]), self.temperature, self.zeta)
        return label


def initial_clip_copy(segmenter: nn.Module, model_cfg, build_model: Callable) -> nn.Module:
    """The frozen guidance network: the initial CLIP image encoder of the same clip.model / clip.pretrained.

    With model.clip_init the segmenter's encoder IS that CLIP before training, so a copy is taken (call this
    before the first step); otherwise a CLIP-initialised model is built from the same config.
    """
    if getattr(model_cfg, "clip_init", True):
        clip = copy.deepcopy(segmenter)
    else:
        clip = build_model(dataclasses.replace(model_cfg, clip_init=True))
    return clip
