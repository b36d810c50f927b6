"""Stage export_torchscript end to end on a small generated VOC root, ExecuTorch included.

ExecuTorch lowering of the real tiny SemiVL model takes minutes on 2 cores, so the stage runs here
(once per module) on a stand-in network with the same interface that also has what made lowering
the real encoder hard: a weight read twice and a sliced weight (the MaskCLIP value path). The real
model's TorchScript / lite-interpreter export is tested in test_export_torchscript.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from semivl_edge.errors import PipelineError
from semivl_edge.evaluation.inference import InferenceConfig, SegmentationPipeline, predict_windows
from semivl_edge.export.mobile import WindowModel, xnnpack_in_torch
from semivl_edge.export.runtimes import load_runtime
from semivl_edge.params import Params
from semivl_edge.pipeline import export_torchscript as stage

from conftest import model_config, write_voc_root

pytest.importorskip("executorch")
pytestmark = pytest.mark.slow  # real ExecuTorch lowering and quantisation: half a minute of the suite

CLASSES = 4
SIZE = 64
PARAMS = {
    "eval": {"mode": "sliding", "short_side": SIZE, "crop_size": SIZE, "stride": 48},
    "mobile": {"input_size": SIZE, "calibration_images": 3},
    "export": {"parity_images": 3, "max_abs_diff": 1e-3, "min_argmax_agreement": 99.9, "workers": 2},
}


class StandIn(nn.Module):
    """forward(images_normalised [B,3,H,W], text [C,E]) -> logits [B,C,H,W], like SemiVLSegmenter (encode, decode)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 8, stride=8)
        self.proj = nn.Linear(32, 3 * embed_dim)
        self.mix = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.patch(images)
        side = F.conv2d(images * 0.5, self.patch.weight, self.patch.bias, stride=8)  # the same weight read twice
        b, _, h, w = x.shape
        tokens = (x + torch.relu(side)).flatten(2).transpose(1, 2)
        e = self.mix.in_channels
        value = F.linear(tokens, self.proj.weight[2 * e :], self.proj.bias[2 * e :])  # a sliced weight
        return x, side, value.transpose(1, 2).reshape(b, e, h, w)

    def decode(self, features, text: torch.Tensor, size) -> torch.Tensor:
        x, side, value = features
        gate = torch.sigmoid((x + side).mean(dim=1, keepdim=True))
        features = F.normalize(self.mix(torch.relu(value)) * gate, dim=1)
        logits = torch.einsum("behw,ce->bchw", features, text) * 10.0
        return F.interpolate(logits, size=[size[0], size[1]], mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), text, (images.shape[2], images.shape[3]))


def student_stand_in(embed_dim: int, names: list[str]) -> nn.Module:
    """A small network in the student's place, with the student's config (the real student's lowering is checked on
    the tiny project's export, tests/test_pipeline_e2e.py)."""
    from semivl_edge.model.student import StudentConfig

    torch.manual_seed(1)
    student = StandIn(embed_dim).eval()
    student.cfg = StudentConfig(embed_dim=embed_dim, num_classes=len(names), class_names=names)
    return student


def smooth_image(index: int, height: int, width: int) -> np.ndarray:
    """Smooth colour blobs rather than noise: closer to photos, and JPEG keeps them intact."""
    base = np.random.default_rng(index).integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))


IMAGES = {"img_0": (80, 64), "img_1": (96, 72), "img_2": (64, 100), "img_3": (64, 64), "img_4": (90, 90),
          "img_5": (120, 70)}  # id -> (width, height)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with data, a (stand-in) model, and the stage run once in it."""
    root = tmp_path_factory.mktemp("project")
    voc = root / "voc"
    write_voc_root(voc, IMAGES, smooth_image)
    (root / "data" / "splits").mkdir(parents=True)
    names = [f"class_{i}" for i in range(CLASSES)]
    (root / "data" / "dataset.json").write_text(json.dumps({"root": str(voc), "num_classes": CLASSES, "class_names": names}))
    (root / "data" / "splits" / "labeled.txt").write_text("img_0\nimg_1\n")
    (root / "data" / "splits" / "unlabeled.txt").write_text("img_2\nimg_3\n")
    (root / "data" / "splits" / "val.txt").write_text("img_4\nimg_5\nimg_0\n")

    torch.manual_seed(0)
    cfg = model_config(image_size=SIZE, num_classes=CLASSES, class_names=names)
    network = StandIn(int(cfg.embed_dim)).eval()
    text = F.normalize(torch.randn(CLASSES, int(cfg.embed_dim)), dim=-1)
    student = student_stand_in(int(cfg.embed_dim), names)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        monkeypatch.setattr(stage, "load_model", lambda path: (student, student.cfg, text) if "student" in str(path)
                            else (network, cfg, text))
        try:
            stage.run(Params(PARAMS))
        finally:
            torch.set_num_threads(before)
    return root, network, cfg, text


def test_stage_writes_every_artifact_and_the_metrics(project):
    root, *_ = project
    for name in ("models/model.ts", "models/mobile/model.ptl", "models/mobile/model_fp32.pte",
                 "models/mobile/model_int8.pte", "models/mobile/manifest.json"):
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    metrics = json.loads((root / "reports/metrics/export_torchscript.json").read_text())
    assert metrics["parity_images"] == 3
    assert metrics["optimize_for_mobile_applied"] == int(xnnpack_in_torch())  # applied wherever torch can
    assert metrics["torchscript"]["max_abs_diff"] < 1e-4
    assert metrics["torchscript"]["argmax_agreement_pct"] == 100.0
    mobile = metrics["mobile"]
    assert mobile["input_size"] == SIZE and mobile["calibration_images"] == 3
    # window = crop: the uint8 window path gives the pipeline's logits (same resize, padding, windows)
    assert mobile["window_path_vs_pipeline"]["max_abs_diff"] < 1e-4
    for key in ("ptl", "pte_fp32"):
        assert mobile[key]["max_abs_diff"] < 1e-3, key
        assert mobile[key]["argmax_agreement_pct"] >= 99.9, key
    assert mobile["pte_int8"]["argmax_agreement_pct"] > 80.0  # int8: close, not equal
    assert mobile["pte_int8"]["size_mb"] < mobile["pte_fp32"]["size_mb"]
    for key in ("pte_fp32", "pte_int8"):  # what XNNPACK took, and what it left to the portable kernels
        xnnpack = mobile[key]["xnnpack"]
        assert xnnpack["delegated_pieces"] >= 1 and xnnpack["delegated_nodes"] > 0
        assert sum(xnnpack["non_delegated_by_operator"].values()) == xnnpack["non_delegated_nodes"]
    manifest = json.loads((root / "models/mobile/manifest.json").read_text())
    assert manifest["input_size"] == SIZE and len(manifest["class_names"]) == CLASSES


def test_the_student_is_exported_and_checked_as_the_teacher(project):
    root, *_ = project
    for name in ("models/student.ts", "models/mobile/student.ptl", "models/mobile/student_fp32.pte",
                 "models/mobile/student_int8.pte", "models/mobile/student_segment_fp32.pte"):
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    student = json.loads((root / "reports/metrics/export_torchscript.json").read_text())["student"]
    for entry in (student["torchscript"], student["mobile"]["ptl"], student["mobile"]["pte_fp32"],
                  student["mobile"]["pte_segment_fp32"]):
        assert entry["max_abs_diff"] < 1e-3 and entry["argmax_agreement_pct"] >= 99.9
    assert student["mobile"]["pte_int8"]["argmax_agreement_pct"] > 80.0
    files = json.loads((root / "models/mobile/manifest.json").read_text())["files"]
    assert {"student_fp32.pte", "student_int8.pte", "student_segment_fp32.pte"} <= set(files)


def test_exported_files_reproduce_pytorch(project):
    root, network, cfg, text = project
    infer = InferenceConfig(**PARAMS["eval"])
    image = torch.randint(0, 256, (1, 3, 75, 110), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, infer)(image)
        window_model = WindowModel(network, text, cfg.pixel_mean, cfg.pixel_std, SIZE, SIZE).eval()
        expected_windows = predict_windows(window_model, image, infer, window_size=SIZE)
    torch.testing.assert_close(load_runtime(root / "models/model.ts")(image), expected, rtol=0, atol=1e-4)
    for name in ("model.ptl", "model_fp32.pte"):
        runtime = load_runtime(root / "models/mobile" / name)
        assert runtime.input_size == SIZE
        got = predict_windows(runtime, image, infer, window_size=runtime.input_size)
        torch.testing.assert_close(got, expected_windows, rtol=0, atol=1e-3)
    int8 = predict_windows(load_runtime(root / "models/mobile/model_int8.pte"), image, infer, window_size=SIZE)
    assert (int8.argmax(1) == expected_windows.argmax(1)).float().mean() > 0.8


def test_pte_refuses_a_window_of_the_wrong_size(project):
    root, *_ = project
    runtime = load_runtime(root / "models/mobile/model_fp32.pte")
    assert runtime.kind == "executorch"
    with pytest.raises(PipelineError, match="model_fp32.pte") as info:
        runtime(torch.zeros(1, 3, SIZE + 8, SIZE, dtype=torch.uint8))
    assert "\n" not in str(info.value)


def test_broken_parity_stops_the_stage(project, monkeypatch):
    root, network, cfg, text = project
    real = stage.script_pipeline

    def drifted(network, text_embeddings, *args, **kwargs):  # an export whose numbers drifted from PyTorch
        return real(network, text_embeddings.flip(0), *args, **kwargs)

    monkeypatch.chdir(root)
    monkeypatch.setattr(stage, "load_model", lambda path: (network, cfg, text))
    monkeypatch.setattr(stage, "script_pipeline", drifted)
    before = (root / "models/model.ts").read_bytes()
    with pytest.raises(PipelineError, match="parity with PyTorch broken"):
        stage.run(Params(PARAMS))
    assert (root / "models/model.ts").read_bytes() == before  # the failed export replaced nothing


def test_corrupt_model_checkpoint_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.safetensors").write_bytes(b"garbage" * 10)
    (tmp_path / "models/model.json").write_text("{}")
    with pytest.raises(PipelineError) as info:
        stage.run(Params(PARAMS))
    assert "models/model.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_whole_mode_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = json.loads(json.dumps(PARAMS))
    params["eval"]["mode"] = "whole"
    with pytest.raises(PipelineError, match="eval.mode"):
        stage.run(Params(params))


def test_bench_deploy_times_every_runtime_and_writes_the_table(tmp_path, monkeypatch):
    """`semivl-edge bench deploy` plumbing with the tiny config (network swapped for the stand-in to keep it fast)."""
    import argparse

    from semivl_edge.tools import bench_deploy

    cfg = model_config(image_size=SIZE, num_classes=CLASSES)
    text = F.normalize(torch.randn(CLASSES, int(cfg.embed_dim), generator=torch.Generator().manual_seed(0)), dim=-1)
    monkeypatch.setattr(bench_deploy, "build_random_model", lambda args: (StandIn(int(cfg.embed_dim)).eval(), cfg, text))
    student = student_stand_in(int(cfg.embed_dim), [f"class_{i}" for i in range(CLASSES)])
    monkeypatch.setattr(bench_deploy, "build_random_student", lambda args, embed_dim: (student, student.cfg))
    parser = argparse.ArgumentParser()
    bench_deploy.add_arguments(parser)
    args = parser.parse_args(["--clip-model", "semivl-tiny", "--image-size", str(SIZE), "--classes", str(CLASSES),
                              "--threads", "1", "--warmup", "0", "--repeats", "2", "--calibration", "2",
                              "--student", "--split", "--out", str(tmp_path)])
    before = torch.get_num_threads()
    try:
        bench_deploy.run(args)
    finally:
        torch.set_num_threads(before)
    result = json.loads((tmp_path / f"deploy_semivl-tiny_{SIZE}_student.json").read_text())
    assert set(result["runtimes"]) == set(bench_deploy.RUNTIMES)
    for key, entry in result["runtimes"].items():
        assert entry["latency_ms"]["count"] == 2 and entry["latency_ms"]["mean"] > 0, key
    assert result["runtimes"]["pte_fp32"]["argmax_agreement_pct"] >= 99.9
    assert result["threads"] == 1 and result["optimize_for_mobile_applied"] == int(xnnpack_in_torch())
    table = (tmp_path / f"deploy_semivl-tiny_{SIZE}_student.md").read_text()
    assert "ExecuTorch XNNPACK int8 .pte" in table and "| runtime |" in table
    assert set(result["xnnpack_delegation"]) == {"pte_fp32", "pte_int8"} and "| delegated pieces |" in table
    roof = result["roofline"]
    assert roof["gflops_per_window"] > 0 and roof["matmul_gflops_per_s"] > 0 and "Roofline:" in table
    assert set(roof["p50_over_floor"]) == set(bench_deploy.RUNTIMES)
    p50 = {key: entry["latency_ms"]["p50"] for key, entry in result["runtimes"].items()}
    ratios = result["speed_ratios"]
    assert ratios["pte_fp32_vs_eager_fp32"] == pytest.approx(p50["eager_fp32"] / p50["pte_fp32"], rel=1e-3)
    assert ratios["pte_int8_vs_pte_fp32"] == pytest.approx(p50["pte_fp32"] / p50["pte_int8"], rel=1e-3)
    assert "Speed-ups, p50 over p50 in this run:" in table
    # --split: the encoder and the decoder exported and timed apart, on every runtime that runs a .pte
    assert {part: set(times) for part, times in result["split"].items()} == {
        part: {"eager_fp32", "pte_fp32", "pte_int8"} for part in ("encoder", "decoder")}
    assert all(p > 0 for times in result["split"].values() for p in times.values())
    assert "Where the time goes" in table and "| decoder |" in table
    # --student: the distilled student timed the same way, beside the teacher, every operator in XNNPACK
    student = result["student"]
    assert set(student["runtimes"]) == set(student["p50_share_of_teacher"]) == set(bench_deploy.RUNTIMES)
    assert student["runtimes"]["pte_fp32"]["argmax_agreement_pct"] >= 99.9
    assert set(student["xnnpack_delegation"]) == {"pte_fp32", "pte_int8"}
    assert "## The distilled student" in table and "as a share of SemiVL's" in table
