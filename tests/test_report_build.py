"""The comparison report from fixture metrics files, and from the real stage outputs of a tiny project."""
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from semivl_edge.errors import PipelineError
from semivl_edge.evaluation.evaluate import save_label_png
from semivl_edge.report.build import build_report
from semivl_edge.report.comparison import REFERENCE

from test_eval_stages import PALETTE, make_project  # the same tiny project

PER_CLASS = {"background": 90.0, "cat": 50.5, "dog": None}


def eval_metrics(device, cuda, artifact, miou, p50):
    return {
        "miou": miou, "pixel_acc": 95.0, "per_class_iou": PER_CLASS,
        "latency_ms": {"mean": p50 + 1, "p50": p50, "p90": p50 + 2, "count": 4},
        "latency_per_window_ms": {"mean": p50 / 2, "p50": p50 / 2, "p90": p50 / 2, "count": 4},
        "images": 3, "runtime": "x", "artifact": artifact, "device": device, "cuda": cuda,
        "threads": 2, "size_mb": 12.5, "dataset": "synthetic",
    }


def mobile_entry(file, runtime, device, miou):
    return {"file": file, "runtime": runtime, "device": device, "miou": miou, "per_class_iou": PER_CLASS,
            "latency_ms": {"mean": 9.0, "p50": 8.0, "p90": 10.0, "count": 3}, "size_mb": 3.25, "threads": 2}


def mobile_artifacts(prefix, miou):
    host = "host CPU, ExecuTorch XNNPACK"
    return {
        "fp32_pte": mobile_entry(f"models/mobile/{prefix}_fp32.pte", "ExecuTorch XNNPACK", host, miou),
        "int8_pte": mobile_entry(f"models/mobile/{prefix}_int8.pte", "ExecuTorch XNNPACK", host, miou - 2.4),
        "ptl": mobile_entry(f"models/mobile/{prefix}.ptl", "PyTorch lite interpreter",
                            "host CPU, PyTorch lite interpreter", miou + 0.1),
    }


def write_fixture(root, ids):
    metrics = root / "reports" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "eval_gpu.json").write_text(json.dumps({
        **eval_metrics("cpu (no CUDA; GPU fallback)", 0, "models/model.safetensors", 61.0, 40.0),
        "student": eval_metrics("cpu (no CUDA; GPU fallback)", 0, "models/student.safetensors", 55.0, 4.0)}))
    (metrics / "eval_cpu.json").write_text(json.dumps({
        **eval_metrics("CPU (Test CPU)", 0, "models/model.ts", 60.5, 44.0),
        "student": eval_metrics("CPU (Test CPU)", 0, "models/student.ts", 55.0, 5.0)}))
    (metrics / "mobile.json").write_text(json.dumps({
        "target": "host", "device": "host CPU (Test CPU)",
        "windowing": {"mode": "sliding", "short_side": 16, "window": 16, "stride": 16},
        "artifacts": mobile_artifacts("model", 60.4),
        "student": {"artifacts": mobile_artifacts("student", 54.9)},
    }))
    for stage in ("eval_gpu", "eval_cpu", "mobile/fp32_pte"):
        folder = root / "reports" / stage / "predictions"
        folder.mkdir(parents=True)
        for image_id in ids[:2]:
            save_label_png(folder / f"{image_id}.png", np.ones((16, 16), dtype=np.uint8), [tuple(c) for c in PALETTE])


@pytest.fixture
def fixture_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, ids = make_project(tmp_path)
    write_fixture(tmp_path, ids)
    return tmp_path


def test_table_rows_and_reference_rows(fixture_project):
    outputs = build_report(fixture_project)
    rows = list(csv.DictReader(io.StringIO(outputs.csv.read_text())))
    runtimes = [r["runtime"] for r in rows]
    per_model = ["PyTorch (CPU fallback)", "TorchScript (CPU)", "ExecuTorch fp32 (.pte)", "ExecuTorch int8 (.pte)",
                 "PyTorch lite (.ptl)"]
    assert runtimes[:10] == per_model * 2
    assert [r["model"] for r in rows[:10]] == ["SemiVL"] * 5 + ["student"] * 5  # the distilled student's own rows
    student, rows = rows[5:10], rows[:5] + rows[10:]
    assert [r["miou"] for r in student] == ["55.0", "55.0", "54.9", "52.5", "55.0"]
    assert student[0]["artifact"] == "models/student.safetensors" and student[2]["artifact"].endswith("student_fp32.pte")
    assert [r["speedup"] for r in student] == ["10.0", "8.0", "", "", ""]  # over SemiVL's eager fp32 PyTorch
    measured, reference = rows[:5], rows[5:]
    assert measured[0]["device"] == "cpu (no CUDA; GPU fallback)" and measured[0]["miou"] == "61.0"
    assert measured[1]["latency_p50_ms_image"] == "44.0" and measured[1]["size_mb"] == "12.5"
    assert measured[3]["latency_p50_ms_window"] == "8.0" and measured[3]["latency_p50_ms_image"] == ""
    assert measured[2]["device"] == "host CPU, ExecuTorch XNNPACK"
    assert all(r["source"] == "measured here" for r in measured)
    assert [(r["runtime"], r["device"], r["miou"]) for r in reference] == [
        ("PyTorch", "desktop PC (GPU)", "84.0"), ("TorchScript", "desktop PC (CPU)", "77.5"),
        ("TorchScript", "Google Pixel 2", "62.8")]
    assert all(r["source"] == REFERENCE for r in reference)

    text = outputs.markdown.read_text()
    assert ("| SemiVL | PyTorch (CPU fallback) | cpu (no CUDA; GPU fallback) | 61.0 | 40.00 | 20.00 | 1.00x | 12.50 | 2 |"
            in text)
    # Speed-up over eager fp32 PyTorch on the same CPU, per image; none where a row has no per-image latency.
    assert "| SemiVL | TorchScript (CPU) | CPU (Test CPU) | 60.5 | 44.00 | 22.00 | 0.91x |" in text
    assert "| student | TorchScript (CPU) | CPU (Test CPU) | 55.0 | 5.00 | 2.50 | 8.00x |" in text
    assert [r["speedup"] for r in measured] == ["1.0", "0.909", "", "", ""]
    assert all(r["speedup"] == "" for r in reference)
    assert "not measured here" in text and "| TorchScript | Google Pixel 2 | 62.8 | 6658.45 |" in text
    assert "| dog | n/a | n/a |" in text  # absent class: no number invented
    assert "student: ExecuTorch int8 (.pte)" in text  # a per-class column per model and runtime
    assert "host CPU, not a phone" in text and "reference numbers" in text.lower()
    for name in ("per_class_iou.png", "latency.png", "latency_miou.png", "qualitative.png"):
        path = fixture_project / "reports" / "plots" / name
        assert path in outputs.plots and Image.open(path).format == "PNG"
        assert f"plots/{name}" in text


def test_no_speed_up_is_claimed_against_a_gpu_run(fixture_project):
    path = fixture_project / "reports/metrics/eval_gpu.json"
    path.write_text(json.dumps({**eval_metrics("cuda (Test GPU)", 1, "models/model.safetensors", 61.0, 4.0),
                                "student": eval_metrics("cuda (Test GPU)", 1, "models/student.safetensors", 5.0, 1.0)}))
    outputs = build_report(fixture_project)
    assert all(row.speedup is None for row in outputs.rows)
    assert "n/a: the PyTorch row did not run in fp32 on the CPU the others ran on" in outputs.markdown.read_text()


def test_report_says_which_model_it_measures(fixture_project):
    assert "Model:" not in build_report(fixture_project).markdown.read_text()  # train.json is optional
    train = {"method": "semivl", "iterations": 300, "labeled_images": 92, "unlabeled_images": 1372, "miou": 33.3372,
             "encoder": "CLIP semivl-tiny, file models/clip/clip.safetensors"}
    (fixture_project / "reports/metrics/train.json").write_text(json.dumps(train))
    text = build_report(fixture_project).markdown.read_text()
    assert ("Model: `semivl`, 300 iterations on 92 labeled + 1372 unlabeled images, best val mIoU 33.3 during "
            "training; encoder CLIP semivl-tiny, file models/clip/clip.safetensors.") in text


def test_qualitative_panel_has_a_column_per_saved_runtime(fixture_project):
    from semivl_edge.report.build import qualitative_samples
    from semivl_edge.report.comparison import build_rows, load_metrics

    metrics = {k: load_metrics(fixture_project / f"reports/metrics/{k}.json") for k in ("eval_gpu", "eval_cpu", "mobile")}
    rows = build_rows(metrics["eval_gpu"], metrics["eval_cpu"], metrics["mobile"],
                      {"eval_gpu": "a", "eval_cpu": "b", "mobile": "c"})
    samples = qualitative_samples(fixture_project, rows)
    assert len(samples) == 2
    image_id, image, gt, predictions = samples[0]
    assert image.shape == (16, 16, 3) and gt.shape == (16, 16, 3)
    assert [name for name, _ in predictions] == ["SemiVL: PyTorch (CPU fallback)", "SemiVL: TorchScript (CPU)",
                                                 "SemiVL: ExecuTorch fp32 (.pte)"]
    assert tuple(predictions[0][1][0, 0]) == tuple(PALETTE[1])  # class 1 coloured with the palette


def test_missing_metrics_file_is_named(fixture_project):
    (fixture_project / "reports/metrics/mobile.json").unlink()
    with pytest.raises(PipelineError, match="reports/metrics/mobile.json: metrics file not found"):
        build_report(fixture_project)


def test_report_from_real_stage_outputs(tmp_path, monkeypatch):
    """eval_gpu (stand-in model), eval_cpu (a real TorchScript file), bench_mobile on the host, then report."""
    import torch

    from semivl_edge.pipeline import bench_mobile, eval_cpu, eval_gpu, report
    from test_eval_stages import OraclePipeline, stand_in_model
    from test_mobile_bench import WindowStandIn

    monkeypatch.chdir(tmp_path)
    params, _ = make_project(tmp_path)
    (tmp_path / "models" / "mobile").mkdir(parents=True)
    for prefix in ("model", "student"):  # the teacher and the distilled student
        (tmp_path / "models" / f"{prefix}.safetensors").write_bytes(b"\0" * 3000)
        torch.jit.save(torch.jit.script(OraclePipeline()), str(tmp_path / f"models/{prefix}.ts"),
                       _extra_files={"semivl_edge.json": "{}"})
        for name in (f"{prefix}_fp32.pte", f"{prefix}_int8.pte", f"{prefix}.ptl"):
            (tmp_path / "models" / "mobile" / name).write_bytes(b"\0" * 1000)
    stand_in_model(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("semivl_edge.pipeline.bench_mobile.load_runtime", WindowStandIn)

    eval_gpu.run(params)
    eval_cpu.run(params)
    bench_mobile.run(params)
    report.run(params)

    rows = list(csv.DictReader(open(tmp_path / "reports/comparison.csv")))
    assert [r["miou"] for r in rows[:10]] == ["100.0"] * 10
    assert rows[2]["device"] == "host CPU, ExecuTorch XNNPACK" and rows[4]["device"] == "host CPU, PyTorch lite interpreter"
    assert float(rows[2]["latency_p50_ms_window"]) > 0 and float(rows[2]["latency_p50_ms_image"]) > 0
    assert (tmp_path / "reports/plots/qualitative.png").is_file()
