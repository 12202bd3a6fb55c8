"""The edge benchmark of a list of models: figures per model, gates, the choice, serving.

Each model runs in its own child process (edge_pipeline/edge/measure.py) on the frozen test split;
the parent adds the classification figures, file sizes, comparisons, gate verdicts
(edge_pipeline/edge/gates.py) and, for the chosen model, the dynamic-batching simulation
(edge_pipeline/edge/serving_sim.py). Latencies are wall times of one `predict` call (layout change
and input quantisation included), batch 1, after warm-up.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.config.edge import Benchmark, Serving
from edge_pipeline.edge.classification import classification_figures, majority
from edge_pipeline.edge.gates import add_comparisons, choose, references, verdict
from edge_pipeline.edge.measure import latency_stats, run_isolated
from edge_pipeline.edge.runtimes import ModelSpec, find_model
from edge_pipeline.edge.serving_sim import compare_policies

MB = 1e6  # decimal megabytes, as in the 5 MB edge budget
log = logging.getLogger(__name__)


def file_sizes(path: str | Path) -> tuple[int, int]:
    """(bytes on disk, bytes once zip-deflated): the zipped size shows what sparsity buys."""
    data = Path(path).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(Path(path).name, data)
    return len(data), len(buf.getvalue())


def benchmark_model(
    spec: ModelSpec, x: np.ndarray, y: np.ndarray, classes: list[str], *, p: Benchmark
) -> dict[str, Any]:
    """All figures of one model, measured in a fresh child process.

    Args:
        x: uint8 (N, H, W, C) test images; y: int64 (N,) labels into `classes` (K names).
        p: the benchmark section (threads, repetitions, batch, child-process timeout).
    """
    raw = run_isolated(
        "edge_pipeline.edge.measure:measure_model",
        dict(
            path=spec.path,
            runtime=spec.runtime,
            layout=spec.layout,
            x=x,
            threads=list(p.threads),
            repeats=p.repeats,
            warmup=p.warmup,
            iters=p.iters,
            min_repeat_s=p.min_repeat_s,
            max_iters=p.max_iters,
            batch=p.batch,
        ),  # fmt: skip
        timeout_s=p.timeout_s,
    )
    size, zipped = file_sizes(spec.path)
    return (
        spec.to_dict()
        | classification_figures(raw["logits"].argmax(axis=1), y, classes)
        | {
            "size_mb": size / MB,
            "zipped_mb": zipped / MB,
            "latency_ms": {str(t): latency_stats(s) for t, s in raw["latency_s"].items()},
            "throughput_ips": {str(t): v for t, v in raw["throughput_ips"].items()},
            "throughput_batch": p.batch,
            "peak_rss_mb": raw["peak_rss_bytes"] / MB,
            "model_rss_mb": (raw["peak_rss_bytes"] - raw["base_rss_bytes"]) / MB,
        }
    )


def serve(spec: ModelSpec, x: np.ndarray, *, serving: Serving, timeout_s: float) -> dict[str, Any]:
    """Dynamic batching vs batch 1 for `spec` on uint8 images x (N, H, W, C).

    Batch latencies are measured at 1 thread in a child process (powers of two up to max_batch),
    then fed to the virtual-time simulation of edge_pipeline/edge/serving_sim.py.
    """
    mb = serving.max_batch
    sizes = sorted({1, mb, *(2**k for k in range(mb.bit_length()) if 2**k < mb)})
    table = run_isolated(
        "edge_pipeline.edge.measure:batch_latency_table",
        dict(path=spec.path, runtime=spec.runtime, layout=spec.layout, x=x, threads=1, sizes=sizes),
        timeout_s=timeout_s,
    )
    rows = compare_policies(
        table, rates=list(serving.rates), max_batch=mb, max_wait_ms=serving.max_wait_ms,
        duration_s=serving.duration_s, seed=serving.seed,
    )  # fmt: skip
    return {
        "model": spec.id,
        "threads": 1,
        "batch_ms": {b: t * 1e3 for b, t in table.items()},
        "rows": rows,
        "max_batch": mb,
        "max_wait_ms": serving.max_wait_ms,
        "duration_s": serving.duration_s,
    }


def run_benchmark(
    specs: list[ModelSpec], x: np.ndarray, y: np.ndarray, classes: list[str], *, p: Benchmark
) -> dict[str, Any]:
    """The whole benchmark of `specs` on test images x (N, H, W, C) uint8, labels y (N,).

    Returns the data/benchmark/results.json record: every model's figures and verdict, the
    baseline (teacher), the gate references and floor, the candidates, the machine's peaks, the
    chosen model, the models passed over (with the reason) and the chosen model's serving.
    """
    baseline = find_model(specs, p.baseline, param="benchmark.baseline").id
    names = p.candidates or [s.id for s in specs if s.id != baseline]
    candidates = [find_model(specs, n, param="benchmark.candidates").id for n in names]
    peak = run_isolated("edge_pipeline.edge.measure:machine_peak", {}, timeout_s=p.timeout_s)
    results = []
    for i, spec in enumerate(specs, 1):
        r = benchmark_model(spec, x, y, classes, p=p)
        results.append(r)
        log.info("%d/%d %s: accuracy %.4f, p50 %.3f ms at 1 thread", i, len(specs), spec.id,
                 r["accuracy"], r["latency_ms"]["1"]["p50"])  # fmt: skip
    add_comparisons(results, baseline=baseline, peak=peak)
    refs = references(results, teacher=baseline)
    top = majority(y, classes)
    for r in results:
        r["verdict"] = verdict(r, refs=refs, majority=top, gates=p.gates)
    choice = choose(
        results, candidates=candidates, choose_by=p.choose_by,
        tolerance_pts=p.choice_tolerance_pts, latency_tolerance_pct=p.choice_latency_tolerance_pct,
    )  # fmt: skip
    chosen = choice["chosen"]
    serving = None
    if chosen:
        spec = next(s for s in specs if s.id == chosen)
        serving = serve(spec, x, serving=p.serving, timeout_s=p.timeout_s)
    return {
        "input_shape": list(x.shape[1:]), "classes": classes, "machine": peak,
        "baseline": baseline, "references": refs, "majority": top, "candidates": candidates,
        "gates": p.gates.to_dict(), "choose_by": p.choose_by,
        "choice_tolerance_pts": p.choice_tolerance_pts,
        "choice_latency_tolerance_pct": p.choice_latency_tolerance_pct,
        "models": results, "chosen": chosen,
        "best": choice["best"], "per_runtime": choice["per_runtime"],
        "passed_over": choice["passed_over"], "serving": serving,
    }  # fmt: skip
