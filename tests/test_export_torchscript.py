"""TorchScript and lite-interpreter export of the real tiny model: parity, metadata, bad files and inputs."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.evaluation.inference import InferenceConfig, SegmentationPipeline, predict_windows
from semivl_edge.export.mobile import WindowModel, export_lite, lower_all, try_optimize_for_mobile, xnnpack_in_torch
from semivl_edge.export.runtimes import load_runtime
from semivl_edge.export.torchscript import measure_parity, quiet_torchscript, save_torchscript, script_pipeline

from conftest import build_tiny_segmenter

CROP = 64
CLASSES = 4
INFER = InferenceConfig("sliding", CROP, CROP, 48)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_segmenter(CLASSES, CROP)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """model.ts and two .ptl files (window = crop, and a 32 px window resized to the crop inside)."""
    network, cfg, text = tiny
    folder = tmp_path_factory.mktemp("export")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_torchscript(script_pipeline(network, text, cfg.pixel_mean, cfg.pixel_std, INFER), folder / "model.ts",
                         {"input_size": None, "num_classes": CLASSES})
        windows = {size: WindowModel(network, text, cfg.pixel_mean, cfg.pixel_std, size, CROP).eval() for size in (CROP, 32)}
        for size, window_model in windows.items():
            export_lite(window_model, folder / f"model_{size}.ptl")
    return folder, windows, caught


def images():
    generator = torch.Generator().manual_seed(5)
    return [torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=generator) for h, w in [(64, 80), (96, 70)]]


def test_torchscript_file_matches_pytorch_at_any_size(tiny, exported):
    network, cfg, text = tiny
    folder, _, _ = exported
    runtime = load_runtime(folder / "model.ts")
    assert runtime.kind == "torchscript" and runtime.input_size is None
    assert runtime.metadata["num_classes"] == CLASSES
    eager = SegmentationPipeline(network, text, cfg.pixel_mean, cfg.pixel_std, INFER).eval()
    parity = measure_parity(eager, runtime, images())
    assert parity.max_abs_diff < 1e-4
    assert parity.argmax_agreement_pct == 100.0
    assert runtime(torch.zeros(2, 3, 50, 61, dtype=torch.uint8)).shape == (2, CLASSES, 50, 61)


@pytest.mark.parametrize("size", [CROP, 32])
def test_lite_interpreter_file_matches_pytorch(exported, size):
    folder, windows, _ = exported
    runtime = load_runtime(folder / f"model_{size}.ptl")
    assert runtime.kind == "lite_interpreter" and runtime.input_size == size
    reference = lambda x: predict_windows(windows[size], x, INFER, window_size=size)  # noqa: E731
    candidate = lambda x: predict_windows(runtime, x, INFER, window_size=size)  # noqa: E731
    parity = measure_parity(reference, candidate, images())
    assert parity.max_abs_diff < 1e-4
    assert parity.argmax_agreement_pct == 100.0


def test_export_hides_the_torchscript_deprecation_warnings(exported):
    _, _, caught = exported
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not [m for m in messages if "torch.jit" in m or "Lite Interpreter" in m], messages


def test_optimize_for_mobile_detection_does_not_crash(exported):
    folder, windows, _ = exported
    with quiet_torchscript():
        scripted = torch.jit.script(torch.nn.Conv2d(3, 4, 3).eval())
    module, applied = try_optimize_for_mobile(scripted)
    assert module is not None
    assert applied == xnnpack_in_torch()
    if not xnnpack_in_torch():  # the torch 2.13 wheels: the module comes back unchanged
        assert module is scripted


def test_whole_mode_is_refused_for_torchscript(tiny):
    network, cfg, text = tiny
    with pytest.raises(PipelineError, match="sliding"):
        script_pipeline(network, text, cfg.pixel_mean, cfg.pixel_std, InferenceConfig("whole", CROP, CROP, 48))


# --- bad files and inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ts", ".ptl", ".pte"])
def test_missing_and_corrupt_model_files_give_one_line_errors(tmp_path, suffix):
    missing = tmp_path / f"absent{suffix}"
    with pytest.raises(PipelineError, match="not found") as info:
        load_runtime(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)

    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"this is not a model" * 50)
    with pytest.raises(PipelineError) as info:
        load_runtime(corrupt)
    assert str(corrupt) in str(info.value) and "\n" not in str(info.value)

    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(PipelineError, match="empty"):
        load_runtime(empty)


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(PipelineError, match="unknown model format"):
        load_runtime(path)


def test_fixed_size_artifact_refuses_other_sizes(exported):
    folder, _, _ = exported
    path = folder / f"model_{CROP}.ptl"
    runtime = load_runtime(path)
    with pytest.raises(PipelineError, match=f"{CROP}, {CROP}") as info:
        runtime(torch.zeros(1, 3, CROP, CROP + 16, dtype=torch.uint8))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(PipelineError, match="uint8"):
        runtime(torch.zeros(1, 3, CROP, CROP))
    with pytest.raises(PipelineError, match="uint8"):
        load_runtime(folder / "model.ts")(torch.zeros(1, 3, 10, 10))


def _write_pid(text: str, path: Path) -> dict:
    """A stand-in lowering job (module level, so a worker process can unpickle it)."""
    path.write_text(text)
    return {"pid": os.getpid()}


def _refuse(path: Path) -> dict:
    raise PipelineError(f"{path.name}: cannot be lowered")


EXPORT_IN_A_FRESH_PROCESS = """
import sys
sys.path.insert(0, {tests!r})
import torch
from conftest import build_tiny_segmenter
from semivl_edge.export.mobile import WindowModel, export_lite
from semivl_edge.export.torchscript import save_torchscript, script_pipeline
from semivl_edge.evaluation.inference import InferenceConfig
torch.set_num_threads(1)
network, cfg, text = build_tiny_segmenter({classes}, {crop})
export_lite(WindowModel(network, text, cfg.pixel_mean, cfg.pixel_std, {crop}, {crop}).eval(), sys.argv[1] + "/model.ptl")
save_torchscript(script_pipeline(network, text, cfg.pixel_mean, cfg.pixel_std, {infer!r}), sys.argv[1] + "/model.ts",
                 {{"input_size": None}})
"""


@pytest.mark.slow  # two fresh processes, as two runs of the export stage (TorchScript numbers classes per process)
def test_the_same_model_exports_to_the_same_bytes(tmp_path):
    """DVC hashes the files: an export rerun on the same weights must not look like a new model downstream."""
    script = EXPORT_IN_A_FRESH_PROCESS.format(tests=str(Path(__file__).parent), classes=CLASSES, crop=CROP, infer=INFER)
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        subprocess.run([sys.executable, "-c", script, str(tmp_path / run)], check=True, capture_output=True)
    for name in ("model.ptl", "model.ts"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


@pytest.mark.slow  # worker processes start by importing torch
def test_lower_all_writes_every_file_in_worker_processes_and_keeps_the_job_order(tmp_path):
    jobs = {tmp_path / f"{name}.pte": (_write_pid, (name,)) for name in ("slow", "medium", "fast")}
    done = lower_all(jobs, workers=2)
    assert list(done) == ["slow.pte", "medium.pte", "fast.pte"]
    assert [(tmp_path / name).read_text() for name in done] == ["slow", "medium", "fast"]
    assert os.getpid() not in {summary["pid"] for summary in done.values()}
    assert {summary["pid"] for summary in lower_all(jobs, workers=1).values()} == {os.getpid()}


@pytest.mark.slow
def test_a_job_failing_in_a_worker_stops_with_its_own_error(tmp_path):
    jobs = {tmp_path / "good.pte": (_write_pid, ("good",)), tmp_path / "bad.pte": (_refuse, ())}
    with pytest.raises(PipelineError, match="^bad.pte: cannot be lowered$"):
        lower_all(jobs, workers=2)
