"""params.yaml `benchmark`: the edge benchmark (tasks/benchmark.py), its gates and serving model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from edge_pipeline.config.base import Section

Positive = Annotated[float, Field(gt=0)]


class Gates(Section):
    """Deployment gates a candidate must pass to be chosen; latency is batch 1, 1 thread.

    The quality references are the teacher (`benchmark.baseline`) and the best FP32 model: a
    candidate may lose at most the given points against the higher of the two, per figure.
    """

    max_size_mb: float = Field(5.0, gt=0)  # file size, decimal MB
    # accuracy below the teacher's and the best FP32 model's, points
    max_accuracy_drop_pts: float = Field(1.0, ge=0)
    # macro-F1 (x100) below the teacher's and the best FP32 model's, points; coarser than the
    # accuracy gate because one image of a rare class moves macro-F1 by 100 / (K * n_class) points
    # (about 2 on the demo's 5-image classes): tighten it on a larger test split
    max_macro_f1_drop_pts: float = Field(2.0, ge=0)
    # absolute floor on test accuracy; never below the test split's majority-class rate
    min_accuracy: float = Field(0.5, ge=0, le=1)
    max_latency_ms_p95: float = Field(10.0, gt=0)  # batch 1, 1 thread


class Serving(Section):
    """Dynamic batching of the chosen model vs batch 1 (virtual time, measured batch latencies)."""

    max_batch: int = Field(32, ge=1)  # requests run as one batch at most
    max_wait_ms: float = Field(5.0, ge=0)  # the oldest queued request waits at most this long
    rates: list[Positive] = Field([500, 2000, 8000], min_length=1)  # Poisson requests/s
    duration_s: float = Field(2.0, gt=0)  # simulated seconds of arrivals per rate
    seed: int = 0  # arrivals of rate k use seed + k


class Benchmark(Section):
    """Every runtime artifact of `models_from` measured side by side; the edge model chosen."""

    # stages whose models.json is benchmarked (onnxruntime/litert entries)
    models_from: list[str] = Field(["train", "qat", "export"], min_length=1)
    # ORT intra_op_num_threads / LiteRT num_threads; must include 1 (gates, ratios)
    threads: list[Annotated[int, Field(ge=1)]] = Field([1, 2], min_length=1)
    repeats: int = Field(3, ge=1)  # latency repetitions; the p50 spread across them is reported
    warmup: int = Field(20, ge=1)  # batch-1 calls before timing
    # timed batch-1 calls per repetition (at least); 50 keeps slow models (the teacher: 12 ms a
    # call on the demo) at 0.6 s a repetition instead of 2.4 s, with the same p50 and p95
    iters: int = Field(50, ge=1)
    # ... and enough calls to fill this many seconds: microsecond models need thousands
    min_repeat_s: float = Field(0.25, ge=0, le=60)
    max_iters: int = Field(20_000, ge=1)  # ... but never more calls than this per repetition
    max_p50_spread_pct: float = Field(10.0, gt=0)  # NOISY flag above this p50 spread
    batch: int = Field(32, ge=1)  # batch for accuracy and throughput
    # the teacher: ratios (speed-up, size, accuracy change) and the quality gates are against it
    baseline: str = "train/teacher_fp32"
    # ids eligible as the edge model; null = every model but the baseline
    candidates: list[str] | None = None
    # best passing candidate by this; the other two break ties
    choose_by: Literal["latency", "accuracy", "size"] = "latency"
    # ... among the passing candidates within this many points of the best passing one
    # (accuracy and macro-F1 each); the others are passed over, with the reason
    choice_tolerance_pts: float = Field(1.0, ge=0)
    # ... and p50 latencies within this % of the fastest of them count as equal (the other two
    # criteria decide): timing noise would flip the choice between runs of the same night
    choice_latency_tolerance_pct: float = Field(5.0, ge=0)
    timeout_s: float = Field(600, gt=0)  # per child process
    gates: Gates = Gates()
    serving: Serving = Serving()

    @field_validator("threads")
    @classmethod
    def _threads_include_one(cls, threads: list[int]) -> list[int]:
        if 1 not in threads:
            raise ValueError("must include 1 (gates and ratios are taken at 1 thread)")
        return threads
