"""Does full-integer INT8 pay off in LiteRT on this CPU? (issue 5's "INT8 >= 2.5x faster than FP32")

The same untrained MobileNetV2-style models are converted twice (FP32, and full-integer INT8 with a
random representative set: latency depends on shapes, not on trained values) and timed in LiteRT at
batch 1, 1 thread, after warm-up, in interleaved rounds so load drift hits both alike:

- FP32 with LiteRT's default XNNPACK delegate (what the pipeline's benchmark stage measures);
- FP32 with the plain builtin kernels (no default delegate), the slow path older comparisons used;
- INT8 with the default XNNPACK delegate.

Models: the pipeline's student at 16, 32 and 64 px, and Keras' full MobileNetV2 (alpha 1.0, 224 px),
so the ratio is seen from overhead-bound to compute-bound sizes. The CPU's SIMD flags are printed
because INT8 kernels gain most from int8 dot-product instructions (AVX-512 VNNI / AVX-VNNI on x86,
dotprod on Arm): without them XNNPACK's INT8 convolutions run at about FP32 speed.

Run: `python -m benchmarks int8` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from edge_pipeline.core.machine import read_cpuinfo, vector_extensions

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

TARGET_RATIO = 2.5
ROUNDS, WARMUP = 5, 30
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")


def cpu_flags() -> list[str]:
    """The int8-relevant SIMD flags /proc/cpuinfo lists (empty where it cannot be read)."""
    return [f for f in vector_extensions(read_cpuinfo()) if f in SIMD_FLAGS]


def _models() -> list[tuple[str, Any, tuple[int, int, int], int]]:
    """(name, tf_keras model, input shape, timed invokes per round)."""
    import tf_keras

    from edge_pipeline.student.model import build_student

    out = [
        (f"student {s}x{s}", build_student((s, s, 1), 10), (s, s, 1), runs)
        for s, runs in ((16, 2000), (32, 1000), (64, 300))
    ]
    mnv2 = tf_keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, weights=None, classes=1000
    )
    return [*out, ("MobileNetV2 1.0 224x224", mnv2, (224, 224, 3), 20)]


def _p50_us(variants: dict[str, Any], x: np.ndarray, runs: int) -> dict[str, float]:
    """Median invoke time per variant over ROUNDS interleaved rounds of `runs` invokes."""
    from edge_pipeline.edge.runtimes import quantize

    for it in variants.values():
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], quantize(x, inp))
        for _ in range(WARMUP):
            it.invoke()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(ROUNDS):
        for name, it in variants.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                it.invoke()
                times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v) * 1e6) for k, v in times.items()}


def run() -> dict[str, Any]:
    from edge_pipeline.compression.tflite import to_tflite
    from edge_pipeline.edge.runtimes import litert_interpreter

    rng = np.random.default_rng(0)
    flags = cpu_flags()
    print(f"CPU int8-relevant flags: {', '.join(flags) or 'none found'}")
    rows = []
    for name, model, shape, runs in _models():
        rep = rng.uniform(0, 1, (32, *shape)).astype(np.float32)
        fp32, int8 = to_tflite(model), to_tflite(model, representative=rep)
        p50 = _p50_us(
            {
                "fp32_xnnpack": litert_interpreter(fp32, threads=1),
                "fp32_builtin": litert_interpreter(fp32, threads=1, default_delegates=False),
                "int8_xnnpack": litert_interpreter(int8, threads=1),
            },
            rep[:1],
            runs,
        )
        row = {
            "model": name,
            **{f"{k}_p50_us": round(v, 1) for k, v in p50.items()},
            "int8_speedup_vs_fp32_xnnpack": round(p50["fp32_xnnpack"] / p50["int8_xnnpack"], 2),
            "int8_speedup_vs_fp32_builtin": round(p50["fp32_builtin"] / p50["int8_xnnpack"], 2),
        }
        rows.append(row)
        print(
            f"{name:>24}: FP32 XNNPACK {p50['fp32_xnnpack']:9.1f} us | FP32 builtin "
            f"{p50['fp32_builtin']:9.1f} us | INT8 XNNPACK {p50['int8_xnnpack']:9.1f} us | "
            f"INT8 speed-up {row['int8_speedup_vs_fp32_xnnpack']:.2f}x vs XNNPACK FP32 "
            f"(target {TARGET_RATIO}), {row['int8_speedup_vs_fp32_builtin']:.2f}x vs builtin FP32",
            flush=True,
        )
    best = max(r["int8_speedup_vs_fp32_xnnpack"] for r in rows)
    return {
        "cpu_flags": flags,
        "rows": rows,
        "best_int8_speedup_vs_fp32_xnnpack": best,
        "target_met": best >= TARGET_RATIO,
    }


if __name__ == "__main__":
    run()
