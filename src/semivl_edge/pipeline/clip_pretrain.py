"""Stage `clip_pretrain`: the embedded default's CLIP, trained offline on synthetic image-caption pairs.

SemiVL needs a CLIP whose image and text towers already agree (the encoder's initialisation, the text embeddings
of the VLG decoder, dense guidance). Public weights cannot be downloaded offline, so when `clip.pretrained` names
this stage's output (models/clip/clip.safetensors, the default) the stage trains `clip.model` contrastively on
captioned synthetic views (semivl_edge.data.captions: their own image stream, no pixel labels) and writes
- models/clip/clip.safetensors  the whole open_clip CLIP (image and text towers), loaded like any checkpoint file
- models/clip/meta.json         what was trained on what, and how long it took
- reports/clip_pretrain/loss.csv the loss curves (DVC plots), and reports/metrics/clip_pretrain.json
With any other `clip.pretrained` (none, an open_clip tag such as openai, your own file) nothing is trained: the
stage writes meta.json saying so, an empty loss.csv, and metrics with `trained: false`.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_dir, atomic_path, write_metrics
from ..params import Params

if TYPE_CHECKING:
    from ..data.captions import CaptionConfig
    from ..pretrain.contrastive import PretrainConfig

log = logging.getLogger(__name__)

OUTPUT_DIR = Path("models/clip")
WEIGHTS_FILE = "clip.safetensors"
META_FILE = "meta.json"
CURVES = Path("reports/clip_pretrain/loss.csv")
CURVE_COLUMNS = ("step", "loss", "loss_global", "loss_dense")


def is_stage_output(pretrained: str, output_dir: Path = OUTPUT_DIR) -> bool:
    """Whether clip.pretrained names the checkpoint this stage writes (none or a tag never resolves to it)."""
    return os.path.abspath(pretrained) == os.path.abspath(output_dir / WEIGHTS_FILE)


def _configs(params: Params, view_size: int) -> tuple[PretrainConfig, CaptionConfig, str]:
    from ..data.captions import CaptionConfig
    from ..pretrain.contrastive import PretrainConfig

    pretrain_cfg = PretrainConfig(
        steps=params.get_int("clip_pretrain.steps", min=1),
        batch_size=params.get_int("clip_pretrain.batch_size", min=2),
        lr=params.get_float("clip_pretrain.lr", above=0.0),
        weight_decay=params.get_float("clip_pretrain.weight_decay", min=0.0),
        warmup_steps=params.get_int("clip_pretrain.warmup_steps", min=0),
        seed=params.get_int("clip_pretrain.seed", min=0),
    )
    caption_cfg = CaptionConfig(
        images=params.get_int("clip_pretrain.images", min=1),
        view_size=view_size,
        long_side=params.get_int("data.synthetic.long_side", min=16),
        close_up=params.get_float("clip_pretrain.close_up", min=0.0, max=1.0),
        min_fraction=params.get_float("clip_pretrain.min_fraction", min=0.0, max=1.0),
        seed=pretrain_cfg.seed,
    )
    return pretrain_cfg, caption_cfg, params.get_str("clip_pretrain.device", choices=("auto", "cpu", "cuda"))


def write_curves(rows: list[dict]) -> None:
    with atomic_path(CURVES) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def run(params: Params, output_dir: str | Path = OUTPUT_DIR) -> None:
    output_dir = Path(output_dir)
    pretrained = params.get_str("clip.pretrained")
    if not is_stage_output(pretrained, output_dir):
        log.info("clip.pretrained is %r, not this stage's %s: nothing to train", pretrained, output_dir / WEIGHTS_FILE)
        with atomic_dir(output_dir) as tmp:
            (tmp / META_FILE).write_text(json.dumps({"trained": False, "clip_pretrained": pretrained}, indent=2) + "\n")
        write_curves([])  # DVC expects every declared output
        write_metrics("clip_pretrain", {"trained": False})
        return
    train_clip(params, output_dir)


def train_clip(params: Params, output_dir: Path) -> None:
    # Imported here: the note above (every run with a shipped, downloaded or random CLIP) needs neither torch nor
    # open_clip, and importing them is most of that run's time.
    from safetensors.torch import save_file

    from ..basics import IMAGENET_MEAN, IMAGENET_STD, resolve_device
    from ..data.captions import CaptionedViews
    from ..data.classes import load_classes
    from ..data.progress import progress_bar
    from ..data.synthetic import STREAM_WEB
    from ..model.clip import clip_model_config, get_tokenizer, load_clip
    from ..pretrain.contrastive import pretrain

    model_name = params.get_str("clip.model")
    config = clip_model_config(model_name)
    view_size = int(config["vision_cfg"]["image_size"])
    pretrain_cfg, caption_cfg, device_preference = _configs(params, view_size)
    classes = load_classes(params.get_str("classes.file"))
    device = resolve_device(device_preference, param="clip_pretrain.device")
    log.info("rendering %d captioned pictures (synthetic stream %d, %d px views) for %s", caption_cfg.images,
             STREAM_WEB, view_size, model_name)
    views = CaptionedViews(classes, caption_cfg, workers=min(2, os.cpu_count() or 1), progress=progress_bar("pictures"))
    clip = load_clip(model_name, "none")
    log.info("contrastive pretraining of %s from random init on %s: %d steps of %d views", model_name, device,
             pretrain_cfg.steps, pretrain_cfg.batch_size)

    curves: list[dict] = []
    summary = pretrain(clip, get_tokenizer(model_name), views, pretrain_cfg, IMAGENET_MEAN, IMAGENET_STD, device,
                       on_step=lambda step, values: curves.append({"step": step, **values}))

    meta = {
        "trained": True,
        "clip_model": model_name,
        "data": "synthetic captioned views (semivl_edge.data.captions), no pixel labels",
        "classes_file": params.get_str("classes.file"),
        "device": str(device),
        **vars(pretrain_cfg),
        **{f"captions_{k}": v for k, v in vars(caption_cfg).items()},
        **summary,
    }
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in clip.state_dict().items()}
    with atomic_dir(output_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    write_curves(curves)
    write_metrics("clip_pretrain", {"trained": True, "device": str(device), **summary})
    log.info("CLIP pretrained: final loss %.3f, %.0f s (%.2f s/step) -> %s", summary["final_loss"],
             summary["wall_time_s"], summary["seconds_per_step"], output_dir / WEIGHTS_FILE)
