"""The comparison table: one row per model and runtime measured by this pipeline, next to the porting study's rows.

The rows are read from the metrics files of the stages eval_gpu, eval_cpu and bench_mobile (the distilled
student's under their `student` key, the same fields as the teacher's); the
study's numbers (semivl.md section 7) are reference values for Pascal VOC with 92 labels and are
kept apart and labelled as such: they were not measured here.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import PipelineError

MEASURED = "measured here"
REFERENCE = "reference: porting study (Pascal VOC, 92 labels), not measured here"

# (runtime, device, mIoU %, inference ms per image) as published by the porting study.
STUDY_ROWS = [
    ("PyTorch", "desktop PC (GPU)", 84.0, 6234.54),
    ("TorchScript", "desktop PC (CPU)", 77.5, 6438.99),
    ("TorchScript", "Google Pixel 2", 62.8, 6658.45),
]

# The mobile artifacts in mobile.json, in table order, with their runtime column text.
MOBILE_ROWS = [
    ("fp32_pte", "ExecuTorch fp32 (.pte)"),
    ("int8_pte", "ExecuTorch int8 (.pte)"),
    ("ptl", "PyTorch lite (.ptl)"),
]


TEACHER, STUDENT = "SemiVL", "student"


@dataclass(frozen=True)
class ComparisonRow:
    model: str  # SemiVL (the teacher) | student (distilled) | the study's model
    runtime: str
    device: str
    miou: float | None
    latency_p50_ms_image: float | None
    latency_p50_ms_window: float | None
    size_mb: float | None
    threads: int | None
    artifact: str
    source: str
    metrics_key: str = ""  # where the row's per-class IoU and predictions come from (empty for reference rows)
    speedup: float | None = None  # SemiVL eager fp32 PyTorch's p50 per image / this row's, both on this CPU

    @property
    def is_reference(self) -> bool:
        return self.source != MEASURED

    @property
    def label(self) -> str:
        """Model and runtime in a few words: legends, panel titles, per-class columns."""
        return f"{self.model}: {self.runtime}"


def load_metrics(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: metrics file not found (run its stage first: dvc repro)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a JSON object")
    return data


def _field(data: dict, path: str, key: str, *, required: bool = True):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if required:
                raise PipelineError(f"{path}: missing field {key}")
            return None
        node = node[part]
    return node


def eval_row(metrics: dict, path: str, runtime: str, key: str, model: str = TEACHER) -> ComparisonRow:
    """A row from eval_gpu.json or eval_cpu.json (or their `student` section)."""
    return ComparisonRow(
        model=model,
        runtime=runtime,
        device=str(_field(metrics, path, "device")),
        miou=_field(metrics, path, "miou"),
        latency_p50_ms_image=_field(metrics, path, "latency_ms.p50"),
        latency_p50_ms_window=_field(metrics, path, "latency_per_window_ms.p50", required=False),
        size_mb=_field(metrics, path, "size_mb", required=False),
        threads=_field(metrics, path, "threads", required=False),
        artifact=str(_field(metrics, path, "artifact")),
        source=MEASURED,
        metrics_key=key,
    )


def mobile_rows(metrics: dict, path: str, model: str = TEACHER, key_prefix: str = "mobile") -> list[ComparisonRow]:
    artifacts = _field(metrics, path, "artifacts")
    rows = []
    for key, runtime in MOBILE_ROWS:
        if key not in artifacts:
            raise PipelineError(f"{path}: no entry for artifact {key}")
        entry = artifacts[key]
        where = f"{path} artifacts.{key}"
        rows.append(ComparisonRow(
            model=model,
            runtime=runtime,
            device=str(_field(entry, where, "device")),
            miou=_field(entry, where, "miou"),
            latency_p50_ms_image=_field(entry, where, "latency_per_image_ms.p50", required=False),
            latency_p50_ms_window=_field(entry, where, "latency_ms.p50"),
            size_mb=_field(entry, where, "size_mb", required=False),
            threads=_field(entry, where, "threads", required=False),
            artifact=str(_field(entry, where, "file")),
            source=MEASURED,
            metrics_key=f"{key_prefix}/{key}",
        ))
    return rows


def study_rows() -> list[ComparisonRow]:
    return [
        ComparisonRow(model="SemiVL (study)", runtime=runtime, device=device, miou=miou, latency_p50_ms_image=ms, latency_p50_ms_window=None,
                      size_mb=None, threads=None, artifact="", source=REFERENCE)
        for runtime, device, miou, ms in STUDY_ROWS
    ]


def with_speedups(measured: list[ComparisonRow], on_cpu: bool) -> list[ComparisonRow]:
    """The rows with their speed-up over the first (eager fp32 PyTorch), per image; only when that row ran on the
    CPU that the others ran on (a GPU figure is no baseline for a CPU runtime)."""
    base = measured[0].latency_p50_ms_image
    if not on_cpu or not base:
        return measured
    return [replace(r, speedup=None if not r.latency_p50_ms_image else round(base / r.latency_p50_ms_image, 3))
            for r in measured]


def build_rows(eval_gpu: dict, eval_cpu: dict, mobile: dict, paths: dict[str, str]) -> list[ComparisonRow]:
    """Measured rows (PyTorch, TorchScript, the three mobile artifacts) of SemiVL, then of the student, then the
    study's reference rows."""
    cuda = _field(eval_gpu, paths["eval_gpu"], "cuda")
    pytorch_label = "PyTorch (GPU)" if cuda else "PyTorch (CPU fallback)"
    measured = []
    for model, section in ((TEACHER, ""), (STUDENT, STUDENT)):
        part = {key: _field(data, paths[key], section) if section else data
                for key, data in (("eval_gpu", eval_gpu), ("eval_cpu", eval_cpu), ("mobile", mobile))}
        suffix = f"/{section}" if section else ""
        measured += [
            eval_row(part["eval_gpu"], paths["eval_gpu"], pytorch_label, f"eval_gpu{suffix}", model),
            eval_row(part["eval_cpu"], paths["eval_cpu"], "TorchScript (CPU)", f"eval_cpu{suffix}", model),
            *mobile_rows(part["mobile"], paths["mobile"], model, f"mobile{suffix}"),
        ]
    on_cpu = not cuda and _field(eval_gpu, paths["eval_gpu"], "amp", required=False) in (None, "none")
    return [*with_speedups(measured, on_cpu), *study_rows()]


CSV_COLUMNS = [f.name for f in fields(ComparisonRow) if f.name != "metrics_key"]


def rows_to_csv(rows: list[ComparisonRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    return buffer.getvalue()


def number_text(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def measured_table(rows: list[ComparisonRow]) -> list[str]:
    lines = [
        "| model | runtime | device | mIoU % | latency p50 ms / image | latency p50 ms / window | speed-up | size MB | "
        "threads | artifact |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        speedup = "n/a" if r.speedup is None else f"{r.speedup:.2f}x"
        lines.append(
            f"| {_md_escape(r.model)} | {_md_escape(r.runtime)} | {_md_escape(r.device)} | {number_text(r.miou)} | "
            f"{number_text(r.latency_p50_ms_image, 2)} | {number_text(r.latency_p50_ms_window, 2)} | {speedup} | "
            f"{number_text(r.size_mb, 2)} | {r.threads if r.threads is not None else 'n/a'} | `{r.artifact}` |"
        )
    return lines


def reference_table(rows: list[ComparisonRow]) -> list[str]:
    lines = ["| runtime | platform | mIoU % | inference ms / image |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.runtime} | {r.device} | {number_text(r.miou)} | {number_text(r.latency_p50_ms_image, 2)} |")
    return lines


def per_class_table(class_names: list[str], per_class: dict[str, dict[str, float | None]]) -> list[str]:
    runtimes = list(per_class)
    lines = ["| class | " + " | ".join(_md_escape(r) for r in runtimes) + " |",
             "|---|" + "---:|" * len(runtimes)]
    for name in class_names:
        cells = [number_text(per_class[r].get(name)) for r in runtimes]
        lines.append(f"| {_md_escape(name)} | " + " | ".join(cells) + " |")
    return lines
