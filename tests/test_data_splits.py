"""Stage `splits` and its functions: VOC-protocol labeled / unlabeled / val lists, bad inputs, and `dvc repro`."""
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
from conftest import AUG_ONLY, CLASS_FILE, REPO, TRAIN, VAL, build_voc_root, stage_params

from semivl_edge.data.splits import draw_labeled, labeled_count, make_splits, object_classes
from semivl_edge.data.voc import VOCLists, read_ids
from semivl_edge.errors import PipelineError
from semivl_edge.pipeline import dataset, splits

TRAIN_IDS = [f"2007_{n:06d}" for n in range(0, 3000, 7)]


def test_draw_labeled_is_sized_seeded_and_nested():
    a = draw_labeled(TRAIN_IDS, 92, seed=0)
    assert len(a) == len(set(a)) == 92 and set(a) <= set(TRAIN_IDS) and a == sorted(a)
    assert draw_labeled(list(reversed(TRAIN_IDS)), 92, seed=0) == a  # the list order does not matter
    assert draw_labeled(TRAIN_IDS, 92, seed=1) != a
    assert set(a) <= set(draw_labeled(TRAIN_IDS, 183, seed=0))  # 92 within 183, as in the protocol
    with pytest.raises(ValueError):
        draw_labeled(TRAIN_IDS, len(TRAIN_IDS) + 1, seed=0)


def test_the_covering_draw_labels_every_class_first_and_stays_nested():
    # Every image shows one of classes 1..8, except three crowded ones that together show all ten.
    crowded = {"2007_000000": {1, 2, 3, 9}, "2007_000007": {4, 5, 10}, "2007_000014": {6, 7, 8}}
    shows = {i: frozenset(crowded.get(i, {1 + n % 8})) for n, i in enumerate(TRAIN_IDS)}
    for seed in range(4):
        three = draw_labeled(TRAIN_IDS, 3, seed, shows)
        assert three == sorted(crowded)  # all ten classes, where 3 random images show at most 3
        ninety_two = draw_labeled(TRAIN_IDS, 92, seed, shows)
        assert set(three) <= set(ninety_two)  # still nested: the covering images come first at every budget
        # ... then the seed's permutation, as without masks
        assert set(ninety_two) - set(crowded) <= set(draw_labeled(TRAIN_IDS, 92, seed))
    first = {seed: draw_labeled(TRAIN_IDS, 1, seed, shows) for seed in range(8)}
    assert all(f == ["2007_000000"] for f in first.values())  # the image that shows most classes comes first
    # a tie (two images with three new classes each) goes to the one the seed puts first
    assert {tuple(draw_labeled(TRAIN_IDS, 2, seed, shows)) for seed in range(8)} == {
        ("2007_000000", "2007_000007"), ("2007_000000", "2007_000014")}


def test_make_splits_are_disjoint_and_cover_the_pool():
    pool = TRAIN_IDS + ["2012_000001", "2012_000002"]
    lists = VOCLists(train=TRAIN_IDS, val=["2011_000003"], train_aug=pool, pool=pool)
    result = make_splits(lists, draw_labeled(TRAIN_IDS, 10, seed=0))
    assert not set(result.labeled) & set(result.unlabeled)
    assert set(result.labeled) | set(result.unlabeled) == set(pool)
    assert result.val == ["2011_000003"]


def run_both(**overrides) -> None:
    dataset.run(stage_params(**overrides))
    splits.run(stage_params(**overrides))


def read_splits(project: Path) -> dict[str, list[str]]:
    return {n: read_ids(project / "data/splits" / f"{n}.txt") for n in ("labeled", "unlabeled", "val")}


def test_splits_stage_on_the_synthetic_default(project_dir):
    run_both()
    result = read_splits(project_dir)
    root = project_dir / "data/synthetic/VOC2012/ImageSets/Segmentation"
    train, train_aug, val = (read_ids(root / f"{n}.txt") for n in ("train", "train_aug", "val"))
    assert len(result["labeled"]) == 4 and set(result["labeled"]) <= set(train)
    assert sorted(result["labeled"] + result["unlabeled"]) == sorted(train_aug)
    assert result["val"] == val
    metrics = json.loads((project_dir / "reports/metrics/splits.json").read_text())
    assert (metrics["labeled"], metrics["unlabeled"], metrics["val"]) == (4, 20, 6)
    share = metrics["class_pixel_share"]
    assert set(share) == {"labeled", "val"} and list(share["val"])[20] == "tv/monitor"
    assert abs(sum(share["val"].values()) - 1) < 1e-4 and share["val"]["background"] > 0.3

    splits.run(stage_params())  # stable under a seed
    assert read_splits(project_dir) == result
    splits.run(stage_params(**{"split.seed": 1}))
    assert read_splits(project_dir)["labeled"] != result["labeled"]


def test_splits_on_a_voc_root_with_and_without_train_aug(project_dir, tmp_path):
    root = build_voc_root(tmp_path / "VOC2012")
    run_both(**{"data.source": "voc", "data.root": str(root), "split.labeled": 2})
    result = read_splits(project_dir)
    assert len(result["labeled"]) == 2 and set(result["labeled"]) <= set(TRAIN)
    assert sorted(result["labeled"] + result["unlabeled"]) == sorted({**TRAIN, **AUG_ONLY})
    assert result["val"] == sorted(VAL)

    (root / "ImageSets/Segmentation/train_aug.txt").unlink()  # then: every JPEG that is not val
    run_both(**{"data.source": "voc", "data.root": str(root), "split.labeled": 2})
    assert sorted(read_splits(project_dir)["unlabeled"] + result["labeled"]) == sorted({**TRAIN, **AUG_ONLY})


def test_the_stage_draws_every_class_first_from_the_train_masks(project_dir):
    run_both(**{"split.cover_classes": True})
    root = project_dir / "data/synthetic/VOC2012"
    train = read_ids(root / "ImageSets/Segmentation/train.txt")
    shows = {i: object_classes(root / "SegmentationClass" / f"{i}.png", 21) for i in train}
    labeled = read_splits(project_dir)["labeled"]
    assert labeled == draw_labeled(train, 4, 0, shows) != draw_labeled(train, 4, 0)
    metrics = json.loads((project_dir / "reports/metrics/splits.json").read_text())
    assert metrics["labeled_classes_present"] == 1 + len(frozenset().union(*(shows[i] for i in labeled)))
    splits.run(stage_params(**{"split.cover_classes": False}))
    assert read_splits(project_dir)["labeled"] == draw_labeled(train, 4, 0)


def test_the_covering_draw_reads_every_train_mask_and_names_a_bad_one(project_dir, tmp_path):
    root = build_voc_root(tmp_path / "VOC2012")
    voc = {"data.source": "voc", "data.root": str(root), "split.labeled": 1}
    run_both(**voc)
    Image.fromarray(np.full((30, 40), 30, np.uint8)).save(root / "SegmentationClass/2007_000039.png")
    with pytest.raises(PipelineError, match=r"2007_000039\.png: mask values 30 are outside 0\.\.20") as err:
        splits.run(stage_params(**voc))
    assert "\n" not in str(err.value) and not (project_dir / "data/splits").exists()


def test_labeled_file_overrides_the_draw(project_dir, tmp_path):
    root = build_voc_root(tmp_path / "VOC2012")
    chosen = tmp_path / "labeled.txt"
    chosen.write_text("JPEGImages/2008_000002.jpg SegmentationClass/2008_000002.png\n")
    run_both(**{"data.source": "voc", "data.root": str(root), "split.labeled_file": str(chosen)})
    result = read_splits(project_dir)
    assert result["labeled"] == ["2008_000002"]
    assert "2008_000002" not in result["unlabeled"]


@pytest.mark.parametrize(
    "overrides, labeled_file, message",
    [
        ({"split.labeled": 13}, None,
         r"split.labeled: 13 is larger than the labeled pool \(12 ids in .*train\.txt; `all` labels the whole pool\)"),
        ({"split.labeled": 0}, None, r"split.labeled must be at least 1, got 0"),
        ({"split.labeled": "92"}, None, r"split.labeled must be a count \(92\), a fraction of the pool \(1/115\) or all, got '92'"),
        ({"split.labeled": "3/2"}, None, r"split.labeled must be a fraction a/b with 0 < a <= b, got '3/2'"),
        ({"split.labeled": "1/0"}, None, r"split.labeled must be a fraction a/b with 0 < a <= b, got '1/0'"),
        ({"split.labeled": 0.5}, None, r"split.labeled must be a count"),
        ({"split.seed": 1.5}, None, r"split.seed must be an integer, got 1.5"),
        ({"split.labeled_file": 7}, None, r"split.labeled_file must be a string or null, got 7"),
        ({"split.cover_classes": "yes"}, None, r"split.cover_classes must be true or false, got 'yes'"),
        ({}, "missing", r"labeled\.txt: id list not found"),
        ({}, "2099_000001\n", r"split.labeled_file: id 2099_000001 in .*labeled\.txt is not in the labeled pool"),
        ({}, "x\ny\nx\n", r"labeled\.txt: line 3: duplicate id x"),
    ],
)
def test_bad_split_inputs_stop_with_one_line_and_no_output(project_dir, tmp_path, overrides, labeled_file, message):
    run_both()  # a good run first: its split files must not survive a failed run
    if labeled_file is not None:
        path = tmp_path / "labeled.txt"
        if labeled_file != "missing":
            path.write_text(labeled_file)
        overrides = {**overrides, "split.labeled_file": str(path)}
    with pytest.raises(PipelineError, match=message) as err:
        splits.run(stage_params(**overrides))
    assert "\n" not in str(err.value)
    assert not (project_dir / "data/splits").exists()
    assert not (project_dir / "reports/metrics/splits.json").exists()


def test_labeled_fractions_keep_the_voc_ratios_on_any_pool():
    assert [labeled_count(f, 1464) for f in ("1/115", "1/29", "1/7", "all", 92)] == [13, 50, 209, 1464, 92]
    assert labeled_count("1/115", 10582) == 92 and labeled_count("1/1000", 10) == 1


def test_a_fraction_or_all_of_the_pool_in_the_stage(project_dir, tmp_path):
    root = build_voc_root(tmp_path / "VOC2012")  # pool: train_aug, 3 train ids and 1 aug-only id
    run_both(**{"data.source": "voc", "data.root": str(root), "split.labeled": "1/2"})
    assert len(read_splits(project_dir)["labeled"]) == 2
    run_both(**{"data.source": "voc", "data.root": str(root), "split.labeled": "all"})
    result = read_splits(project_dir)
    assert result["labeled"] == sorted([*TRAIN, *AUG_ONLY]) and result["unlabeled"] == []


def test_splits_without_a_dataset_manifest(project_dir):
    with pytest.raises(PipelineError, match=r"data/dataset.json: dataset manifest not found"):
        splits.run(stage_params())


def test_splits_script_exit_code_and_single_line(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"].update({"train": 5, "train_aug": 8, "val": 2, "long_side": 64})
    params["split"]["labeled"] = 6
    params["classes"]["file"] = str(CLASS_FILE)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run = lambda stage: subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py")],  # noqa: E731
                                       cwd=project, env=env, capture_output=True, text=True)
    assert run("dataset").returncode == 0
    result = run("splits")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: params.yaml: split.labeled: 6 is larger than the labeled pool (5 ids")
    assert "Traceback" not in result.stderr
    assert not (project / "data/splits").exists()
