"""The label-budget study's report, from `dvc exp show --json`: reports/study.json, reports/study.md and
reports/plots/study.png (val mIoU against labeled images, one line per method); and the ablation's,
reports/ablation.{json,md} (the paper's rows, one strategy added at a time).

A study run is a DVC experiment whose name starts with `study-` (an ablation run: `ablation-`; `semivl-edge study`
names them); what it ran is read from its own parameters (train.method, split.labeled, train.seed,
and for the ablation the model / guidance settings of ABLATION_ROWS) and its result from its
reports/metrics/train.json (best val mIoU, labeled_images, iterations), never from the name.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import atomic_path, write_json  # noqa: E402
from ..data.splits import ALL  # noqa: E402
from ..errors import PipelineError  # noqa: E402

PREFIX = "study-"
ABLATION_PREFIX = "ablation-"
METHODS = ("supervised", "unimatch", "semivl")
COVERING_DRAW, RANDOM_DRAW = "every class first", "random"  # split.cover_classes true / false
TRAIN_METRICS = "reports/metrics/train.json"
# The paper's ablation rows with the official code's mapping (train/config.py): (name part, paper row, settings).
# Every row also sets classes.definitions=names (the decoder's texts are the class names, as officially).
# Row 1 is the paper's UniMatch(ViT): an ImageNet ViT (model.imagenet_weights; random init offline) under the plain
# decoder, fully fine-tuned; row 2 swaps in the CLIP image encoder.
_BASE = {"train.method": "unimatch", "model.clip_init": True, "model.spatial_finetune": False, "model.decoder": "plain"}
ABLATION_ROWS = (
    ("unimatch-vit", "UniMatch (ViT)", {**_BASE, "model.encoder": "imagenet_vit"}),
    ("clip-init", "+ CLIP initialisation", {**_BASE, "model.encoder": "clip"}),
    ("spatial-finetune", "+ spatial fine-tuning", {**_BASE, "model.encoder": "clip", "model.spatial_finetune": True}),
    ("vlg-decoder", "+ language-guided decoder",
     {**_BASE, "model.encoder": "clip", "model.spatial_finetune": True, "model.decoder": "vlg"}),
    ("clip-guidance", "+ dense CLIP guidance (class names)",
     {"train.method": "semivl", "model.encoder": "clip", "model.clip_init": True, "model.spatial_finetune": True,
      "model.decoder": "vlg", "classes.guidance": "names"}),
    ("class-definitions", "+ class definitions (concept lists) = SemiVL",
     {"train.method": "semivl", "model.encoder": "clip", "model.clip_init": True, "model.spatial_finetune": True,
      "model.decoder": "vlg", "classes.guidance": "concepts"}),
)
# The official baseline fine-tunes its ImageNet backbone at lr x0.001; from a random init (no weights) it must learn.
IMAGENET_ENCODER_LR_MULT = 0.001
ABLATION_COMMON = {"classes.definitions": "names"}


@dataclass(frozen=True)
class StudyRun:
    name: str
    method: str
    budget: str  # labeled images as a string ("13"), or "all"
    seed: int
    iterations: int
    miou: float
    encoder: str = ""  # where its encoder's weights came from (train metrics), e.g. "... random init"
    commit: str = ""  # the code it ran: its experiment's baseline commit, shortened
    draw: str = RANDOM_DRAW  # how its labeled images were drawn (split.cover_classes; absent before it existed)


def _finished(exp_show: list, prefix: str):
    """(name, params, train metrics, baseline commit) of the finished experiments named prefix* (queued or
    failed: no metrics)."""
    for commit in exp_show:
        baseline = str(commit.get("rev") or "")[:7]
        for group in commit.get("experiments") or []:
            for state in group.get("revs") or []:
                name = state.get("name") or group.get("name") or ""
                data = state.get("data") or {}
                metrics = ((data.get("metrics") or {}).get(TRAIN_METRICS) or {}).get("data")
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
                if name.startswith(prefix) and metrics and params:
                    yield name, params, metrics, baseline


def labeled_draw(cover_classes: bool | None) -> str:
    return COVERING_DRAW if cover_classes else RANDOM_DRAW


def _run(name: str, params: dict, metrics: dict, commit: str, method: str) -> StudyRun:
    labeled = params["split"]["labeled"]
    return StudyRun(name=name, method=method, budget=ALL if labeled == ALL else str(metrics["labeled_images"]),
                    seed=int(params["train"]["seed"]), iterations=int(metrics["iterations"]),
                    miou=float(metrics["miou"]), encoder=str(metrics.get("encoder", "")), commit=commit,
                    draw=labeled_draw(params["split"].get("cover_classes")))


def study_runs(exp_show: list) -> list[StudyRun]:
    """The finished study experiments of a `dvc exp show --json` listing."""
    return [_run(name, params, metrics, commit, params["train"]["method"])
            for name, params, metrics, commit in _finished(exp_show, PREFIX)]


def _setting(params: dict, key: str):
    section, name = key.split(".")
    return (params.get(section) or {}).get(name)


def ablation_row(params: dict) -> str | None:
    """The paper row (ABLATION_ROWS name part) whose settings these parameters have, if any."""
    for slug, _, settings in ABLATION_ROWS:
        if all(_setting(params, k) == v for k, v in settings.items()):
            return slug
    return None


def ablation_runs(exp_show: list) -> list[StudyRun]:
    """The finished ablation experiments; `method` holds the row's name part."""
    runs = []
    for name, params, metrics, commit in _finished(exp_show, ABLATION_PREFIX):
        row = ablation_row(params)
        if row is not None:
            runs.append(_run(name, params, metrics, commit, row))
    return runs


def summarize_ablation(runs: list[StudyRun]) -> dict:
    """{"iterations": N, "labeled": "13", "rows": [{"row": paper row, "miou": [seed0, ...], "encoder": ...}, ...]}
    in row order."""
    if not runs:
        raise PipelineError("dvc exp show: no finished ablation experiments (run `semivl-edge study --ablation`)")
    for field in ("iterations", "budget", "draw"):
        values = sorted({getattr(r, field) for r in runs})
        if len(values) > 1:
            raise PipelineError(f"dvc exp show: ablation experiments with different {field} ({values}); remove the "
                                "old ones with `dvc exp remove`")
    rows = []
    for slug, title, _ in ABLATION_ROWS:
        done = sorted((r for r in runs if r.method == slug), key=lambda r: r.seed)
        if done:
            rows.append({"row": title, "miou": [round(r.miou, 2) for r in done], "encoder": done[0].encoder})
    return {"iterations": runs[0].iterations, "labeled": runs[0].budget, "draw": runs[0].draw, "code": _commits(runs),
            "rows": rows}


def ablation_markdown(summary: dict) -> str:
    lines = [f"# Ablation ({summary['labeled']} labeled images, {summary['iterations']} iterations per run)", "",
             "The paper's rows (SemiVL Table 4), one strategy added at a time, with the official code's text sources "
             "(semivl_edge.train.config). Best val mIoU (%), mean over seeds; change = against the row above."
             + _draw_line(summary) + _code_line(summary), "",
             "| row | seeds | mIoU mean | spread | change | encoder |", "|---|---:|---:|---:|---:|---|"]
    previous = None
    for row in summary["rows"]:
        mean = _mean(row["miou"])
        change = "" if previous is None else f"{mean - previous:+.2f}"
        lines.append(f"| {row['row']} | {len(row['miou'])} | {mean:.2f} | {max(row['miou']) - min(row['miou']):.2f} | "
                     f"{change} | {row.get('encoder', '')} |")
        previous = mean
    return "\n".join(lines) + "\n"


def write_ablation(exp_show: list, root: Path = Path(".")) -> dict:
    """reports/ablation.json and reports/ablation.md; returns the summary."""
    summary = summarize_ablation(ablation_runs(exp_show))
    write_json(root / "reports" / "ablation.json", summary)
    with atomic_path(root / "reports" / "ablation.md") as tmp:
        tmp.write_text(ablation_markdown(summary))
    return summary


def summarize(runs: list[StudyRun]) -> dict:
    """{"iterations": N, "budgets": {"13": {"supervised": [seed0, seed1], ...}, ..., "all": {...}}}, mIoU in %."""
    if not runs:
        raise PipelineError("dvc exp show: no finished study experiments (run `semivl-edge study` first)")
    iterations = sorted({r.iterations for r in runs})
    if len(iterations) > 1:
        raise PipelineError(f"dvc exp show: study experiments of different lengths ({iterations} iterations); "
                            "remove the old ones with `dvc exp remove` or run the study at one length")
    draws = sorted({r.draw for r in runs})
    if len(draws) > 1:
        raise PipelineError(f"dvc exp show: study experiments with different labeled draws ({draws}); remove the "
                            "old ones with `dvc exp remove`")
    budgets: dict[str, dict[str, list[float]]] = {}
    for run in sorted(runs, key=lambda r: (r.seed, r.name)):
        budgets.setdefault(run.budget, {}).setdefault(run.method, []).append(round(run.miou, 2))
    order = sorted((b for b in budgets if b != ALL), key=int) + ([ALL] if ALL in budgets else [])
    return {"iterations": iterations[0], "draw": draws[0], "code": _commits(runs),
            "budgets": {b: {m: budgets[b][m] for m in METHODS if m in budgets[b]} for b in order}}


def _commits(runs: list[StudyRun]) -> list[str]:
    """The commits whose code the runs ran: a report is only as current as these."""
    return sorted({r.commit for r in runs if r.commit})


def _code_line(summary: dict) -> str:
    commits = summary.get("code") or []
    return f" Code: commit {', '.join(commits)} (the experiments' baseline in `dvc exp show`)." if commits else ""


def _draw_line(summary: dict) -> str:
    draw = summary.get("draw", RANDOM_DRAW)
    return (" Labeled images drawn to show every class first (split.cover_classes), then at random by the seed."
            if draw == COVERING_DRAW else " Labeled images drawn at random by the seed.")


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def markdown(summary: dict) -> str:
    lines = [f"# Label-budget study ({summary['iterations']} iterations per run)", "",
             "Best val mIoU (%) on the embedded default, mean over seeds, spread = max - min; gain = mean minus "
             "supervised's mean at the same budget." + _draw_line(summary) + _code_line(summary), "",
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
    ax.set_xticks([int(b) for b in counts], [b for b in counts])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
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
