"""The label-budget study: its grid of DVC experiments, and its report built from a `dvc exp show --json` fixture
(in the structure DVC 3 writes: commits, experiment groups, revs with params and metrics per file)."""
from __future__ import annotations

import argparse
import json
import shutil

import pytest
from conftest import REPO

from semivl_edge.errors import PipelineError
from semivl_edge.report.study import (
    ABLATION_ROWS,
    ablation_row,
    ablation_runs,
    markdown,
    study_runs,
    summarize,
    summarize_ablation,
    write_ablation,
    write_study,
)
from semivl_edge.tools import study as study_command
from semivl_edge.tools.study import ablation_grid, dvc_command, grid


def experiment(name, method, labeled, seed, miou, labeled_images, iterations=1200, settings=None, encoder="CLIP",
               cover_classes=True):
    params = {"train": {"method": method, "seed": seed, "iterations": iterations},
              "split": {"labeled": labeled, "cover_classes": cover_classes},
              "model": {"clip_init": True, "spatial_finetune": True, "decoder": "vlg"},
              "classes": {"definitions": "guidelines", "guidance": "concepts"}}
    for key, value in (settings or {}).items():
        section, field = key.split(".")
        params[section][field] = value
    metrics = {"miou": miou, "labeled_images": labeled_images, "method": method, "iterations": iterations,
               "encoder": encoder}
    return {"name": name, "executor": None, "revs": [{
        "rev": "0" * 40, "name": name, "error": None, "experiments": None,
        "data": {"rev": "0" * 40, "timestamp": "2026-12-02T00:00:00",
                 "params": {"params.yaml": {"data": params}},
                 "metrics": {"reports/metrics/train.json": {"data": metrics}}, "deps": {}, "outs": {}, "meta": {}}}]}


def exp_show(iterations=1200, cover_classes=True):
    groups = [experiment(f"study-{m}-1-115-s{s}", m, "1/115", s, base + s, 13, iterations, cover_classes=cover_classes)
              for m, base in (("supervised", 30.0), ("unimatch", 34.0), ("semivl", 35.0)) for s in (0, 1)]
    groups += [experiment(f"study-supervised-all-s{s}", "supervised", "all", s, 50.0 + s, 1464, iterations,
                          cover_classes=cover_classes) for s in (0, 1)]
    groups.append(experiment("my-own-run", "semivl", 92, 0, 99.0, 92))  # not a study run
    queued = experiment("study-semivl-1-29-s0", "semivl", "1/29", 0, 0.0, 50)
    queued["revs"][0]["data"]["metrics"] = {}  # queued or failed: no metrics yet
    groups.append(queued)
    return [{"rev": "workspace", "name": None, "data": None, "error": None, "experiments": None},
            {"rev": "a" * 40, "name": "main", "data": None, "error": None, "experiments": groups}]


def test_the_grid_runs_every_method_at_every_budget_and_the_bound_with_every_seed():
    runs = grid(1200, [0, 1], ["train.eval_every=200"])
    names = [name for name, _ in runs]
    assert len(runs) == 3 * 3 * 2 + 2 and len(set(names)) == len(names)
    assert names[0] == "study-supervised-1-115-s0" and names[-1] == "study-supervised-all-s1"
    name, changes = runs[2]
    assert name == "study-unimatch-1-115-s0"
    assert changes == ["train.method=unimatch", "split.labeled=1/115", "train.seed=0", "split.seed=0",
                       "train.iterations=1200", "train.eval_every=200"]
    assert [n for n, _ in grid(300, [0], [], ["1/7"])] == ["study-supervised-1-7-s0", "study-unimatch-1-7-s0",
                                                          "study-semivl-1-7-s0", "study-supervised-all-s0"]
    with pytest.raises(PipelineError, match="split.labeled must be a count"):
        grid(300, [0], [], ["1:7"])
    command = dvc_command(name, changes)
    assert command[1:7] == ["-m", "dvc", "exp", "run", "train", "--name"] and command[-2:] == ["-S", "train.eval_every=200"]


def test_the_report_summarises_the_finished_study_runs(tmp_path):
    summary = write_study(exp_show(), tmp_path)
    assert summary == json.loads((tmp_path / "reports/study.json").read_text())
    assert summary == {"iterations": 1200, "draw": "every class first", "code": ["aaaaaaa"], "budgets": {
        "13": {"supervised": [30.0, 31.0], "unimatch": [34.0, 35.0], "semivl": [35.0, 36.0]},
        "all": {"supervised": [50.0, 51.0]}}}
    table = (tmp_path / "reports/study.md").read_text()
    assert "| 13 | unimatch | 2 | 34.50 | 1.00 | +4.00 |" in table
    assert "| 13 | semivl | 2 | 35.50 | 1.00 | +5.00 |" in table and "| all | supervised | 2 | 50.50 | 1.00 |  |" in table
    assert (tmp_path / "reports/plots/study.png").stat().st_size > 0
    assert "Code: commit aaaaaaa" in table  # which code the numbers come from
    assert "Labeled images drawn to show every class first (split.cover_classes)" in table


def test_runs_of_different_lengths_or_draws_or_none_at_all_are_refused():
    mixed = exp_show()
    mixed[1]["experiments"] += exp_show(iterations=300)[1]["experiments"][:1]
    with pytest.raises(PipelineError, match=r"study experiments of different lengths \(\[300, 1200\] iterations\)"):
        summarize(study_runs(mixed))
    mixed = exp_show()  # runs from before split.cover_classes existed drew at random
    del mixed[1]["experiments"][0]["revs"][0]["data"]["params"]["params.yaml"]["data"]["split"]["cover_classes"]
    with pytest.raises(PipelineError, match=r"different labeled draws \(\['every class first', 'random'\]\)"):
        summarize(study_runs(mixed))
    with pytest.raises(PipelineError, match="no finished study experiments"):
        summarize(study_runs(exp_show()[:1]))
    assert "Label-budget study (1200 iterations per run)" in markdown(summarize(study_runs(exp_show())))


def study_args(*argv):
    parser = argparse.ArgumentParser()
    study_command.add_arguments(parser)
    return parser.parse_args(["--budgets", "1/115", *argv])


def test_the_study_skips_runs_finished_in_its_setting_and_stops_on_runs_of_another(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", "params.yaml")  # split.cover_classes: true
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    ran = []
    monkeypatch.setattr(study_command.subprocess, "run", lambda command: ran.append(command) or argparse.Namespace(
        returncode=0))
    monkeypatch.setattr(study_command, "_exp_show", lambda: exp_show(iterations=300))
    study_command.run(study_args("--iterations", "300"))
    assert ran == [] and json.loads((tmp_path / "reports/study.json").read_text())["iterations"] == 300

    for other_setting in (["--iterations", "600"], ["--iterations", "300", "--set", "split.cover_classes=false"]):
        with pytest.raises(PipelineError, match=r"study: 8 earlier experiments ran another setting under these "
                                                r"names; `dvc exp remove study-supervised-1-115-s0 .* "
                                                r"study-supervised-all-s1` first"):
            study_command.run(study_args(*other_setting))
    assert ran == []
    monkeypatch.setattr(study_command, "_exp_show", lambda: exp_show(iterations=300, cover_classes=False))
    study_command.run(study_args("--iterations", "300", "--set", "split.cover_classes=false"))
    assert ran == []


def parse_changes(changes):
    """-S key=value strings -> {key: value as dvc exp show would report it}."""
    values = {"true": True, "false": False}
    return {k: values.get(v, v) for k, v in (change.split("=", 1) for change in changes)}


def test_the_ablation_adds_one_strategy_per_row_with_the_official_text_sources():
    runs = ablation_grid(300, [0, 1], [], "1/115")
    assert [n for n, _ in runs[::2]] == ["ablation-unimatch-vit-s0", "ablation-clip-init-s0",
                                         "ablation-spatial-finetune-s0", "ablation-vlg-decoder-s0",
                                         "ablation-clip-guidance-s0", "ablation-class-definitions-s0"]
    rows = [parse_changes(changes) for _, changes in runs[::2]]
    assert rows[0]["train.method"] == "unimatch" and rows[0]["model.encoder"] == "imagenet_vit"
    assert rows[0]["model.decoder"] == "plain" and rows[0]["model.spatial_finetune"] is False
    assert "train.optim.encoder_lr_mult" not in rows[0]  # random init (no ImageNet weights): params.yaml's rate
    # Each row differs from the one above in exactly the strategy it adds.
    added = [{k for k in row if row.get(k) != above.get(k)} for above, row in zip(rows, rows[1:])]
    assert added == [{"model.encoder"}, {"model.spatial_finetune"}, {"model.decoder"},
                     {"train.method", "classes.guidance"}, {"classes.guidance"}]
    assert rows[4]["classes.guidance"] == "names" and rows[5]["classes.guidance"] == "concepts"
    assert all(row["classes.definitions"] == "names" and row["split.labeled"] == "1/115" for row in rows)
    # What a run was is read back from its parameters, as dvc exp show reports them.
    for (name, changes), (slug, _, _) in zip(runs[::2], ABLATION_ROWS):
        params = {}
        for key, value in parse_changes(changes).items():
            section, field = key.split(".")
            params.setdefault(section, {})[field] = value
        assert ablation_row(params) == slug


def test_the_imagenet_baseline_is_fine_tuned_at_the_official_rate_when_it_has_weights():
    runs = ablation_grid(300, [0], [], "1/115", imagenet_weights="vit_b_16.pth")
    rows = [parse_changes(changes) for _, changes in runs]
    assert rows[0]["train.optim.encoder_lr_mult"] == "0.001"
    assert all("train.optim.encoder_lr_mult" not in row for row in rows[1:])


def test_the_ablation_report_lists_the_rows_in_order_with_their_change(tmp_path):
    groups = []
    for index, (slug, _, settings) in enumerate(reversed(ABLATION_ROWS)):
        for seed in (0, 1):
            encoder = "ImageNet ViT, random init" if settings["model.encoder"] == "imagenet_vit" else "CLIP"
            groups.append(experiment(f"ablation-{slug}-s{seed}", settings["train.method"], "1/115", seed,
                                     40.0 - index + seed, 13, 300, {**settings, "classes.definitions": "names"},
                                     encoder))
    groups.append(experiment("study-semivl-1-115-s0", "semivl", "1/115", 0, 1.0, 13, 300))  # not an ablation run
    listing = [{"rev": "a" * 40, "name": "main", "data": None, "error": None, "experiments": groups}]
    assert len(ablation_runs(listing)) == 12
    summary = write_ablation(listing, tmp_path)
    assert summary["labeled"] == "13" and summary["iterations"] == 300
    assert [row["row"] for row in summary["rows"]] == [title for _, title, _ in ABLATION_ROWS]
    assert summary["rows"][0]["miou"] == [35.0, 36.0] and summary["rows"][-1]["miou"] == [40.0, 41.0]
    table = (tmp_path / "reports/ablation.md").read_text()
    assert "| UniMatch (ViT) | 2 | 35.50 | 1.00 |  | ImageNet ViT, random init |" in table
    assert "| + CLIP initialisation | 2 | 36.50 | 1.00 | +1.00 | CLIP |" in table
    with pytest.raises(PipelineError, match="no finished ablation experiments"):
        summarize_ablation([])
