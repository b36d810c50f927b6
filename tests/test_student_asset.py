"""The student's init (distill.init): the committed asset is what its provenance says and loads strictly into the
default student; init files refuse a student they were not made for; `semivl-edge student-asset` makes one."""
import argparse
import json

import pytest
import torch
import yaml

from semivl_edge.distill.pretrain import dense_feature_loss
from semivl_edge.errors import PipelineError
from semivl_edge.hashing import file_sha256
from semivl_edge.model.io import save_model
from semivl_edge.model.student import StudentConfig, build_student, load_student_init, save_student_init
from semivl_edge.tools import student_asset

from conftest import REPO

ASSET = REPO / student_asset.ASSET


def default_student_config(**changes) -> StudentConfig:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return StudentConfig(**{"embed_dim": 128, "num_classes": 21, "head_channels": params["distill"]["head_channels"],
                            **changes})


def test_the_committed_asset_is_what_its_provenance_says_and_the_default():
    provenance = json.loads(ASSET.with_suffix(".json").read_text())
    assert provenance["sha256"] == file_sha256(ASSET)
    assert provenance["size_bytes"] == ASSET.stat().st_size < 20e6
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["distill"]["init"] == student_asset.ASSET.as_posix()
    assert provenance["target"]["clip_pretrained"] == params["clip"]["pretrained"]


def test_the_asset_loads_strictly_into_the_default_student_and_differs_from_a_random_init():
    torch.manual_seed(0)
    random_init = build_student(default_student_config())
    torch.manual_seed(0)
    student = build_student(default_student_config(init=str(ASSET)))
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, random_init.state_dict()[k])]
    assert len(changed) > 100 and all(v.dtype != torch.float16 for v in student.state_dict().values())


def test_an_init_file_round_trips_and_refuses_another_student(tmp_path):
    torch.manual_seed(1)
    source = build_student(StudentConfig(embed_dim=8, num_classes=3, head_channels=16))
    path = tmp_path / "init.safetensors"
    save_student_init(path, source, provenance="test")
    loaded = build_student(StudentConfig(embed_dim=8, num_classes=5, head_channels=16, init=str(path)))
    for key, value in source.state_dict().items():  # float16 storage: equal to its rounding
        assert torch.equal(loaded.state_dict()[key], value.half().to(value.dtype)), key
    with pytest.raises(PipelineError, match=r"distill.init .*init.safetensors: made for another student: embed_dim 8 "
                                            r"\(this student: 16\)"):
        load_student_init(build_student(StudentConfig(embed_dim=16, num_classes=3, head_channels=16)), str(path))
    model_file = tmp_path / "student.safetensors"
    save_model(model_file, source, source.cfg, torch.randn(3, 8))
    with pytest.raises(PipelineError, match="not a student init file"):
        load_student_init(source, str(model_file))
    with pytest.raises(PipelineError, match="not a readable safetensors file"):
        load_student_init(source, str(tmp_path / "absent.safetensors"))
    with pytest.raises(PipelineError, match="distill.init .* and distill.imagenet_weights .* both set"):
        StudentConfig(embed_dim=8, num_classes=3, init=str(path), imagenet_weights="mobilenet.pth")


def test_the_dense_loss_is_zero_on_clips_own_map_and_one_when_orthogonal():
    target = torch.nn.functional.normalize(torch.randn(2, 4, 3, 3), dim=1)
    assert float(dense_feature_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    a, b = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    a[:, 0], b[:, 1] = 1.0, 1.0
    assert float(dense_feature_loss(a, b)) == pytest.approx(1.0)


def test_the_command_pretrains_and_writes_an_asset_with_provenance(tmp_path, one_thread):
    parser = argparse.ArgumentParser()
    student_asset.add_arguments(parser)
    out = tmp_path / "student.safetensors"
    args = parser.parse_args(["--steps", "3", "--batch-size", "2", "--images", "3", "--params",
                              str(REPO / "params.yaml"), "--asset", str(out)])
    student_asset.run(args)
    provenance = json.loads(out.with_suffix(".json").read_text())
    assert provenance["sha256"] == file_sha256(out) and provenance["pretraining"]["steps"] == 3
    assert 0.0 < provenance["pretraining"]["final_loss"] < 2.0
    build_student(default_student_config(init=str(out)))
    with pytest.raises(PipelineError, match="--steps must be >= 1"):
        student_asset.run(parser.parse_args(["--steps", "0", "--asset", str(tmp_path / "x.safetensors")]))
    assert not (tmp_path / "x.safetensors").exists()
