"""bench_mobile: the adb path through a fake `adb` on PATH, the host path, and the timing parsers.

The fake adb records every command it receives and prints canned answers; the only numbers it
gives are the timing lines a real runner prints, and the test checks they are parsed (not made up).
"""
import json
import os
import sys
import textwrap

import pytest
import torch

from semivl_edge.errors import PipelineError
from semivl_edge.mobile.runners import ExecutorRunner, SpeedBenchmarkTorch

from test_eval_stages import SIZE, make_project  # the same tiny project as the eval stage tests

ET_TIMES = [50.0, 11.0, 12.0, 14.0]  # executor_runner: mobile.warmup (1) iteration, then mobile.repeats (3)
PEP_TIMES_US = [21000, 22000, 26000]  # speed_benchmark_torch --report_pep (timed runs only)

FAKE_ADB = textwrap.dedent('''\
    #!{python}
    import json, os, re, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_ADB_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    state = os.environ.get("FAKE_ADB_STATE", "device")
    if args == ["devices"]:
        print("List of devices attached")
        if state != "none":
            print("FAKE0123\\t" + state)
        sys.exit(0)
    if args[:2] == ["-s", "FAKE0123"]:
        args = args[2:]
    if args[:3] == ["shell", "getprop", "ro.product.model"]:
        print("Pixel 7")
    elif args[0] == "push":
        print("1 file pushed")
    elif args[0] == "shell" and "executor_runner --" in args[1]:
        runs = int(re.search(r"--num_executions=(\\d+)", args[1]).group(1))
        times = {et_times}
        for i in range(runs):
            print("I 00:00:01.000 executorch:executor_runner.cpp:300] Iteration %d of %d: %.3f ms" % (i + 1, runs, times[i]))
        print("I 00:00:01.100 executorch:executor_runner.cpp:310] Model executed successfully %d time(s) in %.3f ms." % (runs, sum(times[:runs])))
    elif args[0] == "shell" and "speed_benchmark_torch --" in args[1]:
        print("Starting benchmark.")
        for t in {pep}:
            print('PyTorchObserver {{"type": "NET", "unit": "us", "metric": "latency", "value": "%d"}}' % t)
        print("Main run finished. Microseconds per iter: 23000. Iters per second: 43.4")
''')


class WindowStandIn:
    """A fixed-size mobile artifact: uint8 window [1,3,S,S] -> logits (the class read from the pixel value)."""

    def __init__(self, path):
        self.path = path
        self.input_size = SIZE
        self.kind = "stand-in"
        self.calls = 0

    def __call__(self, window):
        assert window.dtype == torch.uint8 and tuple(window.shape) == (1, 3, SIZE, SIZE)
        self.calls += 1
        classes = (window[:, 0].long() + 20) // 40
        return torch.nn.functional.one_hot(classes.clamp(max=2), 3).permute(0, 3, 1, 2).float()


@pytest.fixture
def mobile_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, _ = make_project(tmp_path)
    mobile = tmp_path / "models" / "mobile"
    mobile.mkdir(parents=True)
    for name in ("model_fp32.pte", "model_int8.pte", "model.ptl", "student_fp32.pte", "student_int8.pte", "student.ptl"):
        (mobile / name).write_bytes(b"\0" * 2000)
    monkeypatch.setattr("semivl_edge.pipeline.bench_mobile.load_runtime", WindowStandIn)
    return params


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable, et_times=ET_TIMES, pep=PEP_TIMES_US))
    script.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    runners = tmp_path / "tools" / "android"
    runners.mkdir(parents=True)
    for binary in ("executor_runner", "speed_benchmark_torch"):
        (runners / binary).write_bytes(b"\x7fELF fake")
    return log


def adb_commands(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_stage(params):
    from semivl_edge.pipeline import bench_mobile

    bench_mobile.run(params)
    return json.loads(open("reports/metrics/mobile.json").read())


def with_mobile(params, **overrides):
    data = dict(params.data)
    data["mobile"] = {**data["mobile"], **overrides}
    from semivl_edge.params import Params

    return Params(data)


def test_phone_over_adb(mobile_project, fake_adb):
    metrics = run_stage(with_mobile(mobile_project, device="adb"))
    commands = adb_commands(fake_adb)
    remote = "/data/local/tmp/semivl_edge"
    on_phone = [c[2:] for c in commands if c[:2] == ["-s", "FAKE0123"]]
    assert ["shell", "getprop", "ro.product.model"] in on_phone
    assert ["push", "tools/android/executor_runner", f"{remote}/executor_runner"] in on_phone
    assert ["push", "tools/android/speed_benchmark_torch", f"{remote}/speed_benchmark_torch"] in on_phone
    assert ["shell", f"chmod 755 {remote}/executor_runner"] in on_phone
    for name in ("model_fp32.pte", "model_int8.pte", "model.ptl", "student_fp32.pte", "student_int8.pte", "student.ptl"):
        assert ["push", f"models/mobile/{name}", f"{remote}/{name}"] in on_phone
    runs = [c[1] for c in on_phone if c[0] == "shell" and " --" in c[1]]
    et = [r for r in runs if r.startswith(f"{remote}/executor_runner ")]
    assert len(et) == 4 and all("--num_executions=4" in r and "--cpu_threads=1" in r for r in et)
    assert f"--model_path={remote}/model_int8.pte" in et[1] and f"--model_path={remote}/student_int8.pte" in et[3]
    pt, student_pt = [r for r in runs if r.startswith(f"{remote}/speed_benchmark_torch ")]
    assert f"--model={remote}/student.ptl" in student_pt
    assert f"--model={remote}/model.ptl" in pt and f"--input_dims=1,3,{SIZE},{SIZE}" in pt
    assert "--input_type=uint8_t" in pt and "--warmup=1" in pt and "--iter=3" in pt

    assert metrics["target"] == "adb" and metrics["device"] == "Pixel 7 (Android, adb)"
    fp32, ptl = metrics["artifacts"]["fp32_pte"], metrics["artifacts"]["ptl"]
    assert fp32["device"] == "Pixel 7 (Android, adb), ExecuTorch XNNPACK" and fp32["benchmark"] == "executor_runner"
    assert ptl["device"] == "Pixel 7 (Android, adb), PyTorch lite interpreter"
    # timings are exactly what the fake printed: warm-up runs dropped, us -> ms
    assert fp32["latency_ms"] == {"mean": pytest.approx(37 / 3, abs=1e-3), "p50": 12.0, "p90": 13.6, "count": 3}
    assert ptl["latency_ms"]["p50"] == 22.0 and ptl["latency_ms"]["count"] == 3
    # mIoU is computed on the host through the artifact's runtime, and labelled so
    assert fp32["miou"] == 100.0 and fp32["miou_device"].startswith("host CPU, ExecuTorch XNNPACK")
    assert "latency_per_image_ms" not in fp32  # host per-image timings do not belong to a phone row
    assert fp32["size_mb"] == 0.002 and fp32["threads"] == 1
    student = metrics["student"]["artifacts"]["fp32_pte"]  # the distilled student, benchmarked the same way
    assert student["file"] == "models/mobile/student_fp32.pte" and student["device"] == fp32["device"]


def test_host_rows_never_claim_a_phone(mobile_project, fake_adb, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_ADB_STATE", "none")  # adb present, no phone: auto falls back to the host
    metrics = run_stage(with_mobile(mobile_project, device="auto"))
    assert metrics["target"] == "host" and metrics["device"].startswith("host CPU")
    assert metrics["artifacts"]["int8_pte"]["device"] == "host CPU, ExecuTorch XNNPACK"
    assert metrics["artifacts"]["ptl"]["device"] == "host CPU, PyTorch lite interpreter"
    for entry in metrics["artifacts"].values():
        assert entry["latency_ms"]["count"] == 3 and entry["latency_ms"]["p50"] > 0
        assert entry["latency_per_image_ms"]["count"] == 2  # 3 val images, 1 warm-up
        assert entry["miou"] == 100.0
    assert metrics["windowing"]["window"] == SIZE
    assert adb_commands(fake_adb) == [["devices"]]  # asked for phones, ran nothing on a device
    assert sorted(p.name for p in (tmp_path / "reports/mobile").iterdir()) == ["fp32_pte", "int8_pte", "ptl", "student"]
    assert sorted(p.name for p in (tmp_path / "reports/mobile/student").iterdir()) == ["fp32_pte", "int8_pte", "ptl"]


def test_adb_requested_without_a_ready_phone_fails_clearly(mobile_project, fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    with pytest.raises(PipelineError, match="no device in state 'device'"):
        run_stage(with_mobile(mobile_project, device="adb"))


def test_adb_requested_without_adb_fails_clearly(mobile_project):
    with pytest.raises(PipelineError, match="no adb executable"):
        run_stage(with_mobile(mobile_project, device="adb", adb="/nonexistent/adb"))


def test_missing_runner_binary_says_where_to_get_it(mobile_project, fake_adb, tmp_path):
    (tmp_path / "tools/android/speed_benchmark_torch").unlink()
    with pytest.raises(PipelineError) as error:
        run_stage(with_mobile(mobile_project, device="adb"))
    message = str(error.value)
    assert message.startswith("tools/android/speed_benchmark_torch: benchmark binary not found")
    assert "binaries/speed_benchmark_torch" in message and "\n" not in message
    assert not any(" --" in " ".join(c) for c in adb_commands(fake_adb))  # checked before running anything


def test_executor_runner_total_only_gives_mean_without_percentiles():
    timings = ExecutorRunner().parse("Model executed successfully 4 time(s) in 40.0 ms.", warmup=1, repeats=3)
    assert not timings.per_run and timings.mean_ms == 10.0 and "total" in timings.note


def test_speed_benchmark_mean_fallback_and_garbage():
    timings = SpeedBenchmarkTorch().parse("Main run finished. Microseconds per iter: 2500. Iters per", warmup=0, repeats=5)
    assert timings.mean_ms == 2.5 and not timings.per_run
    with pytest.raises(PipelineError, match="printed no timing line; its output ends with: Segmentation fault"):
        SpeedBenchmarkTorch().parse("loading\nSegmentation fault", warmup=0, repeats=5)
    with pytest.raises(PipelineError, match="printed 2 iteration timings, expected 4"):
        ExecutorRunner().parse("Iteration 1 of 2: 1.0 ms\nIteration 2 of 2: 1.0 ms", warmup=1, repeats=3)
