"""The eval_gpu / eval_cpu stages (and the report on their outputs) in a throw-away project directory.

The model is a stand-in that reads the class back from the pixel value, so the expected mIoU is
known (100); eval_cpu runs a real TorchScript file through export.runtimes.load_runtime.
"""
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from semivl_edge.errors import PipelineError
from semivl_edge.params import Params
from semivl_edge.pipeline import eval_cpu, main

from conftest import oracle_voc

NAMES = ["background", "cat", "dog"]
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
SIZE = 16  # val images are SIZE x SIZE and the eval window too: no resizing, exact oracle


def class_file(names):
    def per_class(text):
        return {n: text.format(n) for n in names}
    return {
        "classes": names, "palette": PALETTE[: len(names)],
        "guidelines": per_class("{}"), "gpt_concepts": per_class("a {}"), "oxford": per_class("the {}"),
        "guidance_concepts": {n: [n] for n in names},
    }


def make_project(root, images=3):
    """data/dataset.json, data/splits/val.txt, a VOC root and a class file; returns the params."""
    ids = oracle_voc(root / "data" / "VOC", {f"2008_{i:06d}": (SIZE, SIZE) for i in range(images)}, len(NAMES), PALETTE)
    (root / "data" / "splits").mkdir(parents=True)
    (root / "data" / "splits" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "data" / "dataset.json").write_text(json.dumps(
        {"source": "synthetic", "root": "data/VOC", "num_classes": len(NAMES), "class_names": NAMES}))
    (root / "data" / "classes").mkdir()
    (root / "data" / "classes" / "test.yaml").write_text(yaml.safe_dump(class_file(NAMES)))
    params = {
        "classes": {"file": "data/classes/test.yaml"},
        "eval": {"mode": "sliding", "short_side": SIZE, "crop_size": SIZE, "stride": SIZE, "device": "cuda",
                 "amp": False, "warmup": 1, "repeats": 4, "qualitative": 2},
        "eval_cpu": {"threads": 1},
        "mobile": {"input_size": SIZE, "device": "host", "threads": 1, "calibration_images": 2, "warmup": 1,
                   "repeats": 3, "adb": "adb", "adb_serial": None, "adb_runner_dir": "tools/android",
                   "remote_dir": "/data/local/tmp/semivl_edge"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return Params(params), ids


def decode_classes(x: torch.Tensor) -> torch.Tensor:
    return (x.long() + 20) // 40


class OracleNetwork(torch.nn.Module):
    """network(normalised images, text) -> logits; with mean 0 / std 1 the input is pixel / 255."""

    def forward(self, images, text_embeddings):
        classes = decode_classes((images[:, 0] * 255).round())
        return torch.nn.functional.one_hot(classes, text_embeddings.shape[0]).permute(0, 3, 1, 2).float()


class OraclePipeline(torch.nn.Module):
    """What models/model.ts is: uint8 [B,3,H,W] of any size -> logits [B,C,H,W]."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        classes = (image[:, 0].long() + 20) // 40
        return torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path)


def stand_in_model(monkeypatch):
    cfg = SimpleNamespace(num_classes=len(NAMES), pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0])
    monkeypatch.setattr("semivl_edge.pipeline.eval_gpu.load_model",
                        lambda path: (OracleNetwork(), cfg, torch.randn(len(NAMES), 8)))


def test_eval_gpu_without_cuda_says_cpu_fallback(project, tmp_path, monkeypatch):
    params, ids = project
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.safetensors").write_bytes(b"x" * 2000)
    (tmp_path / "models" / "student.safetensors").write_bytes(b"x" * 1000)
    stand_in_model(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from semivl_edge.pipeline import eval_gpu

    eval_gpu.run(params)
    metrics = json.loads((tmp_path / "reports/metrics/eval_gpu.json").read_text())
    assert metrics["device"] == "cpu (no CUDA; GPU fallback)" and metrics["cuda"] == 0
    assert metrics["miou"] == 100.0 and metrics["pixel_acc"] == 100.0
    assert metrics["per_class_iou"] == {"background": 100.0, "cat": 100.0, "dog": 100.0}
    assert metrics["latency_ms"]["count"] == 4  # eval.repeats, after 1 warm-up (3 images cycled)
    assert set(metrics["latency_ms"]) == {"mean", "p50", "p90", "count"}
    assert metrics["latency_per_window_ms"]["count"] == 4
    assert metrics["threads"] == torch.get_num_threads() and metrics["images"] == 3
    assert metrics["size_mb"] == 0.002 and metrics["amp"] == "none"
    assert sorted(p.name for p in (tmp_path / "reports/eval_gpu/predictions").iterdir()) == [f"{i}.png" for i in ids[:2]]
    assert (tmp_path / "reports/eval_gpu/per_class_iou.csv").read_text().startswith("class,iou,")
    student = metrics["student"]  # the distilled student, scored the same way, its files beside the teacher's
    assert student["artifact"] == "models/student.safetensors" and student["miou"] == 100.0
    assert student["size_mb"] == 0.001 and student["device"] == metrics["device"]
    assert len(list((tmp_path / "reports/eval_gpu/student/predictions").iterdir())) == 2


def test_eval_cpu_runs_the_torchscript_file(project, tmp_path):
    params, _ = project
    (tmp_path / "models").mkdir()
    exported = {"input_size": None, "inference": {"mode": "sliding", "short_side": SIZE, "crop_size": 8, "stride": 8}}
    for name in ("model.ts", "student.ts"):
        torch.jit.save(torch.jit.script(OraclePipeline()), str(tmp_path / "models" / name),
                       _extra_files={"semivl_edge.json": json.dumps(exported)})
    from semivl_edge.pipeline import eval_cpu

    eval_cpu.run(params)
    metrics = json.loads((tmp_path / "reports/metrics/eval_cpu.json").read_text())
    # the geometry recorded in the file wins over eval.*: 4 windows of 8 px per 16 px image
    assert metrics["windowing"] == {"mode": "sliding", "short_side": SIZE, "window": 8, "stride": 8}
    assert metrics["latency_per_window_ms"]["p50"] == pytest.approx(metrics["latency_ms"]["p50"] / 4, rel=1e-2, abs=2e-3)
    assert metrics["miou"] == 100.0 and metrics["threads"] == 1 and metrics["cuda"] == 0
    assert metrics["device"].startswith("CPU (") and metrics["runtime"] == "TorchScript"
    assert (tmp_path / "reports/eval_cpu/predictions").is_dir()
    assert metrics["student"]["artifact"] == "models/student.ts" and metrics["student"]["miou"] == 100.0
    assert (tmp_path / "reports/eval_cpu/student/predictions").is_dir()


@pytest.mark.parametrize("content", [None, b"", b"definitely not a zip archive"])
def test_missing_or_corrupt_model_is_one_line_error(project, tmp_path, capsys, content):
    (tmp_path / "models").mkdir()
    if content is not None:
        (tmp_path / "models/model.ts").write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(eval_cpu, ["--params", "params.yaml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: models/model.ts")
    assert not (tmp_path / "reports/metrics/eval_cpu.json").exists()


def test_eval_gpu_corrupt_checkpoint_is_one_line_error(project, tmp_path):
    params, _ = project
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.safetensors").write_bytes(b"garbage")
    from semivl_edge.pipeline import eval_gpu

    with pytest.raises(PipelineError) as error:
        eval_gpu.run(params)
    assert str(error.value).startswith("models/model.safetensors: not a readable safetensors file")
    assert "\n" not in str(error.value)


def test_class_count_mismatch_is_reported(project, tmp_path, monkeypatch):
    params, _ = project
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.safetensors").write_bytes(b"x")
    cfg = SimpleNamespace(num_classes=5, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)
    monkeypatch.setattr("semivl_edge.pipeline.eval_gpu.load_model", lambda path: (OracleNetwork(), cfg, torch.zeros(5, 8)))
    from semivl_edge.pipeline import eval_gpu

    with pytest.raises(PipelineError, match="5 classes but the dataset has 3"):
        eval_gpu.run(params)


def test_device_choice_and_labels(monkeypatch):
    from semivl_edge.pipeline.eval_gpu import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("cuda") == (torch.device("cpu"), "cpu (no CUDA; GPU fallback)")
    assert choose_device("cpu") == (torch.device("cpu"), "cpu (eval.device: cpu)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA Test GPU")
    assert choose_device("cuda") == (torch.device("cuda"), "cuda (NVIDIA Test GPU)")
