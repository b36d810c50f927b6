"""`semivl-edge clip-asset`: make the embedded default's CLIP asset from a `clip_pretrain` output.

The embedded default starts from a CLIP (`semivl-tiny`) that this repository's `clip_pretrain` stage trained on
synthetic captioned pictures. Pretraining takes long on a CPU, so the result is versioned in the repository as
an asset (`assets/semivl-tiny-clip.safetensors`, the default `clip.pretrained`), with its provenance beside it
(`.json`: the command, the stage's parameters, final loss, time, sha256). To remake it:

    uv run dvc exp run -S clip.pretrained=models/clip/clip.safetensors clip_pretrain   # trains (tens of minutes)
    uv run semivl-edge clip-asset                                                       # copies it, with provenance

The weights are stored as float16, half the size of the stage's float32 file (the text tower's token embedding
alone is 25 MB in float32), and are loaded back as float32. That rounding is the only difference from the stage's
output; the pipeline's results on the asset are the ones the README reports.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, write_json
from ..errors import PipelineError
from ..hashing import file_sha256
from ..model.clip import load_clip

ASSET = Path("assets/semivl-tiny-clip.safetensors")
SOURCE = Path("models/clip")  # what the clip_pretrain stage writes: clip.safetensors + meta.json
MAX_MB = 20.0


def provenance_path(asset: Path) -> Path:
    return asset.with_suffix(".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"clip_pretrain output folder (default: {SOURCE})")
    parser.add_argument("--asset", type=Path, default=ASSET, help=f"where the asset goes (default: {ASSET})")


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def run(args: argparse.Namespace) -> None:
    weights, meta_path = args.source / "clip.safetensors", args.source / "meta.json"
    if not meta_path.is_file():
        raise PipelineError(f"{meta_path}: not found (run the clip_pretrain stage with clip.pretrained: {weights})")
    meta = json.loads(meta_path.read_text())
    if not meta.get("trained") or not weights.is_file():
        raise PipelineError(f"{meta_path}: the stage trained nothing (set clip.pretrained: {weights} and rerun it)")
    model_name = meta["clip_model"]
    load_clip(model_name, str(weights))  # strict: every key and shape of the architecture
    half = {name: t.to(torch.float16) if t.is_floating_point() else t for name, t in load_file(str(weights)).items()}
    with atomic_path(args.asset) as tmp:
        save_file(half, str(tmp))
        size_mb = tmp.stat().st_size / 1e6
        if size_mb > MAX_MB:
            raise PipelineError(f"{weights}: {size_mb:.1f} MB in float16, more than the {MAX_MB:.0f} MB an asset in "
                                "git may take")
    load_clip(model_name, str(args.asset))
    write_json(provenance_path(args.asset), {
        "asset": args.asset.name,
        "clip_model": model_name,
        "sha256": file_sha256(args.asset),
        "size_bytes": args.asset.stat().st_size,
        "storage": "float16 (the stage's float32 weights rounded; loaded as float32)",
        "source_sha256": file_sha256(weights),
        "made_by": f"python stages/clip_pretrain.py with clip.pretrained: {weights} (dvc repro clip_pretrain), "
                   "then semivl-edge clip-asset",
        "git_commit": _git_commit(),
        "clip_pretrain": meta,
    })
    print(f"{args.asset}: {model_name}, {size_mb:.2f} MB, final contrastive loss {meta.get('final_loss')}, "
          f"provenance in {provenance_path(args.asset)}")
