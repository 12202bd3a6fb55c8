"""Comparisons, deployment gates and the choice of the edge model, on benchmark results.

A result is one model's dict from `edge_pipeline.edge.benchmarking.benchmark_model` (figures at 1
thread under `latency_ms["1"]`); these functions are pure. The gate limits are params.yaml
`benchmark.gates` (edge_pipeline/config/edge.py:Gates).

Quality gates are against the teacher and the best FP32 model (the higher of the two, for
accuracy and for macro-F1 separately), plus an absolute accuracy floor that is never below the
majority-class rate of the test split. The chooser then ranks by `choose_by` only the passing
candidates within `choice_tolerance_pts` of the best passing one, and says why it passed over
every other model. Latencies within `choice_latency_tolerance_pct` of the fastest of those count
as equal, so the other criteria decide between them: two runs of the same night (or the same
model in two runtimes) would otherwise pick by timing noise.
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


QUALITY = {"accuracy": "accuracy", "macro_f1": "macro-F1"}  # gated figures and their names


def references(results: list[dict[str, Any]], *, teacher: str) -> dict[str, dict[str, Any]]:
    """{figure: {"value", "model"}} for accuracy and macro-F1: the higher of the teacher's and the
    best float32 model's (the teacher first on ties), the bar the quality gates measure against."""
    pool = [r for r in results if r["id"] == teacher]
    pool += [r for r in results if r["dtype"] == "float32" and r["id"] != teacher]
    refs = {}
    for key in QUALITY:
        best = max(pool, key=lambda r: r[key])  # max keeps the first of equals: the teacher
        refs[key] = {"value": best[key], "model": best["id"]}
    return refs


def floor_failure(accuracy: float, *, min_accuracy: float, majority: dict[str, Any]) -> str | None:
    """Why `accuracy` is below the absolute floor, or None: it must reach `min_accuracy`
    (benchmark.gates.min_accuracy) and beat always answering the majority class `majority`
    ({"class", "rate"} of the test split)."""
    if accuracy < min_accuracy - EPS_PTS / 100:
        return f"accuracy {accuracy:.2%} < floor {min_accuracy:.2%} (benchmark.gates.min_accuracy)"
    if accuracy <= majority["rate"] + EPS_PTS / 100:
        return (
            f"accuracy {accuracy:.2%} <= majority-class rate {majority['rate']:.2%} (always "
            f"answering {majority['class']!r} scores that)"
        )
    return None


def verdict(
    result: dict[str, Any],
    *,
    refs: dict[str, dict[str, Any]],
    majority: dict[str, Any],
    gates: Gates,
) -> dict[str, Any]:
    """{"passed", "failures"}: every gate `result` fails, each with the figure and the limit.

    refs: `references(...)`; majority: {"class", "rate"} of the test split.
    """
    failures = []
    if result["size_mb"] > gates.max_size_mb:
        failures.append(f"size {result['size_mb']:.2f} MB > {gates.max_size_mb:g} MB")
    floor = floor_failure(result["accuracy"], min_accuracy=gates.min_accuracy, majority=majority)
    if floor:
        failures.append(floor)
    limits = {"accuracy": gates.max_accuracy_drop_pts, "macro_f1": gates.max_macro_f1_drop_pts}
    for key, name in QUALITY.items():
        ref, limit = refs[key], limits[key]
        drop = (ref["value"] - result[key]) * 100
        if drop > limit + EPS_PTS:
            failures.append(
                f"{name} {result[key]:.2%} is {drop:.2f} pts below {ref['value']:.2%} of "
                f"{ref['model']} > {limit:g} pts"
            )
    p95 = result["latency_ms"]["1"]["p95"]
    if p95 > gates.max_latency_ms_p95:
        failures.append(f"p95 latency {p95:.3f} ms at 1 thread > {gates.max_latency_ms_p95:g} ms")
    return {"passed": not failures, "failures": failures}


RANK_FIGURES = {  # choose_by -> (figure of a result, how it reads)
    "latency": (lambda r: r["latency_ms"]["1"]["p50"], "p50 {:.3f} ms"),
    "accuracy": (lambda r: -r["accuracy"], "accuracy {:.2%}"),
    "size": (lambda r: r["size_mb"] * 1000, "size {:.1f} kB"),
}


def _order(choose_by: str) -> list[str]:
    return [choose_by, *(k for k in RANK_FIGURES if k != choose_by)]


def rank_key(
    r: dict[str, Any], choose_by: str, *, latency: float | None = None
) -> tuple[float, ...]:
    """Sort key, best first: `choose_by` first, the other two criteria break ties. `latency`, when
    given, stands for r's p50 (a p50 within the latency tolerance counts as the fastest one)."""
    keys = {k: fig(r) for k, (fig, _) in RANK_FIGURES.items()}
    if latency is not None:
        keys["latency"] = latency
    return tuple(keys[k] for k in _order(choose_by))


def _shown(r: dict[str, Any], figure: str) -> str:
    fig, fmt = RANK_FIGURES[figure]
    return fmt.format(abs(fig(r)))


def choose(
    results: list[dict[str, Any]],
    *,
    candidates: list[str],
    choose_by: str,
    tolerance_pts: float,
    latency_tolerance_pct: float,
) -> dict[str, Any]:
    """The edge model: best by `choose_by` among the passing candidates within `tolerance_pts` of
    the best passing candidate on accuracy and on macro-F1 (each, in points); among those, a p50
    within `latency_tolerance_pct` of the fastest one counts as equal to it.

    Returns {"chosen": id or None, "best": {figure: {"value", "model"}} of the passing candidates,
    "per_runtime": {runtime: best passing id, within tolerance first}, "passed_over": [{"id",
    "reason"}] for every other model, in results order}.
    """
    ok = [r for r in results if r["verdict"]["passed"] and r["id"] in candidates]
    best = {
        k: {"value": (top := max(ok, key=lambda r: r[k]))[k], "model": top["id"]}
        for k in QUALITY
    } if ok else {}  # fmt: skip
    gaps = {r["id"]: {k: (best[k]["value"] - r[k]) * 100 for k in QUALITY} for r in ok}
    near = {i for i, g in gaps.items() if all(v <= tolerance_pts + EPS_PTS for v in g.values())}
    if ok and not near:  # the best accuracy and the best macro-F1 are far apart: least worst gap
        near = {min(gaps, key=lambda i: max(gaps[i].values()))}
    p50 = {r["id"]: RANK_FIGURES["latency"][0](r) for r in ok if r["id"] in near}
    fastest = min(p50.values(), default=0.0)
    level = {i: fastest if p50[i] <= fastest * (1 + latency_tolerance_pct / 100) else p50[i]
             for i in near}  # fmt: skip
    keys = {r["id"]: rank_key(r, choose_by, latency=level.get(r["id"])) for r in ok}
    ranked = sorted(ok, key=lambda r: (r["id"] not in near, keys[r["id"]]))
    chosen = ranked[0] if ranked else None
    per_runtime: dict[str, str] = {}
    for r in ranked:
        per_runtime.setdefault(r["runtime"], r["id"])
    passed_over = []
    for r in results:
        if chosen is not None and r["id"] == chosen["id"]:
            continue
        if r["id"] not in candidates:
            reason = "not a candidate (benchmark.candidates; the baseline never is by default)"
        elif not r["verdict"]["passed"]:
            reason = "fails gates: " + "; ".join(r["verdict"]["failures"])
        elif r["id"] not in near:
            reason = (
                "; ".join(
                    f"{name} {gaps[r['id']][k]:.2f} pts below the best passing candidate "
                    f"{best[k]['model']} ({best[k]['value']:.2%})"
                    for k, name in QUALITY.items()
                    if gaps[r["id"]][k] > tolerance_pts + EPS_PTS
                )
                + f" > choice tolerance {tolerance_pts:g} pts"
            )
        else:
            reason = _ranked_below(r, chosen, keys, choose_by, latency_tolerance_pct)
        passed_over.append({"id": r["id"], "reason": reason})
    return {
        "chosen": chosen["id"] if chosen else None,
        "best": best,
        "per_runtime": per_runtime,
        "passed_over": passed_over,
    }


def _ranked_below(
    r: dict[str, Any],
    chosen: dict[str, Any],
    keys: dict[str, tuple[float, ...]],
    choose_by: str,
    latency_tolerance_pct: float,
) -> str:
    """Why a candidate within the accuracy tolerance lost: the first criterion that separates it
    from the chosen one, and a latency tie when the timings differed only within the tolerance."""
    order = _order(choose_by)
    pairs = zip(order, keys[r["id"]], keys[chosen["id"]], strict=True)
    by = next((k for k, a, b in pairs if a != b), order[-1])
    tie = ""
    if order.index(by) > order.index("latency"):
        tie = (f"; latency counts as equal ({_shown(r, 'latency')} vs "
               f"{_shown(chosen, 'latency')}: within {latency_tolerance_pct:g}%)")  # fmt: skip
    return (f"within tolerance but ranked below {chosen['id']} by {by} "
            f"({_shown(r, by)} vs {_shown(chosen, by)}){tie}")  # fmt: skip
