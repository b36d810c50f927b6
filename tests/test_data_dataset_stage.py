"""Stage `dataset`: the synthetic default, validation of a user's VOC root, and every bad input stopping cleanly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from conftest import CLASS_FILE, REPO, TRAIN, VAL, build_voc_root, stage_params

from semivl_edge.errors import PipelineError
from semivl_edge.pipeline import dataset

OUTPUTS = ("data/dataset.json", "reports/metrics/dataset.json")


def assert_no_valid_output(project: Path) -> None:
    for name in OUTPUTS:
        assert not (project / name).exists(), f"{name} left behind"
    leftovers = [p.name for p in (project / "data").glob(".*")] if (project / "data").exists() else []
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_synthetic_default_writes_root_manifest_and_metrics(project_dir):
    dataset.run(stage_params())
    manifest = json.loads((project_dir / "data/dataset.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["root"] == "data/synthetic/VOC2012"
    assert manifest["num_classes"] == 21 and manifest["class_names"][15] == "person"
    assert manifest["counts"] == {"train": 12, "train_aug": 24, "val": 6, "images": 30, "masks": 18}
    assert len(manifest["lists_fingerprint"]) == 64
    metrics = json.loads((project_dir / "reports/metrics/dataset.json").read_text())
    assert metrics == {"num_classes": 21, "train": 12, "train_aug": 24, "val": 6, "images": 30, "masks": 18}
    assert len(list((project_dir / "data/synthetic/VOC2012/JPEGImages").glob("*.jpg"))) == 30
    assert not [p for p in (project_dir / "data").iterdir() if p.name.startswith(".")]  # no temporary dirs


def test_voc_source_checks_the_root_and_never_touches_it(project_dir, tmp_path):
    root = build_voc_root(tmp_path / "VOCdevkit" / "VOC2012")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    dataset.run(stage_params(**{"data.source": "voc", "data.root": str(root)}))
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    manifest = json.loads((project_dir / "data/dataset.json").read_text())
    assert manifest["source"] == "voc" and manifest["root"] == str(root)
    assert manifest["counts"]["train"] == len(TRAIN) and manifest["counts"]["val"] == len(VAL)
    assert "synthetic" not in manifest
    assert [p.name for p in (project_dir / "data/synthetic").iterdir()] == ["NOTE.txt"]
    assert str(root) in (project_dir / "data/synthetic/NOTE.txt").read_text()


def test_voc_root_inside_the_synthetic_output_is_refused_and_kept(project_dir):
    root = build_voc_root(project_dir / "data/synthetic/myvoc")
    with pytest.raises(PipelineError, match="data.root: .* is inside data/synthetic"):
        dataset.run(stage_params(**{"data.source": "voc", "data.root": str(root)}))
    assert (root / "ImageSets/Segmentation/train.txt").is_file()


def _damage(root: Path, how: str) -> None:
    lists = root / "ImageSets/Segmentation"
    if how == "missing-list":
        (lists / "val.txt").unlink()
    elif how == "missing-jpeg":
        (root / "JPEGImages/2007_000039.jpg").unlink()
    elif how == "missing-mask":
        (root / "SegmentationClass/2009_000001.png").unlink()
    elif how == "corrupt-image":
        (root / "JPEGImages/2008_000002.jpg").write_bytes(b"GIF89a garbage")
    elif how == "bad-mask-value":
        Image.fromarray(np.full((30, 40), 37, np.uint8)).save(root / "SegmentationClass/2007_000032.png")
    elif how == "rgb-mask":
        Image.new("RGB", (40, 30), (128, 0, 0)).save(root / "SegmentationClass/2007_000032.png")
    elif how == "duplicate-id":
        (lists / "train.txt").write_text("2007_000032\n2007_000039\n2007_000032\n")
    elif how == "zero-byte-image":
        (root / "JPEGImages/2008_000002.jpg").write_bytes(b"")
    elif how == "mask-size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "SegmentationClass/2007_000032.png")
    elif how == "empty-val":
        (lists / "val.txt").write_text("\n")
    elif how == "escaping-id":
        (lists / "train.txt").write_text("2007_000032\n../../outside/2007_000039\n")
    elif how == "absolute-id":
        (lists / "val.txt").write_text("/etc/passwd\n")


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing-list", r"ImageSets/Segmentation/val\.txt: id list not found"),
        ("missing-jpeg", r"JPEGImages/2007_000039\.jpg: image not found"),
        ("missing-mask", r"SegmentationClass/2009_000001\.png: mask not found"),
        ("corrupt-image", r"JPEGImages/2008_000002\.jpg: corrupt or unreadable image"),
        ("bad-mask-value", r"SegmentationClass/2007_000032\.png: mask values 37 are outside 0\.\.20 and 255"),
        ("rgb-mask", r"SegmentationClass/2007_000032\.png: mask has PIL mode RGB"),
        ("duplicate-id", r"train\.txt: line 3: duplicate id 2007_000032"),
        ("zero-byte-image", r"JPEGImages/2008_000002\.jpg: corrupt or unreadable image"),
        ("mask-size", r"SegmentationClass/2007_000032\.png: mask is 10x10 but image 2007_000032\.jpg is 40x30"),
        ("empty-val", r"ImageSets/Segmentation/val\.txt: id list is empty"),
        ("escaping-id", r"train\.txt: line 2: id '\.\./\.\./outside/2007_000039' would leave the dataset root"),
        ("absolute-id", r"val\.txt: line 1: id '/etc/passwd' would leave the dataset root"),
    ],
)
def test_bad_voc_root_stops_with_one_line_and_no_output(project_dir, tmp_path, how, message):
    root = build_voc_root(tmp_path / "VOC2012")
    _damage(root, how)
    with pytest.raises(PipelineError, match=message) as err:
        dataset.run(stage_params(**{"data.source": "voc", "data.root": str(root)}))
    assert "\n" not in str(err.value)
    assert_no_valid_output(project_dir)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.source": "voc", "data.root": "/nonexistent/VOC2012"}, r"data.root: /nonexistent/VOC2012 is not a directory"),
        ({"data.source": "imagenet"}, r"data.source must be one of synthetic, voc, got 'imagenet'"),
        ({"data.synthetic.train": "ten"}, r"data.synthetic.train must be an integer, got 'ten'"),
        ({"data.synthetic.val": 0}, r"data.synthetic.val must be an integer >= 1, got 0"),
        ({"data.synthetic.train_aug": 5}, r"data.synthetic.train_aug must be >= data.synthetic.train \(12\), got 5"),
        ({"data.root": "elsewhere/VOC2012"}, r"data.root: elsewhere/VOC2012 must be inside data/synthetic"),
        ({"classes.file": "nope.yaml"}, r"nope.yaml: class definition file not found"),
    ],
)
def test_bad_parameters_stop_with_one_line_and_no_output(project_dir, overrides, message):
    dataset.run(stage_params())  # a previous good run: its outputs must not survive a failed one
    with pytest.raises(PipelineError, match=message) as err:
        dataset.run(stage_params(**overrides))
    assert "\n" not in str(err.value)
    assert_no_valid_output(project_dir)


def test_stage_script_reports_one_line_and_exit_code(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"]["train"] = 2.5
    params["classes"]["file"] = str(CLASS_FILE)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, str(REPO / "stages/dataset.py")], cwd=project, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml: data.synthetic.train must be an integer, got 2.5"]
    assert "Traceback" not in result.stderr
    assert_no_valid_output(project)
