"""Outputs of the benchmark stage: data/benchmark/{results,chosen}.json for register, the report
(Markdown table read first, CSV), DVC metrics and plots, all from `run_benchmark`'s record."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.artifacts.catalog import CHOSEN, RESULTS, StagePaths
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.tracking import flatten
from edge_pipeline.edge.benchmark_plots import write_plots
from edge_pipeline.edge.benchmark_report import markdown, rule

METRIC_KEY_BAD = re.compile(r"[^\w./\- ]")  # MLflow metric names allow these only


def table(out: dict[str, Any]) -> pd.DataFrame:
    """One row per model: the figures a person compares (also benchmark.csv)."""
    rows = []
    for r in out["models"]:
        row = {
            "model": r["id"],
            "runtime": r["runtime"],
            "dtype": r["dtype"],
            "size_mb": r["size_mb"],
            "zipped_mb": r["zipped_mb"],
            "params": r["params"],
            "macs": r["macs"],
            "accuracy": r["accuracy"],
            "balanced_accuracy": r["balanced_accuracy"],
            "macro_f1": r["macro_f1"],
        }
        for t, lat in r["latency_ms"].items():
            row |= {f"p{q}_ms_{t}t": lat[f"p{q}"] for q in (50, 90, 95, 99)}
            row |= {
                f"p50_spread_pct_{t}t": lat["p50_spread_pct"],
                f"throughput_ips_{t}t": r["throughput_ips"][t],
            }
        row |= {
            "peak_rss_mb": r["peak_rss_mb"],
            "model_rss_mb": r["model_rss_mb"],
            "gmacs_per_s_1t": r["gmacs_per_s"],
            "peak_fraction": r["peak_fraction"],
            "speedup_vs_baseline": r["vs_baseline"]["speedup"],
            "size_reduction_vs_baseline": r["vs_baseline"]["size_reduction"],
            "accuracy_change_pts": r["vs_baseline"]["accuracy_change_pts"],
            "fp32_source": (r["vs_fp32"] or {}).get("fp32", ""),
            "speedup_vs_fp32": (r["vs_fp32"] or {}).get("speedup", np.nan),
            "int8_slower": bool((r["vs_fp32"] or {}).get("int8_slower", False)),
            "passed": r["verdict"]["passed"],
            "failures": "; ".join(r["verdict"]["failures"]),
        }
        rows.append(row)
    return pd.DataFrame(rows)


def chosen_record(out: dict[str, Any]) -> dict[str, Any]:
    """data/benchmark/chosen.json: the edge model to ship and the best passing model per runtime."""
    by_id = {r["id"]: r for r in out["models"]}
    keep = (
        "id",
        "name",
        "stage",
        "path",
        "runtime",
        "layout",
        "dtype",
        "source",
        "params",
        "macs",
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "per_class_recall",
        "size_mb",
        "zipped_mb",
        "latency_ms",
        "verdict",
        "vs_baseline",
    )

    def pick(i: str) -> dict[str, Any]:
        return {k: by_id[i][k] for k in keep}

    return {
        "chosen": out["chosen"],
        "rule": rule(out),
        "gates": out["gates"],
        "references": out["references"],
        "majority": out["majority"],
        "passed_over": out["passed_over"],
        "input_shape": out["input_shape"],
        "classes": out["classes"],
        "model": pick(out["chosen"]) if out["chosen"] else None,
        "per_runtime": {rt: pick(i) for rt, i in out["per_runtime"].items()},
    }


def metrics_of(out: dict[str, Any]) -> dict[str, Any]:
    """metrics/benchmark.json: key figures per model, the chosen model and its ratios."""
    models = {}
    for r in out["models"]:
        m = {
            "accuracy": r["accuracy"],
            "balanced_accuracy": r["balanced_accuracy"],
            "macro_f1": r["macro_f1"],
            "size_mb": r["size_mb"],
            "zipped_mb": r["zipped_mb"],
            "peak_rss_mb": r["peak_rss_mb"],
            "gmacs_per_s_1t": r["gmacs_per_s"],
            "passed": r["verdict"]["passed"],
            "speedup_vs_baseline": r["vs_baseline"]["speedup"],
            "size_reduction_vs_baseline": r["vs_baseline"]["size_reduction"],
            "accuracy_change_pts": r["vs_baseline"]["accuracy_change_pts"],
        }
        for t, lat in r["latency_ms"].items():
            m |= {
                f"p50_ms_{t}t": lat["p50"],
                f"p95_ms_{t}t": lat["p95"],
                f"p99_ms_{t}t": lat["p99"],
                f"p50_spread_pct_{t}t": lat["p50_spread_pct"],
            }
        if r["vs_fp32"]:
            m |= {
                "speedup_vs_fp32": r["vs_fp32"]["speedup"],
                "int8_slower": r["vs_fp32"]["int8_slower"],
            }
        models[r["id"]] = m
    chosen = models.get(out["chosen"] or "", {})
    metrics: dict[str, Any] = {
        "chosen": out["chosen"] or "none",
        "n_models": len(models),
        "n_passed": sum(m["passed"] for m in models.values()),
        "machine": {k: v for k, v in out["machine"].items() if isinstance(v, float)},
        "chosen_vs_baseline": {
            k: chosen[k]
            for k in ("speedup_vs_baseline", "size_reduction_vs_baseline", "accuracy_change_pts")
            if k in chosen
        },
        "chosen_per_class_recall": next(
            (r["per_class_recall"] for r in out["models"] if r["id"] == out["chosen"]), {}
        ),
        "references": {k: ref["value"] for k, ref in out["references"].items()},
        "majority_rate": out["majority"]["rate"],
        "n_passed_over": len(out["passed_over"]),
        "models": models,
    }
    if out["serving"]:
        top = [
            row
            for row in out["serving"]["rows"]
            if row["rate_rps"] == max(row["rate_rps"] for row in out["serving"]["rows"])
        ]
        metrics["serving_at_max_rate"] = {
            f"{row['policy']}_{k}": row[k]
            for row in top
            for k in ("throughput_rps", "latency_ms_p95")
        }
    return metrics


def numeric(d: dict[str, Any]) -> dict[str, float]:
    """{'a.b': number} for MLflow metrics (booleans become 0/1; strings, lists, NaN are dropped;
    characters MLflow refuses in a key, e.g. in a class name, become `_`)."""
    flat = flatten(d)
    return {
        METRIC_KEY_BAD.sub("_", k): float(v)
        for k, v in flat.items()
        if isinstance(v, bool | int | float) and math.isfinite(float(v))
    }


def write_outputs(out: dict[str, Any], paths: StagePaths, *, max_spread_pct: float) -> dict:
    """Every output of the stage: data/benchmark/{results,chosen}.json, reports/benchmark/
    {benchmark.md,benchmark.csv}, plots/benchmark/ and metrics/benchmark.json (returned)."""
    write_json(paths.data / RESULTS, out)
    write_json(paths.data / CHOSEN, chosen_record(out))
    df = table(out)
    with atomic_path(paths.reports) as d:
        d.mkdir()
        df.to_csv(d / "benchmark.csv", index=False)
        (d / "benchmark.md").write_text(markdown(out, max_spread_pct=max_spread_pct))
    write_plots(out, df, paths.plots)
    metrics = metrics_of(out)
    write_json(paths.metrics, metrics)
    return metrics
