"""Save and load a trained segmenter: <stem>.safetensors (weights + "text_embeddings") and <stem>.json (config).

Two kinds share the format: the SemiVL segmenter (ModelConfig) and the distilled student (StudentConfig); the
metadata's "format" says which, so every stage loads either with `load_model`.

`dir_or_stem` is a directory (files `model.safetensors` / `model.json` inside it, e.g. "models"), or a stem
("models/model", also accepted with a .safetensors or .json suffix). The config is also stored in the
safetensors metadata, so the weights file alone is enough to rebuild the model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path, write_json
from ..errors import PipelineError, first_line
from torch import nn

from .config import ModelConfig
from .segmenter import build_model
from .student import FORMAT as STUDENT_FORMAT
from .student import StudentConfig, build_student

TEXT_KEY = "text_embeddings"
FORMAT = "semivl-edge-model"
FORMAT_VERSION = 1
# format -> (its config class, its builder)
KINDS = {FORMAT: (ModelConfig, build_model), STUDENT_FORMAT: (StudentConfig, build_student)}
AnyConfig = ModelConfig | StudentConfig


def format_of(cfg: AnyConfig) -> str:
    return STUDENT_FORMAT if isinstance(cfg, StudentConfig) else FORMAT


def model_paths(dir_or_stem: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, config) paths for a directory or a stem."""
    path = Path(dir_or_stem)
    if path.suffix in (".safetensors", ".json"):
        stem = path.with_suffix("")
    elif path.is_dir():
        stem = path / "model"
    else:
        stem = path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_model(
    dir_or_stem: str | os.PathLike, model: nn.Module, cfg: AnyConfig, text_embeddings: torch.Tensor | None
) -> tuple[Path, Path]:
    """Write the weights (+ the class text embeddings the model was trained with) and the config, atomically."""
    weights_path, config_path = model_paths(dir_or_stem)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    if TEXT_KEY in tensors:  # pragma: no cover - module names never start with it
        raise ValueError(f"state dict already has a {TEXT_KEY!r} entry")
    if text_embeddings is not None:
        tensors[TEXT_KEY] = text_embeddings.detach().to("cpu", torch.float32).contiguous()
    config = cfg.to_dict()
    kind = format_of(cfg)
    metadata = {"format": kind, "version": str(FORMAT_VERSION), "config": json.dumps(config)}
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_json(
        config_path,
        {
            "format": kind,
            "version": FORMAT_VERSION,
            "weights": weights_path.name,
            "num_text_embeddings": 0 if text_embeddings is None else int(text_embeddings.shape[0]),
            "config": config,
        },
    )
    return weights_path, config_path


def _read_config(weights_path: Path, config_path: Path, metadata: dict | None) -> AnyConfig:
    """The config stored in the weights' metadata; a model.json beside them must agree with it."""
    kind = (metadata or {}).get("format", FORMAT)
    if kind not in KINDS:
        raise PipelineError(f"{weights_path}: unknown model format {kind!r} (expected {' or '.join(KINDS)})")
    embedded = json.loads(metadata["config"]) if metadata and "config" in metadata else None
    beside = None
    if config_path.is_file():
        try:
            beside = json.loads(config_path.read_text())["config"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PipelineError(f"{config_path}: not a model config written by save_model") from None
    if embedded is None and beside is None:
        raise PipelineError(f"{weights_path}: no model config (metadata) and {config_path} is missing")
    if embedded is not None and beside is not None and embedded != beside:
        keys = sorted(k for k in set(embedded) | set(beside) if embedded.get(k) != beside.get(k))
        raise PipelineError(f"{config_path}: does not match the config stored in {weights_path.name} "
                            f"(differs in {', '.join(keys)}); write both with save_model")
    try:
        return KINDS[kind][0].from_dict(embedded if embedded is not None else beside)
    except TypeError as exc:
        raise PipelineError(f"{weights_path}: invalid model config ({exc})") from None


def load_model(path: str | os.PathLike) -> tuple[nn.Module, AnyConfig, torch.Tensor | None]:
    """(model in eval mode, its config, its text embeddings or None) from what save_model wrote."""
    weights_path, config_path = model_paths(path)
    if not weights_path.is_file():
        raise PipelineError(f"{weights_path}: model weights not found (run the stage that writes it first)")
    if weights_path.stat().st_size == 0:
        raise PipelineError(f"{weights_path}: model weights file is empty")
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:
        raise PipelineError(f"{weights_path}: not a readable safetensors file ({str(exc)[:120]})") from None
    cfg = _read_config(weights_path, config_path, metadata)
    text_embeddings = tensors.pop(TEXT_KEY, None)
    try:
        model = KINDS[format_of(cfg)][1](cfg, load_pretrained=False)  # the file has all weights: nothing to download
    except PipelineError:
        raise
    except Exception as exc:  # a config that parses but cannot build, e.g. an unknown CLIP name
        raise PipelineError(f"{weights_path}: cannot build the model of its config ({first_line(exc)})") from None
    try:
        result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())[:200]
        raise PipelineError(f"{weights_path}: weights do not match the model config ({detail})") from None
    if result.missing_keys or result.unexpected_keys:
        keys = result.missing_keys or result.unexpected_keys
        problem = "missing" if result.missing_keys else "unexpected"
        raise PipelineError(f"{weights_path}: weights do not match the model config ({len(keys)} {problem}, "
                            f"e.g. {keys[0]})")
    return model.eval(), cfg, text_embeddings
