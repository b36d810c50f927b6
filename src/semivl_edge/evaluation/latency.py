"""Latency measurement: warm-up, repeated timings, summary statistics and where they were taken."""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings in milliseconds."""

    mean: float
    p50: float
    p90: float
    count: int

    @classmethod
    def from_times(cls, times_ms: Sequence[float]) -> "LatencyStats":
        values = np.asarray(list(times_ms), dtype=np.float64)
        if values.size == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(
            mean=float(values.mean()),
            p50=float(np.percentile(values, 50)),
            p90=float(np.percentile(values, 90)),
            count=int(values.size),
        )

    def to_metrics(self, digits: int = 3) -> dict:
        """{mean, p50, p90} in ms (None when nothing was timed) and the number of timings."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else round(value, digits)

        return {"mean": clean(self.mean), "p50": clean(self.p50), "p90": clean(self.p90), "count": self.count}


def time_calls(fn: Callable[[], object], *, warmup: int, repeats: int,
               timer: Callable[[], float] = time.perf_counter,
               synchronize: Callable[[], None] | None = None) -> list[float]:
    """Call `fn` `warmup` times untimed, then `repeats` times timed; the timings in ms.

    `synchronize` (e.g. torch.cuda.synchronize) runs before each clock read so asynchronous
    devices are timed to completion.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if synchronize is not None:
            synchronize()
        start = timer()
        fn()
        if synchronize is not None:
            synchronize()
        times.append((timer() - start) * 1000.0)
    return times


def cpu_model_name() -> str:
    """The CPU model, from /proc/cpuinfo on Linux, else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device | str) -> str:
    """Human-readable name of the hardware behind a torch device."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name()


def cuda_synchronizer(device: torch.device | str) -> Callable[[], None] | None:
    """torch.cuda.synchronize bound to the device when it is a GPU, else None (CPU calls are synchronous)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return lambda: torch.cuda.synchronize(device)
