"""The DVC stages. Each module here has `run(params)`; `stages/<name>.py` is the door to it."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import PipelineError
from ..params import Params

STAGES = {
    "dataset": "Materialise the Pascal-VOC-format dataset (the embedded synthetic default) or validate a real VOC root.",
    "splits": "Write the labeled / unlabeled / val id lists (VOC protocol: 92, 183, 366, 732, 1464 labeled).",
    "clip_pretrain": "Pretrain the embedded CLIP contrastively on synthetic image-caption pairs (when clip.pretrained is its output).",
    "text_embeddings": "Embed the class definitions and guidance concepts with the CLIP text encoder (cached).",
    "train": "Semi-supervised training: SemiVL, UniMatch or supervised-only, by parameter.",
    "eval_gpu": "Evaluate the PyTorch model on the GPU (CPU fallback, labelled as such): mIoU, per-class IoU, latency.",
    "export_torchscript": "Export TorchScript (models/model.ts) and the mobile artifacts (.ptl, ExecuTorch .pte), with parity checks.",
    "eval_cpu": "Evaluate the exported TorchScript model on the CPU: mIoU, per-class IoU, latency.",
    "bench_mobile": "Benchmark the mobile artifacts on an Android device over adb, or on the host (labelled as such).",
    "report": "Build the PyTorch / TorchScript / mobile comparison table and plots.",
}


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(stage: str, argv: list[str] | None = None) -> None:
    """Entry point of `stages/<stage>.py`: parse --params, run the stage, turn user errors into one line."""
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=STAGES[stage])
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        module = importlib.import_module(f"semivl_edge.pipeline.{stage}")
        module.run(Params.load(args.params))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
