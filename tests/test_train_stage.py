"""The `train` stage's launcher: the torchrun command and the GPU checks (the stage through DVC, a real kill +
resume and DDP with gloo: tests/test_pipeline_e2e.py)."""
from __future__ import annotations

import sys

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.train.distributed import check_multi_gpu, torchrun_command


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
