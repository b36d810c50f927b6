"""Validation mIoU during training: sliding windows at the training crop, one confusion matrix over val.

Each val image is resized so that its short side equals the crop (kept in memory), windows of crop x crop are
taken with the given stride, their logits averaged, resized to the mask and arg-maxed. Intersections and unions
are summed over the whole set (VOC protocol); with DDP every rank scores its share and the matrices are summed.
The final evaluation stages (eval_gpu, eval_cpu) score the saved model independently.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..data.classes import IGNORE_INDEX
from ..data.voc import VOCLayout, read_image, read_mask
from . import augment
from .data import check_mask
from .distributed import Runtime, all_reduce_sum


@dataclass
class ValItem:
    image: torch.Tensor  # uint8 [3, h, w], short side = crop
    mask: torch.Tensor  # int64 [H, W], original size


def load_val_items(layout: VOCLayout, ids: Sequence[str], crop_size: int, num_classes: int) -> list[ValItem]:
    items = []
    for image_id in ids:
        image = augment.to_image(read_image(layout.image_path(image_id)))
        mask_path = layout.mask_path(image_id)
        mask = torch.from_numpy(check_mask(read_mask(mask_path), num_classes, mask_path)).long()
        items.append(ValItem(TF.resize(image, [crop_size], antialias=True).as_subclass(torch.Tensor), mask))
    return items


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, stride))
    if starts[-1] + crop < length:
        starts.append(length - crop)
    return starts


@torch.no_grad()
def sliding_window_logits(forward, image: torch.Tensor, crop: int, stride: int, num_classes: int) -> torch.Tensor:
    """Average logits [1, C, H, W] of crop x crop windows over a normalised image [1, 3, H, W] (H, W >= crop)."""
    _, _, height, width = image.shape
    boxes = [(y, x) for y in window_starts(height, crop, stride) for x in window_starts(width, crop, stride)]
    windows = torch.cat([image[:, :, y:y + crop, x:x + crop] for y, x in boxes])
    logits = forward(windows).float()
    total = image.new_zeros((1, num_classes, height, width), dtype=torch.float32)
    count = image.new_zeros((1, 1, height, width), dtype=torch.float32)
    for (y, x), window_logits in zip(boxes, logits):
        total[:, :, y:y + crop, x:x + crop] += window_logits
        count[:, :, y:y + crop, x:x + crop] += 1
    return total / count


def confusion(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    keep = target != IGNORE_INDEX
    index = target[keep] * num_classes + prediction[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_percent(matrix: torch.Tensor) -> float:
    """Mean IoU (%) over the classes that occur in the ground truth or the predictions."""
    matrix = matrix.double()
    intersection = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean() * 100) if present.any() else 0.0


@torch.no_grad()
def evaluate(segmenter: torch.nn.Module, text_embeddings: torch.Tensor, items: Sequence[ValItem], crop: int,
             stride: int, mean: Sequence[float], std: Sequence[float], runtime: Runtime, amp: bool) -> float:
    """Val mIoU (%) of `segmenter` over all ranks' items (each rank passes its own share)."""
    was_training = segmenter.training
    segmenter.eval()
    num_classes = text_embeddings.shape[0]
    device = runtime.device
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    forward = lambda x: segmenter(x, text_embeddings)  # noqa: E731
    for item in items:
        image = augment.normalize(item.image, mean, std).unsqueeze(0).to(device)
        with autocast:
            logits = sliding_window_logits(forward, image, crop, stride, num_classes)
        logits = F.interpolate(logits, size=tuple(item.mask.shape), mode="bilinear", align_corners=False)
        matrix += confusion(logits.argmax(1)[0], item.mask.to(device), num_classes)
    segmenter.train(was_training)
    return miou_percent(all_reduce_sum(matrix, runtime).cpu())
