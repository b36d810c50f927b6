"""Assemble reports/comparison.{md,csv} and reports/plots/*.png from the evaluation stages' outputs."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..data.classes import IGNORE_INDEX
from ..data.voc import VOCLayout, read_image, read_mask
from ..errors import PipelineError
from ..evaluation import PREDICTIONS_DIR
from .comparison import (
    ComparisonRow,
    build_rows,
    load_metrics,
    measured_table,
    number_text,
    per_class_table,
    reference_table,
    rows_to_csv,
)
from .plots import colorize, latency_miou_plot, latency_plot, per_class_iou_plot, qualitative_plot

log = logging.getLogger(__name__)

METRICS = {"eval_gpu": "reports/metrics/eval_gpu.json", "eval_cpu": "reports/metrics/eval_cpu.json",
           "mobile": "reports/metrics/mobile.json"}
PLOTS = {"per_class": "reports/plots/per_class_iou.png", "latency": "reports/plots/latency.png",
         "latency_miou": "reports/plots/latency_miou.png", "qualitative": "reports/plots/qualitative.png"}
TRAIN_METRICS = "reports/metrics/train.json"
MARKDOWN = "reports/comparison.md"
CSV = "reports/comparison.csv"
MANIFEST = "data/dataset.json"


@dataclass(frozen=True)
class ReportOutputs:
    markdown: Path
    csv: Path
    plots: list[Path]
    rows: list[ComparisonRow]


def _per_class(metrics: dict, key: str) -> dict:
    """The per-class IoU of a row's metrics key: eval_gpu, eval_cpu/student, mobile/fp32_pte, mobile/student/..."""
    stage, *rest = key.split("/")
    node = metrics[stage]
    if rest[:1] == ["student"]:
        node, rest = node["student"], rest[1:]
    if rest:  # a mobile artifact
        node = node["artifacts"][rest[0]]
    return node.get("per_class_iou", {})


def _palette(png: Path) -> np.ndarray:
    """The [256, 3] class palette stored in a prediction PNG (written by evaluation.evaluate)."""
    flat = Image.open(png).getpalette() or []  # PIL may keep only the entries in use
    palette = np.asarray((flat + [0] * 768)[:768], dtype=np.uint8).reshape(256, 3).copy()
    palette[IGNORE_INDEX] = (255, 255, 255)  # ignored ground-truth pixels shown white
    return palette


def qualitative_samples(root: Path, rows: list[ComparisonRow]) -> list:
    """(id, image, ground truth, [(runtime, prediction)]) for the ids whose predictions eval_gpu kept."""
    measured = [r for r in rows if not r.is_reference]
    first_dir = root / "reports" / measured[0].metrics_key / PREDICTIONS_DIR
    ids = sorted(p.stem for p in first_dir.glob("*.png")) if first_dir.is_dir() else []
    if not ids:
        return []
    manifest_path = root / MANIFEST
    try:
        voc_root = Path(json.loads(manifest_path.read_text())["root"])
    except (OSError, ValueError, KeyError):
        raise PipelineError(f"{manifest_path}: cannot read the dataset root for the qualitative panels") from None
    layout = VOCLayout(voc_root if voc_root.is_absolute() else root / voc_root)
    palette = _palette(first_dir / f"{ids[0]}.png")
    samples = []
    for image_id in ids:
        predictions = []
        for row in measured:
            png = root / "reports" / row.metrics_key / PREDICTIONS_DIR / f"{image_id}.png"
            if png.is_file():
                predictions.append((row.label, colorize(np.asarray(Image.open(png)), palette)))
        gt = colorize(read_mask(layout.mask_path(image_id)), palette)
        samples.append((image_id, read_image(layout.image_path(image_id)), gt, predictions))
    return samples


def _model_line(train: dict | None) -> list[str]:
    """Which model the rows measure (from reports/metrics/train.json, when present)."""
    if not train:
        return []
    unlabeled = f" + {train['unlabeled_images']} unlabeled" if train.get("unlabeled_images") else ""
    return [f"Model: `{train.get('method')}`, {train.get('iterations')} iterations on {train.get('labeled_images')} "
            f"labeled{unlabeled} images, best val mIoU {number_text(train.get('miou'))} during training; encoder "
            f"{train.get('encoder', 'not recorded')}.", ""]


def markdown(rows: list[ComparisonRow], metrics: dict, class_names: list[str], per_class: dict, plots: dict) -> str:
    measured = [r for r in rows if not r.is_reference]
    reference = [r for r in rows if r.is_reference]
    gpu, mobile = metrics["eval_gpu"], metrics["mobile"]
    window = mobile.get("windowing", {})
    lines = [
        "# SemiVL edge: runtime comparison",
        "",
        f"Validation set: {gpu.get('images', 'n/a')} images ({gpu.get('dataset', 'unknown')} dataset). "
        "mIoU: intersection and union summed over the whole set, label 255 ignored. "
        "Latency: p50 over timed calls after warm-up; per window = one network pass.",
        "",
        *_model_line(metrics.get("train")),
        "## Measured in this pipeline",
        "",
        *measured_table(measured),
        "",
        "Notes:",
        f"- PyTorch row: {gpu.get('device')}" + (" -- no GPU was present, this is a CPU run." if not gpu.get("cuda") else "."),
        "- Mobile rows: latency per window measured "
        + (f"on the phone {mobile.get('device')} over adb" if mobile.get("target") == "adb"
           else f"on the {mobile.get('device')} -- host CPU, not a phone (no Android device was used)")
        + f"; their mIoU is computed on the host through the same runtimes, sliding {window.get('window', '?')} px "
        f"windows (stride {window.get('stride', '?')}, short side {window.get('short_side', '?')}).",
        "- Speed-up: SemiVL's eager fp32 PyTorch p50 latency per image over the row's, "
        + ("both on this CPU." if measured[0].speedup is not None
           else "n/a: the PyTorch row did not run in fp32 on the CPU the others ran on."),
        "- Size: file size in MB (10^6 bytes).",
        "",
        "## Reference: the porting study (not measured here)",
        "",
        "Reference numbers published by the porting study (Pascal VOC val, 92 labels, ViT-B/16 at 512 px), "
        "not measured here. Its phone app resized inputs to 300x300 outside the model. They are context, "
        "not comparable one-to-one with the rows above (other data, model size and input size).",
        "",
        *reference_table(reference),
        "",
        "## Per-class IoU (%)",
        "",
        *per_class_table(class_names, per_class),
        "",
        "## Plots",
        "",
    ]
    for title, key in (("Per-class IoU", "per_class"), ("Latency", "latency"), ("Latency against mIoU", "latency_miou"),
                       ("Predictions", "qualitative")):
        if key in plots:
            lines.append(f"![{title}](plots/{Path(plots[key]).name})")
            lines.append("")
    return "\n".join(lines)


def build_report(root: str | Path = ".") -> ReportOutputs:
    root = Path(root)
    metrics = {key: load_metrics(root / path) for key, path in METRICS.items()}
    if (root / TRAIN_METRICS).is_file():  # optional: which model the rows measure
        metrics["train"] = load_metrics(root / TRAIN_METRICS)
    rows = build_rows(metrics["eval_gpu"], metrics["eval_cpu"], metrics["mobile"],
                      {key: str(path) for key, path in METRICS.items()})
    measured = [r for r in rows if not r.is_reference]
    class_names = list(metrics["eval_gpu"].get("per_class_iou", {}))
    per_class = {row.label: _per_class(metrics, row.metrics_key) for row in measured}

    written = {}
    per_class_iou_plot(root / PLOTS["per_class"], class_names, per_class)
    written["per_class"] = root / PLOTS["per_class"]
    latency_plot(root / PLOTS["latency"], rows)
    written["latency"] = root / PLOTS["latency"]
    latency_miou_plot(root / PLOTS["latency_miou"], rows)
    written["latency_miou"] = root / PLOTS["latency_miou"]
    samples = qualitative_samples(root, rows)
    if not samples:
        log.warning("no saved predictions (eval.qualitative is 0?): the qualitative figure says so")
    qualitative_plot(root / PLOTS["qualitative"], samples)
    written["qualitative"] = root / PLOTS["qualitative"]

    with atomic_path(root / CSV) as tmp:
        tmp.write_text(rows_to_csv(rows))
    with atomic_path(root / MARKDOWN) as tmp:
        tmp.write_text(markdown(rows, metrics, class_names, per_class, written) + "\n")
    return ReportOutputs(root / MARKDOWN, root / CSV, list(written.values()), rows)
