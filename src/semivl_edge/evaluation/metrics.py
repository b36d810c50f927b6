"""Segmentation metrics from one confusion matrix summed over the whole evaluation set.

The VOC protocol sums intersections and unions over all images before dividing (not a mean of
per-image IoUs); pixels labelled IGNORE_INDEX (255) do not count. Every runtime is scored by this
one implementation so that the comparison report compares like with like.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.classes import IGNORE_INDEX


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """[num_classes, num_classes] int64 counts; rows = ground truth, columns = prediction.

    Target pixels equal to `ignore_index` are skipped. A prediction outside 0..num_classes-1 is a
    bug in the caller (argmax over C logits cannot produce one), hence an assertion. Target
    values other than the ignore label must be valid classes (data.voc.check_mask_values).
    """
    prediction = np.asarray(prediction)
    target = np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
    keep = target != ignore_index
    pred = prediction[keep].astype(np.int64)
    gt = target[keep].astype(np.int64)
    assert pred.size == 0 or (pred.min() >= 0 and pred.max() < num_classes), (
        f"prediction holds class ids outside 0..{num_classes - 1}: {np.unique(pred[(pred < 0) | (pred >= num_classes)])[:5]}"
    )
    assert gt.size == 0 or (gt.min() >= 0 and gt.max() < num_classes), "target holds invalid class ids"
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionAccumulator:
    """Running confusion matrix over a dataset."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        self.matrix += confusion_matrix(prediction, target, self.num_classes, self.ignore_index)


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU per class in [0, 1]; NaN where the class is absent from both ground truth and prediction."""
    matrix = np.asarray(matrix, dtype=np.float64)
    intersection = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1), np.nan)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean IoU in percent over the classes present in ground truth or prediction (NaN if none)."""
    iou = per_class_iou(matrix)
    present = ~np.isnan(iou)
    return float(iou[present].mean() * 100) if present.any() else math.nan


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Correctly labelled pixels over all counted (non-ignored) pixels, in percent (NaN if none)."""
    matrix = np.asarray(matrix)
    total = matrix.sum()
    return float(np.trace(matrix) / total * 100) if total > 0 else math.nan


def _finite_or_none(value: float, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


@dataclass(frozen=True)
class SegmentationScores:
    """The summary of a confusion matrix, with class names, ready for a metrics file."""

    miou: float
    pixel_acc: float
    per_class_iou: dict[str, float | None]  # percent; None = class absent from GT and prediction
    per_class_rows: list[dict]  # name, iou, intersection, union, gt_pixels, predicted_pixels

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, class_names: list[str]) -> "SegmentationScores":
        matrix = np.asarray(matrix, dtype=np.int64)
        if matrix.shape != (len(class_names), len(class_names)):
            raise ValueError(f"confusion matrix {matrix.shape} does not match {len(class_names)} class names")
        iou = per_class_iou(matrix)
        intersection = np.diag(matrix)
        gt_pixels = matrix.sum(axis=1)
        predicted = matrix.sum(axis=0)
        rows = [
            {
                "class": name,
                "iou": _finite_or_none(iou[i] * 100),
                "intersection": int(intersection[i]),
                "union": int(gt_pixels[i] + predicted[i] - intersection[i]),
                "gt_pixels": int(gt_pixels[i]),
                "predicted_pixels": int(predicted[i]),
            }
            for i, name in enumerate(class_names)
        ]
        return cls(
            miou=mean_iou(matrix),
            pixel_acc=pixel_accuracy(matrix),
            per_class_iou={row["class"]: row["iou"] for row in rows},
            per_class_rows=rows,
        )

    def to_metrics(self) -> dict:
        return {
            "miou": _finite_or_none(self.miou),
            "pixel_acc": _finite_or_none(self.pixel_acc),
            "per_class_iou": dict(self.per_class_iou),
        }
