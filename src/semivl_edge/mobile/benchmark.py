"""Latency of the mobile artifacts: on an Android phone over adb, or on the host (labelled as such).

On a phone the artifacts are pushed with the benchmark binary of their runtime (ExecuTorch
`executor_runner` for .pte, PyTorch `speed_benchmark_torch` for .ptl) and timed there. On the
host the same files run through their Python runtimes (`export.runtimes.load_runtime`) with
`mobile.threads` threads; those rows say "host CPU", never a phone.
"""
from __future__ import annotations

import logging
import posixpath
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..errors import PipelineError
from ..evaluation.latency import LatencyStats, time_calls
from .adb import Adb
from .runners import PhoneTimings, runner_for

log = logging.getLogger(__name__)

# metrics key -> file name in models/mobile, in report order.
ARTIFACTS = {"fp32_pte": "model_fp32.pte", "int8_pte": "model_int8.pte", "ptl": "model.ptl"}
HOST_RUNTIMES = {".pte": "ExecuTorch XNNPACK", ".ptl": "PyTorch lite interpreter"}
TARGETS = ("auto", "adb", "host")


def runtime_label(artifact: Path) -> str:
    try:
        return HOST_RUNTIMES[artifact.suffix]
    except KeyError:
        raise PipelineError(f"{artifact}: unknown mobile artifact type {artifact.suffix!r}") from None


def host_device_label(artifact: Path) -> str:
    return f"host CPU, {runtime_label(artifact)}"


@dataclass(frozen=True)
class BenchSettings:
    threads: int
    warmup: int
    repeats: int
    input_size: int


@dataclass(frozen=True)
class WindowLatency:
    """Per-window latency of one artifact and how it was measured."""

    stats: LatencyStats
    device: str  # e.g. "host CPU, ExecuTorch XNNPACK" or "Pixel 7 (Android, adb)"
    benchmark: str  # what produced the timings
    per_run: bool = True  # False: the runner printed only a mean (p50/p90 unknown)
    note: str = ""

    def to_metrics(self) -> dict:
        latency = self.stats.to_metrics()
        if not self.per_run:
            latency["p50"] = latency["p90"] = None
        return latency


def host_latency(window_fn: Callable[[torch.Tensor], torch.Tensor], window: torch.Tensor, artifact: Path,
                 settings: BenchSettings) -> WindowLatency:
    """Time the artifact's Python runtime on one fixed uint8 window on this machine."""
    with torch.inference_mode():
        times = time_calls(lambda: window_fn(window), warmup=settings.warmup, repeats=settings.repeats)
    return WindowLatency(LatencyStats.from_times(times), host_device_label(artifact),
                         benchmark=f"load_runtime ({runtime_label(artifact)} Python runtime)")


@dataclass
class PhoneSession:
    """A connected phone, where the binaries live locally, and where files go on the device."""

    adb: Adb
    runner_dir: Path
    remote_dir: str  # mobile.remote_dir
    model: str = field(init=False, default="")
    _pushed_binaries: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.model = self.adb.getprop("ro.product.model") or "unknown model"
        self.adb.shell(f"mkdir -p {shlex.quote(self.remote_dir)}")

    @property
    def device_label(self) -> str:
        return f"{self.model} (Android, adb)"

    def check_runners(self, artifacts: Iterable[Path]) -> None:
        for artifact in artifacts:
            runner_for(artifact).locate(self.runner_dir)

    def latency(self, artifact: Path, settings: BenchSettings) -> WindowLatency:
        runner = runner_for(artifact)
        binary = runner.locate(self.runner_dir)  # before any push: a missing binary is a setup error
        remote_binary = posixpath.join(self.remote_dir, runner.binary)
        if runner.binary not in self._pushed_binaries:
            self.adb.push(binary, remote_binary)
            self.adb.shell(f"chmod 755 {shlex.quote(remote_binary)}")
            self._pushed_binaries.add(runner.binary)
        remote_model = posixpath.join(self.remote_dir, artifact.name)
        self.adb.push(artifact, remote_model)
        command = runner.command(remote_binary, remote_model, threads=settings.threads, warmup=settings.warmup,
                                 repeats=settings.repeats, input_size=settings.input_size)
        log.info("on %s: %s", self.model, command)
        timings: PhoneTimings = runner.parse(self.adb.shell(command), warmup=settings.warmup, repeats=settings.repeats)
        stats = (LatencyStats.from_times(timings.times_ms) if timings.per_run
                 else LatencyStats(timings.mean_ms, float("nan"), float("nan"), 0))
        return WindowLatency(stats, f"{self.device_label}, {runner.runtime}", benchmark=runner.binary,
                             per_run=timings.per_run, note=timings.note)
