"""Stage eval_gpu: the PyTorch models (models/model.safetensors, and the distilled student
models/student.safetensors under `student`) on the GPU, or on the CPU when there is none.

A CPU fallback is written into the metrics as such (`device: "cpu (no CUDA; GPU fallback)"`,
`cuda: 0`), so a GPU number is never claimed for a CPU run.
"""
from __future__ import annotations

import contextlib
import logging

import torch

from ..atomic import write_metrics
from ..errors import PipelineError
from ..evaluation.evaluate import evaluate, evaluation_metrics, write_evaluation_dir
from ..evaluation.inference import InferenceConfig, SegmentationPipeline, count_windows
from ..evaluation.latency import cuda_synchronizer, device_name
from ..evaluation.stage_support import latency_settings, load_eval_data, size_mb, windowing_metrics
from ..model.io import load_model
from ..params import Params

log = logging.getLogger(__name__)

MODEL = "models/model.safetensors"
STUDENT = "models/student.safetensors"  # the distilled student: its metrics under `student`, its files in student/
OUT_DIR = "reports/eval_gpu"


def choose_device(requested: str) -> tuple[torch.device, str]:
    """The device to run on and its label for the metrics file."""
    if requested == "cuda":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"
        log.warning("eval.device is cuda but no CUDA device is present: evaluating on the CPU (labelled as fallback)")
        return torch.device("cpu"), "cpu (no CUDA; GPU fallback)"
    return torch.device("cpu"), "cpu (eval.device: cpu)"


def run(params: Params) -> None:
    cfg = InferenceConfig.from_params(params)
    requested = params.get_str("eval.device", choices=("cuda", "cpu"))
    amp = params.get_bool("eval.amp")
    data = load_eval_data(params)
    device, label = choose_device(requested)
    use_amp = amp and device.type == "cuda"
    if amp and not use_amp:
        log.info("eval.amp is true but the run is on the CPU: fp32")

    results = {path: evaluate_model(path, params, data, cfg, device, label, use_amp) for path in (MODEL, STUDENT)}
    (metrics, result), (student_metrics, student_result) = results[MODEL], results[STUDENT]
    write_evaluation_dir(OUT_DIR, result, data.palette, student=student_result)
    write_metrics("eval_gpu", {**metrics, "student": student_metrics})


def evaluate_model(path: str, params: Params, data, cfg: InferenceConfig, device: torch.device, label: str,
                   use_amp: bool) -> tuple[dict, object]:
    """(metrics, evaluation result) of the saved model at `path` on `device`."""
    warmup, repeats, qualitative = latency_settings(params)
    network, model_cfg, text_embeddings = load_model(path)
    if model_cfg.num_classes != data.num_classes:
        raise PipelineError(
            f"{path}: model predicts {model_cfg.num_classes} classes but the dataset has {data.num_classes}"
        )
    pipeline = SegmentationPipeline(network, text_embeddings, model_cfg.pixel_mean, model_cfg.pixel_std, cfg)
    pipeline = pipeline.to(device).eval()

    def predict(image: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        with autocast:
            return pipeline(image.to(device, non_blocking=True)).float()

    log.info("evaluating %s on %s (%d val images, %s)", path, label, len(data.ids), cfg)
    result = evaluate(
        predict, data.layout, data.ids, data.num_classes,
        class_names=data.class_names, warmup=warmup, min_timed=repeats, qualitative=qualitative,
        windows_for=lambda h, w: count_windows(h, w, cfg), synchronize=cuda_synchronizer(device), desc=path,
    )
    metrics = evaluation_metrics(result)
    metrics.update({
        "runtime": "PyTorch eager",
        "artifact": path,
        "device": label,
        "device_name": device_name(device),
        "cuda": int(device.type == "cuda"),
        "amp": "bf16" if use_amp else "none",
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "size_mb": size_mb(path),
        "windowing": windowing_metrics(cfg),
        "dataset": data.source,
    })
    log.info("eval_gpu: %s mIoU %.2f%% on %s, p50 %.1f ms/image", path, result.scores.miou, label, result.latency.p50)
    return metrics, result
