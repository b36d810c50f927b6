"""The label-budget study: its grid of DVC experiments, and its report built from a `dvc exp show --json` fixture
(in the structure DVC 3 writes: commits, experiment groups, revs with params and metrics per file)."""
from __future__ import annotations

import json

import pytest

from semivl_edge.errors import PipelineError
from semivl_edge.report.study import markdown, study_runs, summarize, write_study
from semivl_edge.tools.study import dvc_command, grid


def experiment(name, method, labeled, seed, miou, labeled_images, iterations=1200):
    params = {"train": {"method": method, "seed": seed, "iterations": iterations}, "split": {"labeled": labeled}}
    metrics = {"miou": miou, "labeled_images": labeled_images, "method": method}
    return {"name": name, "executor": None, "revs": [{
        "rev": "0" * 40, "name": name, "error": None, "experiments": None,
        "data": {"rev": "0" * 40, "timestamp": "2026-12-02T00:00:00",
                 "params": {"params.yaml": {"data": params}},
                 "metrics": {"reports/metrics/train.json": {"data": metrics}}, "deps": {}, "outs": {}, "meta": {}}}]}


def exp_show(iterations=1200):
    groups = [experiment(f"study-{m}-1-115-s{s}", m, "1/115", s, base + s, 13, iterations)
              for m, base in (("supervised", 30.0), ("unimatch", 34.0), ("semivl", 35.0)) for s in (0, 1)]
    groups += [experiment(f"study-supervised-all-s{s}", "supervised", "all", s, 50.0 + s, 1464, iterations)
               for s in (0, 1)]
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
    assert summary == {"iterations": 1200, "budgets": {
        "13": {"supervised": [30.0, 31.0], "unimatch": [34.0, 35.0], "semivl": [35.0, 36.0]},
        "all": {"supervised": [50.0, 51.0]}}}
    table = (tmp_path / "reports/study.md").read_text()
    assert "| 13 | unimatch | 2 | 34.50 | 1.00 | +4.00 |" in table
    assert "| 13 | semivl | 2 | 35.50 | 1.00 | +5.00 |" in table and "| all | supervised | 2 | 50.50 | 1.00 |  |" in table
    assert (tmp_path / "reports/plots/study.png").stat().st_size > 0


def test_runs_of_different_lengths_or_none_at_all_are_refused():
    mixed = exp_show()
    mixed[1]["experiments"] += exp_show(iterations=300)[1]["experiments"][:1]
    with pytest.raises(PipelineError, match=r"study experiments of different lengths \(\[300, 1200\] iterations\)"):
        summarize(study_runs(mixed))
    with pytest.raises(PipelineError, match="no finished study experiments"):
        summarize(study_runs(exp_show()[:1]))
    assert "Label-budget study (1200 iterations per run)" in markdown(summarize(study_runs(exp_show())))
