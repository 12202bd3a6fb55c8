"""Measurements that run in a fresh child process each, so memory and timing figures stay per model.

`run_isolated("edge_pipeline.edge.measure:measure_model", {...})` pickles the call to
`python -m edge_pipeline.edge.measure`, which imports only numpy, the model's runtime and this
package's light modules (never torch or TensorFlow), runs it and pickles the result back. The
parent turns raw timings into statistics (`latency_stats`).
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.core.machine import cpu_description

REPO_ROOT = Path(__file__).resolve().parents[2]
PERCENTILES = (50, 90, 95, 99)


def run_isolated(
    target: str,
    kwargs: dict[str, Any],
    *,
    timeout_s: float = 600.0,
    timeout_fix: str = "raise benchmark.timeout_s or lower benchmark.iters / repeats",
) -> Any:
    """Call `module:function(**kwargs)` in a new Python process and return its result.

    timeout_fix: what the error past `timeout_s` tells the user to do.
    """
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        request, result = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl"
        request.write_bytes(pickle.dumps({"target": target, "kwargs": kwargs}))
        path = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edge_pipeline.edge.measure", str(request), str(result)],
                capture_output=True, text=True, timeout=timeout_s, env=env,
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{target} ran past {timeout_s:g} s; {timeout_fix}") from e
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"{target} failed in its child process:\n{proc.stderr[-3000:]}")
        return pickle.loads(result.read_bytes())


def _child(request: Path, result: Path) -> None:
    call = pickle.loads(request.read_bytes())
    module, func = call["target"].split(":")
    out = getattr(importlib.import_module(module), func)(**call["kwargs"])
    result.write_bytes(pickle.dumps(out))


def _import_runtime(runtime: str) -> None:
    # Imported before the baseline RSS reading, so the model's own footprint is the difference.
    importlib.import_module(
        "onnxruntime" if runtime == "onnxruntime" else "ai_edge_litert.interpreter"
    )


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_calls(fn: Callable[[np.ndarray], Any], inputs: list[np.ndarray], *, n: int) -> np.ndarray:
    """Wall seconds (n,) of `fn` on `inputs` in turn (cycled)."""
    out = np.empty(n)
    for i in range(n):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        fn(x)
        out[i] = time.perf_counter() - start
    return out


def calls_per_repetition(
    times: np.ndarray, *, iters: int, min_repeat_s: float, max_iters: int
) -> int:
    """Timed calls per repetition: at least `iters`, enough to fill `min_repeat_s` at the median
    call time of `times` (seconds), at most `max_iters` (never below `iters`)."""
    per_call = max(float(np.median(times)), 1e-9)
    return max(iters, min(max_iters, math.ceil(min_repeat_s / per_call)))


def measure_model(
    *,
    path: str,
    runtime: str,
    layout: str,
    x: np.ndarray,
    threads: list[int],
    repeats: int,
    warmup: int,
    iters: int,
    batch: int,
    min_repeat_s: float,
    max_iters: int,
) -> dict[str, Any]:
    """Everything the benchmark measures for one model (run it through `run_isolated`).

    Args:
        x: uint8 (N, H, W, C) test images.

    Returns:
        logits: float32 (N, K) from the runtime at `threads[0]` threads, batches of `batch`.
        latency_s: {threads: float (repeats, I)} batch-1 seconds per call, I from
            `calls_per_repetition`, after a warm-up of `warmup` calls plus I more: a 50 us model
            timed for only 200 calls (10 ms) gives p50s that wander by tens of percent.
        throughput_ips: {threads: images/s at batch `batch`} (median of max(5, repeats) calls).
        base_rss_bytes: RSS after importing the runtime, before loading the model.
        peak_rss_bytes: peak RSS of the process over all of the above.
    """
    import psutil

    from edge_pipeline.edge.runtimes import open_runner, predict_batched

    _import_runtime(runtime)
    base_rss = psutil.Process().memory_info().rss
    xf = x.astype(np.float32) / 255.0
    singles = [xf[i : i + 1] for i in range(len(xf))]
    big = np.resize(xf, (batch, *xf.shape[1:]))  # tiles the test set when N < batch
    out: dict[str, Any] = {"latency_s": {}, "throughput_ips": {}}
    calls = partial(
        calls_per_repetition, iters=iters, min_repeat_s=min_repeat_s, max_iters=max_iters
    )
    for t in threads:
        runner = open_runner(path, runtime=runtime, layout=layout, threads=t)
        if "logits" not in out:
            out["logits"] = predict_batched(runner, xf, batch=batch)

        warm = time_calls(runner.predict, singles, n=warmup)
        # one repetition's worth more settles caches and clocks; its median (not the cold
        # warm-up's) sets the calls per repetition
        n = calls(time_calls(runner.predict, singles, n=calls(warm)))
        out["latency_s"][t] = np.stack(
            [time_calls(runner.predict, singles, n=n) for _ in range(repeats)]
        )
        time_calls(runner.predict, [big], n=2)
        out["throughput_ips"][t] = batch / float(
            np.median(time_calls(runner.predict, [big], n=max(5, repeats)))
        )
        del runner
    out["base_rss_bytes"] = base_rss
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def batch_latency_table(
    *,
    path: str,
    runtime: str,
    layout: str,
    x: np.ndarray,
    threads: int,
    sizes: list[int],
    reps: int = 20,
) -> dict[int, float]:
    """Median seconds per call at each batch size in `sizes` (for the serving simulation).

    One runner per size, so LiteRT's tensor re-allocation on resize is never timed.
    """
    from edge_pipeline.edge.runtimes import open_runner

    xf = x.astype(np.float32) / 255.0
    table = {}
    for b in sizes:
        runner = open_runner(path, runtime=runtime, layout=layout, threads=threads)
        xb = np.resize(xf, (b, *xf.shape[1:]))
        time_calls(runner.predict, [xb], n=3)
        table[b] = float(np.median(time_calls(runner.predict, [xb], n=reps)))
    return table


def machine_peak(*, n: int = 1024, reps: int = 3) -> dict[str, float | str]:
    """Single-thread matmul peaks of this machine in GMAC/s (best of `reps`), and its CPU.

    float32: numpy (BLAS) `n x n @ n x n` limited to 1 thread by threadpoolctl.
    int8: ONNX Runtime `MatMulInteger` (uint8 x int8 -> int32, MLAS kernels) with 1 intra-op thread.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    macs = float(n) ** 3
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    with threadpool_limits(limits=1):
        a @ b
        best_f = min(time_calls(lambda _: a @ b, [a], n=reps))

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "peak",
        [
            helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("B", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {
        "A": rng.integers(0, 255, (n, n), dtype=np.uint8),
        "B": rng.integers(-127, 127, (n, n), dtype=np.int8),
    }
    sess.run(None, feed)
    best_i = min(time_calls(lambda f: sess.run(None, f), [feed], n=reps))
    return {
        "float32_gmacs_1t": macs / best_f / 1e9,
        "int8_gmacs_1t": macs / best_i / 1e9,
        "float32_source": f"numpy matmul {n}x{n}, 1 BLAS thread",
        "int8_source": f"onnxruntime MatMulInteger {n}x{n} u8s8, 1 thread",
        "cpu": cpu_description(),
    }


def latency_stats(samples: np.ndarray) -> dict[str, Any]:
    """Statistics (milliseconds) of batch-1 latencies, seconds (R repetitions, I calls).

    Percentiles pool all R * I calls; `p50_spread_pct` = (max - min) / median of the R
    per-repetition medians, in percent: how repeatable the p50 is.
    """
    ms = np.asarray(samples, dtype=np.float64) * 1e3
    stats = {
        f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES), strict=True)
    }
    rep_p50 = np.median(ms, axis=1)
    stats["mean"] = float(ms.mean())
    stats["repeat_p50s"] = [float(v) for v in rep_p50]
    stats["p50_spread_pct"] = float((rep_p50.max() - rep_p50.min()) / np.median(rep_p50) * 100)
    return stats


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
