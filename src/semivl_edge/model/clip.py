"""CLIP through open_clip: the project's own model configs, and weights from nothing, a tag or a local file.

`pretrained` is one of
- "none": random initialisation with a fixed seed, so every stage that builds the same model name gets the
  same weights (the text embeddings and the image encoder then come from one and the same CLIP);
- an open_clip pretrained tag such as "openai": taken from the local download cache, else downloaded; without
  a network this fails within seconds with a message that suggests a local file instead;
- a path to a checkpoint file (.safetensors, or a state dict readable by torch.load(weights_only=True)).

The activation follows the weights: OpenAI's CLIPs were trained with QuickGELU, the rest with GELU. open_clip sets
QuickGELU for its `openai` tags only; for a local file `clip.quick_gelu: auto` detects OpenAI's original state
dict by the keys it carries beside the weights (input_resolution, context_length, vocab_size). A converted file
without them needs `clip.quick_gelu: true`. Built with the wrong one, every CLIP feature is off.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.model import resize_pos_embed
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model

from ..errors import PipelineError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
RANDOM_INIT_SEED = 0
PRETRAINED_NONE = "none"
LIST_MODELS_HINT = "python -c \"import open_clip; print(open_clip.list_models())\""
_NETWORK_TIMEOUT_S = 5.0
# Keys that OpenAI's original checkpoints carry beside the weights.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")

_registered = False


def register_configs() -> None:
    """Make the project's model configs (configs/*.json, e.g. `semivl-tiny`) known to open_clip (once)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def clip_model_config(model_name: str) -> dict:
    """The open_clip architecture config of a model name; PipelineError for an unknown name."""
    register_configs()
    config = open_clip.get_model_config(model_name)
    if config is None:
        own = ", ".join(sorted(path.stem for path in CONFIG_DIR.glob("*.json")))
        raise PipelineError(
            f"clip.model: unknown open_clip model {model_name!r} (this project adds {own}; "
            f"list open_clip's names with: {LIST_MODELS_HINT})"
        )
    return config


def pretrained_kind(pretrained: str, model_name: str | None = None) -> str:
    """"none", "tag" or "file": which of the three ways of choosing the CLIP weights `pretrained` means."""
    if pretrained == PRETRAINED_NONE:
        return "none"
    if model_name is not None and get_pretrained_cfg(model_name, pretrained):
        return "tag"
    looks_like_path = bool(Path(pretrained).suffix) or "/" in pretrained or os.sep in pretrained
    return "file" if looks_like_path or Path(pretrained).exists() else "tag"


def describe_pretrained(pretrained: str, model_name: str | None = None) -> str:
    """A short honest label of the weights, for metadata and reports."""
    return {"none": "none (random init)", "tag": f"open_clip tag {pretrained}", "file": f"file {pretrained}"}[
        pretrained_kind(pretrained, model_name)
    ]


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs on the root logger and warns about random init; our own messages say what happened."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _create_random(model_name: str, quick_gelu: bool) -> torch.nn.Module:
    # Fixed seed in a forked RNG: deterministic weights without touching the caller's random state.
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(RANDOM_INIT_SEED)
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    return model.eval()


def uses_quick_gelu(model_name: str, pretrained: str, setting: str | bool = "auto") -> bool:
    """clip.quick_gelu resolved: true / false as given; auto: the architecture's own choice, an open_clip tag's,
    or, for a file, whether it is OpenAI's original state dict (module doc)."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise PipelineError(f"clip.quick_gelu must be auto, true or false, got {setting!r}")
    if clip_model_config(model_name).get("quick_gelu", False):
        return True
    kind = pretrained_kind(pretrained, model_name)
    if kind == "tag":
        return bool((get_pretrained_cfg(model_name, pretrained) or {}).get("quick_gelu", False))
    if kind == "file":
        return all(key in _checkpoint_keys(pretrained) for key in _NON_WEIGHT_KEYS)
    return False


def load_clip(model_name: str, pretrained: str = PRETRAINED_NONE, quick_gelu: bool | None = None) -> torch.nn.Module:
    """An open_clip CLIP model (eval mode, fp32, CPU) with weights chosen by `pretrained` (see module doc), built
    with QuickGELU or GELU as `quick_gelu` says (None: `uses_quick_gelu` decides)."""
    clip_model_config(model_name)
    if quick_gelu is None:
        quick_gelu = uses_quick_gelu(model_name, pretrained)
    kind = pretrained_kind(pretrained, model_name)
    if kind == "none":
        return _create_random(model_name, quick_gelu=quick_gelu)
    if kind == "file":
        model = _create_random(model_name, quick_gelu=quick_gelu)
        load_checkpoint_file(model, pretrained)
        return model
    tag_cfg = get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = list_pretrained_tags_by_model(model_name)
        known = ", ".join(tags) if tags else "none (this model has no published weights)"
        raise PipelineError(
            f"clip.pretrained: {pretrained!r} is neither a file nor a known open_clip tag for {model_name} "
            f"(tags: {known}; or use none)"
        )
    path = _tag_checkpoint(model_name, pretrained, tag_cfg)
    model = _create_random(model_name, quick_gelu=quick_gelu)
    load_checkpoint_file(model, path)
    log.info("CLIP %s: loaded the %s weights from %s", model_name, pretrained, path)
    return model


# -- weights from a tag ------------------------------------------------------------------------------------
def _tag_sources(tag_cfg: dict) -> tuple[list[tuple[str, str]], str]:
    """(repo_id, filename) candidates on the Hugging Face hub and the direct URL of a pretrained tag."""
    hub = []
    if tag_cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" names the repository (default files), "org/repo/file" one file.
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        hub = [(repo_id, name) for name in names]
    return hub, tag_cfg.get("url", "")


def _cached_tag_file(tag_cfg: dict) -> str | None:
    """The tag's checkpoint if an earlier download left it in the local cache (no network)."""
    hub, _ = _tag_sources(tag_cfg)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        try_to_load_from_cache = None
    for repo_id, filename in hub:
        if try_to_load_from_cache is not None:
            cached = try_to_load_from_cache(repo_id, filename)
            if isinstance(cached, str) and os.path.isfile(cached):
                return cached
    return None


def _host_reachable(host: str, port: int = 443) -> bool:
    """A quick connectivity probe, so an offline machine fails in seconds instead of minutes of retries."""
    try:
        with socket.create_connection((host, port), timeout=_NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def _tag_checkpoint(model_name: str, tag: str, tag_cfg: dict) -> str:
    cached = _cached_tag_file(tag_cfg)
    if cached:
        return cached
    hub, url = _tag_sources(tag_cfg)
    host = "huggingface.co" if hub else urlparse(url).hostname or ""
    offline_hint = (
        f"clip.pretrained: cannot download the open_clip weights {model_name}/{tag}"
        " ({reason}); download the checkpoint on a connected machine and set clip.pretrained to its local file path"
    )
    if not host or not _host_reachable(host):
        raise PipelineError(offline_hint.format(reason=f"{host or 'no source'} is not reachable"))
    try:
        with _quiet_open_clip():
            path = download_pretrained(tag_cfg)
    except Exception as exc:  # any network / hub failure becomes one line
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise PipelineError(offline_hint.format(reason=reason)) from None
    if not path or not os.path.isfile(path):
        raise PipelineError(offline_hint.format(reason="the download produced no file"))
    return path


# -- weights from a file -----------------------------------------------------------------------------------
def _checkpoint_keys(path: str | os.PathLike) -> set[str]:
    """The names in a checkpoint file (safetensors: from its header, without reading the tensors)."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return set(handle.keys())
        except Exception:
            pass  # read_state_dict reports an unreadable file
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return set()
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return set(state) if isinstance(state, dict) else set()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, read safely (safetensors or torch.load with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise PipelineError(f"{path}: not a readable checkpoint (safetensors or a torch state dict): {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PipelineError(f"{path}: expected a state dict (name -> tensor) in the checkpoint")
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _NON_WEIGHT_KEYS}


def load_checkpoint_file(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a CLIP checkpoint into `model` (strict), resizing the image position embedding if needed."""
    state = read_state_dict(path)
    try:
        resize_pos_embed(state, model)
    except Exception:  # a wrong shape is reported below by load_state_dict
        pass
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise PipelineError(f"{path}: checkpoint does not match the CLIP architecture: {', '.join(parts)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def get_tokenizer(model_name: str):
    """open_clip's tokenizer for a model name (the CLIP BPE tokenizer ships with open_clip: no download)."""
    clip_model_config(model_name)
    with _quiet_open_clip():
        return open_clip.get_tokenizer(model_name)
