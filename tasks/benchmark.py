"""Edge benchmark: every runtime artifact side by side, deployment gates, the chosen edge model.

Reads `data/<stage>/models.json` of `benchmark.models_from` (never a model path of its own),
runs each ONNX Runtime / LiteRT model in its own child process (`edge_pipeline.edge.measure`) on the frozen test
split, and writes data/benchmark/{results,chosen}.json, reports/benchmark/{benchmark.md,.csv},
metrics/benchmark.json and plots/benchmark/. Latencies are wall times of one `predict` call
(layout change and input quantisation included), batch 1, after warm-up.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import choice, load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.edge.gates import Gates, add_comparisons, choose, verdict
from edge_pipeline.edge.runtimes import ModelSpec, find_model, load_models

STAGE = "benchmark"
MB = 1e6  # decimal megabytes, as in the 5 MB edge budget
CHOOSE_BY = ("latency", "accuracy", "size")
DEFAULTS: dict[str, Any] = {
    "models_from": ["train", "qat", "export"],
    "threads": [1, 2],
    "repeats": 5,
    "warmup": 20,
    "iters": 200,
    "min_repeat_s": 0.5,
    "batch": 32,
    "baseline": "train/teacher_fp32",
    "reference": "qat/student_fp32",
    "candidates": None,
    "choose_by": "latency",
    "timeout_s": 600,
    "gates": {"max_size_mb": 5.0, "max_accuracy_drop_pts": 1.0, "max_latency_ms_p95": 10.0},
    "serving": {
        "max_batch": 32,
        "max_wait_ms": 5.0,
        "rates": [500, 2000, 8000],
        "duration_s": 2.0,
        "seed": 0,
    },
}


def classification_figures(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class recall of logits (N, K) against labels y (N,)."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    pred = logits.argmax(axis=1)
    labels = np.arange(len(classes))
    recall = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "per_class_recall": dict(zip(classes, map(float, recall), strict=True)),
    }


def file_sizes(path: str | Path) -> tuple[int, int]:
    """(bytes on disk, bytes once zip-deflated): the zipped size shows what sparsity buys."""
    data = Path(path).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(Path(path).name, data)
    return len(data), len(buf.getvalue())


def benchmark_model(
    spec: ModelSpec, x: np.ndarray, y: np.ndarray, classes: list[str], *, settings: dict[str, Any]
) -> dict[str, Any]:
    """All figures of one model, measured in a fresh child process.

    Args:
        x: uint8 (N, H, W, C) test images; y: int64 (N,) labels into `classes` (K names).
        settings: threads, repeats, warmup, iters, min_repeat_s, batch, timeout_s (params).
    """
    from edge_pipeline.edge.measure import latency_stats, run_isolated

    raw = run_isolated(
        "edge_pipeline.edge.measure:measure_model",
        dict(
            path=spec.path,
            runtime=spec.runtime,
            layout=spec.layout,
            x=x,
            **{
                k: settings[k]
                for k in ("threads", "repeats", "warmup", "iters", "min_repeat_s", "batch")
            },
        ),
        timeout_s=settings["timeout_s"],
    )
    size, zipped = file_sizes(spec.path)
    return (
        spec.to_dict()
        | classification_figures(raw["logits"], y, classes)
        | {
            "size_mb": size / MB,
            "zipped_mb": zipped / MB,
            "latency_ms": {str(t): latency_stats(s) for t, s in raw["latency_s"].items()},
            "throughput_ips": {str(t): v for t, v in raw["throughput_ips"].items()},
            "throughput_batch": settings["batch"],
            "peak_rss_mb": raw["peak_rss_bytes"] / MB,
            "model_rss_mb": (raw["peak_rss_bytes"] - raw["base_rss_bytes"]) / MB,
        }
    )


def settings_from(params: dict[str, Any]) -> dict[str, Any]:
    """Params merged over DEFAULTS, validated (ConfigError names the key)."""
    s = DEFAULTS | {k: v for k, v in params.items() if k not in ("gates", "serving")}
    s["gates"] = DEFAULTS["gates"] | (params.get("gates") or {})
    s["serving"] = DEFAULTS["serving"] | (params.get("serving") or {})
    for where, given, known in (
        ("benchmark", params, DEFAULTS),
        ("benchmark.gates", s["gates"], DEFAULTS["gates"]),
        ("benchmark.serving", s["serving"], DEFAULTS["serving"]),
    ):
        unknown = set(given) - set(known)
        if unknown:
            raise ConfigError(
                f"params.yaml {where}: unknown keys {sorted(unknown)}; allowed {sorted(known)}"
            )
    choice(s, "choose_by", CHOOSE_BY, section=STAGE)
    if 1 not in s["threads"] or any(not isinstance(t, int) or t < 1 for t in s["threads"]):
        raise ConfigError(
            f"params.yaml benchmark.threads={s['threads']}: positive ints including 1 "
            "(gates and ratios are taken at 1 thread)"
        )
    for key in ("repeats", "iters", "batch"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ConfigError(f"params.yaml benchmark.{key}={s[key]!r} must be a positive integer")
    if not isinstance(s["min_repeat_s"], int | float) or not 0 <= s["min_repeat_s"] <= 60:
        raise ConfigError(
            f"params.yaml benchmark.min_repeat_s={s['min_repeat_s']!r}: seconds per latency "
            "repetition, a number in [0, 60]"
        )
    srv = s["serving"]
    if not (
        isinstance(srv["max_batch"], int) and srv["max_batch"] >= 1 and srv["max_wait_ms"] >= 0
        and srv["rates"] and min(srv["rates"]) > 0 and srv["duration_s"] > 0
    ):  # fmt: skip
        raise ConfigError(
            f"params.yaml benchmark.serving={srv}: needs max_batch >= 1 (int), max_wait_ms >= 0, "
            "a non-empty list of positive rates (requests/s) and duration_s > 0"
        )
    return s


def serve(spec: ModelSpec, x: np.ndarray, *, serving: dict[str, Any], timeout_s: float) -> dict:
    """Dynamic batching vs batch 1 for `spec`: batch latencies measured at 1 thread in a child
    process (powers of two up to max_batch), then the virtual-time simulation of edge_pipeline.edge.serving_sim."""
    from edge_pipeline.edge.measure import run_isolated
    from edge_pipeline.edge.serving_sim import compare_policies

    mb = serving["max_batch"]
    sizes = sorted({1, mb, *(2**k for k in range(mb.bit_length()) if 2**k < mb)})
    table = run_isolated(
        "edge_pipeline.edge.measure:batch_latency_table",
        dict(path=spec.path, runtime=spec.runtime, layout=spec.layout, x=x, threads=1, sizes=sizes),
        timeout_s=timeout_s,
    )
    keys = ("rates", "max_batch", "max_wait_ms", "duration_s", "seed")
    rows = compare_policies(table, **{k: serving[k] for k in keys})
    return {
        "model": spec.id,
        "threads": 1,
        "batch_ms": {b: t * 1e3 for b, t in table.items()},
        "rows": rows,
    } | {k: serving[k] for k in ("max_batch", "max_wait_ms", "duration_s")}


def run_benchmark(
    specs: list[ModelSpec],
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    *,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The whole benchmark of `specs` on test images x (N, H, W, C) uint8, labels y (N,)."""
    import logging

    from edge_pipeline.edge.measure import run_isolated

    log = logging.getLogger(f"tasks.{STAGE}")
    baseline = find_model(specs, settings["baseline"], param="benchmark.baseline").id
    reference = find_model(specs, settings["reference"], param="benchmark.reference").id
    names = settings["candidates"] or [s.id for s in specs if s.id != baseline]
    candidates = [find_model(specs, n, param="benchmark.candidates").id for n in names]
    peak = run_isolated(
        "edge_pipeline.edge.measure:machine_peak", {}, timeout_s=settings["timeout_s"]
    )
    results = []
    for i, spec in enumerate(specs, 1):
        r = benchmark_model(spec, x, y, classes, settings=settings)
        results.append(r)
        log.info("%d/%d %s: accuracy %.4f, p50 %.3f ms at 1 thread", i, len(specs), spec.id,
                 r["accuracy"], r["latency_ms"]["1"]["p50"])  # fmt: skip
    add_comparisons(results, baseline=baseline, peak=peak)
    ref_acc = next(r["accuracy"] for r in results if r["id"] == reference)
    gates = Gates(**settings["gates"])
    for r in results:
        r["verdict"] = verdict(r, reference_accuracy=ref_acc, gates=gates)
    chosen, per_runtime = choose(results, candidates=candidates, choose_by=settings["choose_by"])
    serving = None
    if chosen:
        spec = next(s for s in specs if s.id == chosen)
        serving = serve(spec, x, serving=settings["serving"], timeout_s=settings["timeout_s"])
    return {
        "input_shape": list(x.shape[1:]), "classes": classes, "machine": peak,
        "baseline": baseline, "reference": reference, "candidates": candidates,
        "gates": settings["gates"], "choose_by": settings["choose_by"], "models": results,
        "chosen": chosen, "per_runtime": per_runtime, "serving": serving,
    }  # fmt: skip


def main() -> None:
    from edge_pipeline.artifacts.datasets import load_classes, load_split
    from edge_pipeline.core.tracking import stage_run
    from edge_pipeline.edge import benchmark_outputs as report

    log = setup_logging(STAGE)
    params = load_params(STAGE)
    settings = settings_from(params)
    paths = stage_paths(STAGE)
    specs = load_models(paths.data.parent, list(settings["models_from"]))
    x, y, _ = load_split("test")
    log.info("%d models from %s on %d test images", len(specs), settings["models_from"], len(y))
    out = run_benchmark(specs, x, y, load_classes(), settings=settings)
    write_json(paths.data / "results.json", out)
    write_json(paths.data / "chosen.json", report.chosen_record(out))
    report.write_reports(out, paths)
    metrics = report.metrics_of(out)
    write_json(paths.metrics, metrics)
    for line in report.flags(out):
        log.warning(line)
    log.info("chosen edge model: %s", out["chosen"] or "none (no candidate passes the gates)")
    with stage_run(STAGE, params) as mlflow:
        mlflow.log_metrics(report.numeric(metrics))
        mlflow.log_artifacts(str(paths.reports), artifact_path="reports")
        mlflow.log_artifacts(str(paths.plots), artifact_path="plots")
        mlflow.set_tag("chosen", out["chosen"] or "none")


if __name__ == "__main__":
    main()
