"""Stage eval_cpu: the exported TorchScript models (models/model.ts, and the distilled student's models/student.ts
under `student`) on the CPU with eval_cpu.threads threads.

models/model.ts takes a uint8 image of any size and does the preprocessing and sliding windows
inside (exported from the same SegmentationPipeline as eval_gpu uses), so the scores differ from
eval_gpu only by what the conversion and the CPU change.
"""
from __future__ import annotations

import logging

import torch

from ..atomic import write_metrics
from ..evaluation.evaluate import evaluate, evaluation_metrics, write_evaluation_dir
from ..evaluation.inference import InferenceConfig, count_windows
from ..evaluation.latency import cpu_model_name
from ..evaluation.stage_support import (
    latency_settings,
    load_eval_data,
    size_mb,
    windowing_metrics,
)
from ..export.runtimes import load_runtime, set_cpu_threads
from ..params import Params

log = logging.getLogger(__name__)

MODEL = "models/model.ts"
STUDENT = "models/student.ts"  # the distilled student: its metrics under `student`, its files in student/
OUT_DIR = "reports/eval_cpu"


def exported_geometry(path: str, runtime, fallback: InferenceConfig) -> InferenceConfig:
    """The window geometry the .ts file was exported with (its metadata), else the eval.* parameters."""
    recorded = getattr(runtime, "metadata", {}).get("inference")
    if not recorded:
        return fallback
    cfg = InferenceConfig(mode=recorded["mode"], short_side=recorded["short_side"],
                          crop_size=recorded["crop_size"], stride=recorded["stride"])
    if cfg != fallback:
        log.warning("%s was exported with %s, the eval.* parameters say %s: re-run export_torchscript", path, cfg, fallback)
    return cfg


def run(params: Params) -> None:
    cfg = InferenceConfig.from_params(params)
    threads = set_cpu_threads(params.get_int("eval_cpu.threads", min=1))
    data = load_eval_data(params)
    runtimes = {path: load_runtime(path) for path in (MODEL, STUDENT)}  # fail early on a bad file
    (metrics, result), (student_metrics, student_result) = (
        evaluate_file(path, runtime, params, data, cfg, threads) for path, runtime in runtimes.items())
    write_evaluation_dir(OUT_DIR, result, data.palette, student=student_result)
    write_metrics("eval_cpu", {**metrics, "student": student_metrics})


def evaluate_file(path: str, runtime, params: Params, data, cfg: InferenceConfig, threads: int) -> tuple[dict, object]:
    """(metrics, evaluation result) of one exported .ts file on the CPU."""
    warmup, repeats, qualitative = latency_settings(params)
    cfg = exported_geometry(path, runtime, cfg)
    cpu = cpu_model_name()
    log.info("evaluating %s (%s) on the CPU, %d threads (%d val images)", path, runtime.kind, threads, len(data.ids))
    result = evaluate(
        runtime, data.layout, data.ids, data.num_classes,
        class_names=data.class_names, warmup=warmup, min_timed=repeats, qualitative=qualitative,
        windows_for=lambda h, w: count_windows(h, w, cfg), desc=path,
    )
    metrics = evaluation_metrics(result)
    metrics.update({
        "runtime": "TorchScript",
        "artifact": path,
        "device": f"CPU ({cpu})",
        "device_name": cpu,
        "cuda": 0,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "size_mb": size_mb(path),
        "windowing": windowing_metrics(cfg),  # inside the exported file
        "dataset": data.source,
    })
    log.info("eval_cpu: %s mIoU %.2f%%, p50 %.1f ms/image on %s", path, result.scores.miou, result.latency.p50, cpu)
    return metrics, result
