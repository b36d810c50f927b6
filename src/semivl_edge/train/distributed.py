"""Processes and devices: one CPU / GPU process, or torchrun DDP.

`train.gpus > 1` makes the stage re-launch itself under torchrun on one machine
(`python -m torch.distributed.run --standalone --nproc_per_node N stages/train.py`). Several machines: start
the same stage script with torchrun on every node yourself, e.g.

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        stages/train.py --params params.yaml

A process started by torchrun (RANK / WORLD_SIZE in the environment) never re-launches; the world size comes
from torchrun. The models/ and reports/ folders must be on storage that every node sees for a resume to work.
Only rank 0 writes outputs.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..basics import resolve_device
from ..errors import PipelineError

log = logging.getLogger(__name__)

STAGE_SCRIPT = Path("stages/train.py")  # the dvc.yaml command; torchrun runs it in every process


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def label(self) -> str:
        """A short description of where training runs, for logs and the metrics file."""
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)}) x{self.world_size}"
        return f"cpu ({torch.get_num_threads()} threads) x{self.world_size}"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(params_path: str, nproc: int) -> list[str]:
    """The command that runs the training stage as `nproc` DDP processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(STAGE_SCRIPT), "--params", str(params_path)]


def check_multi_gpu(gpus: int, device_preference: str) -> None:
    """Before re-launching with torchrun: the GPUs must exist."""
    if device_preference == "cpu":
        raise PipelineError(f"train.gpus is {gpus} but train.device is cpu; multi-process training needs CUDA GPUs")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < gpus:
        raise PipelineError(f"train.gpus is {gpus} but only {available} CUDA GPU(s) are visible")


def setup(device_preference: str) -> Runtime:
    """Join the process group when started by torchrun; pick this process's device."""
    if not launched_by_torchrun():
        return Runtime(0, 1, 0, resolve_device(device_preference))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(rank, world, local_rank, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_to_main(obj, runtime: Runtime) -> list | None:
    """Every rank's `obj` on rank 0 (None elsewhere); in memory, for small things like RNG states."""
    if not runtime.distributed:
        return [obj]
    out = [None] * runtime.world_size if runtime.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_flag(value: bool, runtime: Runtime) -> bool:
    if not runtime.distributed:
        return value
    flag = torch.tensor([int(value)], device=runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
