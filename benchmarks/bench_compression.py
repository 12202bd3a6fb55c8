"""Compression targets (issue 4): channel-pruning latency in LiteRT, and the INT8 model's figures.

- Latency: the unpruned student vs the channel-pruned student as FP32 TFLite, LiteRT with
  num_threads=1, batch 1, warm-up then interleaved rounds of many invokes (so load drift hits both
  alike); p50 over all runs. Target: unpruned p50 / pruned p50 >= 1.3. Uses data/qat's
  student_fp32.tflite and pruned_fp32.tflite when the pipeline has run; otherwise builds the
  student from params.yaml (distill section) and channel-prunes it at prune.channel_fraction:
  FP32 latency depends on the shapes, not on the trained values.
- From metrics/qat.json when present: INT8 pruned+QAT file size (target <= 5 MB), its accuracy
  against the FP32 student (target: within 1.0 point) and against post-training INT8 (target: >=).

Run: `python -m benchmarks compression` (or `python benchmarks/bench_compression.py`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edge_pipeline.artifacts.catalog import MODELS  # noqa: E402

TARGET_SPEEDUP = 1.3
TARGET_MB = 5.0
TARGET_DROP_PTS = 1.0
ROUNDS, RUNS, WARMUP = 7, 1500, 300


def _models_from_params() -> tuple[bytes, bytes, dict[str, Any]]:
    """FP32 TFLite of the params' student and of its channel-pruned copy (untrained weights)."""
    from edge_pipeline.compression.channels import channel_prune
    from edge_pipeline.compression.tflite import to_tflite
    from edge_pipeline.config import load_section
    from edge_pipeline.student.model import build_student, count_macs

    dist, prune, ingest = (load_section(s) for s in ("distill", "prune", "ingest"))
    shape = (*ingest.image_size, ingest.channels)
    student = build_student(
        shape, 10, width=dist.width, blocks=dist.blocks, stem_channels=dist.stem_channels,
        head_channels=dist.head_channels,
    )  # fmt: skip
    pruned, _ = channel_prune(
        student, fraction=prune.channel_fraction, scope=prune.channel_scope, exclude=prune.exclude
    )
    facts = {"source": "params.yaml (untrained)", "input_shape": list(shape),
             "macs": {"student": count_macs(student), "pruned": count_macs(pruned)}}  # fmt: skip
    return to_tflite(student), to_tflite(pruned), facts


def _models_from_pipeline(qat_dir: Path) -> tuple[bytes, bytes, dict[str, Any]]:
    entries = {e["name"]: e for e in json.loads((qat_dir / MODELS).read_text())}
    facts = {"source": str(qat_dir), "macs": {k: entries[k]["macs"] for k in entries}}
    read = (qat_dir / entries[name]["file"] for name in ("student_fp32", "pruned_fp32"))
    return (*(p.read_bytes() for p in read), facts)


def interleaved_p50(models: dict[str, bytes], x: np.ndarray) -> dict[str, dict[str, float]]:
    """p50/p90 batch-1 latency (us) per model, 1 thread, runs interleaved across rounds."""
    from edge_pipeline.edge.runtimes import LiteRTRunner, quantize

    its = {}
    for name, blob in models.items():
        it = LiteRTRunner(blob, layout="NHWC", threads=1).interpreter
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], quantize(x[:1], inp))
        for _ in range(WARMUP):
            it.invoke()
        its[name] = it
    samples: dict[str, list[float]] = {name: [] for name in models}
    round_p50: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(ROUNDS):
        for name, it in its.items():
            times = np.empty(RUNS)
            for i in range(RUNS):
                t0 = time.perf_counter()
                it.invoke()
                times[i] = time.perf_counter() - t0
            samples[name] += list(times * 1e6)
            round_p50[name].append(float(np.median(times * 1e6)))
    return {
        name: {
            "p50_us": float(np.percentile(samples[name], 50)),
            "p90_us": float(np.percentile(samples[name], 90)),
            "round_p50_us": round_p50[name],
            "round_p50_spread": float(np.ptp(round_p50[name]) / np.median(round_p50[name])),
        }
        for name in models
    }


def _qat_figures(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"qat_metrics": "missing (run dvc repro qat)"}
    m = json.loads(path.read_text())
    int8, fp32, ptq = m["student_pqat_int8"], m["student_fp32"], m["student_ptq_int8"]
    drop = 100 * (fp32["accuracy"] - int8["accuracy"])
    return {
        "int8_mb": int8["bytes"] / 1e6,
        "int8_size_ok": int8["bytes"] / 1e6 <= TARGET_MB,
        "int8_accuracy": int8["accuracy"],
        "fp32_accuracy": fp32["accuracy"],
        "ptq_accuracy": ptq["accuracy"],
        "int8_drop_pts": round(drop, 2),
        "int8_drop_ok": drop <= TARGET_DROP_PTS,
        "int8_ge_ptq": int8["accuracy"] >= ptq["accuracy"],
        "int8_sparsity": m.get("tflite_sparsity"),
    }


def run() -> dict[str, Any]:
    from edge_pipeline.artifacts.catalog import stage_paths

    qat_dir = stage_paths("qat").data
    pipeline = (qat_dir / MODELS).exists()
    student, pruned, facts = _models_from_pipeline(qat_dir) if pipeline else _models_from_params()
    from edge_pipeline.edge.runtimes import LiteRTRunner

    shape = LiteRTRunner(student, layout="NHWC", threads=1).inp["shape"]
    x = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)
    lat = interleaved_p50({"student_fp32": student, "pruned_fp32": pruned}, x)
    speedup = lat["student_fp32"]["p50_us"] / lat["pruned_fp32"]["p50_us"]
    # Rounds run back to back, so a per-round ratio cancels slow drifts in machine load.
    paired = np.median(
        np.divide(lat["student_fp32"]["round_p50_us"], lat["pruned_fp32"]["round_p50_us"])
    )
    result = {
        "models_from": facts["source"],
        "macs": facts["macs"],
        "latency_1thread": lat,
        "pruned_speedup": round(speedup, 3),
        "pruned_speedup_paired_rounds": round(float(paired), 3),
        "pruned_speedup_vs_target": round(speedup / TARGET_SPEEDUP, 3),
        **_qat_figures(stage_paths("qat").metrics),
    }
    print(f"models from {result['models_from']}")
    for name, v in lat.items():
        print(f"{name:>14}: p50 {v['p50_us']:.1f} us, p90 {v['p90_us']:.1f} us, "
              f"round-p50 spread {100 * v['round_p50_spread']:.1f}%")  # fmt: skip
    verdict = "ok" if speedup >= TARGET_SPEEDUP else "MISSED"
    print(f"channel-pruned speed-up {speedup:.2f}x, median of per-round ratios {paired:.2f}x "
          f"(target >= {TARGET_SPEEDUP}x: {verdict})")  # fmt: skip
    if "int8_mb" in result:
        print(f"INT8 pruned+QAT: {result['int8_mb']:.3f} MB (<= {TARGET_MB}), accuracy "
              f"{result['int8_accuracy']:.4f} vs FP32 {result['fp32_accuracy']:.4f} "
              f"(drop {result['int8_drop_pts']} pts, <= {TARGET_DROP_PTS}) vs PTQ "
              f"{result['ptq_accuracy']:.4f}")  # fmt: skip
    return result


if __name__ == "__main__":
    run()
