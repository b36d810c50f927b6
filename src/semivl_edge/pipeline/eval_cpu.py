"""Stage eval_cpu: the exported TorchScript model (models/model.ts) on the CPU with eval_cpu.threads threads.

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
OUT_DIR = "reports/eval_cpu"


def exported_geometry(runtime, fallback: InferenceConfig) -> InferenceConfig:
    """The window geometry the .ts file was exported with (its metadata), else the eval.* parameters."""
    recorded = getattr(runtime, "metadata", {}).get("inference")
    if not recorded:
        return fallback
    cfg = InferenceConfig(mode=recorded["mode"], short_side=recorded["short_side"],
                          crop_size=recorded["crop_size"], stride=recorded["stride"])
    if cfg != fallback:
        log.warning("%s was exported with %s, the eval.* parameters say %s: re-run export_torchscript", MODEL, cfg, fallback)
    return cfg


def run(params: Params) -> None:
    cfg = InferenceConfig.from_params(params)
    threads = set_cpu_threads(params.get_int("eval_cpu.threads", min=1))
    warmup, repeats, qualitative = latency_settings(params)
    data = load_eval_data(params)
    runtime = load_runtime(MODEL)
    cfg = exported_geometry(runtime, cfg)
    cpu = cpu_model_name()

    log.info("evaluating %s (%s) on the CPU, %d threads (%d val images)", MODEL, runtime.kind, threads, len(data.ids))
    result = evaluate(
        runtime, data.layout, data.ids, data.num_classes,
        class_names=data.class_names, warmup=warmup, min_timed=repeats, qualitative=qualitative,
        windows_for=lambda h, w: count_windows(h, w, cfg), desc=MODEL,
    )
    metrics = evaluation_metrics(result)
    metrics.update({
        "runtime": "TorchScript",
        "artifact": MODEL,
        "device": f"CPU ({cpu})",
        "device_name": cpu,
        "cuda": 0,
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "size_mb": size_mb(MODEL),
        "windowing": windowing_metrics(cfg),  # inside the exported file
        "dataset": data.source,
    })
    write_evaluation_dir(OUT_DIR, result, data.palette)
    write_metrics("eval_cpu", metrics)
    log.info("eval_cpu: mIoU %.2f%%, p50 %.1f ms/image on %s", result.scores.miou, result.latency.p50, cpu)
