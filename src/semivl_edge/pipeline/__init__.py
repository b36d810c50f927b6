"""The DVC stages. Each module here has `run(params)`; `stages/<name>.py` (the `dvc.yaml` command) is the one
door to it: `python stages/<name>.py [--params FILE]`."""
from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from ..errors import PipelineError
from ..params import Params


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(stage: ModuleType, argv: list[str] | None = None) -> None:
    """Entry point of `stages/<name>.py`: parse --params, run the stage, turn user errors into one line."""
    name = stage.__name__.rpartition(".")[2]
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=stage.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        stage.run(Params.load(args.params))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
