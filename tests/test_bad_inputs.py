"""Bad inputs that no other file covers: window sizes the model cannot take, exported files that are not models.
(Data, parameter and checkpoint cases live beside the code they test; the closing note of the integrity issue
lists them all.)"""
from __future__ import annotations

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.evaluation.inference import InferenceConfig, SegmentationPipeline
from semivl_edge.export.runtimes import load_runtime
from semivl_edge.model.config import model_config_from_params

from conftest import committed_params


def test_a_training_crop_that_is_not_whole_patches_is_refused():
    with pytest.raises(PipelineError) as error:
        model_config_from_params(committed_params({"train": {"crop_size": 100}}), ["a", "b"])
    assert str(error.value) == "train.crop_size (100) must be a multiple of the patch size 16 of clip.model semivl-tiny"


def test_an_eval_window_that_is_not_whole_patches_is_refused():
    with pytest.raises(PipelineError, match=r"^eval.crop_size \(100\) must be a multiple of the model's patch size"):
        SegmentationPipeline(torch.nn.Identity(), torch.zeros(2, 8), (0.5,) * 3, (0.5,) * 3,
                             InferenceConfig(mode="sliding", short_side=100, crop_size=100, stride=80))


@pytest.mark.parametrize("suffix", [".ts", ".ptl", ".pte"])
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x00" * 64])
def test_a_garbage_exported_file_is_a_one_line_error_naming_it(tmp_path, suffix, content):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    with pytest.raises(PipelineError) as error:
        load_runtime(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_the_next_write_removes_what_a_killed_write_left(tmp_path):
    from semivl_edge.atomic import atomic_dir, atomic_path

    (tmp_path / ".model.ts.abc123.tmp").write_bytes(b"half a file")  # as SIGKILL leaves it mid-write
    (tmp_path / ".mobile.xyz.tmp").mkdir()
    (tmp_path / ".other.ts.abc.tmp").write_bytes(b"someone else's")
    with atomic_path(tmp_path / "model.ts") as tmp:
        tmp.write_bytes(b"whole")
    with atomic_dir(tmp_path / "mobile") as folder:
        (folder / "model.pte").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.ts.abc.tmp", "mobile", "model.ts"]
