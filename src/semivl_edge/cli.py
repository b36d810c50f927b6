"""`semivl-edge`: the command-line tools beside the DVC stages (model summary, benchmarks).

Stages run one way only, as `dvc.yaml` runs them: `python stages/<name>.py` (or `dvc repro <name>`)."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import PipelineError
from .pipeline import configure_logging

# command words -> module with `add_arguments(parser)` and `run(args)`, plus a one-line help.
COMMANDS = {
    ("summary",): ("semivl_edge.tools.summary", "Parameter counts and GFLOPs of a SemiVL model (no download needed)."),
    ("bench", "model"): ("semivl_edge.tools.bench_model", "CPU latency of one eager fp32 forward pass (paper setting and embedded default)."),
    ("bench", "deploy"): ("semivl_edge.tools.bench_deploy", "Export a model and time eager, TorchScript and mobile artifacts per window on the CPU."),
    ("study",): ("semivl_edge.tools.study", "The label-budget study: supervised / UniMatch / SemiVL at the VOC label ratios, as DVC experiments."),
    ("preset",): ("semivl_edge.tools.preset", "Write a named setting into params.yaml (voc-paper: SemiVL's VOC setting; embedded: the default)."),
    ("gpu-check",): ("semivl_edge.tools.gpu_check", "The paper preset's GPU paths in minutes: bf16 vs fp32, iterations/s, memory, DDP, eval throughput."),
    ("clip-asset",): ("semivl_edge.tools.clip_asset", "Version a clip_pretrain output as the embedded default's CLIP asset, with provenance."),
    ("student-asset",): ("semivl_edge.tools.student_asset", "Pretrain the student on CLIP's dense map and version it as distill.init, with provenance."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semivl-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    groups: dict[str, argparse._SubParsersAction] = {}
    for words, (module_name, help_text) in COMMANDS.items():
        target = sub
        for word in words[:-1]:
            if word not in groups:
                groups[word] = sub.add_parser(word, help=f"{word} commands").add_subparsers(dest=f"{word}_command", required=True)
            target = groups[word]
        command = target.add_parser(words[-1], help=help_text, description=help_text)
        command.set_defaults(module=module_name)
        importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        importlib.import_module(args.module).run(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
