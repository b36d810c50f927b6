"""data/dataset.json: what the `dataset` stage checked, and where the VOC root is, for every later stage."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import PipelineError

MANIFEST = Path("data/dataset.json")


def read_manifest(path: str | Path = MANIFEST) -> dict:
    """The manifest, checked for the keys later stages rely on: root, num_classes, class_names."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: dataset manifest not found (run the `dataset` stage first)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    ok = (
        isinstance(manifest, dict)
        and isinstance(manifest.get("root"), str)
        and isinstance(manifest.get("num_classes"), int)
        and isinstance(manifest.get("class_names"), list)
        and len(manifest["class_names"]) == manifest["num_classes"]
    )
    if not ok:
        raise PipelineError(f"{path}: manifest lacks a valid root, num_classes or class_names (re-run the `dataset` stage)")
    return manifest
