"""The `train` stage through DVC on a tiny configuration: outputs, a real kill + resume, DDP with gloo, launcher."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.train.distributed import check_multi_gpu, torchrun_command

TRAIN_PARAMS = {
    "train": {"method": "semivl", "iterations": 6, "batch_size": 2, "crop_size": 32, "base_size": 32,
              "eval_every": 3, "checkpoint_every": 2, "workers": 0, "device": "cpu"},
    "model": {"decoder_dim": 16},
    "eval": {"short_side": 32, "crop_size": 32, "stride": 32},
}


def _kill_after_first_checkpoint(project) -> str:
    """Start `dvc repro train`, SIGKILL its whole process group once a checkpoint is written; return the output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train"], cwd=project.root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if "checkpoint at iteration 2" in line:
                os.killpg(process.pid, signal.SIGKILL)
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    time.sleep(0.2)
    return "".join(seen)


def test_dvc_repro_train_writes_the_outputs_and_resumes_after_a_kill(pipeline_project, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny steps: one thread avoids spin-waiting on a shared machine
    project = pipeline_project
    project.set_params(TRAIN_PARAMS)
    project.dvc("repro", "text_embeddings")

    output = _kill_after_first_checkpoint(project)
    assert "checkpoint at iteration 2" in output, output[-2000:]
    checkpoints = project.root / "models" / "checkpoints"
    assert any(p.name.startswith("step_") for p in checkpoints.iterdir())
    assert not (project.root / "reports" / "metrics" / "train.json").exists()

    resumed = project.dvc("repro", "train")
    log = resumed.stdout + resumed.stderr
    assert "resuming from the checkpoint at iteration" in log, log[-2000:]
    # (Bit-identical weights and metrics after a resume: tests/test_train_loop.py, in process.)
    assert [p.name for p in checkpoints.iterdir()] == ["completed.json"]  # nothing stale left to resume

    # The outputs other stages and users rely on.
    metrics = json.loads((project.root / "reports" / "metrics" / "train.json").read_text())
    assert metrics["iterations"] == 6 and metrics["method"] == "semivl" and 0 <= metrics["miou"] <= 100
    assert {"wall_time_s", "images_per_second", "peak_memory_mb", "device", "saved_model"} <= set(metrics)
    from semivl_edge.model.io import load_model

    model, cfg, text = load_model(project.root / "models")
    assert cfg.image_size == 32 and text.shape[0] == 21
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32), text).shape == (1, 21, 32, 32)
    curves = project.root / "reports" / "train" / "plots" / "metrics"
    loss_rows = (curves / "train" / "loss.tsv").read_text().splitlines()
    assert loss_rows[0].split("\t")[-1] == "loss" and len(loss_rows) == 1 + 6
    for name in ("loss_sup", "loss_s1", "loss_s2", "loss_fp", "loss_dc_s1", "loss_dc_s2", "loss_dc_fp", "lr_encoder"):
        assert (curves / "train" / f"{name}.tsv").is_file(), name
    assert len((curves / "val" / "miou.tsv").read_text().splitlines()) == 1 + 2  # iterations 3 and 6
    status = project.dvc("status", "train").stdout
    assert "changed" not in status, status

    # DDP: the same module under torchrun, 2 CPU processes with gloo, one global batch of 2 split over them.
    project.set_params({"train": {"iterations": 2, "eval_every": 2}})
    project.run(*torchrun_command("params.yaml", 2))
    metrics = json.loads((project.root / "reports" / "metrics" / "train.json").read_text())
    assert metrics["iterations"] == 2 and metrics["device"].endswith("x2")


def test_torchrun_command_and_gpu_checks():
    command = torchrun_command("params.yaml", 4)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=4" in command
    assert command[-3:] == ["stages/train.py", "--params", "params.yaml"]
    with pytest.raises(PipelineError, match="train.device is cpu"):
        check_multi_gpu(2, "cpu")
    if torch.cuda.device_count() < 64:
        with pytest.raises(PipelineError, match="train.gpus is 64"):
            check_multi_gpu(64, "auto")
