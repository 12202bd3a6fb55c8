"""Dynamic batching scheduler (edge/serving_sim.py): window rules, hand-computed cases, batch 1."""

from __future__ import annotations

import numpy as np
import pytest

from edge_pipeline.edge.serving_sim import (
    compare_policies,
    poisson_arrivals,
    service_from_table,
    simulate,
)


def test_poisson_arrivals_rate_window_and_seed() -> None:
    a = poisson_arrivals(2000.0, 2.0, seed=3)
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 2.0
    assert abs(len(a) - 4000) < 5 * np.sqrt(4000)  # Poisson count within 5 sigma
    gaps = np.diff(a)
    assert gaps.mean() == pytest.approx(1 / 2000, rel=0.05)
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.1)  # exponential: std = mean
    np.testing.assert_array_equal(a, poisson_arrivals(2000.0, 2.0, seed=3))
    assert not np.array_equal(a[:10], poisson_arrivals(2000.0, 2.0, seed=4)[:10])
    with pytest.raises(ValueError, match="must be positive"):
        poisson_arrivals(0, 1.0, seed=0)


def test_hand_computed_schedule() -> None:
    # max_batch 2, wait 5 ms, every batch takes 1 ms.
    arrivals = np.array([0.0, 0.001, 0.002, 0.010])
    res = simulate(arrivals, lambda b: 0.001, max_batch=2, max_wait_s=0.005)
    # [0, 1] dispatch when full at 1 ms; [2] alone at its 5 ms deadline (7 ms); [3] at 15 ms.
    assert res.batch_sizes.tolist() == [2, 1, 1]
    np.testing.assert_allclose(res.dispatch_s, [0.001, 0.007, 0.015])
    np.testing.assert_allclose(res.latency_s, [0.002, 0.001, 0.006, 0.006])


def test_batch1_is_a_fifo_queue() -> None:
    arrivals = np.array([0.0, 0.0005, 0.0006, 0.005])
    res = simulate(arrivals, lambda b: 0.001 * b, max_batch=1, max_wait_s=0.0)
    # served back to back: done at 1, 2, 3 ms, then the late one at 6 ms
    np.testing.assert_allclose(res.latency_s, [0.001, 0.0015, 0.0024, 0.001])
    assert res.batch_sizes.tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("rate", [200.0, 5000.0, 50000.0])
def test_scheduler_respects_max_batch_and_max_wait(rate: float) -> None:
    arrivals = poisson_arrivals(rate, 1.0, seed=1)
    res = simulate(arrivals, lambda b: 0.0, max_batch=8, max_wait_s=0.002)
    assert res.batch_sizes.max() <= 8 and res.batch_sizes.sum() == len(arrivals)
    # a free worker never holds a request longer than max_wait
    assert res.latency_s.max() <= 0.002 + 1e-12
    starts = np.repeat(res.dispatch_s, res.batch_sizes)
    assert np.all(starts >= arrivals - 1e-12)  # nothing runs before it arrives
    if rate >= 50000:
        assert np.median(res.batch_sizes) == 8  # saturated: full batches leave before the deadline


def test_service_table_interpolates() -> None:
    service = service_from_table({1: 0.001, 4: 0.002, 32: 0.009})
    assert service(1) == pytest.approx(0.001)
    assert service(2) == pytest.approx(0.001 + 0.001 / 3)
    assert service(32) == pytest.approx(0.009)


def test_batching_beats_batch1_at_high_rate() -> None:
    table = {1: 0.001, 8: 0.002, 32: 0.004}  # batch-1 capacity 1000 req/s, batch-32 8000 req/s
    rows = compare_policies(
        table, rates=[200.0, 3000.0], max_batch=32, max_wait_ms=5.0, duration_s=2.0, seed=0
    )
    by = {(r["rate_rps"], r["policy"]): r for r in rows}
    assert len(rows) == 4 and by[(3000.0, "batch1")]["offered_load"] == pytest.approx(3.0)
    hi_b1, hi_dyn = by[(3000.0, "batch1")], by[(3000.0, "dynamic")]
    assert hi_b1["throughput_rps"] < 1050  # saturated at its capacity
    assert hi_dyn["throughput_rps"] > 0.95 * 3000  # keeps up
    assert hi_dyn["latency_ms_p95"] < hi_b1["latency_ms_p95"] / 10
    assert hi_dyn["mean_batch"] > 1
    # at low load batch 1 is already fine: batching only adds the wait
    assert by[(200.0, "batch1")]["latency_ms_p50"] < by[(200.0, "dynamic")]["latency_ms_p50"]


def test_invalid_scheduler_settings() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        simulate(np.array([0.0]), lambda b: 0.0, max_batch=0, max_wait_s=0.001)
