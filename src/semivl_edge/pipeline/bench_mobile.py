"""Stage bench_mobile: latency of the mobile artifacts (phone over adb, else host CPU) and their val mIoU, for
SemiVL (model_*.pte, model.ptl) and the distilled student (student_*.pte, student.ptl; under `student`).

mobile.device: auto -> a phone when `adb devices` lists one ready, else the host; adb -> a phone
or a clear error; host -> the host CPU. The mIoU is always computed on this machine through the
artifacts' own runtimes (same kernels as on the phone for ExecuTorch), with sliding windows at
the artifact's fixed input size; the metrics say so.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..atomic import atomic_dir, write_metrics
from ..errors import PipelineError
from ..evaluation.evaluate import evaluate, evaluation_metrics, write_evaluation_dir
from ..evaluation.inference import InferenceConfig, count_windows, predict_windows
from ..evaluation.latency import cpu_model_name
from ..evaluation.stage_support import load_eval_data, size_mb, windowing_metrics
from ..export.runtimes import load_runtime, set_cpu_threads
from ..mobile.adb import connect, find_adb, ready_devices
from ..mobile.benchmark import (
    ARTIFACTS,
    TARGETS,
    BenchSettings,
    PhoneSession,
    host_device_label,
    host_latency,
    runtime_label,
)
from ..params import Params

log = logging.getLogger(__name__)

MOBILE_DIR = Path("models/mobile")
OUT_DIR = Path("reports/mobile")
STUDENT = "student"  # the distilled student's files (student_fp32.pte, ...): metrics under `student`, results in student/


def student_file(name: str) -> str:
    """The student's file of a teacher artifact name: model_fp32.pte -> student_fp32.pte."""
    return STUDENT + name[len("model"):]


def choose_target(mode: str, adb_executable: str | None) -> str:
    """'adb' or 'host' for mobile.device auto | adb | host."""
    if mode != "auto":
        return mode
    if adb_executable is None:
        log.info("mobile.device auto: no adb executable found, benchmarking on the host CPU")
        return "host"
    try:
        ready = ready_devices(adb_executable)
    except PipelineError as exc:
        log.warning("mobile.device auto: adb does not answer (%s), benchmarking on the host CPU", exc)
        return "host"
    if not ready:
        log.info("mobile.device auto: no phone ready in `adb devices`, benchmarking on the host CPU")
        return "host"
    return "adb"


def artifact_window_size(runtimes: dict, configured: int) -> int:
    """The one fixed input size of the artifacts (mobile.input_size for those that accept any)."""
    sizes = {runtime.input_size or configured for runtime in runtimes.values()}
    if len(sizes) != 1:
        raise PipelineError(f"{MOBILE_DIR}: the mobile artifacts take different input sizes {sorted(sizes)}; re-run export_torchscript")
    size = sizes.pop()
    if size != configured:
        log.warning("the mobile artifacts take %d px windows, mobile.input_size is %d: using the artifacts' size", size, configured)
    return size


class FirstWindow:
    """Wraps a window model and keeps the first window it sees (a real input for the latency runs)."""

    def __init__(self, window_fn):
        self.window_fn = window_fn
        self.window: torch.Tensor | None = None

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            self.window = window.clone()
        return self.window_fn(window)


def run(params: Params) -> None:
    mode = params.get_str("mobile.device", choices=TARGETS)
    settings = BenchSettings(
        threads=params.get_int("mobile.threads", min=1),
        warmup=params.get_int("mobile.warmup", min=0),
        repeats=params.get_int("mobile.repeats", min=1),
        input_size=params.get_int("mobile.input_size", min=1),
    )
    adb_name = params.get_str("mobile.adb")
    serial = params.get_optional_str("mobile.adb_serial")
    runner_dir = Path(params.get_str("mobile.adb_runner_dir"))
    remote_dir = params.get_str("mobile.remote_dir")
    qualitative = params.get_int("eval.qualitative", min=0)
    cfg = InferenceConfig.from_params(params)
    data = load_eval_data(params)
    # Threads before any runtime is loaded: resetting ExecuTorch's thread pool once a program is
    # loaded hangs or crashes its XNNPACK delegate.
    threads = set_cpu_threads(settings.threads)  # host runtimes: mIoU, and latency without a phone
    groups = {"": {key: MOBILE_DIR / name for key, name in ARTIFACTS.items()},
              STUDENT: {key: MOBILE_DIR / student_file(name) for key, name in ARTIFACTS.items()}}
    runtimes = {path: load_runtime(path) for artifacts in groups.values() for path in artifacts.values()}  # bad files

    adb_executable = find_adb(adb_name)
    target = choose_target(mode, adb_executable)
    session = None
    if target == "adb":
        session = PhoneSession(connect(adb_executable, serial), runner_dir, remote_dir)
        session.check_runners(list(runtimes))  # a missing binary stops before the long mIoU runs
    cpu = cpu_model_name()

    window_size = artifact_window_size(runtimes, settings.input_size)
    geometry = cfg.for_window(window_size)
    entries: dict[str, dict[str, dict]] = {}
    with atomic_dir(OUT_DIR) as out_tmp:
        for group, artifacts in groups.items():
            entries[group] = {}
            for key, path in artifacts.items():
                runtime = runtimes[path]
                recorder = FirstWindow(runtime)
                log.info("%s: val mIoU on the host through %s, %d px windows", path, runtime_label(path), window_size)
                result = evaluate(
                    lambda image: predict_windows(recorder, image, cfg, window_size=window_size),
                    data.layout, data.ids, data.num_classes,
                    class_names=data.class_names, warmup=settings.warmup, qualitative=qualitative,
                    windows_for=lambda h, w: count_windows(h, w, geometry), desc=str(path),
                )
                write_evaluation_dir(out_tmp / group / key, result, data.palette)

                if session is not None:
                    latency = session.latency(path, replace(settings, input_size=window_size))
                else:
                    latency = host_latency(runtime, recorder.window, path, settings)
                scores = evaluation_metrics(result)
                entry = {
                    "file": str(path),
                    "runtime": runtime_label(path),
                    "device": latency.device,
                    "benchmark": latency.benchmark,
                    "threads": settings.threads if session is not None else threads,
                    "warmup": settings.warmup,
                    "repeats": settings.repeats,
                    "input_size": window_size,
                    "size_mb": size_mb(path),
                    "latency_ms": latency.to_metrics(),  # per window
                    "per_run_timings": int(latency.per_run),
                    "miou": scores["miou"],
                    "pixel_acc": scores["pixel_acc"],
                    "per_class_iou": scores["per_class_iou"],
                    "miou_device": f"{host_device_label(path)} ({cpu})",
                }
                if session is None:  # same machine as the window timings: per-image latency is comparable
                    entry["latency_per_image_ms"] = scores["latency_ms"]
                if latency.note:
                    entry["note"] = latency.note
                entries[group][key] = entry
                log.info("%s: mIoU %s%%, p50 %s ms/window on %s", path, entry["miou"], entry["latency_ms"]["p50"],
                         latency.device)

    metrics = {
        "target": target,
        "device": session.device_label if session is not None else f"host CPU ({cpu})",
        "host_cpu": cpu,
        "images": len(data.ids),
        "windowing": {
            **windowing_metrics(geometry),
            "note": "val mIoU via predict_windows (sliding windows at the artifact's input size, short side and stride scaled with it)",
        },
        "artifacts": entries[""],
        STUDENT: {"artifacts": entries[STUDENT]},
    }
    write_metrics("mobile", metrics)
