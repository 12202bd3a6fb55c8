"""Dynamic batching for serving, simulated in virtual time from measured batch latencies.

A single worker serves a Poisson request stream. The adaptive scheduler waits, once the worker is
free and a request is queued, until `max_batch` requests are queued or the oldest one has waited
`max_wait_s`, then runs them as one batch; batch-1 serving is the same scheduler with `max_batch=1`.
A batch of b images takes the runtime's measured median latency at batch b
(edge_pipeline/edge/measure.py:batch_latency_table, interpolated between measured sizes). Virtual
time makes the comparison deterministic on a shared 2-core machine, where a threaded real-time run
measures the neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ServingResult:
    """latency_s: float (N,) arrival -> result per request; batch_sizes: int (M,) per batch run."""

    arrivals: np.ndarray
    latency_s: np.ndarray
    batch_sizes: np.ndarray
    dispatch_s: np.ndarray  # float (M,) virtual time each batch started

    @property
    def makespan_s(self) -> float:
        return float((self.arrivals + self.latency_s).max() - self.arrivals.min())


def poisson_arrivals(rate: float, duration_s: float, *, seed: int) -> np.ndarray:
    """Sorted arrival times (N,) in [0, duration_s) of a Poisson stream of `rate` requests/s."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate ({rate}) and duration_s ({duration_s}) must be positive")
    rng = np.random.default_rng(seed)
    n = int(rate * duration_s * 1.5) + 20  # enough exponential gaps to cover the window
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while times[-1] < duration_s:  # astronomically rare; keeps the stream complete
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, n))])
    return times[times < duration_s]


def service_from_table(table: dict[int, float]) -> Callable[[int], float]:
    """Seconds for a batch of b, linearly interpolated between the measured batch sizes."""
    sizes = np.array(sorted(table), dtype=float)
    secs = np.array([table[int(b)] for b in sizes])
    return lambda b: float(np.interp(b, sizes, secs))


def simulate(
    arrivals: np.ndarray,
    service_s: Callable[[int], float],
    *,
    max_batch: int,
    max_wait_s: float,
) -> ServingResult:
    """Serve sorted `arrivals` (N,) with the adaptive batch scheduler; see the module docstring."""
    if max_batch < 1 or max_wait_s < 0:
        raise ValueError(f"max_batch ({max_batch}) must be >= 1 and max_wait_s ({max_wait_s}) >= 0")
    n = len(arrivals)
    latency = np.empty(n)
    sizes, starts = [], []
    free_at, i = 0.0, 0
    while i < n:
        ready = max(free_at, arrivals[i])  # worker free and the oldest request queued
        deadline = max(ready, arrivals[i] + max_wait_s)
        fill = i + max_batch - 1  # the request that would fill the batch
        if fill < n and arrivals[fill] <= deadline:
            start, j = max(ready, arrivals[fill]), fill + 1
        else:
            start = deadline
            j = min(int(np.searchsorted(arrivals, deadline, side="right")), i + max_batch)
        done = start + service_s(j - i)
        latency[i:j] = done - arrivals[i:j]
        sizes.append(j - i)
        starts.append(start)
        free_at, i = done, j
    return ServingResult(arrivals, latency, np.array(sizes), np.array(starts))


def summarize(result: ServingResult) -> dict[str, float]:
    """Throughput (requests/s over the makespan) and latency percentiles in ms."""
    ms = result.latency_s * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "requests": int(len(ms)),
        "throughput_rps": len(ms) / result.makespan_s,
        "latency_ms_p50": float(p50),
        "latency_ms_p95": float(p95),
        "latency_ms_p99": float(p99),
        "mean_batch": float(result.batch_sizes.mean()),
        "max_batch_seen": int(result.batch_sizes.max()),
    }


def compare_policies(
    table: dict[int, float],
    *,
    rates: list[float],
    max_batch: int,
    max_wait_ms: float,
    duration_s: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Batch-1 vs dynamic batching at each offered `rate` (requests/s), same arrivals for both.

    Returns one row per (rate, policy) with `summarize`'s figures and `offered_load` = rate x the
    batch-1 latency (> 1 means batch-1 serving cannot keep up).
    """
    service = service_from_table(table)
    rows = []
    for k, rate in enumerate(rates):
        arrivals = poisson_arrivals(rate, duration_s, seed=seed + k)
        for policy, mb, wait in (("batch1", 1, 0.0), ("dynamic", max_batch, max_wait_ms / 1e3)):
            res = simulate(arrivals, service, max_batch=mb, max_wait_s=wait)
            rows.append(
                {"rate_rps": rate, "policy": policy, "offered_load": rate * service(1)}
                | summarize(res)
            )
    return rows
