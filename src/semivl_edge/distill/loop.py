"""The distillation loop: a student learns from the frozen SemiVL teacher on labeled and unlabeled crops.

Each step takes `batch_size` labeled crops (with their masks) and as many unlabeled ones, CutMix-ed in pairs (MGD
mixes its unlabeled images; here the teacher sees the mixed image too, so its targets need no mixing). The
teacher labels every pixel of both; the student is trained on

    loss = CE(labels) + w_pixel * pixel + w_region * region + w_image * image        (distill/losses.py)

with AdamW and the poly schedule. The student classifies by cosine with the teacher's class text embeddings, so
its class set is the teacher's and, like the teacher's, changes with the text. The sample streams are the training
stage's (train/data.py): a pure function of (seed, position), decoded once into memory.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.classes import IGNORE_INDEX
from ..data.voc import VOCLayout
from ..evaluation.inference import InferenceConfig
from ..model.student import LanguageStudent, StudentConfig, build_student
from ..train import augment
from ..train.data import CropSpec, LabeledCrops, StepBatchSampler, UnlabeledCrops, make_loader
from ..train.distributed import Runtime
from ..train.losses import supervised_loss
from ..train.optim import poly_factor
from ..train.progress import logs_above_bar
from ..train.validate import evaluate, load_val_items
from .losses import image_distillation, pixel_distillation, region_distillation

log = logging.getLogger(__name__)

STREAM_LABELED, STREAM_UNLABELED = 10, 11  # sample streams of their own (the teacher's training used 0-2)
TERMS = ("supervised", "pixel", "region", "image")
LOG_EVERY = 100  # iterations between log lines (the bar shows every one on a terminal)


@dataclass(frozen=True)
class DistillConfig:
    """Parameters `distill.*` (see params.yaml)."""

    iterations: int
    batch_size: int
    lr: float
    weight_decay: float
    poly_power: float
    temperature: float
    pixel_weight: float
    region_weight: float
    image_weight: float
    cutmix_prob: float
    seed: int

    @classmethod
    def from_params(cls, params) -> "DistillConfig":
        return cls(
            iterations=params.get_int("distill.iterations", min=1),
            batch_size=params.get_int("distill.batch_size", min=1),
            lr=params.get_float("distill.lr", above=0.0),
            weight_decay=params.get_float("distill.weight_decay", min=0.0),
            poly_power=params.get_float("distill.poly_power", min=0.0),
            temperature=params.get_float("distill.temperature", above=0.0),
            pixel_weight=params.get_float("distill.weights.pixel", min=0.0),
            region_weight=params.get_float("distill.weights.region", min=0.0),
            image_weight=params.get_float("distill.weights.image", min=0.0),
            cutmix_prob=params.get_float("distill.cutmix_prob", min=0.0, max=1.0),
            seed=params.get_int("distill.seed", min=0),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistillInputs:
    teacher: nn.Module  # a SemiVL segmenter: encode(images) -> (skip, skip, dense CLIP map), decode(...)
    text_embeddings: torch.Tensor  # [C, E], the teacher's class embeddings
    student_cfg: StudentConfig
    layout: VOCLayout
    labeled_ids: Sequence[str]
    unlabeled_ids: Sequence[str]
    val_ids: Sequence[str]
    crops: CropSpec  # the teacher's training crops (its normalisation)
    inference: InferenceConfig  # the eval.* windows, for the val mIoU


def renormalise(images: torch.Tensor, source: CropSpec, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images normalised with the crops' statistics, re-expressed in the student's (the same unless set apart)."""
    if tuple(source.pixel_mean) == tuple(mean) and tuple(source.pixel_std) == tuple(std):
        return images
    as_tensor = lambda values: torch.tensor(values, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)  # noqa: E731
    unit = images * as_tensor(source.pixel_std) + as_tensor(source.pixel_mean)
    return (unit - as_tensor(mean)) / as_tensor(std)


def to_grid(maps: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel maps [B,C,H,W] averaged over the valid pixels of each cell of a coarser grid, and the grid's valid
    cells (more than half valid)."""
    weights = F.adaptive_avg_pool2d(valid.unsqueeze(1), size)
    pooled = F.adaptive_avg_pool2d(maps * valid.unsqueeze(1), size) / weights.clamp(min=1e-6)
    return pooled, (weights[:, 0] > 0.5).float()


def distillation_terms(student: LanguageStudent, teacher: nn.Module, text: torch.Tensor, images: torch.Tensor,
                       student_images: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor | None,
                       cfg: DistillConfig) -> dict[str, torch.Tensor]:
    """Every loss term of one batch (the first len(labels) images are the labeled ones).

    The labels are matched at the crop's resolution; the teacher on the student's logit grid (stride 8, where
    the student decides: its full-size logits are a bilinear upsampling of these), which makes the three
    distillation terms 64x cheaper than at the crop's size."""
    with torch.no_grad():
        features = teacher.encode(images)
        teacher_logits = teacher.decode(features, text, (images.shape[-2], images.shape[-1])).float()
        teacher_dense = features[2].float()  # the dense CLIP map [B,E,h,w]: the teacher's view of the joint space
    embeddings = student.embed(student_images)
    grid = (embeddings.shape[-2], embeddings.shape[-1])
    student_logits = student.grid_logits(embeddings, text)
    teacher_grid, valid_grid = to_grid(teacher_logits, valid, grid)
    if labels is not None:
        supervised = supervised_loss(
            F.interpolate(student_logits[: len(labels)], size=[images.shape[-2], images.shape[-1]], mode="bilinear",
                          align_corners=False), labels)
    else:
        supervised = student_logits.sum() * 0.0
    return {
        "supervised": supervised,
        "pixel": pixel_distillation(student_logits, teacher_grid, valid_grid, cfg.temperature),
        "region": region_distillation(embeddings, teacher_dense, teacher_logits, valid),
        "image": image_distillation(student_logits, teacher_grid, valid_grid),
    }


def total_loss(terms: dict[str, torch.Tensor], cfg: DistillConfig) -> torch.Tensor:
    return (terms["supervised"] + cfg.pixel_weight * terms["pixel"] + cfg.region_weight * terms["region"]
            + cfg.image_weight * terms["image"])


def distill(cfg: DistillConfig, inputs: DistillInputs, device: torch.device,
            on_step: Callable[[int, dict], None] | None = None) -> tuple[LanguageStudent, dict]:
    """Train a student from `inputs.teacher`; returns it (eval mode) and a summary for the metrics."""
    torch.manual_seed(cfg.seed)
    # channels-last: the depthwise convolutions' fastest layout on the CPU (a training step 15 % cheaper)
    student = build_student(inputs.student_cfg).to(device, memory_format=torch.channels_last)
    teacher = inputs.teacher.to(device).eval().requires_grad_(False)
    text = inputs.text_embeddings.to(device, torch.float32)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    mean, std = inputs.student_cfg.pixel_mean, inputs.student_cfg.pixel_std

    labeled = LabeledCrops(inputs.layout, inputs.labeled_ids, inputs.crops, inputs.student_cfg.num_classes,
                           keep_decoded=True)
    unlabeled = UnlabeledCrops(inputs.layout, inputs.unlabeled_ids, inputs.crops, cfg.cutmix_prob, keep_decoded=True)
    streams = [make_loader(dataset, StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, stream, 0, cfg.iterations),
                           workers=0, seed=cfg.seed, pin_memory=False)
               for dataset, stream in ((labeled, STREAM_LABELED), (unlabeled, STREAM_UNLABELED))]

    started, last = time.perf_counter(), {}
    with logs_above_bar():
        bar = tqdm(zip(*streams), total=cfg.iterations, desc="distill", unit="it", disable=None)
        for iteration, (lab, unl) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * poly_factor(iteration, cfg.iterations, cfg.poly_power, 0)
            # unlabeled crops CutMix-ed with the next crop of the batch (padding follows the pixels)
            box = unl["box"]
            mixed = augment.cutmix(unl["image"], unl["image"].roll(1, 0), box)
            mixed_ignore = augment.cutmix(unl["ignore"], unl["ignore"].roll(1, 0), box)
            images = torch.cat([lab["image"], mixed]).to(device)
            valid = torch.cat([lab["mask"] != IGNORE_INDEX, mixed_ignore != IGNORE_INDEX]).to(device).float()

            student_images = renormalise(images, inputs.crops, mean, std).contiguous(memory_format=torch.channels_last)
            terms = distillation_terms(student, teacher, text, images, student_images, valid, lab["mask"].to(device),
                                       cfg)
            loss = total_loss(terms, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            last = {"loss": loss.item(), **{name: value.item() for name, value in terms.items()}}
            bar.set_postfix(loss=f"{last['loss']:.3f}", pixel=f"{last['pixel']:.3f}")
            if (iteration + 1) % LOG_EVERY == 0:
                log.info("distill %d/%d: %s", iteration + 1, cfg.iterations,
                         ", ".join(f"{name} {value:.4f}" for name, value in last.items()))
            if on_step is not None:
                on_step(iteration + 1, last)
    seconds = time.perf_counter() - started

    runtime = Runtime(rank=0, world_size=1, local_rank=0, device=device)
    val_items = load_val_items(inputs.layout, inputs.val_ids, inputs.student_cfg.num_classes)
    student_miou = evaluate(student, text, val_items, inputs.inference, mean, std, runtime, amp=False)
    teacher_miou = evaluate(teacher, text, val_items, inputs.inference, inputs.crops.pixel_mean, inputs.crops.pixel_std,
                            runtime, amp=False)
    summary = {
        "iterations": cfg.iterations, "wall_time_s": round(seconds, 1),
        "seconds_per_iteration": round(seconds / cfg.iterations, 4),
        "final": {k: round(v, 6) for k, v in last.items()},
        "val_miou": round(student_miou, 4), "teacher_val_miou": round(teacher_miou, 4),
        "miou_ratio_to_teacher": round(student_miou / teacher_miou, 4) if teacher_miou > 0 else None,
        "parameters": sum(p.numel() for p in student.parameters()),
    }
    return student.eval(), summary
