"""Shared test support: the committed parameters with changes, one fake Pascal VOC builder, one thread fixture,
and the tiny DVC project that the end-to-end tests share (reproduced once per session, copied before changing)."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASS_FILE = REPO / "data" / "classes" / "voc.yaml"
# What a clone of the project holds that the pipeline needs (generated outputs are not copied).
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "src", "data/classes", "assets", ".dvcignore"]

# Settings small enough for the whole pipeline on 2 CPU cores in about four minutes (most of it lowering the .pte
# files, which costs by graph size, not input size), large enough for every stage to do real work: the shared tiny
# project's params.yaml.
TINY_PARAMS = {
    "data": {"synthetic": {"train": 12, "train_aug": 24, "val": 6, "long_side": 96}},
    "split": {"labeled": 4},
    "clip": {"pretrained": "models/clip/clip.safetensors"},  # the tiny project pretrains its own CLIP (2 steps)
    "clip_pretrain": {"steps": 2, "batch_size": 4, "images": 6, "warmup_steps": 1},
    "model": {"decoder_dim": 16},
    "train": {"iterations": 6, "batch_size": 2, "crop_size": 32, "base_size": 32, "eval_every": 3,
              "checkpoint_every": 2, "workers": 0, "device": "cpu"},
    "distill": {"iterations": 3, "batch_size": 2, "device": "cpu"},
    "eval": {"short_side": 32, "crop_size": 32, "stride": 32, "repeats": 2, "warmup": 1, "qualitative": 2},
    "mobile": {"input_size": 32, "calibration_images": 2, "repeats": 2, "warmup": 1, "device": "host"},
}


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


class PipelineProject:
    """A git + DVC project in a temporary directory with the repository's stages and code."""

    def __init__(self, root: Path):
        self.root = root

    def set_params(self, overrides: dict) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump(deep_update(params, overrides), sort_keys=False))

    def environment(self) -> dict:
        """The test's Python environment first on PATH, two OpenMP threads."""
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", "2")
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in the project."""
        result = subprocess.run(args, cwd=self.root, env=self.environment(), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)


    def copy(self, destination: Path) -> "PipelineProject":
        """An independent copy (git, DVC cache and outputs included) to change without touching this one."""
        shutil.copytree(self.root, destination, symlinks=True)
        return PipelineProject(destination)


def new_project(root: Path) -> PipelineProject:
    """A git + DVC project with the repository's stages and code and the tiny parameters, nothing run yet."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, root / name)
    project = PipelineProject(root)
    project.run("git", "init", "-q")
    project.run("git", "config", "user.email", "test@example.com")
    project.run("git", "config", "user.name", "test")
    project.dvc("init", "-q")
    project.dvc("config", "core.analytics", "false")
    project.set_params(TINY_PARAMS)
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "tiny pipeline")
    return project


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory) -> PipelineProject:
    """The tiny project after one whole `dvc repro`. Read it only; change a copy (`copied_project`)."""
    project = new_project(tmp_path_factory.mktemp("reproduced") / "project")
    project.dvc("repro")
    return project


@pytest.fixture
def copied_project(reproduced_project, tmp_path) -> PipelineProject:
    """A private copy of the reproduced tiny project."""
    return reproduced_project.copy(tmp_path / "project")


# -- a fake Pascal VOC root ------------------------------------------------------------------------------------
def voc_palette_bytes(colours) -> list[int]:
    """A full 256-entry palette: the given colours, then white (so index 255 survives PIL's palette handling)."""
    flat = [v for rgb in colours for v in rgb]
    return flat + [255] * (768 - len(flat))


def write_voc_root(root: Path, sizes: dict[str, tuple[int, int]], image: Callable[[int, int, int], np.ndarray],
                   mask: Callable[[int, int, int], np.ndarray] | None = None, *, lists: dict | None = None,
                   gray_masks: tuple[str, ...] = (), palette=None, lossless: bool = False) -> Path:
    """A VOC-layout root: `sizes` id -> (width, height); `image(index, h, w)` gives the RGB pixels and `mask(index,
    h, w)` the class map (palette PNG in SegmentationClass, or grayscale in SegmentationClassAug for the ids in
    `gray_masks`); `lists` name -> ids for ImageSets/Segmentation/<name>.txt. `lossless` stores PNG bytes under
    the .jpg name (PIL reads by content) for tests that decode pixel values exactly."""
    if palette is None:
        palette = yaml.safe_load(CLASS_FILE.read_text())["palette"]
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for index, (image_id, (width, height)) in enumerate(sizes.items()):
        pixels = Image.fromarray(image(index, height, width))
        pixels.save(root / "JPEGImages" / f"{image_id}.jpg", **({"format": "PNG"} if lossless else {"quality": 90}))
        if mask is None:
            continue
        labels = mask(index, height, width)
        if image_id in gray_masks:
            (root / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(labels).save(root / "SegmentationClassAug" / f"{image_id}.png")
        else:
            (root / "SegmentationClass").mkdir(exist_ok=True)
            png = Image.fromarray(labels)
            png.putpalette(voc_palette_bytes(palette))
            png.save(root / "SegmentationClass" / f"{image_id}.png")
    for name, ids in (lists or {}).items():
        path = root / "ImageSets" / "Segmentation" / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in ids))
    return root


def noise_image(index: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)


def oracle_voc(root: Path, sizes: dict[str, tuple[int, int]], num_classes: int, palette, seed: int = 0) -> list[str]:
    """Random masks (one ignore row) and images whose grey level is 40 * class: a predictor can read the class
    back exactly (`oracle_logits`). Returns the ids."""
    rng = np.random.default_rng(seed)
    masks = {}

    def mask(index, height, width):
        labels = rng.integers(0, num_classes, size=(height, width)).astype(np.uint8)
        labels[0, :] = 255
        masks[index] = labels
        return labels

    def image(index, height, width):
        labels = mask(index, height, width)
        grey = np.where(labels == 255, 0, labels * 40).astype(np.uint8)
        return np.stack([grey] * 3, axis=-1)

    write_voc_root(root, sizes, image, lambda index, h, w: masks[index], palette=palette, lossless=True)
    return list(sizes)


# The hand-made VOC root of the data tests: id -> (width, height), landscape and portrait as in VOC.
TRAIN = {"2007_000032": (40, 30), "2007_000039": (30, 40), "2008_000002": (48, 32)}
VAL = {"2007_000033": (40, 30), "2009_000001": (32, 48)}
AUG_ONLY = {"2010_000005": (40, 30)}  # in train_aug only, with an SBD-style grayscale mask


def make_mask(width: int, height: int, value: int) -> np.ndarray:
    """Background with one object of class `value`, a 255 outline and a corner of class 15 (person)."""
    labels = np.zeros((height, width), np.uint8)
    labels[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = value
    labels[height // 4 - 1, width // 4: 3 * width // 4] = 255
    labels[-3:, -3:] = 15
    return labels


def build_voc_root(root: Path, with_train_aug: bool = True) -> Path:
    """A complete, valid VOC-format root with palette (train, val) and grayscale (aug) masks."""
    lists = {"train": list(TRAIN), "val": list(VAL)}
    if with_train_aug:
        lists["train_aug"] = list(TRAIN) + list(AUG_ONLY)
    return write_voc_root(root, {**TRAIN, **VAL, **AUG_ONLY}, noise_image, lambda i, h, w: make_mask(w, h, 1 + i),
                          lists=lists, gray_masks=tuple(AUG_ONLY))


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return build_voc_root(tmp_path / "VOCdevkit" / "VOC2012")


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch) -> Path:
    """An empty working directory for a stage (stages use paths relative to the project root)."""
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def stage_params(**overrides):
    """The repository's params.yaml at tiny sizes, with dotted-key overrides ("split.labeled": 3)."""
    data = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    data = deep_update(data, {"data": TINY_PARAMS["data"], "split": TINY_PARAMS["split"]})
    data["classes"]["file"] = str(CLASS_FILE)
    for key, value in overrides.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    from semivl_edge.params import Params

    return Params(data)


# -- configurations: the committed params.yaml with a test's changes (the library keeps no defaults) ------------
def committed_params(overrides: dict | None = None):
    """The repository's params.yaml as `Params`, with `overrides` (nested dict) applied."""
    from semivl_edge.params import Params

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    return Params(deep_update(data, overrides or {}), source="params.yaml")


def model_config(**changes):
    """The default ModelConfig of params.yaml, random-init CLIP (nothing loaded), with `changes`."""
    from semivl_edge.model.config import ModelConfig, model_config_from_params

    names = changes.pop("class_names", None) or [f"c{i}" for i in range(changes.get("num_classes", 21))]
    cfg = model_config_from_params(committed_params({"clip": {"pretrained": "none"}}), names)
    changes.setdefault("num_classes", len(names))
    return ModelConfig(**{**cfg.to_dict(), "embed_dim": None, **changes})  # embed_dim follows clip_model


def train_config(**changes):
    """The default TrainConfig of params.yaml with `changes` (field names of TrainConfig)."""
    from semivl_edge.train.config import TrainConfig

    return TrainConfig.from_params(committed_params()).replace(**changes)


def build_tiny_segmenter(num_classes: int, crop: int = 64):
    """The real `semivl-tiny` SemiVL model (random init, nothing downloaded), its config and unit text embeddings."""
    import torch
    import torch.nn.functional as F

    from semivl_edge.model.segmenter import build_model

    torch.manual_seed(0)
    cfg = model_config(image_size=crop, decoder_dim=16, num_classes=num_classes)
    network = build_model(cfg, load_pretrained=False).eval()
    text = F.normalize(torch.randn(num_classes, int(cfg.embed_dim), generator=torch.Generator().manual_seed(1)), dim=-1)
    return network, cfg, text


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny ops are dominated by thread hand-offs, and on a shared 2-core machine OpenMP
    threads that spin-wait for a busy core make them 10-100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
