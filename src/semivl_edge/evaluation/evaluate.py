"""Score a predictor on a list of VOC images: confusion matrix, per-image latency, kept predictions.

A predictor is any callable taking a uint8 tensor [1, 3, H, W] (the image as read, RGB) and
returning logits [1, C, H, W]; the eager pipeline, TorchScript and the mobile runtimes all fit.
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data.classes import IGNORE_INDEX
from ..data.voc import VOCLayout, check_mask_values, read_image, read_mask
from ..errors import PipelineError
from . import PER_CLASS_CSV, PREDICTIONS_DIR
from .latency import LatencyStats
from .metrics import ConfusionAccumulator, SegmentationScores

log = logging.getLogger(__name__)

Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvaluationResult:
    matrix: np.ndarray
    scores: SegmentationScores
    image_times_ms: list[float]  # one per timed call (calls after the warm-up)
    window_times_ms: list[float]  # the same calls divided by their number of windows (empty if unknown)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # id -> class map, first `qualitative` ids
    images: int = 0

    @property
    def latency(self) -> LatencyStats:
        return LatencyStats.from_times(self.image_times_ms)

    @property
    def window_latency(self) -> LatencyStats:
        return LatencyStats.from_times(self.window_times_ms)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 RGB -> [1, 3, H, W] uint8, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).contiguous()


def load_sample(layout: VOCLayout, image_id: str, num_classes: int) -> tuple[torch.Tensor, np.ndarray]:
    """The image as a uint8 tensor and its mask, checked to match in size and hold valid labels."""
    image = read_image(layout.image_path(image_id))
    mask_path = layout.mask_path(image_id)
    mask = read_mask(mask_path)
    if image.shape[:2] != mask.shape:
        raise PipelineError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}"
        )
    check_mask_values(mask, num_classes, mask_path, IGNORE_INDEX)
    return image_tensor(image), mask


def _class_map(logits: torch.Tensor, mask_shape: tuple[int, int], num_classes: int, source: str,
               image_id: str) -> np.ndarray:
    """argmax of the predictor's logits, after checking they have the shape the mask needs."""
    expected = f"[1, {num_classes}, {mask_shape[0]}, {mask_shape[1]}]"
    if not isinstance(logits, torch.Tensor):
        raise PipelineError(f"{source}: returned {type(logits).__name__} for image {image_id}, expected logits {expected}")
    if logits.dim() != 4 or logits.shape[0] != 1 or logits.shape[1] != num_classes or tuple(logits.shape[2:]) != tuple(mask_shape):
        raise PipelineError(f"{source}: returned logits {list(logits.shape)} for image {image_id}, expected {expected}")
    return logits[0].argmax(dim=0).to(torch.uint8).cpu().numpy()


def evaluate(
    predict_fn: Predictor,
    layout: VOCLayout,
    ids: Sequence[str],
    num_classes: int,
    *,
    class_names: Sequence[str],
    warmup: int = 0,
    min_timed: int = 0,
    qualitative: int = 0,
    windows_for: Callable[[int, int], int] | None = None,
    synchronize: Callable[[], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
    desc: str = "evaluate",
) -> EvaluationResult:
    """Run `predict_fn` on every id, accumulate the confusion matrix and time each call.

    The first `warmup` calls are not timed (their predictions still count). If the list yields
    fewer than `min_timed` timed calls, further timed calls on the same images (cycled) top the
    latency sample up; their predictions are not scored twice. `windows_for(h, w)` gives the
    number of inference windows of an image, to report a per-window latency as well. `desc`
    names the model in the progress bar and in errors.
    """
    if not ids:
        raise PipelineError("evaluation id list is empty: nothing to evaluate")
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    accumulator = ConfusionAccumulator(num_classes)
    image_times: list[float] = []
    window_times: list[float] = []
    predictions: dict[str, np.ndarray] = {}

    def timed_call(image: torch.Tensor, call_index: int) -> torch.Tensor:
        if synchronize is not None:
            synchronize()
        start = timer()
        with torch.inference_mode():
            logits = predict_fn(image)
        if synchronize is not None:
            synchronize()
        elapsed_ms = (timer() - start) * 1000.0
        if call_index >= warmup:
            image_times.append(elapsed_ms)
            if windows_for is not None:
                window_times.append(elapsed_ms / max(1, windows_for(image.shape[2], image.shape[3])))
        return logits

    for index, image_id in enumerate(tqdm(ids, desc=desc, unit="img")):
        image, mask = load_sample(layout, image_id, num_classes)
        prediction = _class_map(timed_call(image, index), mask.shape, num_classes, desc, image_id)
        accumulator.update(prediction, mask)
        if index < qualitative:
            predictions[image_id] = prediction

    missing = max(0, min_timed - len(image_times))
    if missing:
        # A list shorter than warm-up + min_timed: cycle it (the rest of the warm-up first).
        extra = max(0, warmup - len(ids)) + missing
        log.info("%s: %d more calls to reach %d timed latency samples", desc, extra, min_timed)
        for k in tqdm(range(extra), desc=f"{desc} (latency)", unit="img"):
            image, _ = load_sample(layout, ids[k % len(ids)], num_classes)
            timed_call(image, len(ids) + k)

    return EvaluationResult(
        matrix=accumulator.matrix,
        scores=SegmentationScores.from_matrix(accumulator.matrix, list(class_names)),
        image_times_ms=image_times,
        window_times_ms=window_times,
        predictions=predictions,
        images=len(ids),
    )


def save_label_png(path: Path, labels: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> None:
    """A class map as a palette PNG (pixel values = class ids, 255 = ignore shown white)."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8))  # mode L; putpalette makes it P
    flat = [0] * (256 * 3)
    for index, rgb in enumerate(palette):
        flat[index * 3: index * 3 + 3] = list(rgb)
    flat[IGNORE_INDEX * 3: IGNORE_INDEX * 3 + 3] = [255, 255, 255]
    image.putpalette(flat)
    image.save(path)


STUDENT_DIR = "student"  # the distilled student's result beside the teacher's


def write_evaluation_dir(out_dir: str | Path, result: EvaluationResult, palette: Sequence[tuple[int, int, int]],
                         student: EvaluationResult | None = None) -> None:
    """`out_dir/per_class_iou.csv` and `out_dir/predictions/<id>.png` (and the same in `out_dir/student/` for a
    student's result), replaced as a whole."""
    from ..atomic import atomic_dir

    with atomic_dir(out_dir) as tmp:
        _write_result(tmp, result, palette)
        if student is not None:
            (tmp / STUDENT_DIR).mkdir()
            _write_result(tmp / STUDENT_DIR, student, palette)


def _write_result(directory: Path, result: EvaluationResult, palette: Sequence[tuple[int, int, int]]) -> None:
    with open(directory / PER_CLASS_CSV, "w", newline="") as handle:
        columns = ["class", "iou", "intersection", "union", "gt_pixels", "predicted_pixels"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result.scores.per_class_rows:
            writer.writerow({**row, "iou": "" if row["iou"] is None else row["iou"]})
    (directory / PREDICTIONS_DIR).mkdir()
    for image_id, labels in result.predictions.items():
        save_label_png(directory / PREDICTIONS_DIR / f"{image_id}.png", labels, palette)


def evaluation_metrics(result: EvaluationResult) -> dict:
    """The common part of the eval metrics files: scores, latency per image and per window."""
    metrics = result.scores.to_metrics()
    metrics["latency_ms"] = result.latency.to_metrics()
    metrics["latency_per_window_ms"] = result.window_latency.to_metrics()
    metrics["images"] = result.images
    return metrics
