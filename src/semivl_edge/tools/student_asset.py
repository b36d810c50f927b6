"""`semivl-edge student-asset`: make the embedded default's student init (`distill.init`), with provenance.

A student on a phone starts from ImageNet weights; offline there are none, and from a random init the `distill`
stage needs many hundred steps to reach the teacher. So the student is pretrained once, as the embedded CLIP was
(semivl_edge.distill.pretrain: its pixel embeddings learn the frozen CLIP's dense map on the captioned synthetic
pictures, no labels, no train or val image), and the result is versioned in the repository as
`assets/semivl-tiny-student.safetensors` (float16), its provenance beside it (`.json`: the command, the
settings, final loss, time, sha256). To remake it (about 12 minutes on 2 CPU cores):

    uv run semivl-edge student-asset

It reads params.yaml for the CLIP (clip.model, clip.pretrained: the teacher's initialisation), the student's
width (distill.head_channels), the view size (train.crop_size) and the captioned pictures (clip_pretrain.*).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from ..atomic import atomic_path, write_json
from ..basics import resolve_device
from ..data.captions import CaptionConfig, CaptionedViews
from ..data.classes import load_classes
from ..data.progress import progress_bar
from ..distill.pretrain import StudentPretrainConfig, pretrain_student
from ..errors import PipelineError
from ..hashing import file_sha256
from ..model.config import model_config_from_params
from ..model.segmenter import build_model
from ..model.student import StudentConfig, build_student, load_student_init, save_student_init
from ..params import Params
from .clip_asset import MAX_MB, _git_commit

log = logging.getLogger(__name__)

ASSET = Path("assets/semivl-tiny-student.safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=1200, help="pretraining steps (default 1200)")
    parser.add_argument("--batch-size", type=int, default=16, help="views per step (default 16)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate, poly schedule (default 3e-3)")
    parser.add_argument("--images", type=int, default=2000, help="captioned pictures rendered (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default params.yaml)")
    parser.add_argument("--asset", type=Path, default=ASSET, help=f"where the asset goes (default {ASSET})")


def run(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "images"):
        if getattr(args, name) < 1:
            raise PipelineError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    params = Params.load(args.params)
    classes = load_classes(params.get_str("classes.file"))
    model_cfg = model_config_from_params(params, classes.names)
    if model_cfg.encoder != "clip" or not model_cfg.clip_init:
        raise PipelineError(f"{args.params}: the student learns a CLIP's dense map (model.encoder clip, model.clip_init true)")
    device = resolve_device(args.device, param="--device")
    clip = build_model(model_cfg).to(device).eval().requires_grad_(False)
    student_cfg = StudentConfig(embed_dim=int(model_cfg.embed_dim), num_classes=classes.num_classes,
                                class_names=list(classes.names), head_channels=params.get_int("distill.head_channels", min=8),
                                pixel_mean=model_cfg.pixel_mean, pixel_std=model_cfg.pixel_std)
    torch.manual_seed(args.seed)
    student = build_student(student_cfg)
    captions = CaptionConfig(images=args.images, view_size=params.get_int("train.crop_size", min=16),
                             long_side=params.get_int("data.synthetic.long_side", min=16),
                             close_up=params.get_float("clip_pretrain.close_up", min=0.0, max=1.0),
                             min_fraction=params.get_float("clip_pretrain.min_fraction", min=0.0, max=1.0),
                             seed=args.seed)
    log.info("rendering %d captioned pictures (%d px views)", captions.images, captions.view_size)
    views = CaptionedViews(classes, captions, workers=min(2, os.cpu_count() or 1), progress=progress_bar("pictures"))
    cfg = StudentPretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=1e-4,
                                seed=args.seed)
    log.info("pretraining the student on %s's dense map (%s): %d steps of %d views on %s", model_cfg.clip_model,
             model_cfg.clip_pretrained, cfg.steps, cfg.batch_size, device)
    summary = pretrain_student(student, lambda images: clip.encode(images)[2], views, cfg, device)

    # the settings that made it, as a command (whatever the command line or caller was)
    command = (f"semivl-edge student-asset --steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} "
               f"--images {args.images} --seed {args.seed} --params {args.params}")
    with atomic_path(args.asset) as tmp:
        save_student_init(tmp, student.cpu(), provenance=command)
        size_mb = tmp.stat().st_size / 1e6
        if size_mb > MAX_MB:
            raise PipelineError(f"{args.asset}: {size_mb:.1f} MB, more than the {MAX_MB:.0f} MB an asset in git may take")
        load_student_init(build_student(student_cfg), str(tmp))  # strict round trip before it replaces anything
    write_json(args.asset.with_suffix(".json"), {
        "asset": args.asset.name,
        "sha256": file_sha256(args.asset),
        "size_bytes": args.asset.stat().st_size,
        "storage": "float16 (the pretrained float32 weights rounded; loaded as float32)",
        "student": {"backbone": student_cfg.backbone, "embed_dim": student_cfg.embed_dim,
                    "head_channels": student_cfg.head_channels},
        "target": {"clip_model": model_cfg.clip_model, "clip_pretrained": model_cfg.clip_pretrained,
                   "map": "the CLIP-initialised encoder's value-path dense map (SemiVLSegmenter.encode)"},
        "data": "captioned synthetic views (semivl_edge.data.captions), captions and labels unused",
        "views": {"images": captions.images, "view_size": captions.view_size, "long_side": captions.long_side,
                  "close_up": captions.close_up, "seed": captions.seed},
        "pretraining": {"batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                        "device": str(device), **summary},
        "made_by": command,
        "git_commit": _git_commit(),
    })
    print(f"{args.asset}: {size_mb:.2f} MB, final loss {summary['final_loss']} after {summary['steps']} steps "
          f"({summary['wall_time_s']:.0f} s), provenance in {args.asset.with_suffix('.json')}")
