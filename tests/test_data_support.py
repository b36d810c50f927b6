"""Helpers shared by the tests/test_data_*.py files: a small hand-built VOC root and stage parameters."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from semivl_edge.data.classes import load_classes
from semivl_edge.data.synthetic import voc_palette
from semivl_edge.params import Params

REPO = Path(__file__).resolve().parents[1]
CLASS_FILE = REPO / "data" / "classes" / "voc.yaml"

# id -> (width, height): landscape and portrait images, as in VOC.
TRAIN = {"2007_000032": (40, 30), "2007_000039": (30, 40), "2008_000002": (48, 32)}
VAL = {"2007_000033": (40, 30), "2009_000001": (32, 48)}
AUG_ONLY = {"2010_000005": (40, 30)}  # in train_aug only, with an SBD-style grayscale mask


def make_mask(width: int, height: int, value: int) -> np.ndarray:
    """Background with one object of class `value`, a 255 outline and a corner of class 15 (person)."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = value
    mask[height // 4 - 1, width // 4: 3 * width // 4] = 255
    mask[-3:, -3:] = 15
    return mask


def write_palette_mask(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask)
    image.putpalette(voc_palette(load_classes(CLASS_FILE)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_image(path: Path, width: int, height: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def build_voc_root(root: Path, with_train_aug: bool = True) -> Path:
    """A complete, valid VOC-format root with palette (train, val) and grayscale (aug) masks."""
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for n, (image_id, (w, h)) in enumerate({**TRAIN, **VAL, **AUG_ONLY}.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", w, h, n)
        mask = make_mask(w, h, 1 + n)
        if image_id in AUG_ONLY:
            (root / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(mask).save(root / "SegmentationClassAug" / f"{image_id}.png")
        else:
            write_palette_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in TRAIN))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in VAL))
    if with_train_aug:
        (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in {**TRAIN, **AUG_ONLY}))
    return root


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return build_voc_root(tmp_path / "VOCdevkit" / "VOC2012")


def stage_params(**overrides) -> Params:
    """The repository's params.yaml at tiny sizes, with dotted-key overrides ("split.labeled": 3)."""
    data = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    data["data"]["synthetic"].update({"train": 12, "train_aug": 24, "val": 6, "long_side": 96})
    data["split"]["labeled"] = 4
    data["classes"]["file"] = str(CLASS_FILE)
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return Params(data)


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch) -> Path:
    """An empty working directory for a stage (stages use paths relative to the project root)."""
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
