"""Latency statistics and the timing loop, on a fake clock (no real speed is tested)."""
import math

import pytest

from semivl_edge.evaluation.latency import LatencyStats, cpu_model_name, cuda_synchronizer, device_name, time_calls


class FakeClock:
    """Each call to fn advances the clock by the next scripted duration (seconds)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def timer(self):
        return self.now

    def fn(self):
        self.now += self.durations[self.calls]
        self.calls += 1


def test_stats_mean_and_percentiles():
    stats = LatencyStats.from_times([10.0, 20.0, 30.0, 40.0])
    assert (stats.mean, stats.p50, stats.p90, stats.count) == (25.0, 25.0, pytest.approx(37.0), 4)
    assert stats.to_metrics() == {"mean": 25.0, "p50": 25.0, "p90": 37.0, "count": 4}


def test_no_timings_give_nulls():
    stats = LatencyStats.from_times([])
    assert math.isnan(stats.mean) and stats.count == 0
    assert stats.to_metrics() == {"mean": None, "p50": None, "p90": None, "count": 0}


def test_warmup_calls_are_not_timed():
    clock = FakeClock([5.0, 5.0, 0.010, 0.020, 0.030])  # two slow warm-up calls, then 10/20/30 ms
    times = time_calls(clock.fn, warmup=2, repeats=3, timer=clock.timer)
    assert clock.calls == 5
    assert times == pytest.approx([10.0, 20.0, 30.0])


def test_synchronize_runs_around_each_timed_call():
    events = []
    clock = FakeClock([0.001] * 3)
    time_calls(lambda: (events.append("call"), clock.fn()), warmup=1, repeats=2, timer=clock.timer,
               synchronize=lambda: events.append("sync"))
    assert events == ["call", "sync", "call", "sync", "sync", "call", "sync"]


def test_bad_counts_rejected():
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, repeats=0)


def test_device_names_are_recorded():
    assert cpu_model_name().strip()
    assert device_name("cpu") == cpu_model_name()
    assert cuda_synchronizer("cpu") is None
