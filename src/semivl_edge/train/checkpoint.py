"""Resumable training checkpoints without pickle: safetensors for tensors, JSON for everything else.

models/checkpoints/step_000050/ holds
- model.safetensors      the model's state_dict,
- optimizer.safetensors  AdamW moments and step counts (per parameter index),
- best_model.safetensors the weights of the best validation so far (hard link to the previous checkpoint's
                         file while the best does not change),
- rng.safetensors        torch CPU / CUDA generator states of every rank, numpy's key array,
- state.json             step, fingerprint of the configuration and inputs, optimiser groups, python / numpy
                         RNG scalars, best / last validation, wall time so far, the logged curves.
A checkpoint folder is written under a temporary name and renamed when complete, then older ones are removed,
so a kill at any moment leaves the last complete checkpoint. A checkpoint is only resumed when its fingerprint
equals the current one: a changed parameter, id list, embedding file or training code starts a fresh run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir, write_json
from ..hashing import file_sha256

log = logging.getLogger(__name__)

FORMAT = 1
STEP_DIR = re.compile(r"^step_(\d{6,})$")
COMPLETED_FILE = "completed.json"


# -- fingerprint -------------------------------------------------------------------------------------------------
def fingerprint(settings: dict, files: list[Path]) -> str:
    """sha256 over the settings (JSON) and the content of the given files/folders (sorted)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for root in files:
        paths = sorted(p for p in Path(root).rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if Path(root).is_dir() else [Path(root)]
        for path in paths:
            digest.update(str(path).encode())
            digest.update(file_sha256(path).encode() if path.is_file() else b"<missing>")
    return digest.hexdigest()


# -- RNG ---------------------------------------------------------------------------------------------------------
def capture_rng(device: torch.device) -> dict:
    """This process's generator states: tensors (safetensors) and scalars (JSON)."""
    np_state = np.random.get_state()
    tensors = {"torch_cpu": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64))}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    version, internal, gauss = random.getstate()
    scalars = {"numpy": {"pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
               "python": {"version": version, "state": list(internal), "gauss_next": gauss}}
    return {"tensors": tensors, "scalars": scalars}


def restore_rng(state: dict, device: torch.device) -> None:
    tensors, scalars = state["tensors"], state["scalars"]
    torch.set_rng_state(tensors["torch_cpu"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    n = scalars["numpy"]
    np.random.set_state(("MT19937", tensors["numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = scalars["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# -- tensors -----------------------------------------------------------------------------------------------------
def state_dict_to_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy (no shared storage, as safetensors requires)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, extra = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                extra[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "non_tensor_state": extra}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["non_tensor_state"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# -- checkpoints -------------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """Everything about a run's progress that is not a tensor."""

    step: int = 0  # completed iterations
    best_miou: float | None = None
    best_step: int | None = None
    last_miou: float | None = None
    elapsed_s: float = 0.0  # training wall time over all sessions
    history: list[dict] = field(default_factory=list)  # [{"step": s, "metrics": {...}}] as logged to DVCLive

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Checkpoint:
    path: Path
    progress: Progress
    model: dict[str, torch.Tensor]
    optimizer: dict
    best_model: dict[str, torch.Tensor] | None
    rng: list[dict]  # per rank


def step_dirs(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return sorted(found)


def save_checkpoint(directory: Path, fingerprint_hex: str, progress: Progress, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, best_model: dict[str, torch.Tensor] | None,
                    rng_per_rank: list[dict]) -> Path:
    """Write step_<n>/ atomically, then delete older checkpoints and leftovers of interrupted writes."""
    directory = Path(directory)
    target = directory / f"step_{progress.step:06d}"
    previous = step_dirs(directory)
    with atomic_dir(target) as tmp:
        save_file(state_dict_to_cpu(model), tmp / "model.safetensors")
        opt_tensors, opt_meta = optimizer_to_files(optimizer)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        if best_model is not None:
            _write_best(tmp / "best_model.safetensors", best_model, progress.best_step, previous)
        rng_tensors = {f"rank{r}.{k}": v for r, state in enumerate(rng_per_rank) for k, v in state["tensors"].items()}
        save_file(rng_tensors, tmp / "rng.safetensors")
        state = {"format": FORMAT, "fingerprint": fingerprint_hex, "progress": progress.to_dict(),
                 "optimizer": opt_meta, "rng": [s["scalars"] for s in rng_per_rank],
                 "has_best_model": best_model is not None}
        write_json(tmp / "state.json", state)
    for step, path in previous:
        if path != target:
            shutil.rmtree(path, ignore_errors=True)
    _remove_partial_writes(directory)
    return target


def _write_best(path: Path, weights: dict[str, torch.Tensor], best_step: int | None, previous) -> None:
    if previous:
        last = previous[-1][1]
        try:
            old = json.loads((last / "state.json").read_text())
            if old.get("has_best_model") and old["progress"].get("best_step") == best_step:
                os.link(last / "best_model.safetensors", path)  # unchanged: no second copy on disk
                return
        except (OSError, ValueError, KeyError):
            pass
    save_file(weights, path)


def _remove_partial_writes(directory: Path) -> None:
    for leftover in directory.glob(".step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def load_latest(directory: Path, fingerprint_hex: str, world_size: int) -> Checkpoint | None:
    """The newest complete checkpoint of this exact configuration, or None (stale ones are reported)."""
    for step, path in reversed(step_dirs(Path(directory))):
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError):
            log.warning("ignoring unreadable checkpoint %s", path)
            continue
        if state.get("format") != FORMAT or state.get("fingerprint") != fingerprint_hex:
            log.info("ignoring checkpoint %s: it belongs to a different configuration or inputs", path)
            return None
        if len(state["rng"]) != world_size:
            log.info("ignoring checkpoint %s: written by %d processes, now %d", path, len(state["rng"]), world_size)
            return None
        rng_tensors = load_file(path / "rng.safetensors")
        rng = [{"tensors": {k.split(".", 1)[1]: v for k, v in rng_tensors.items() if k.startswith(f"rank{r}.")},
                "scalars": state["rng"][r]} for r in range(world_size)]
        best = load_file(path / "best_model.safetensors") if state.get("has_best_model") else None
        return Checkpoint(path=path, progress=Progress(**state["progress"]), model=load_file(path / "model.safetensors"),
                          optimizer=optimizer_from_files(load_file(path / "optimizer.safetensors"), state["optimizer"]),
                          best_model=best, rng=rng)
    return None


def clear(directory: Path) -> None:
    """Remove all checkpoints (a new run starts, or a run finished)."""
    for _, path in step_dirs(Path(directory)):
        shutil.rmtree(path, ignore_errors=True)
    if Path(directory).is_dir():
        _remove_partial_writes(Path(directory))
