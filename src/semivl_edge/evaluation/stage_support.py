"""What the evaluation stages share: the val set, file sizes, the windowing and latency settings."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..data.classes import load_classes
from ..data.manifest import read_manifest
from ..data.voc import VOCLayout, read_ids
from ..errors import PipelineError
from ..params import Params
from .inference import InferenceConfig

log = logging.getLogger(__name__)

DATASET_MANIFEST = Path("data/dataset.json")  # written by the dataset stage
VAL_LIST = Path("data/splits/val.txt")


@dataclass(frozen=True)
class EvalData:
    layout: VOCLayout
    ids: list[str]
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_eval_data(params: Params, manifest_path: Path = DATASET_MANIFEST, val_list: Path = VAL_LIST) -> EvalData:
    """The val ids, the VOC root they live in, the class names and the palette for the prediction PNGs."""
    manifest = read_manifest(manifest_path)
    class_names = [str(name) for name in manifest["class_names"]]
    classes = load_classes(params.get_str("classes.file"))
    if len(classes.palette) < len(class_names):
        raise PipelineError(
            f"{classes.source}: {len(classes.palette)} palette colours for the dataset's {len(class_names)} classes"
        )
    return EvalData(
        layout=VOCLayout(manifest["root"]),
        ids=read_ids(val_list),
        class_names=class_names,
        palette=list(classes.palette),
        source=str(manifest.get("source", "unknown")),
    )


def size_mb(path: str | Path) -> float:
    """File size in MB (10^6 bytes)."""
    return round(Path(path).stat().st_size / 1e6, 3)


def windowing_metrics(cfg: InferenceConfig) -> dict:
    """The inference geometry, for the metrics files (mode is a label)."""
    return {"mode": cfg.mode, "short_side": cfg.short_side, "window": cfg.crop_size, "stride": cfg.stride}


def latency_settings(params: Params) -> tuple[int, int, int]:
    """eval.warmup, eval.repeats, eval.qualitative."""
    return (
        params.get_int("eval.warmup", min=0),
        params.get_int("eval.repeats", min=1),
        params.get_int("eval.qualitative", min=0),
    )
