"""Shared fixtures: a throw-away copy of the project where `dvc repro` can run on a tiny configuration."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# What a clone of the project holds that the pipeline needs (generated outputs are not copied).
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "src", "data/classes", ".dvcignore"]

# Settings small enough for a whole pipeline on 2 CPU cores in well under a minute.
TINY_PARAMS = {
    "data": {"synthetic": {"train": 12, "train_aug": 24, "val": 6, "long_side": 96}},
    "split": {"labeled": 4},
    "clip_pretrain": {"steps": 2, "batch_size": 4, "images": 6, "warmup_steps": 1},
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

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in the project with the test's Python environment first on PATH."""
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", "2")
        result = subprocess.run(args, cwd=self.root, env=env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)


@pytest.fixture
def pipeline_project(tmp_path: Path) -> PipelineProject:
    root = tmp_path / "project"
    root.mkdir()
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
    """Tiny ops are dominated by thread hand-offs: one thread keeps these tests fast on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
