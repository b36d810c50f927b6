"""scripts/gpu_check.sh: the paper preset's GPU check, run here in its --dry mode (CPU, toy size)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semivl_edge.tools.gpu_check import scratch_params
from semivl_edge.tools.preset import VOC_PAPER

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_run_uses_the_paper_preset_at_512_with_vit_b_16():
    params = scratch_params(dry=False, iterations=200)
    assert params["clip"]["model"] == "ViT-B-16" and params["clip"]["pretrained"] == "none"
    assert params["train"]["crop_size"] == params["eval"]["crop_size"] == 512 and params["eval"]["stride"] == 426
    assert params["train"]["device"] == "cuda" and params["train"]["amp"] == "bf16"
    assert params["model"]["decoder_dim"] == VOC_PAPER["model.decoder_dim"]
    assert params["train"]["optim"]["encoder_lr_mult"] == VOC_PAPER["train.optim.encoder_lr_mult"]
    assert params["data"]["synthetic"]["long_side"] == 512 and params["train"]["iterations"] == 200


@pytest.mark.slow
def test_gpu_check_dry_runs_the_whole_sequence_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "semivl_edge.cli", "gpu-check", "--dry", "--out", str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["bf16_vs_fp32"]["steps"] == 2 and len(report["bf16_vs_fp32"]["loss_bf16"]) == 2
    assert report["train"]["iterations_per_second"] > 0 and report["eval_gpu"]["images_per_second"] > 0
    assert report["distill"]["iterations_per_second"] > 0
    assert report["train_ddp"] is None  # no GPU here
    assert (REPO / "scripts/gpu_check.sh").stat().st_mode & 0o111
