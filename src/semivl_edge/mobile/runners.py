"""The on-device benchmark binaries: how to call them and how to read the timings they print.

- ExecuTorch `executor_runner` (.pte): fills the inputs with ones and runs `--num_executions`
  times; recent builds log "Iteration i of N: X ms" per run, all builds log
  "Model executed successfully N time(s) in X ms." (total).
- PyTorch `speed_benchmark_torch` (.ptl, built with the lite interpreter): `--warmup` untimed
  runs, then `--iter` timed ones; `--report_pep` prints one
  `PyTorchObserver {..."unit": "us", ..., "value": "X"}` line per run; it always prints
  "Microseconds per iter: X".
"""
from __future__ import annotations

import abc
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

_ITERATION = re.compile(r"Iteration\s+(\d+)\s+of\s+(\d+):\s*([0-9.eE+-]+)\s*ms")
_ET_TOTAL = re.compile(r"Model executed successfully\s+(\d+)\s+time\(s\) in\s+([0-9.eE+-]+)\s*ms")
_PEP = re.compile(r"PyTorchObserver\s+(\{.*\})")
_PT_MEAN = re.compile(r"Microseconds per iter:\s*([0-9.eE+-]+)")


@dataclass(frozen=True)
class PhoneTimings:
    """What a runner printed: per-run times after warm-up (if it prints them) and the mean."""

    times_ms: list[float]  # empty when the runner printed only a total
    mean_ms: float
    per_run: bool  # True: times_ms are individual timed runs; False: mean_ms is all a total gave
    note: str = ""


@dataclass(frozen=True)
class PhoneRunner(abc.ABC):
    binary: str  # file name in mobile.adb_runner_dir and on the device
    runtime: str  # label of the runtime it exercises
    where_to_get: str

    def locate(self, runner_dir: Path) -> Path:
        path = runner_dir / self.binary
        if not path.is_file():
            raise PipelineError(
                f"{path}: benchmark binary not found (mobile.adb_runner_dir); {self.where_to_get}"
            )
        return path

    @abc.abstractmethod
    def command(self, remote_binary: str, remote_model: str, *, threads: int, warmup: int,
                repeats: int, input_size: int) -> str:
        """The shell command line that benchmarks `remote_model` on the device."""

    @abc.abstractmethod
    def parse(self, output: str, *, warmup: int, repeats: int) -> PhoneTimings:
        """The timings in the runner's output."""


class ExecutorRunner(PhoneRunner):
    def __init__(self):
        super().__init__(
            binary="executor_runner",
            runtime="ExecuTorch XNNPACK",
            where_to_get=(
                "build ExecuTorch's examples/portable/executor_runner for Android arm64-v8a with the XNNPACK backend "
                "(executorch 1.4, cmake -DEXECUTORCH_BUILD_XNNPACK=ON, Android NDK toolchain) and put the binary there"
            ),
        )

    def command(self, remote_binary, remote_model, *, threads, warmup, repeats, input_size):
        # No warm-up flag: run warm-up + timed executions in one process and drop the first ones.
        return " ".join([
            shlex.quote(remote_binary),
            f"--model_path={shlex.quote(remote_model)}",
            f"--num_executions={warmup + repeats}",
            f"--cpu_threads={threads}",
        ])

    def parse(self, output, *, warmup, repeats):
        runs = [(int(i), float(ms)) for i, _, ms in _ITERATION.findall(output)]
        if runs:
            times = [ms for i, ms in sorted(runs) if i > warmup]
            if len(times) != repeats:
                raise PipelineError(
                    f"executor_runner printed {len(runs)} iteration timings, expected {warmup + repeats}"
                )
            return PhoneTimings(times, sum(times) / len(times), per_run=True)
        total = _ET_TOTAL.search(output)
        if total:
            count, total_ms = int(total.group(1)), float(total.group(2))
            return PhoneTimings([], total_ms / count, per_run=False,
                                note=f"runner printed only a total over {count} runs, warm-up included")
        raise PipelineError(f"executor_runner printed no timing line; its output ends with: {_tail(output)}")


class SpeedBenchmarkTorch(PhoneRunner):
    def __init__(self):
        super().__init__(
            binary="speed_benchmark_torch",
            runtime="PyTorch lite interpreter",
            where_to_get=(
                "build PyTorch's binaries/speed_benchmark_torch for Android arm64-v8a with the lite interpreter "
                "(BUILD_LITE_INTERPRETER=1 BUILD_BINARY=1 scripts/build_android.sh) and put the binary there"
            ),
        )

    def command(self, remote_binary, remote_model, *, threads, warmup, repeats, input_size):
        return " ".join([
            shlex.quote(remote_binary),
            f"--model={shlex.quote(remote_model)}",
            f"--input_dims=1,3,{input_size},{input_size}",
            "--input_type=uint8_t",
            f"--warmup={warmup}",
            f"--iter={repeats}",
            "--report_pep=true",
            f"--pthreadpool_size={threads}",
        ])

    def parse(self, output, *, warmup, repeats):
        times = []
        for payload in _PEP.findall(output):
            try:
                record = json.loads(payload)
            except json.JSONDecodeError:
                continue
            if record.get("metric") == "latency":
                scale = {"us": 1e-3, "ms": 1.0, "ns": 1e-6}.get(record.get("unit"), None)
                if scale is None:
                    raise PipelineError(f"speed_benchmark_torch reported an unknown unit {record.get('unit')!r}")
                times.append(float(record["value"]) * scale)
        if times:
            if len(times) != repeats:
                raise PipelineError(f"speed_benchmark_torch printed {len(times)} timings, expected {repeats}")
            return PhoneTimings(times, sum(times) / len(times), per_run=True)
        mean = _PT_MEAN.search(output)
        if mean:
            return PhoneTimings([], float(mean.group(1)) / 1000.0, per_run=False,
                                note="runner printed only the mean per iteration")
        raise PipelineError(f"speed_benchmark_torch printed no timing line; its output ends with: {_tail(output)}")


def runner_for(artifact: Path) -> PhoneRunner:
    if artifact.suffix == ".pte":
        return ExecutorRunner()
    if artifact.suffix == ".ptl":
        return SpeedBenchmarkTorch()
    raise PipelineError(f"{artifact}: no phone benchmark runner for {artifact.suffix or 'files without a suffix'}")


def _tail(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(nothing)"
