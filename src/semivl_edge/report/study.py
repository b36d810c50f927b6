"""The label-budget study's report, from `dvc exp show --json`: reports/study.json, reports/study.md and
reports/plots/study.png (val mIoU against labeled images, one line per method).

A study run is a DVC experiment whose name starts with `study-` (`semivl-edge study` names them); what it ran is
read from its own parameters (train.method, split.labeled, train.seed, train.iterations) and its result from its
reports/metrics/train.json (best val mIoU, labeled_images), never from the name.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path, write_json  # noqa: E402
from ..data.splits import ALL  # noqa: E402
from ..errors import PipelineError  # noqa: E402

PREFIX = "study-"
METHODS = ("supervised", "unimatch", "semivl")
TRAIN_METRICS = "reports/metrics/train.json"


@dataclass(frozen=True)
class StudyRun:
    name: str
    method: str
    budget: str  # labeled images as a string ("13"), or "all"
    seed: int
    iterations: int
    miou: float


def study_runs(exp_show: list) -> list[StudyRun]:
    """The finished study experiments of a `dvc exp show --json` listing (queued or failed ones have no metrics)."""
    runs = []
    for commit in exp_show:
        for group in commit.get("experiments") or []:
            name = group.get("name") or ""
            for state in group.get("revs") or []:
                data = state.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(TRAIN_METRICS) or {}).get("data")
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
                if not (state.get("name") or name).startswith(PREFIX) or not metrics or not params:
                    continue
                labeled = params["split"]["labeled"]
                runs.append(StudyRun(name=state.get("name") or name, method=params["train"]["method"],
                                     budget=ALL if labeled == ALL else str(metrics["labeled_images"]),
                                     seed=int(params["train"]["seed"]), iterations=int(params["train"]["iterations"]),
                                     miou=float(metrics["miou"])))
    return runs


def summarize(runs: list[StudyRun]) -> dict:
    """{"iterations": N, "budgets": {"13": {"supervised": [seed0, seed1], ...}, ..., "all": {...}}}, mIoU in %."""
    if not runs:
        raise PipelineError("dvc exp show: no finished study experiments (run `semivl-edge study` first)")
    iterations = sorted({r.iterations for r in runs})
    if len(iterations) > 1:
        raise PipelineError(f"dvc exp show: study experiments of different lengths ({iterations} iterations); "
                            "remove the old ones with `dvc exp remove` or run the study at one length")
    budgets: dict[str, dict[str, list[float]]] = {}
    for run in sorted(runs, key=lambda r: (r.seed, r.name)):
        budgets.setdefault(run.budget, {}).setdefault(run.method, []).append(round(run.miou, 2))
    order = sorted((b for b in budgets if b != ALL), key=int) + ([ALL] if ALL in budgets else [])
    return {"iterations": iterations[0], "budgets": {b: {m: budgets[b][m] for m in METHODS if m in budgets[b]}
                                                     for b in order}}


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def markdown(summary: dict) -> str:
    lines = [f"# Label-budget study ({summary['iterations']} iterations per run)", "",
             "Best val mIoU (%) on the embedded default, mean over seeds, spread = max - min; gain = mean minus "
             "supervised's mean at the same budget.", "",
             "| labeled images | method | seeds | mIoU mean | spread | gain over supervised |",
             "|---|---|---:|---:|---:|---:|"]
    for budget, methods in summary["budgets"].items():
        base = methods.get("supervised")
        for method, values in methods.items():
            gain = "" if method == "supervised" or not base else f"{_mean(values) - _mean(base):+.2f}"
            lines.append(f"| {budget} | {method} | {len(values)} | {_mean(values):.2f} | "
                         f"{max(values) - min(values):.2f} | {gain} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    counts = [b for b in summary["budgets"] if b != ALL]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in METHODS:
        points = [(int(b), summary["budgets"][b][method]) for b in counts if method in summary["budgets"][b]]
        if not points:
            continue
        x = [p[0] for p in points]
        means = [_mean(p[1]) for p in points]
        spread = [[m - min(p[1]) for m, p in zip(means, points)], [max(p[1]) - m for m, p in zip(means, points)]]
        ax.errorbar(x, means, yerr=spread, marker="o", capsize=3, label=method)
    bound = summary["budgets"].get(ALL, {}).get("supervised")
    if bound:
        ax.axhline(_mean(bound), color="grey", linestyle="--", label="supervised, all labeled")
    ax.set_xscale("log")
    ax.set_xlabel("labeled images")
    ax.set_ylabel("val mIoU %")
    ax.set_title(f"Label-budget study, {summary['iterations']} iterations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_study(exp_show: list, root: Path = Path(".")) -> dict:
    """reports/study.json, reports/study.md and reports/plots/study.png; returns the summary."""
    summary = summarize(study_runs(exp_show))
    write_json(root / "reports" / "study.json", summary)
    with atomic_path(root / "reports" / "study.md") as tmp:
        tmp.write_text(markdown(summary))
    plot(summary, root / "reports" / "plots" / "study.png")
    return summary


def load_exp_show(text: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"dvc exp show --json: not JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise PipelineError("dvc exp show --json: expected a list of commits")
    return data
