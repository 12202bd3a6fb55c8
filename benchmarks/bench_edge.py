"""Edge benchmark targets: the benchmark stage's core on the pipeline's real model artifacts.

`python -m benchmarks edge` (or `run()`) measures every model of data/{train,qat,export}/models.json
with the params.yaml `benchmark` settings (nothing is written to the stage outputs) and prints the
ratios against the targets of the edge issue:
- pruned + QAT INT8 student vs teacher FP32 ONNX, 1 thread, batch 1: >= 4x faster, >= 10x smaller,
  accuracy drop <= 1.0 point;
- INT8 vs FP32 of the same student in LiteRT, 1 thread: >= 2.5x faster;
- p50 spread across the latency repetitions < 10%.
"""

from __future__ import annotations

import time
from typing import Any

PQAT = "student_pqat_int8"  # the pruned + QAT INT8 TFLite model of the qat stage
TARGETS = {"speedup": 4.0, "size_reduction": 10.0, "max_drop_pts": 1.0, "int8_speedup": 2.5}
# the p50 spread target is params.yaml benchmark.max_p50_spread_pct


def run() -> dict[str, Any]:
    from edge_pipeline.artifacts.catalog import MODELS, stage_paths
    from edge_pipeline.artifacts.datasets import load_classes, load_split
    from edge_pipeline.config import load_section
    from edge_pipeline.edge.benchmarking import run_benchmark
    from edge_pipeline.edge.runtimes import load_models

    p = load_section("benchmark")
    data = stage_paths("benchmark").data.parent
    missing = [s for s in p.models_from if not (data / s / MODELS).is_file()]
    if missing:
        files = ", ".join(str(data / s / MODELS) for s in missing)
        msg = f"no {files}: run `dvc repro qat export` first"
        print(msg)
        return {"skipped": msg}
    specs = load_models(data, list(p.models_from))
    x, y, _ = load_split("test")
    start = time.perf_counter()
    out = run_benchmark(specs, x, y, load_classes(), p=p)
    by = {r["id"]: r for r in out["models"]}
    figures: dict[str, Any] = {"models": len(by), "test_images": len(y),
                               "seconds": round(time.perf_counter() - start, 1),
                               "chosen": out["chosen"]}  # fmt: skip
    print(
        f"{len(by)} models, {len(y)} test images, {figures['seconds']} s; chosen: {out['chosen']}"
    )
    for r in out["models"]:
        lat = r["latency_ms"]["1"]
        print(
            f"  {r['id']:<24} acc {r['accuracy']:.4f}  {r['size_mb']:8.3f} MB"
            f"  p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f}"
            f"  spread {lat['p50_spread_pct']:.1f}%  "
            f"{'pass' if r['verdict']['passed'] else 'FAIL'}"
        )

    def check(key: str, value: float, target: float, higher: bool) -> None:
        ok = value >= target if higher else value <= target
        figures[key] = round(value, 3)
        figures[f"{key}_target"] = target
        figures[f"{key}_met"] = ok
        print(
            f"{key}: {value:.2f} (target {'>=' if higher else '<='} {target:g}) "
            f"{'OK' if ok else 'MISSED'}"
        )

    pqat_ids = [s.id for s in specs if s.name == PQAT]
    if pqat_ids:
        pqat, base = by[pqat_ids[0]], by[out["baseline"]]
        check("pqat_speedup_vs_teacher", pqat["vs_baseline"]["speedup"], TARGETS["speedup"], True)
        check("pqat_size_reduction_vs_teacher", pqat["vs_baseline"]["size_reduction"],
              TARGETS["size_reduction"], True)  # fmt: skip
        check("pqat_accuracy_drop_vs_teacher_pts", (base["accuracy"] - pqat["accuracy"]) * 100,
              TARGETS["max_drop_pts"], False)  # fmt: skip
    else:
        print(f"no model named {PQAT} in {p.models_from}: pruned + QAT targets skipped")
    for r in out["models"]:
        if r["runtime"] == "litert" and r["vs_fp32"]:
            check(f"{r['id']}_speedup_vs_{r['vs_fp32']['fp32']}", r["vs_fp32"]["speedup"],
                  TARGETS["int8_speedup"], True)  # fmt: skip
    spread = max(lat["p50_spread_pct"] for r in out["models"] for lat in r["latency_ms"].values())
    check("max_p50_spread_pct", spread, p.max_p50_spread_pct, False)
    if out["serving"]:
        for row in out["serving"]["rows"]:
            print(
                f"  serving {row['policy']:<8} {row['rate_rps']:>7g} req/s: "
                f"{row['throughput_rps']:.0f} req/s, p95 {row['latency_ms_p95']:.3f} ms"
            )
    return figures


if __name__ == "__main__":
    run()
