"""`semivl-edge gpu-check` (what scripts/gpu_check.sh runs): the paper preset's GPU paths, measured in minutes.

In a scratch project (a temporary folder with this repository's stages), on a small synthetic VOC root at
512 px with a random-init ViT-B/16 CLIP, it runs the real stages and prints, then writes
reports/benchmarks/gpu_check.json:
1. bf16 against fp32: the training loss of the first steps with `train.amp` bf16 and none (same seed, same data);
2. `train` with the paper's settings in bf16: iterations per second and peak GPU memory;
3. `train` under torchrun DDP on every visible GPU (`train.gpus`), when there is more than one;
4. `distill`: the student's iterations per second (eval_gpu evaluates it beside the teacher);
5. `eval_gpu`: images and windows per second.
`--dry` runs the same sequence on the CPU with semivl-tiny at 64 px and 2 iterations, to check the flow anywhere;
its figures mean nothing.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ..atomic import write_json
from ..errors import PipelineError
from .preset import VOC_PAPER

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
OUTPUT = Path("reports/benchmarks/gpu_check.json")
AGREEMENT_STEPS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, default=200, help="training iterations of the timed runs (default 200)")
    parser.add_argument("--dry", action="store_true", help="the same sequence on the CPU at toy size (checks the flow)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"result JSON (default {OUTPUT})")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project (its path is printed)")


def scratch_params(dry: bool, iterations: int) -> dict:
    """params.yaml with the voc-paper values, on a small synthetic root and random CLIP weights."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in VOC_PAPER.items():
        *sections, name = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        node[name] = value
    size = 64 if dry else 512
    params["data"].update(source="synthetic", root="data/synthetic/VOC2012")
    params["data"]["synthetic"].update(train=16, train_aug=96, val=8, long_side=size)
    params["clip"].update(model="semivl-tiny" if dry else "ViT-B-16", pretrained="none", quick_gelu="auto")
    params["split"].update(labeled=8, labeled_file=None)
    params["train"].update(iterations=iterations, crop_size=size, base_size=size, eval_every=10**6,
                           checkpoint_every=10**6, device="cpu" if dry else "cuda", amp="bf16", workers=0 if dry else 4,
                           gpus=1)
    params["distill"].update(iterations=iterations, device="cpu" if dry else "cuda")
    params["eval"].update(short_side=size, crop_size=size, stride=48 if dry else 426, device="cpu" if dry else "cuda",
                          repeats=4 if dry else 20)
    return params


def _stage(project: Path, name: str, params: dict) -> float:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, f"stages/{name}.py", "--params", str(path)], cwd=project,
                            capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise PipelineError(f"gpu-check: stage {name} failed: {tail} (scratch project: {project})")
    return time.perf_counter() - started


def _losses(project: Path) -> list[float]:
    with open(project / "reports/train/plots/metrics/train/loss.tsv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle, delimiter="\t")]


def _train_metrics(project: Path) -> dict:
    return json.loads((project / "reports/metrics/train.json").read_text())


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_project(folder: Path) -> Path:
    for name in ("stages", "assets"):
        (folder / name).symlink_to(REPO / name)
    (folder / "data").mkdir()
    (folder / "data" / "classes").symlink_to(REPO / "data" / "classes")
    return folder


def check(project: Path, dry: bool, iterations: int) -> dict:
    params = scratch_params(dry, iterations)
    gpus = _visible_gpus()
    if not dry and gpus == 0:
        raise PipelineError("gpu-check: no CUDA device visible (use --dry to check the flow on the CPU)")
    result: dict = {"dry": dry, "clip_model": params["clip"]["model"], "crop_size": params["train"]["crop_size"],
                    "batch_size": params["train"]["batch_size"], "gpus_visible": gpus}
    for stage in ("dataset", "splits", "text_embeddings"):
        _stage(project, stage, params)

    steps = min(AGREEMENT_STEPS, iterations)
    curves = {}
    for amp in ("none", "bf16"):
        short = {**params, "train": {**params["train"], "iterations": steps, "amp": amp}}
        _stage(project, "train", short)
        curves[amp] = _losses(project)
    gaps = [abs(a - b) / max(abs(a), 1e-8) for a, b in zip(curves["none"], curves["bf16"])]
    result["bf16_vs_fp32"] = {"steps": steps, "loss_fp32": curves["none"], "loss_bf16": curves["bf16"],
                              "max_relative_difference": round(max(gaps), 5)}
    log.info("bf16 vs fp32 over %d steps: max relative loss difference %.4f", steps, max(gaps))

    _stage(project, "train", params)
    metrics = _train_metrics(project)
    result["train"] = {"iterations": metrics["iterations"], "iterations_per_second": round(1 / metrics["seconds_per_iteration"], 3),
                       "peak_memory_mb": metrics["peak_memory_mb"], "device": metrics["device"]}
    log.info("train: %.2f iterations/s, peak memory %.0f MB (%s)", result["train"]["iterations_per_second"],
             metrics["peak_memory_mb"], metrics["device"])

    if gpus > 1:
        ddp = {**params, "train": {**params["train"], "gpus": gpus}}
        _stage(project, "train", ddp)
        metrics = _train_metrics(project)
        result["train_ddp"] = {"gpus": gpus, "iterations_per_second": round(1 / metrics["seconds_per_iteration"], 3),
                               "peak_memory_mb_rank0": metrics["peak_memory_mb"], "device": metrics["device"]}
        log.info("train DDP on %d GPUs: %.2f iterations/s", gpus, result["train_ddp"]["iterations_per_second"])
    else:
        result["train_ddp"] = None
        log.info("train DDP: skipped (%d GPU visible)", gpus)

    _stage(project, "distill", params)
    distilled = json.loads((project / "reports/metrics/distill.json").read_text())
    result["distill"] = {"iterations": distilled["iterations"], "device": distilled["device"],
                         "iterations_per_second": round(1 / distilled["seconds_per_iteration"], 3)}
    log.info("distill: %.2f iterations/s (%s)", result["distill"]["iterations_per_second"], distilled["device"])

    _stage(project, "eval_gpu", params)
    evaluation = json.loads((project / "reports/metrics/eval_gpu.json").read_text())
    image_ms, window_ms = evaluation["latency_ms"]["p50"], evaluation["latency_per_window_ms"]["p50"]
    result["eval_gpu"] = {"images_per_second": round(1000 / image_ms, 2), "windows_per_second": round(1000 / window_ms, 2),
                          "device": evaluation["device"], "amp": evaluation["amp"]}
    log.info("eval_gpu: %.1f images/s, %.1f windows/s (%s)", result["eval_gpu"]["images_per_second"],
             result["eval_gpu"]["windows_per_second"], evaluation["device"])
    return result


def run(args: argparse.Namespace) -> None:
    if args.iterations < 1:
        raise PipelineError(f"--iterations must be >= 1, got {args.iterations}")
    iterations = 2 if args.dry else args.iterations
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="semivl-gpu-check-"))
    try:
        result = check(make_project(folder), args.dry, iterations)
    finally:
        if args.keep:
            print(f"scratch project kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    result["host"] = os.uname().nodename
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    log.info("gpu-check: %s (%.0f s)", args.out, result["wall_time_s"])
