"""The report figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_path  # noqa: E402
from .comparison import ComparisonRow  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def per_class_iou_plot(path: Path, class_names: Sequence[str], per_class: dict[str, dict[str, float | None]]) -> None:
    """Grouped bars: for each class, the IoU of each runtime (absent classes left empty)."""
    runtimes = list(per_class)
    x = np.arange(len(class_names))
    width = 0.8 / max(1, len(runtimes))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.6 * len(class_names) * max(1, len(runtimes)) ** 0.5), 4.5))
    for i, runtime in enumerate(runtimes):
        values = [per_class[runtime].get(name) for name in class_names]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=runtime)
    ax.set_xticks(x)
    ax.set_xticklabels(class_names, rotation=60, ha="right")
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.set_title("Per-class IoU on val, per runtime")
    ax.legend(fontsize=8, ncol=min(3, len(runtimes)))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def latency_plot(path: Path, rows: Sequence[ComparisonRow]) -> None:
    """p50 latency per image (measured and the study's reference values) and per window (measured)."""
    fig, (ax_image, ax_window) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    panels = [
        (ax_image, "per image", [r for r in rows if r.latency_p50_ms_image is not None], "latency_p50_ms_image"),
        (ax_window, "per window", [r for r in rows if r.latency_p50_ms_window is not None], "latency_p50_ms_window"),
    ]
    for ax, what, subset, attribute in panels:
        labels = [f"{r.label}\n{r.device}" + ("\n(study, reference)" if r.is_reference else "") for r in subset]
        values = [getattr(r, attribute) for r in subset]
        bars = ax.barh(np.arange(len(subset)), values,
                       color=["#bbbbbb" if r.is_reference else "#3b75af" for r in subset])
        for bar, r in zip(bars, subset):
            if r.is_reference:
                bar.set_hatch("//")
        ax.set_yticks(np.arange(len(subset)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        if values and min(values) > 0 and max(values) / min(values) > 50:
            ax.set_xscale("log")
        ax.set_xlabel("ms (p50)")
        ax.set_title(f"Latency {what}")
        ax.grid(axis="x", alpha=0.3)
        if not subset:
            ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)


def latency_miou_plot(path: Path, rows: Sequence[ComparisonRow]) -> None:
    """One point per measured runtime: p50 latency per image against val mIoU (up and to the left is better)."""
    points = [r for r in rows if not r.is_reference and r.miou is not None and r.latency_p50_ms_image]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in points:
        ax.scatter(r.latency_p50_ms_image, r.miou, s=40)
        ax.annotate(r.label, (r.latency_p50_ms_image, r.miou), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_xlabel("latency p50 per image, ms (log)")
    ax.set_ylabel("val mIoU %")
    ax.set_title("Latency against mIoU, per model and runtime (measured here)")
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class map -> RGB through a [256, 3] palette."""
    return palette[np.asarray(labels, dtype=np.uint8)]


def qualitative_plot(path: Path, samples: Sequence[tuple[str, np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]]) -> None:
    """Rows of image | ground truth | prediction of each runtime (all already RGB)."""
    if not samples:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no predictions were saved (eval.qualitative: 0)", ha="center", va="center")
        _save(fig, path)
        return
    columns = 2 + max((len(s[3]) for s in samples), default=0)
    fig, axes = plt.subplots(len(samples), columns, figsize=(2.2 * columns, 2.3 * len(samples)), squeeze=False)
    for row, (image_id, image, gt, predictions) in enumerate(samples):
        panels = [("image", image), ("ground truth", gt)] + predictions
        for col in range(columns):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(panels):
                title, picture = panels[col]
                ax.imshow(picture)
                ax.set_title(title if row == 0 else "", fontsize=8)
        axes[row][0].text(-0.05, 0.5, image_id, rotation=90, ha="right", va="center", fontsize=7,
                          transform=axes[row][0].transAxes)
    _save(fig, path)
