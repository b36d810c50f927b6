"""Validation mIoU during training, scored exactly as the evaluation stages score the saved model.

The val images go through `evaluation.inference.SegmentationPipeline` with the `eval.*` geometry (short side,
windows, stride) and the confusion matrix is summarised by `evaluation.metrics.mean_iou`: the best-val weights
are chosen by the number that `eval_gpu` then reports. Intersections and unions are summed over the whole set
(VOC protocol); with DDP every rank scores its share of the images and the matrices are summed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from ..data.classes import IGNORE_INDEX
from ..data.voc import VOCLayout
from ..evaluation.evaluate import load_sample
from ..evaluation.inference import InferenceConfig, SegmentationPipeline
from ..evaluation.metrics import mean_iou
from .distributed import Runtime, all_reduce_sum


@dataclass
class ValItem:
    image: torch.Tensor  # uint8 [1, 3, H, W], as read (the pipeline resizes)
    mask: torch.Tensor  # int64 [H, W]


def load_val_items(layout: VOCLayout, ids: Sequence[str], num_classes: int) -> list[ValItem]:
    """The val images and masks, read and checked as the evaluation stages read them."""
    items = []
    for image_id in ids:
        image, mask = load_sample(layout, image_id, num_classes)
        items.append(ValItem(image, torch.from_numpy(mask).long()))
    return items


def confusion(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """evaluation.metrics.confusion_matrix on the device (rows = ground truth), for the DDP all-reduce."""
    keep = target != IGNORE_INDEX
    index = target[keep] * num_classes + prediction[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@torch.no_grad()
def evaluate(segmenter: torch.nn.Module, text_embeddings: torch.Tensor, items: Sequence[ValItem],
             inference: InferenceConfig, mean: Sequence[float], std: Sequence[float], runtime: Runtime,
             amp: bool) -> float:
    """Val mIoU (%) of `segmenter` over all ranks' items (each rank passes its own share)."""
    was_training = segmenter.training
    segmenter.eval()
    num_classes = text_embeddings.shape[0]
    device = runtime.device
    pipeline = SegmentationPipeline(segmenter, text_embeddings, mean, std, inference).to(device)
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    for item in items:
        with autocast:
            logits = pipeline(item.image.to(device))
        matrix += confusion(logits.argmax(1)[0], item.mask.to(device), num_classes)
    segmenter.train(was_training)
    return mean_iou(all_reduce_sum(matrix, runtime).cpu().numpy())
