"""MGD's three granularities of distillation (Qin et al., AAAI 2023), for one teacher that speaks CLIP's language.

MGD distils a semi-supervised teacher into a small student at three levels; its official code (reports/findings.md,
"For the student") computes them as below, and the differences here are named:
- pixel: the teacher's per-pixel class distribution. MGD takes cross-entropy against the teacher's argmax; here
  the KL divergence to the teacher's softened distribution (temperature T, times T^2 as Hinton et al.), which is
  that cross-entropy plus the teacher's uncertainty, and equals it in the limit T -> 0.
- region: relations between regions. MGD's regions are 7x7 grid cells and it matches the cosine self-similarity
  of their pooled decoder features; here the regions are the classes the teacher sees (features pooled under its
  class probabilities), so the relation says how alike the image's classes look, and the student's pixel
  embeddings are compared with the teacher's dense CLIP map, two maps of the same joint space.
- image: which classes the image holds. Both take the L1 distance of the spatially averaged logits, summed over
  classes.
Each term is averaged over the valid pixels (not the crop's padding) of the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_distillation(student_logits: Tensor, teacher_logits: Tensor, valid: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) per pixel, averaged over valid pixels [B,H,W]."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return (kl * valid).sum() / valid.sum().clamp(min=1) * temperature**2


def class_regions(teacher_logits: Tensor, valid: Tensor, size: tuple[int, int]) -> Tensor:
    """The teacher's class probabilities on valid pixels, area-averaged to a feature grid: [B,C,h,w]."""
    probabilities = teacher_logits.softmax(dim=1) * valid.unsqueeze(1)
    return F.adaptive_avg_pool2d(probabilities, size)


def class_prototypes(features: Tensor, regions: Tensor) -> Tensor:
    """Features [B,D,h,w] pooled under the region weights [B,C,h,w] (same grid): unit prototypes [B,C,D]."""
    pooled = torch.einsum("bdhw,bchw->bcd", features, regions) / regions.sum(dim=(2, 3)).unsqueeze(-1).clamp(min=1e-6)
    return F.normalize(pooled, dim=-1)


def region_distillation(student_features: Tensor, teacher_features: Tensor, teacher_logits: Tensor, valid: Tensor,
                        min_area: float = 0.01) -> Tensor:
    """MSE between the student's and the teacher's class-by-class cosine self-similarity, over pairs of classes
    that each cover at least `min_area` of a valid image (softly, by the teacher's probabilities)."""
    student_regions = class_regions(teacher_logits, valid, tuple(student_features.shape[-2:]))
    teacher_regions = class_regions(teacher_logits, valid, tuple(teacher_features.shape[-2:]))
    student_protos = class_prototypes(student_features, student_regions)
    teacher_protos = class_prototypes(teacher_features, teacher_regions)
    student_relation = student_protos @ student_protos.transpose(1, 2)  # [B,C,C]
    teacher_relation = teacher_protos @ teacher_protos.transpose(1, 2)
    area = teacher_regions.mean(dim=(2, 3)) / valid.float().mean(dim=(1, 2)).clamp(min=1e-6).unsqueeze(1)
    present = (area >= min_area).float()  # [B,C]
    pairs = present.unsqueeze(2) * present.unsqueeze(1)
    return ((student_relation - teacher_relation) ** 2 * pairs).sum() / pairs.sum().clamp(min=1)


def image_distillation(student_logits: Tensor, teacher_logits: Tensor, valid: Tensor) -> Tensor:
    """L1 between the logits averaged over each image's valid pixels, summed over classes, averaged over images."""
    weights = valid.unsqueeze(1).float()
    area = weights.sum(dim=(2, 3)).clamp(min=1)
    student_image = (student_logits * weights).sum(dim=(2, 3)) / area
    teacher_image = (teacher_logits * weights).sum(dim=(2, 3)) / area
    return (student_image - teacher_image).abs().sum(dim=1).mean()
