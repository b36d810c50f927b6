"""The pipeline through DVC on the shared tiny project: `dvc repro` of every stage, `dvc metrics show`, code
changes DVC must see, caching, a training run killed and resumed, a killed export. All slow (`-m "not slow"`
skips them)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from semivl_edge.code_closure import import_closure
from semivl_edge.data.voc import read_ids
from semivl_edge.export.runtimes import load_runtime
from semivl_edge.train.distributed import torchrun_command

pytestmark = pytest.mark.slow

RUNTIME_METRICS = ("reports/metrics/eval_gpu.json", "reports/metrics/eval_cpu.json")
# What differs between two runs of the same training: time and memory, never the scores.
RUN_DEPENDENT = ("wall_time_s", "seconds_per_iteration", "images_per_second", "peak_memory_mb")


def test_dvc_repro_whole_pipeline_and_metrics_show(reproduced_project):
    root = reproduced_project.root
    for path in RUNTIME_METRICS:
        metrics = json.loads((root / path).read_text())
        assert 0.0 <= metrics["miou"] <= 100.0 and metrics["latency_ms"]["p50"] > 0, path
    eval_gpu = json.loads((root / "reports/metrics/eval_gpu.json").read_text())
    assert eval_gpu["cuda"] == 0 and "fallback" in eval_gpu["device"]  # no GPU here: said, not hidden
    train = json.loads((root / "reports/metrics/train.json").read_text())
    assert eval_gpu["miou"] == pytest.approx(train["miou"], abs=0.01)  # validation scores as eval_gpu does
    assert train["iterations"] == 6 and train["method"] == "semivl"
    assert {"wall_time_s", "images_per_second", "peak_memory_mb", "device", "saved_model"} <= set(train)
    curves = root / "reports/train/plots/metrics"
    assert len((curves / "train/loss.tsv").read_text().splitlines()) == 1 + 6
    for name in ("loss_sup", "loss_s1", "loss_s2", "loss_fp", "loss_dc_s1", "loss_dc_s2", "loss_dc_fp", "lr_encoder"):
        assert (curves / "train" / f"{name}.tsv").is_file(), name
    assert len((curves / "val/miou.tsv").read_text().splitlines()) == 1 + 2  # iterations 3 and 6

    mobile = json.loads((root / "reports/metrics/mobile.json").read_text())
    for name in ("fp32_pte", "int8_pte", "ptl"):
        artifact = mobile["artifacts"][name]
        assert 0.0 <= artifact["miou"] <= 100.0 and artifact["latency_ms"]["p50"] > 0
        assert "host CPU" in artifact["device"]

    # The export's parity checks, as the parameters ask: every fp32 file matches PyTorch.
    parity = json.loads((root / "reports/metrics/export_torchscript.json").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())["export"]
    for entry in (parity["torchscript"], parity["mobile"]["ptl"], parity["mobile"]["pte_fp32"]):
        assert entry["max_abs_diff"] <= params["max_abs_diff"]
        assert entry["argmax_agreement_pct"] >= params["min_argmax_agreement"]

    # Both SemiVL .pte files run every matmul, convolution and norm inside XNNPACK (export.xnnpack_ops spells what it
    # does not take): left to the portable kernels, none of those, nor the attention mask or the L2 norm's pow / sum.
    # (At the tiny project's 2x2 token grid the semantic pooling's partial windows stay outside: avg_pool2d.)
    for key in ("pte_fp32", "pte_int8"):
        left = parity["mobile"][key]["xnnpack"]["non_delegated_by_operator"]
        for op in ("native_layer_norm", "native_group_norm", "convolution", "mm", "linear", "dequantize", "pow",
                   "sum_dim", "logical_not", "any_dim", "full_like", "where_self"):
            assert not any(op in name for name in left), (key, op, left)
        student = parity["student"]["mobile"][key]["xnnpack"]  # the convolutional student: wholly in XNNPACK
        assert student["delegated_pieces"] == 1, (key, student["non_delegated_by_operator"])

    shown = json.loads(reproduced_project.dvc("metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    for path in ("reports/metrics/eval_gpu.json", "reports/metrics/eval_cpu.json"):
        assert files[path]["data"]["miou"] == json.loads((root / path).read_text())["miou"]
    assert files["reports/metrics/mobile.json"]["data"]["artifacts"]["fp32_pte"]["miou"] == \
        mobile["artifacts"]["fp32_pte"]["miou"]

    # The distilled student: trained by `distill`, then exported, evaluated and benchmarked beside the teacher.
    distill = json.loads((root / "reports/metrics/distill.json").read_text())
    assert distill["iterations"] == 3 and "from assets/semivl-tiny-student.safetensors" in distill["student"]
    assert len((root / "reports/distill/loss.csv").read_text().splitlines()) == 1 + 3
    for path in RUNTIME_METRICS:
        student = json.loads((root / path).read_text())["student"]
        assert 0.0 <= student["miou"] <= 100.0 and student["artifact"].startswith("models/student"), path
    assert set(mobile["student"]["artifacts"]) == {"fp32_pte", "int8_pte", "ptl"}
    for entry in (parity["student"]["torchscript"], parity["student"]["mobile"]["pte_fp32"],
                  parity["student"]["mobile"]["pte_segment_fp32"]):
        assert entry["max_abs_diff"] <= params["max_abs_diff"]
    assert files["reports/metrics/eval_gpu.json"]["data"]["student"]["miou"] == eval_gpu["student"]["miou"]

    table = (root / "reports/comparison.md").read_text()
    for row in ("TorchScript", "ExecuTorch fp32", "ExecuTorch int8", "porting study", "| student |"):
        assert row in table
    for plot in ("per_class_iou.png", "latency.png", "qualitative.png"):
        assert (root / "reports/plots" / plot).stat().st_size > 0

    # Nothing changed: a second repro runs no stage.
    assert "Data and pipelines are up to date" in reproduced_project.dvc("repro").stdout


def changed_stages(project) -> set[str]:
    status = json.loads(project.dvc("status", "--json").stdout)
    return set(status)


def test_editing_any_module_marks_exactly_the_stages_that_import_it(copied_project):
    root = copied_project.root
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    users = {name: {p.relative_to(root).as_posix() for p in import_closure(root / "stages" / f"{name}.py",
                                                                           src=root / "src")}
             for name in stages}
    assert changed_stages(copied_project) == set()
    for module in ("src/semivl_edge/evaluation/latency.py", "src/semivl_edge/atomic.py",
                   "src/semivl_edge/export/torchscript.py", "src/semivl_edge/report/plots.py"):
        path = root / module
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        expected = {name for name, files in users.items() if module in files}
        assert expected and changed_stages(copied_project) == expected, module
        path.write_text(original)
    (root / "src/semivl_edge/tools/bench_deploy.py").write_text("# a benchmark edit reruns nothing\n")
    assert changed_stages(copied_project) == set()


def test_a_new_split_reruns_splits_and_what_follows_never_dataset(copied_project):
    copied_project.set_params({"split": {"labeled": 6}})
    status = changed_stages(copied_project)
    assert "splits" in status and "dataset" not in status and "text_embeddings" not in status
    repro = copied_project.dvc("repro", "splits")
    assert "Stage 'dataset' didn't change, skipping" in repro.stdout and "Running stage 'splits'" in repro.stdout
    assert len(read_ids(copied_project.root / "data/splits/labeled.txt")) == 6


def test_text_embeddings_are_cached_and_a_new_definition_source_reruns_them(copied_project):
    root = copied_project.root
    assert "Running stage" not in copied_project.dvc("repro", "text_embeddings").stdout
    copied_project.set_params({"classes": {"definitions": "names"}})
    assert "Running stage 'text_embeddings'" in copied_project.dvc("repro", "text_embeddings").stdout
    assert json.loads((root / "data/text_embeddings/meta.json").read_text())["definitions"] == "names"


def _start(project, *args: str) -> subprocess.Popen:
    """A command in the project in its own process group, with the environment of `project.run` (the same thread
    count: a resumed run is bit-identical only to one that used as many threads)."""
    return subprocess.Popen(list(args), cwd=project.root, env=project.environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    time.sleep(0.2)


def test_a_killed_training_resumes_to_the_metrics_of_an_uninterrupted_run(reproduced_project, copied_project):
    root = copied_project.root
    process = _start(copied_project, sys.executable, "-m", "dvc", "repro", "-f", "train")
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if "checkpoint at iteration 2" in line:
                os.killpg(process.pid, signal.SIGKILL)  # the whole process group, as an OOM killer or a reboot would
                break
    finally:
        _kill(process)
    assert any("checkpoint at iteration 2" in line for line in seen), "".join(seen)[-2000:]
    assert any(p.name.startswith("step_") for p in (root / "models/checkpoints").iterdir())

    resumed = copied_project.dvc("repro", "train")
    assert "resuming from the checkpoint at iteration" in resumed.stdout + resumed.stderr
    reference = json.loads((reproduced_project.root / "reports/metrics/train.json").read_text())
    again = json.loads((root / "reports/metrics/train.json").read_text())
    assert {k: v for k, v in again.items() if k not in RUN_DEPENDENT} == \
        {k: v for k, v in reference.items() if k not in RUN_DEPENDENT}
    curve = "reports/train/plots/metrics/val/miou.tsv"
    assert (root / curve).read_text() != "" and \
        [r.split("\t")[1:] for r in (root / curve).read_text().splitlines()] == \
        [r.split("\t")[1:] for r in (reproduced_project.root / curve).read_text().splitlines()]
    weights, reference_weights = (load_file(r / "models/model.safetensors") for r in (root, reproduced_project.root))
    assert weights.keys() == reference_weights.keys()
    assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)
    assert [p.name for p in (root / "models/checkpoints").iterdir()] == ["completed.json"]
    assert changed_stages(copied_project) <= {"distill", "eval_gpu", "export_torchscript", "eval_cpu", "bench_mobile",
                                              "report"}

    # DDP: the same stage script under torchrun, 2 CPU processes with gloo, one global batch of 2 split over them.
    copied_project.set_params({"train": {"iterations": 2, "eval_every": 2}})
    copied_project.run(*torchrun_command("params.yaml", 2))
    metrics = json.loads((root / "reports/metrics/train.json").read_text())
    assert metrics["iterations"] == 2 and metrics["device"].endswith("x2")


def test_a_killed_export_leaves_nothing_half_written(copied_project):
    root = copied_project.root
    process = _start(copied_project, sys.executable, "stages/export_torchscript.py")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if list((root / "models").glob(".*.tmp")) or list((root / "models").glob(".mobile.*")):
                break
            time.sleep(0.05)
    finally:
        _kill(process)
    # Every file under its real name is complete (the previous export's, or a finished new one); what the kill
    # left is a hidden temporary beside the outputs, never inside the models/mobile output folder.
    for name in ("models/model.ts", "models/mobile/model.ptl", "models/mobile/model_fp32.pte",
                 "models/mobile/model_int8.pte"):
        load_runtime(root / name)
    assert not [p.name for p in (root / "models/mobile").iterdir() if p.name.startswith(".")]
    # (the next write of the same path removes the leftover: tests/test_bad_inputs.py)


def test_the_study_command_runs_its_grid_as_dvc_experiments_and_reports_them(copied_project):
    root = copied_project.root
    study = [sys.executable, "-m", "semivl_edge.cli", "study", "--iterations", "2", "--seeds", "0",
             "--budgets", "1/7", "--set", "train.eval_every=2"]
    copied_project.run(*study)
    summary = json.loads((root / "reports/study.json").read_text())
    assert summary["iterations"] == 2
    assert list(summary["budgets"]) == ["3", "all"]  # 1/7 of the tiny pool's 24 images; the bound labels all 24
    assert {m: len(v) for m, v in summary["budgets"]["3"].items()} == {"supervised": 1, "unimatch": 1, "semivl": 1}
    assert summary["budgets"]["all"].keys() == {"supervised"}
    assert all(0 <= v <= 100 for methods in summary["budgets"].values() for vs in methods.values() for v in vs)
    assert "| all | supervised | 1 |" in (root / "reports/study.md").read_text()
    assert (root / "reports/plots/study.png").stat().st_size > 0
    assert copied_project.dvc("exp", "show", "--csv").stdout.count("study-") == 4
    again = copied_project.run(*study)  # a finished study runs nothing again
    assert "Running stage" not in again.stdout + again.stderr and "finished before" in again.stderr
