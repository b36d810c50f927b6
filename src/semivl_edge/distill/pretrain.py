"""The student's pretraining: its pixel embeddings learn the frozen CLIP's dense map on captioned views.

A real student starts from ImageNet weights; offline there are none, and from a random init the distillation
needs many hundred steps (150 steps: 17.5 val mIoU; from this init 49.7, above the teacher's 42.5;
reports/findings.md, "The distilled student"). This stands in for ImageNet: on the synthetic pictures the
embedded CLIP was pretrained on (semivl_edge.data.captions: their own image stream, no pixel labels, captions
unused), the whole student (backbone and embedding head) learns to put each pixel where the CLIP's value-path
dense map puts it in the joint space, by the cosine

    loss = mean over the student's stride-8 grid of 1 - cos(student embedding, CLIP dense map upsampled there)

The result knows CLIP's language before it sees the teacher, like MaskCLIP; `semivl-edge student-asset` versions
it as the embedded default's `distill.init`.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.captions import CaptionedViews
from ..model.student import LanguageStudent
from ..pretrain.contrastive import to_batch
from ..train.optim import poly_factor

log = logging.getLogger(__name__)
LOG_EVERY = 200  # steps between log lines (the bar shows every one on a terminal)


@dataclass(frozen=True)
class StudentPretrainConfig:
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int


def dense_feature_loss(embeddings: torch.Tensor, clip_dense: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine of unit embeddings [B,E,h,w] against the dense map [B,E,h',w'] resampled to (h, w)."""
    target = F.normalize(F.interpolate(clip_dense.float(), size=embeddings.shape[-2:], mode="bilinear",
                                       align_corners=False), dim=1)
    return (1 - (embeddings * target).sum(dim=1)).mean()


def pretrain_student(student: LanguageStudent, clip_dense: Callable[[torch.Tensor], torch.Tensor],
                     views: CaptionedViews, cfg: StudentPretrainConfig, device: torch.device) -> dict:
    """Train `student` in place; `clip_dense(images)` is the frozen CLIP's dense map. Returns a summary."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    student.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    mean, std = student.cfg.pixel_mean, student.cfg.pixel_std
    started, loss_value = time.perf_counter(), float("nan")
    for step in tqdm(range(cfg.steps), desc="student pretraining", unit="step", disable=None):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * poly_factor(step, cfg.steps, 0.9, 0)
        images = to_batch([views.sample(rng)[0] for _ in range(cfg.batch_size)], mean, std, device)
        with torch.no_grad():
            target = clip_dense(images)
        loss = dense_feature_loss(student.embed(images.contiguous(memory_format=torch.channels_last)), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if (step + 1) % LOG_EVERY == 0:
            log.info("student pretraining %d/%d: loss %.4f", step + 1, cfg.steps, loss_value)
    seconds = time.perf_counter() - started
    return {"steps": cfg.steps, "final_loss": round(loss_value, 4), "wall_time_s": round(seconds, 1),
            "seconds_per_step": round(seconds / cfg.steps, 4)}
