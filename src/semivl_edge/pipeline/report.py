"""Stage report: reports/comparison.md, reports/comparison.csv and reports/plots/*.png.

One row per measured runtime (PyTorch on the GPU or its CPU fallback, TorchScript on the CPU,
the ExecuTorch fp32 and int8 files and the lite-interpreter file) beside the porting study's
published rows, which are marked as reference numbers, not measurements.
"""
from __future__ import annotations

import logging

from ..params import Params
from ..report.build import build_report

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    outputs = build_report(".")
    log.info("report: %s, %s and %d plots", outputs.markdown, outputs.csv, len(outputs.plots))
