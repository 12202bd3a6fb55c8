"""Comparisons, deployment gates and the choice of the edge model, on benchmark results.

A result is one model's dict from `edge_pipeline.edge.benchmarking.benchmark_model` (figures at 1
thread under `latency_ms["1"]`); these functions are pure. The gate limits are params.yaml
`benchmark.gates` (edge_pipeline/config/edge.py:Gates).
"""

from __future__ import annotations

from typing import Any

from edge_pipeline.config.edge import Gates

EPS_PTS = 1e-9  # float slack: a drop of exactly the limit (0.91 - 0.90 = 1.0000000000000009) passes


def fp32_counterpart(r: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The float32 model an integer model derives from: its `source` when benchmarked (same stage
    first), else a float32 sibling in the same runtime derived from the same source."""
    floats = [o for o in results if o["dtype"] == "float32"]
    by_source = [o for o in floats if r["source"] in (o["id"], o["name"])]
    by_source.sort(key=lambda o: o["stage"] != r["stage"])
    siblings = [o for o in floats if o["runtime"] == r["runtime"] and o["source"] == r["source"]]
    hits = by_source or (siblings if r["source"] else [])
    return hits[0] if hits else None


def add_comparisons(results: list[dict[str, Any]], *, baseline: str, peak: dict[str, Any]) -> None:
    """Add in place: ratios vs the baseline (teacher) at 1 thread, INT8-vs-FP32 speed-up and flag,
    achieved GMAC/s at 1 thread next to the machine's single-thread peak for the dtype."""
    base = next(r for r in results if r["id"] == baseline)
    p50 = {r["id"]: r["latency_ms"]["1"]["p50"] for r in results}
    for r in results:
        r["vs_baseline"] = {
            "baseline": baseline,
            "speedup": p50[baseline] / p50[r["id"]],
            "size_reduction": base["size_mb"] / r["size_mb"],
            "accuracy_change_pts": (r["accuracy"] - base["accuracy"]) * 100,
        }
        src = fp32_counterpart(r, results) if r["dtype"] != "float32" else None
        r["vs_fp32"] = (
            None
            if src is None
            else {
                "fp32": src["id"],
                "speedup": p50[src["id"]] / p50[r["id"]],
                "int8_slower": p50[r["id"]] > p50[src["id"]],
            }
        )
        kind = "float32" if r["dtype"] == "float32" else "int8"
        r["gmacs_per_s"] = r["macs"] / (p50[r["id"]] / 1e3) / 1e9
        r["peak_gmacs_per_s"] = peak[f"{kind}_gmacs_1t"]
        r["peak_fraction"] = r["gmacs_per_s"] / r["peak_gmacs_per_s"]


def verdict(result: dict[str, Any], *, reference_accuracy: float, gates: Gates) -> dict[str, Any]:
    """{"passed", "failures"}: every gate `result` fails, each with the figure and the limit."""
    failures = []
    if result["size_mb"] > gates.max_size_mb:
        failures.append(f"size {result['size_mb']:.2f} MB > {gates.max_size_mb:g} MB")
    drop = (reference_accuracy - result["accuracy"]) * 100
    if drop > gates.max_accuracy_drop_pts + EPS_PTS:
        failures.append(
            f"accuracy {result['accuracy']:.2%} is {drop:.2f} pts below the reference "
            f"({reference_accuracy:.2%}) > {gates.max_accuracy_drop_pts:g} pts"
        )
    p95 = result["latency_ms"]["1"]["p95"]
    if p95 > gates.max_latency_ms_p95:
        failures.append(f"p95 latency {p95:.3f} ms at 1 thread > {gates.max_latency_ms_p95:g} ms")
    return {"passed": not failures, "failures": failures}


def rank_key(r: dict[str, Any], choose_by: str) -> tuple[float, ...]:
    """Sort key, best first: `choose_by` first, the other two criteria break ties."""
    keys = {
        "latency": r["latency_ms"]["1"]["p50"],
        "accuracy": -r["accuracy"],
        "size": r["size_mb"],
    }
    return (keys[choose_by], *(v for k, v in keys.items() if k != choose_by))


def choose(
    results: list[dict[str, Any]], *, candidates: list[str], choose_by: str
) -> tuple[str | None, dict[str, str]]:
    """(best passing candidate id or None, {runtime: best passing candidate id in that runtime})."""
    ok = sorted(
        (r for r in results if r["verdict"]["passed"] and r["id"] in candidates),
        key=lambda r: rank_key(r, choose_by),
    )
    per_runtime: dict[str, str] = {}
    for r in ok:
        per_runtime.setdefault(r["runtime"], r["id"])
    return (ok[0]["id"] if ok else None), per_runtime
