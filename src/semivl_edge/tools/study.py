"""`semivl-edge study`: the label-budget study (SemiVL's Table 1 at embedded scale) as DVC experiments.

`supervised`, `unimatch` and `semivl` at the VOC protocol's label ratios kept on the training pool (split.labeled
1/115, 1/29, 1/7 of train_aug: 13, 50 and 209 of the embedded default's 1464), plus supervised with every pool
image labeled (the bound), each with every seed (train.seed and split.seed). Each run is `dvc exp run train` with
`-S` changes on top of params.yaml, named `study-<method>-<budget>-s<seed>`, so `dvc exp show`, `dvc params diff`
and `dvc metrics show` work on every one of them. Runs already finished (found by name in `dvc exp show`, at the
same length and labeled draw) are not run again: a stopped study continues where it stopped. Then
reports/study.{json,md} and reports/plots/study.png are written from `dvc exp show --json`. A study is never part
of `dvc repro`; the workspace holds the last run's outputs afterwards (`dvc exp apply NAME` or
`git checkout . && dvc checkout`).

`--ablation` runs the paper's ablation rows instead (report.study.ABLATION_ROWS: UniMatch(ViT), + CLIP init,
+ spatial fine-tuning, + VLG decoder, + dense CLIP guidance by class names, + class definitions), at the first of
`--budgets`, named `ablation-<row>-s<seed>`, and writes reports/ablation.{json,md}.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from ..data.splits import ALL, labeled_count
from ..errors import PipelineError
from ..model.clip import PRETRAINED_NONE
from ..params import Params
from ..report.study import (
    ABLATION_COMMON,
    ABLATION_PREFIX,
    ABLATION_ROWS,
    IMAGENET_ENCODER_LR_MULT,
    METHODS,
    PREFIX,
    ablation_runs,
    labeled_draw,
    load_exp_show,
    study_runs,
    write_ablation,
    write_study,
)

log = logging.getLogger(__name__)

BUDGETS = {"1-115": "1/115", "1-29": "1/29", "1-7": "1/7"}  # name part -> split.labeled (VOC's 92, 366, 1464)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, required=True,
                        help="train.iterations of every run: pick one where the labels limit the model (the all-labeled "
                             "bound clearly above the smallest budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default: 0 1)")
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS.values()), metavar="FRACTION",
                        help="label budgets as fractions of the pool (default: 1/115 1/29 1/7); the all-labeled "
                             "bound always runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="one more -S change for every run (e.g. train.eval_every=200); repeatable")
    parser.add_argument("--ablation", action="store_true",
                        help="run the paper's ablation rows at the first budget instead (reports/ablation.md)")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands, run nothing")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")


def grid(iterations: int, seeds: list[int], overrides: list[str],
         budgets: list[str] = tuple(BUDGETS.values())) -> list[tuple[str, list[str]]]:
    """(experiment name, its -S changes) of every run of the study, in the order of `budgets`, the bound last."""
    for fraction in budgets:
        labeled_count(fraction, 1)  # a typo stops here, before any run: one line naming it
    runs = []
    for label, fraction in [*((f.replace("/", "-"), f) for f in budgets), (ALL, ALL)]:
        for method in (("supervised",) if fraction == ALL else METHODS):
            for seed in seeds:
                changes = [f"train.method={method}", f"split.labeled={fraction}", f"train.seed={seed}",
                           f"split.seed={seed}", f"train.iterations={iterations}", *overrides]
                runs.append((f"{PREFIX}{method}-{label}-s{seed}", changes))
    return runs


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def ablation_grid(iterations: int, seeds: list[int], overrides: list[str], budget: str = BUDGETS["1-115"],
                  imagenet_weights: str = PRETRAINED_NONE) -> list[tuple[str, list[str]]]:
    """(experiment name, its -S changes) of every ablation run, in the paper's row order.

    With ImageNet weights (params.yaml model.imagenet_weights) the baseline row fine-tunes its encoder at the
    official x0.001; from a random init it keeps params.yaml's encoder_lr_mult, or it could not learn at all.
    """
    labeled_count(budget, 1)
    runs = []
    for slug, _, settings in ABLATION_ROWS:
        if settings.get("model.encoder") == "imagenet_vit" and imagenet_weights != PRETRAINED_NONE:
            settings = {**settings, "train.optim.encoder_lr_mult": IMAGENET_ENCODER_LR_MULT}
        for seed in seeds:
            changes = [f"{k}={_yaml(v)}" for k, v in {**settings, **ABLATION_COMMON}.items()]
            changes += [f"split.labeled={budget}", f"train.seed={seed}", f"split.seed={seed}",
                        f"train.iterations={iterations}", *overrides]
            runs.append((f"{ABLATION_PREFIX}{slug}-s{seed}", changes))
    return runs


def dvc_command(name: str, changes: list[str]) -> list[str]:
    return [sys.executable, "-m", "dvc", "exp", "run", "train", "--name", name,
            *[arg for change in changes for arg in ("-S", change)]]


def _exp_show() -> list:
    result = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc exp show failed ({result.stderr.strip().splitlines()[-1:] or 'no message'})")
    return load_exp_show(result.stdout)


def run(args: argparse.Namespace) -> None:
    if args.iterations < 1:
        raise PipelineError(f"--iterations must be >= 1, got {args.iterations}")
    if not Path("dvc.yaml").is_file():
        raise PipelineError("dvc.yaml not found: run the study from the project's root")
    settings = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    params = Params.load()
    if args.ablation:
        weights = settings.get("model.imagenet_weights", params.get_str("model.imagenet_weights"))
        planned = ablation_grid(args.iterations, args.seeds, args.overrides, args.budgets[0], weights)
        finished, write = ablation_runs, write_ablation
    else:
        planned = grid(args.iterations, args.seeds, args.overrides, args.budgets)
        finished, write = study_runs, write_study
    if not args.report_only:
        cover = settings.get("split.cover_classes", str(params.get_bool("split.cover_classes")))
        setting = (args.iterations, labeled_draw(cover.lower() == "true"))
        earlier = {r.name: (r.iterations, r.draw) for r in finished(_exp_show())}
        done = {name for name, ran in earlier.items() if ran == setting}
        stale = [name for name, _ in planned if earlier.get(name, setting) != setting]
        if stale and not args.dry_run:  # dvc refuses to reuse their names
            raise PipelineError(f"study: {len(stale)} earlier experiments ran another setting under these names; "
                                f"`dvc exp remove {' '.join(stale)}` first")
        for index, (name, changes) in enumerate(planned, start=1):
            command = dvc_command(name, changes)
            if args.dry_run:
                print(" ".join(command[1:]))
                continue
            if name in done:
                log.info("[%d/%d] %s: finished before, not run again", index, len(planned), name)
                continue
            log.info("[%d/%d] %s: %s", index, len(planned), name, " ".join(changes))
            if subprocess.run(command).returncode != 0:
                raise PipelineError(f"study: experiment {name} failed (its dvc output is above); rerun to continue")
        if args.dry_run:
            return
    summary = write(_exp_show())
    report = "reports/ablation.md" if args.ablation else "reports/study.md"
    log.info("%s of %d iterations: %s (and its .json%s)", "ablation" if args.ablation else "study",
             summary["iterations"], report, "" if args.ablation else ", reports/plots/study.png")
    print(Path(report).read_text())
