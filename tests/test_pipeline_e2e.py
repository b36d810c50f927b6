"""The whole pipeline through `dvc repro` on a tiny configuration, then `dvc metrics show` as a user reads it."""
from __future__ import annotations

import json

# Small enough for 2 CPU cores in a few minutes, large enough for every stage to do real work.
TINY_PIPELINE = {
    "train": {"iterations": 4, "batch_size": 2, "crop_size": 64, "base_size": 64, "eval_every": 2,
              "checkpoint_every": 2, "workers": 0},
    "eval": {"short_side": 64, "crop_size": 64, "stride": 48, "repeats": 2, "warmup": 1},
    "mobile": {"input_size": 64, "calibration_images": 2, "repeats": 2, "warmup": 1, "device": "host"},
}
RUNTIME_METRICS = {
    "reports/metrics/eval_gpu.json": ["miou", "latency_ms"],
    "reports/metrics/eval_cpu.json": ["miou", "latency_ms"],
}


def test_dvc_repro_whole_pipeline_and_metrics_show(pipeline_project):
    pipeline_project.set_params(TINY_PIPELINE)
    pipeline_project.dvc("repro")

    root = pipeline_project.root
    for path, keys in RUNTIME_METRICS.items():
        metrics = json.loads((root / path).read_text())
        for key in keys:
            assert key in metrics, f"{path} lacks {key}"
        assert 0.0 <= metrics["miou"] <= 100.0
    eval_gpu = json.loads((root / "reports/metrics/eval_gpu.json").read_text())
    assert eval_gpu["cuda"] == 0 and "fallback" in eval_gpu["device"]  # no GPU here: said, not hidden

    mobile = json.loads((root / "reports/metrics/mobile.json").read_text())
    for name in ("fp32_pte", "int8_pte", "ptl"):
        artifact = mobile["artifacts"][name]
        assert 0.0 <= artifact["miou"] <= 100.0 and artifact["latency_ms"]["p50"] > 0
        assert "host CPU" in artifact["device"]

    parity = json.loads((root / "reports/metrics/export_torchscript.json").read_text())
    assert json.dumps(parity)  # written; its thresholds are enforced by the stage itself

    shown = pipeline_project.dvc("metrics", "show", "--json").stdout
    shown_metrics = json.loads(shown)
    files = next(iter(shown_metrics.values()))["data"]
    for path in ["reports/metrics/eval_gpu.json", "reports/metrics/eval_cpu.json", "reports/metrics/mobile.json"]:
        assert "miou" in json.dumps(files[path]["data"]) and "latency_ms" in json.dumps(files[path]["data"])

    table = (root / "reports/comparison.md").read_text()
    for row in ("TorchScript", "ExecuTorch fp32", "ExecuTorch int8", "porting study"):
        assert row in table
    for plot in ("per_class_iou.png", "latency.png", "qualitative.png"):
        assert (root / "reports/plots" / plot).stat().st_size > 0

    # Nothing changed: a second repro runs no stage.
    assert "Data and pipelines are up to date" in pipeline_project.dvc("repro").stdout
