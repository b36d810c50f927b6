"""`semivl-edge preset`: write a named setting into params.yaml, comments kept.

    uv run semivl-edge preset voc-paper     # SemiVL's VOC setting (official code's values)
    uv run semivl-edge preset embedded      # back to the embedded default
    uv run semivl-edge preset --list | --show NAME

A preset only changes values in params.yaml, so `dvc params diff` shows exactly what it changed and
`dvc exp run -S ...` works on top of it. `voc-paper` leaves three values to you, and says so: `data.root` (your
VOCdevkit/VOC2012), `clip.pretrained` (the OpenAI ViT-B-16 weights, an open_clip tag or a local file) and
`split.labeled_file` (the official labeled id list, e.g. UniMatch's splits/pascal/92/labeled.txt); for the
ablation's UniMatch(ViT) baseline row, `model.imagenet_weights` (torchvision's vit_b_16 ImageNet state dict).
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

from ..atomic import atomic_path
from ..errors import PipelineError
from ..params import PARAMETERS

# SemiVL on Pascal VOC as the official code (google-research/semivl, mmseg configs) runs it.
VOC_PAPER = {
    "data.source": "voc",
    "clip.model": "ViT-B-16",
    "classes.definitions": "names",           # the decoder compares with the class names
    "classes.guidance": "concepts",           # the dense guidance labels pixels by the concept lists
    "classes.templates": ["a photo of a {}"],
    "model.encoder": "clip",
    "model.clip_init": True,
    "model.spatial_finetune": True,
    "model.decoder": "vlg",
    "model.decoder_dim": 128,
    "model.skip_blocks": [0, 4],
    "model.align_corners": True,
    "split.labeled": 92,
    "split.cover_classes": False,             # the protocol's draw is uniformly random (or the official list)
    "train.method": "semivl",
    "train.iterations": "80 epochs",          # over the unlabeled set: 104,880 at 92 labels, batch 8
    "train.batch_size": 8,
    "train.crop_size": 512,
    "train.base_size": 512,
    "train.amp": "none",                      # fp32, as the official runs
    "train.workers": 4,
    "train.eval_every": 2000,
    "train.checkpoint_every": 2000,
    "train.optim.lr": 1.0e-4,
    "train.optim.weight_decay": 0.01,
    "train.optim.encoder_lr_mult": 0.01,
    "train.optim.decoder_lr_mult": 10.0,
    "train.optim.decoder_norm_decay": True,
    "eval.short_side": 512,
    "eval.crop_size": 512,
    "eval.stride": 426,
    "mobile.input_size": 512,
    "distill.init": "none",                   # the shipped init speaks semivl-tiny's 128-d space, not ViT-B/16's
}
# The same keys at the embedded default (tests/test_preset.py holds them equal to the committed params.yaml).
EMBEDDED = {
    "data.source": "synthetic",
    "clip.model": "semivl-tiny",
    "classes.definitions": "guidelines",
    "classes.guidance": "concepts",
    "classes.templates": ["a photo of a {}."],
    "model.encoder": "clip",
    "model.clip_init": True,
    "model.spatial_finetune": True,
    "model.decoder": "vlg",
    "model.decoder_dim": 32,
    "model.skip_blocks": [0, 2],
    "model.align_corners": False,
    "split.labeled": 92,
    "split.cover_classes": True,
    "train.method": "semivl",
    "train.iterations": 300,
    "train.batch_size": 8,
    "train.crop_size": 128,
    "train.base_size": 128,
    "train.amp": "bf16",
    "train.workers": 0,
    "train.eval_every": 100,
    "train.checkpoint_every": 50,
    "train.optim.lr": 1.0e-4,
    "train.optim.weight_decay": 0.01,
    "train.optim.encoder_lr_mult": 1.0,
    "train.optim.decoder_lr_mult": 10.0,
    "train.optim.decoder_norm_decay": False,
    "eval.short_side": 128,
    "eval.crop_size": 128,
    "eval.stride": 106,
    "mobile.input_size": 128,
    "distill.init": "assets/semivl-tiny-student.safetensors",
}
PRESETS = {
    "voc-paper": ("SemiVL's Pascal VOC setting (ViT-B/16, 512 crops, 80 epochs, fp32)", VOC_PAPER),
    "embedded": ("the embedded default (semivl-tiny on the synthetic set, minutes on a CPU)", EMBEDDED),
}
# What a preset cannot know: (key, what to put there), told to the user after `voc-paper`.
LEFT_TO_YOU = {
    "voc-paper": [
        ("data.root", "your .../VOCdevkit/VOC2012 (with SegmentationClassAug for train_aug)"),
        ("clip.pretrained", "openai (open_clip downloads it) or a local OpenAI ViT-B-16 weights file"),
        ("split.labeled_file", "the official labeled list, e.g. UniMatch's splits/pascal/92/labeled.txt"),
        ("model.imagenet_weights", "optional: torchvision vit_b_16 ImageNet weights, for the UniMatch(ViT) baseline row"),
        ("distill.imagenet_weights", "optional: torchvision mobilenet_v3_large ImageNet weights, for the student"),
        ("distill.iterations", "the student's schedule: the default 80 suits the embedded init; from ImageNet weights on "
                               "VOC plan thousands (MGD: 34 epochs of SGD)"),
    ],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", choices=sorted(PRESETS), help="the preset to write into params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the file to change (default: params.yaml)")
    parser.add_argument("--list", action="store_true", help="list the presets")
    parser.add_argument("--show", metavar="NAME", choices=sorted(PRESETS), help="print a preset's values")


def _yaml():
    from ruamel.yaml import YAML  # round-trip: comments and layout survive (DVC depends on it too)

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _flow(value):
    """Lists as params.yaml writes them, [a, b] on one line."""
    if not isinstance(value, list):
        return value
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(value)
    seq.fa.set_flow_style()
    return seq


def apply_preset(text: str, values: dict) -> tuple[str, list[str]]:
    """params.yaml text with `values` written in (comments kept); and the keys whose value changed."""
    yaml = _yaml()
    data = yaml.load(text)
    changed = []
    for key, value in values.items():
        if key not in PARAMETERS:
            raise PipelineError(f"preset key {key} is not a parameter")
        *sections, name = key.split(".")
        node = data
        for section in sections:
            if section not in node:
                raise PipelineError(f"params.yaml has no section {section!r} (for {key})")
            node = node[section]
        if name not in node:
            raise PipelineError(f"params.yaml has no {key}")
        old = node[name]
        if old != value or isinstance(old, bool) != isinstance(value, bool):
            changed.append(key)
            node[name] = _flow(value)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), changed


def run(args: argparse.Namespace) -> None:
    if args.list:
        for name, (description, _) in PRESETS.items():
            print(f"{name:10s} {description}")
        return
    if args.show:
        for key, value in PRESETS[args.show][1].items():
            print(f"{key}: {value}")
        return
    if args.name is None:
        raise PipelineError("preset: name a preset (semivl-edge preset --list shows them)")
    if not args.params.is_file():
        raise PipelineError(f"{args.params}: not found (run from the project's root or pass --params)")
    text, changed = apply_preset(args.params.read_text(), PRESETS[args.name][1])
    with atomic_path(args.params) as tmp:
        tmp.write_text(text)
    print(f"{args.params}: preset {args.name}, {len(changed)} values changed"
          + (": " + ", ".join(changed) if changed else ""))
    for key, what in LEFT_TO_YOU.get(args.name, []):
        print(f"  set {key} yourself: {what}")
    print("`dvc params diff` shows the change; `dvc repro` runs it.")
