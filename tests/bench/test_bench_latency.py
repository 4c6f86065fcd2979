"""Latency statistics on known sequences, and the measuring loop."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hanrt_bench.latency import Measurement, StageTimer, measure, summarize


def test_summarize_known_sequence():
    s = summarize([i / 1000 for i in range(1, 101)])  # 1..100 ms, shuffled order must not matter
    assert s.n == 100
    assert s.mean_s == pytest.approx(0.0505)
    assert s.p50_s == pytest.approx(0.0505)
    assert s.p90_s == pytest.approx(0.0901)  # linear interpolation: 1 + 0.9 * 99 = 90.1
    assert s.p99_s == pytest.approx(0.09901)
    assert s.max_s == pytest.approx(0.100) and s.min_s == pytest.approx(0.001)
    assert s.std_s == pytest.approx(math.sqrt(100 * 101 / 12) / 1000)  # sample std of 1..n
    ms = s.as_ms()
    assert ms["p90_ms"] == pytest.approx(90.1) and ms["n"] == 100


def test_summarize_order_free_and_single():
    rng = np.random.default_rng(0)
    a = list(rng.permutation(np.arange(1, 11) / 10))
    assert summarize(a).p50_s == pytest.approx(0.55)
    one = summarize([0.25])
    assert one.std_s == 0.0 and one.p99_s == 0.25


@pytest.mark.parametrize("bad", [[], [0.1, -0.1], [float("nan")], [float("inf")]])
def test_summarize_rejects(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_measure_counts_iterations_and_stages():
    calls = []

    def step(t: StageTimer) -> None:
        calls.append(1)
        with t.stage("compute"):
            time.sleep(0.002)
        with t.stage("stitch"):
            pass

    m = measure(step, name="x", frames=2, out_pixels=1000, warmup=2, iters=4)
    assert isinstance(m, Measurement) and m.name == "x" and m.clock == "perf_counter"
    assert len(calls) == 6 and m.stats.n == 4 and len(m.samples_s) == 4
    assert m.stats.min_s >= 0.002
    assert list(m.stages_s) == ["compute", "stitch"]  # pipeline order
    assert 0.002 <= m.stages_s["compute"] <= m.stats.mean_s
    assert m.fps == pytest.approx(2 / m.stats.mean_s)
    assert m.out_mpix_per_s == pytest.approx(1000 / m.stats.mean_s / 1e6)
    d = m.to_dict()
    assert d["stages_ms"]["compute"] >= 2.0 and d["warmup"] == 2


def test_measure_time_limit_stops_early():
    m = measure(lambda t: time.sleep(0.01), name="slow", frames=1, out_pixels=1, warmup=0, iters=50,
                max_seconds=0.02)
    assert 1 <= m.stats.n < 50


def test_measure_rejects_bad_counts():
    with pytest.raises(ValueError):
        measure(lambda t: None, name="x", frames=1, out_pixels=1, iters=0)


def test_stage_timer_add_and_reset():
    t = StageTimer()
    t.add("decode", 0.5)
    t.add("decode", 0.25)
    t.end_iteration()
    t.add("decode", 0.25)
    t.end_iteration()
    assert t.means() == {"decode": pytest.approx(0.5)}
    t.add("decode", 9.0)  # an iteration left open: reset drops it too
    t.reset()
    assert t.means() == {}
    t.end_iteration()
    assert t.means() == {}
