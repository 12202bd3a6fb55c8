"""Benchmark stage: gates, choice, comparisons (pure) and the whole stage on tiny real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_pipeline.config import load_section
from edge_pipeline.config.edge import Benchmark, Gates
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.edge.benchmark_outputs import chosen_record, metrics_of, numeric
from edge_pipeline.edge.benchmark_plots import pareto_front
from edge_pipeline.edge.benchmark_report import flags, markdown
from edge_pipeline.edge.benchmarking import file_sizes
from edge_pipeline.edge.classification import classification_figures, majority
from edge_pipeline.edge.gates import (
    add_comparisons,
    choose,
    floor_failure,
    fp32_counterpart,
    references,
    verdict,
)
from tests._edge_models import Zoo, install_zoo, shared_zoo

PEAK = {"float32_gmacs_1t": 10.0, "int8_gmacs_1t": 40.0}


def fake(
    id: str, *, acc: float = 0.9, f1: float | None = None, size: float = 1.0, p50: float = 1.0,
    p95: float | None = None, runtime: str = "litert", dtype: str = "float32",
    source: str | None = None, stage: str = "qat", macs: int = 10**6,
) -> dict:  # fmt: skip
    """A result dict with the figures the pure functions read (shapes as benchmark_model's);
    macro-F1 defaults to the accuracy."""
    return {
        "id": id, "name": id.split("/")[-1], "stage": stage, "runtime": runtime, "dtype": dtype,
        "source": source, "macs": macs, "accuracy": acc, "balanced_accuracy": acc,
        "macro_f1": acc if f1 is None else f1, "size_mb": size,
        "latency_ms": {"1": {"p50": p50, "p95": p95 if p95 is not None else 1.2 * p50}},
    }  # fmt: skip


GATES = Gates(
    max_size_mb=5.0, max_accuracy_drop_pts=1.0, max_macro_f1_drop_pts=1.0, min_accuracy=0.5,
    max_latency_ms_p95=10.0,
)  # fmt: skip
REFS = {"accuracy": {"value": 0.91, "model": "teacher"}, "macro_f1": {"value": 0.91,
        "model": "teacher"}}  # fmt: skip
BALANCED = {"class": "0", "rate": 0.1}  # 10 balanced classes


def test_verdict_passes_within_every_gate() -> None:
    v = verdict(fake("m", acc=0.905, size=4.9, p95=9.9), refs=REFS, majority=BALANCED, gates=GATES)
    assert v == {"passed": True, "failures": []}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"size": 5.2}, "size 5.20 MB > 5 MB"),
        ({"acc": 0.89, "f1": 0.91}, "accuracy 89.00% is 2.00 pts below 91.00% of teacher > 1 pts"),
        ({"f1": 0.895}, "macro-F1 89.50% is 1.50 pts below 91.00% of teacher > 1 pts"),
        ({"p95": 12.5}, "p95 latency 12.500 ms at 1 thread > 10 ms"),
    ],
)
def test_verdict_names_each_failing_gate(kwargs: dict, reason: str) -> None:
    v = verdict(fake("m", **{"acc": 0.91} | kwargs), refs=REFS, majority=BALANCED, gates=GATES)
    assert v == {"passed": False, "failures": [reason]}


def test_verdict_lists_all_failures() -> None:
    v = verdict(fake("m", acc=0.4, size=50, p95=50), refs=REFS, majority=BALANCED, gates=GATES)
    assert not v["passed"] and len(v["failures"]) == 5  # size, floor, accuracy, macro-F1, p95
    assert "accuracy 40.00% < floor 50.00% (benchmark.gates.min_accuracy)" in v["failures"]


def test_a_chance_level_model_fails_the_absolute_floor_whatever_the_references() -> None:
    """Issue 15.8: 11.11% on 10 classes passed every relative gate (the reference was as bad)."""
    chance = {
        "accuracy": {"value": 0.1111, "model": "t"},
        "macro_f1": {"value": 0.02, "model": "t"},
    }
    v = verdict(fake("m", acc=0.1111, f1=0.02), refs=chance, majority=BALANCED, gates=GATES)
    assert v["failures"] == ["accuracy 11.11% < floor 50.00% (benchmark.gates.min_accuracy)"]
    # with no floor of its own, the majority-class rate still is one: 2 classes, 90% / 10%
    lax = GATES.model_copy(update={"min_accuracy": 0.0})
    skewed = {"class": "cat", "rate": 0.9}
    ref9 = {k: {"value": 0.9, "model": "t"} for k in ("accuracy", "macro_f1")}
    v = verdict(fake("m", acc=0.9), refs=ref9, majority=skewed, gates=lax)
    assert v["failures"] == [
        "accuracy 90.00% <= majority-class rate 90.00% (always answering 'cat' scores that)"
    ]
    assert floor_failure(0.905, min_accuracy=0.0, majority=skewed) is None
    assert floor_failure(0.5, min_accuracy=0.5, majority=BALANCED) is None  # the floor itself


def test_majority_class_rate_of_the_test_labels() -> None:
    y = np.array([2, 2, 2, 0, 1, 2, 0, 2, 2, 2])
    assert majority(y, ["a", "b", "c"]) == {"class": "c", "rate": 0.7}
    assert majority(np.arange(10) % 10, [str(k) for k in range(10)]) == {"class": "0", "rate": 0.1}


def test_references_are_the_teacher_and_the_best_fp32_model_per_figure() -> None:
    results = [
        fake("teacher", acc=0.95, f1=0.90, runtime="onnxruntime", stage="train"),
        fake("student_fp32", acc=0.94, f1=0.92),
        fake("student_int8", acc=0.97, f1=0.97, dtype="int8"),  # int8 never sets the bar
        fake("other_fp32", acc=0.95, f1=0.91),  # ties the teacher's accuracy: the teacher names it
    ]
    assert references(results, teacher="teacher") == {
        "accuracy": {"value": 0.95, "model": "teacher"},
        "macro_f1": {"value": 0.92, "model": "student_fp32"},
    }


def with_verdicts(results: list[dict], ref: float = 0.9) -> list[dict]:
    refs = {k: {"value": ref, "model": "ref"} for k in ("accuracy", "macro_f1")}
    for r in results:
        r["verdict"] = verdict(r, refs=refs, majority=BALANCED, gates=GATES)
    return results


def test_choose_best_passing_candidate() -> None:
    results = with_verdicts([
        fake("teacher", runtime="onnxruntime", size=40.0, p50=3.0),  # fails size; not a candidate
        fake("fp32", acc=0.91, size=2.0, p50=2.0),
        fake("int8", acc=0.90, size=0.5, p50=0.5, dtype="int8"),
        fake("fast_but_bad", acc=0.80, size=0.4, p50=0.1, dtype="int8"),  # fails accuracy
        fake("onnx_int8", acc=0.90, size=0.6, p50=0.7, runtime="onnxruntime", dtype="int8"),
    ])  # fmt: skip
    everyone = [r["id"] for r in results if r["id"] != "teacher"]

    def pick(candidates: list[str], by: str) -> dict:
        return choose(results, candidates=candidates, choose_by=by, tolerance_pts=1.0,
                      latency_tolerance_pct=5.0)  # fmt: skip

    c = pick(everyone, "latency")
    assert c["chosen"] == "int8" and c["per_runtime"] == {
        "litert": "int8",
        "onnxruntime": "onnx_int8",
    }
    assert c["best"] == {"accuracy": {"value": 0.91, "model": "fp32"},
                         "macro_f1": {"value": 0.91, "model": "fp32"}}  # fmt: skip
    assert pick(everyone, "accuracy")["chosen"] == "fp32"
    assert pick(everyone, "size")["chosen"] == "int8"
    assert pick(["fp32"], "latency")["chosen"] == "fp32"
    none = pick(["fast_but_bad"], "latency")
    assert none["chosen"] is None and none["per_runtime"] == {} and none["best"] == {}
    assert [o["id"] for o in none["passed_over"]] == [r["id"] for r in results]


def test_choose_breaks_ties_with_the_other_criteria() -> None:
    results = with_verdicts([fake("a", acc=0.9, p50=1.0), fake("b", acc=0.95, p50=1.0)])
    c = choose(results, candidates=["a", "b"], choose_by="latency", tolerance_pts=9,
               latency_tolerance_pct=0.0)  # fmt: skip
    assert c["chosen"] == "b"


def test_latencies_within_the_tolerance_count_as_equal_and_the_choice_is_stable() -> None:
    """The same FP32 student in LiteRT and ONNX Runtime (equal accuracy): timing noise must not
    pick one run and the other the next; the smaller file wins within the tolerance."""

    def twins(litert_p50: float) -> list[dict]:
        return with_verdicts([
            fake("qat/student_fp32", acc=0.93, f1=0.93, p50=litert_p50, size=0.1344),
            fake("export/student_fp32", acc=0.93, f1=0.93, p50=0.150, size=0.1343,
                 runtime="onnxruntime"),
            fake("slow", acc=0.94, f1=0.94, p50=0.200, size=0.05),  # 33% slower: not a tie
        ], ref=0.93)  # fmt: skip

    def pick(results: list[dict], pct: float) -> dict:
        return choose(results, candidates=[r["id"] for r in results], choose_by="latency",
                      tolerance_pts=1.0, latency_tolerance_pct=pct)  # fmt: skip

    for p50 in (0.145, 0.148, 0.152, 0.156):  # LiteRT's timing on four runs: within 5% of ORT's
        assert pick(twins(p50), 5.0)["chosen"] == "export/student_fp32"
    assert [pick(twins(p50), 0.0)["chosen"] for p50 in (0.145, 0.156)] == [
        "qat/student_fp32", "export/student_fp32"
    ]  # without the tolerance the noise decides  # fmt: skip
    why = {o["id"]: o["reason"] for o in pick(twins(0.145), 5.0)["passed_over"]}
    assert why["qat/student_fp32"] == (
        "within tolerance but ranked below export/student_fp32 by size (size 134.4 kB vs size "
        "134.3 kB); latency counts as equal (p50 0.145 ms vs p50 0.150 ms: within 5%)"
    )
    assert why["slow"].startswith("within tolerance but ranked below export/student_fp32 by lat")
    assert pick(twins(0.100), 5.0)["chosen"] == "qat/student_fp32"  # 33% faster: it wins


def test_choose_by_latency_only_within_tolerance_of_the_best_and_says_why() -> None:
    """Issue 16.4: a fast model 1.5 pts below the best passing one is passed over, with reasons."""
    results = with_verdicts(
        [
            fake("teacher", acc=0.92, runtime="onnxruntime", size=40.0, p50=8.0),
            fake("best", acc=0.915, f1=0.915, p50=2.0),
            fake("close", acc=0.91, f1=0.91, p50=1.0),  # 0.5 pts below: eligible
            fake("fast", acc=0.90, f1=0.90, p50=0.2, dtype="int8"),  # passes gates, 1.5 below
            fake("skewed", acc=0.915, f1=0.85, p50=0.1, dtype="int8"),  # fails the macro-F1 gate
        ],
        ref=0.91,
    )
    c = choose(results, candidates=["best", "close", "fast", "skewed"], choose_by="latency",
               tolerance_pts=1.0, latency_tolerance_pct=5.0)  # fmt: skip
    assert c["chosen"] == "close"
    why = {o["id"]: o["reason"] for o in c["passed_over"]}
    assert set(why) == {"teacher", "best", "fast", "skewed"}
    assert why["teacher"].startswith("not a candidate")
    assert why["best"] == (
        "within tolerance but ranked below close by latency (p50 2.000 ms vs p50 1.000 ms)"
    )
    assert why["fast"] == (
        "accuracy 1.50 pts below the best passing candidate best (91.50%); macro-F1 1.50 pts "
        "below the best passing candidate best (91.50%) > choice tolerance 1 pts"
    )
    assert why["skewed"] == ("fails gates: macro-F1 85.00% is 6.00 pts below 91.00% of ref > 1 pts")
    # a wider tolerance lets the fast one in
    wide = choose(results, candidates=["best", "close", "fast"], choose_by="latency",
                  tolerance_pts=2.0, latency_tolerance_pct=5.0)  # fmt: skip
    assert wide["chosen"] == "fast"


DEMO = [  # the demo's measured figures (metrics/benchmark.json of main, 205 test images)
    ("train/teacher_fp32", "onnxruntime", "float32", 0.9805, 0.9513, 7.224, 44.77),
    ("student_pqat_int8", "litert", "int8", 0.9805, 0.9216, 0.068, 0.05),
    ("qat/student_fp32", "litert", "float32", 0.9805, 0.9545, 0.063, 0.135),
    ("student_ptq_int8", "litert", "int8", 0.9854, 0.9580, 0.138, 0.071),
    ("pruned_fp32", "litert", "float32", 0.9659, 0.8962, 0.049, 0.085),
    ("export/student_fp32", "onnxruntime", "float32", 0.9805, 0.9545, 0.144, 0.134),
    ("student_int8", "onnxruntime", "int8", 0.9805, 0.9546, 0.247, 0.088),
]


def test_demo_choice_is_stable_under_the_new_gates() -> None:
    """The demo still ships qat/student_fp32; the PQAT model now fails on macro-F1 (-3.3 pts)."""
    results = [fake(i, acc=a, f1=f, p50=p, size=s, runtime=rt, dtype=dt)
               for i, rt, dt, a, f, p, s in DEMO]  # fmt: skip
    refs = references(results, teacher="train/teacher_fp32")
    assert refs["accuracy"]["model"] == "train/teacher_fp32"
    assert refs["macro_f1"] == {"value": 0.9545, "model": "qat/student_fp32"}
    top = {"class": "0", "rate": 0.1}
    for r in results:
        r["verdict"] = verdict(r, refs=refs, majority=top, gates=Benchmark().gates)
    c = choose(results, candidates=[r["id"] for r in results[1:]], choose_by="latency",
               tolerance_pts=Benchmark().choice_tolerance_pts,
               latency_tolerance_pct=Benchmark().choice_latency_tolerance_pct)  # fmt: skip
    assert c["chosen"] == "qat/student_fp32"
    why = {o["id"]: o["reason"] for o in c["passed_over"]}
    assert why["student_pqat_int8"].startswith("fails gates: macro-F1 92.16% is 3.29 pts below")
    assert why["pruned_fp32"].startswith("fails gates: accuracy 96.59% is 1.46 pts below")


def test_comparisons_ratios_and_int8_slower_flag() -> None:
    results = [
        fake("teacher", runtime="onnxruntime", size=40.0, p50=8.0, acc=0.95, stage="train"),
        fake("qat/student_fp32", size=2.0, p50=2.0, acc=0.94, source="student"),
        fake("student_ptq_int8", size=0.5, p50=0.5, acc=0.93, dtype="int8", source="student"),
        fake("pruned_fp32", size=1.0, p50=1.0, source="student_pruned"),
        fake("student_pqat_int8", size=0.25, p50=1.5, dtype="int8", source="student_pruned"),
        fake("export/student_fp32", runtime="onnxruntime", p50=3.0, stage="export"),
        fake("student_int8", runtime="onnxruntime", p50=1.0, dtype="int8",
             source="student_fp32", stage="export"),
        fake("orphan_int8", dtype="int8", source=None),
    ]  # fmt: skip
    add_comparisons(results, baseline="teacher", peak=PEAK)
    by = {r["id"]: r for r in results}
    ptq = by["student_ptq_int8"]
    assert ptq["vs_baseline"]["speedup"] == pytest.approx(16.0)
    assert ptq["vs_baseline"]["size_reduction"] == pytest.approx(80.0)
    assert ptq["vs_baseline"]["accuracy_change_pts"] == pytest.approx(-2.0)
    # sibling: same runtime, same source -> the unpruned FP32 TFLite
    assert ptq["vs_fp32"] == {"fp32": "qat/student_fp32", "speedup": 4.0, "int8_slower": False}
    assert by["student_pqat_int8"]["vs_fp32"]["fp32"] == "pruned_fp32"
    assert by["student_pqat_int8"]["vs_fp32"]["int8_slower"] is True
    # named source: the same stage's model wins the name clash
    assert by["student_int8"]["vs_fp32"]["fp32"] == "export/student_fp32"
    assert by["orphan_int8"]["vs_fp32"] is None and by["pruned_fp32"]["vs_fp32"] is None
    # 1e6 MACs in 0.5 ms = 2 GMAC/s against the int8 peak
    assert ptq["gmacs_per_s"] == pytest.approx(2.0) and ptq["peak_fraction"] == pytest.approx(0.05)
    assert by["pruned_fp32"]["peak_gmacs_per_s"] == 10.0
    assert fp32_counterpart(by["teacher"], results) is None


def test_pareto_front() -> None:
    lat = np.array([1.0, 2.0, 0.5, 3.0, 2.0])
    acc = np.array([0.9, 0.95, 0.8, 0.94, 0.95])
    assert pareto_front(lat, acc).tolist() == [True, True, True, False, True]


def demo_out() -> dict:
    """A run_benchmark record over the DEMO figures (no serving), as the writers read it."""
    results = [fake(i, acc=a, f1=f, p50=p, size=s, runtime=rt, dtype=dt)
               for i, rt, dt, a, f, p, s in DEMO]  # fmt: skip
    add_comparisons(results, baseline="train/teacher_fp32", peak=PEAK | {
        "float32_source": "numpy", "int8_source": "numpy"})  # fmt: skip
    for r in results:
        r |= {"zipped_mb": r["size_mb"], "params": 1, "peak_rss_mb": 50, "model_rss_mb": 1}
        r |= {"path": f"{r['id']}.bin", "layout": "NHWC"}
        r["per_class_recall"] = {"0": r["accuracy"], "1": 1.0}
        r["throughput_ips"] = {"1": 100.0}
        r["latency_ms"]["1"] |= {"p90": 1.1, "p99": 1.3, "p50_spread_pct": 1.0}
    refs = references(results, teacher="train/teacher_fp32")
    top = {"class": "1", "rate": 0.55}
    for r in results:
        r["verdict"] = verdict(r, refs=refs, majority=top, gates=GATES)
    candidates = [r["id"] for r in results[1:]]
    c = choose(results, candidates=candidates, choose_by="latency", tolerance_pts=1.0,
               latency_tolerance_pct=5.0)  # fmt: skip
    return {
        "input_shape": [8, 8, 1], "classes": ["0", "1"], "machine": PEAK | {
            "float32_source": "numpy", "int8_source": "numpy"},
        "baseline": "train/teacher_fp32", "references": refs, "majority": top,
        "candidates": candidates, "gates": GATES.to_dict(), "choose_by": "latency",
        "choice_tolerance_pts": 1.0, "choice_latency_tolerance_pct": 5.0, "models": results,
        "chosen": c["chosen"], "best": c["best"],
        "per_runtime": c["per_runtime"], "passed_over": c["passed_over"], "serving": None,
    }  # fmt: skip


def test_report_chosen_json_and_metrics_say_what_was_passed_over_and_why() -> None:
    out = demo_out()
    chosen = chosen_record(out)
    assert chosen["chosen"] == "qat/student_fp32"
    assert chosen["rule"].endswith(
        "within 1 pts of the best passing one on accuracy and macro-F1; p50 latencies within 5% "
        "of the fastest of them count as equal"
    )
    assert chosen["references"]["macro_f1"] == {"value": 0.9545, "model": "qat/student_fp32"}
    assert chosen["majority"] == {"class": "1", "rate": 0.55} and chosen["gates"]["min_accuracy"]
    over = {o["id"]: o["reason"] for o in chosen["passed_over"]}
    assert over["student_pqat_int8"].startswith("fails gates: macro-F1 92.16%")
    assert over["student_ptq_int8"].startswith("within tolerance but ranked below qat/student_fp32")
    assert chosen["model"]["per_class_recall"] == {"0": 0.9805, "1": 1.0}
    assert chosen["model"]["balanced_accuracy"] == 0.9805
    md = markdown(out, max_spread_pct=10)
    assert "| accuracy | balanced acc. | macro-F1 |" in md
    assert "macro-F1 0.9545 (`qat/student_fp32`)" in md and "majority-class rate 55.00%" in md
    assert "- `student_pqat_int8`: fails gates: macro-F1 92.16% is 3.29 pts below" in md
    assert "| 0 | 98.05% | 98.05% |" in md  # per-class recall, chosen vs teacher
    m = metrics_of(out)
    assert m["chosen_per_class_recall"] == {"0": 0.9805, "1": 1.0} and m["n_passed_over"] == 6
    assert m["references"] == {"accuracy": 0.9805, "macro_f1": 0.9545}
    assert m["models"]["student_ptq_int8"]["balanced_accuracy"] == 0.9854


def test_classification_figures_match_sklearn_definitions() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    f = classification_figures(np.array([0, 1, 1, 1, 2, 0]), y, ["a", "b", "c"])
    assert f["accuracy"] == pytest.approx(4 / 6)
    assert f["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    assert f["balanced_accuracy"] == pytest.approx(2 / 3)
    assert f["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    # imbalanced: always answering the majority class is 80% accurate, 50% balanced
    f = classification_figures(np.zeros(10, int), np.array([0] * 8 + [1] * 2), ["a", "b"])
    assert f["accuracy"] == pytest.approx(0.8) and f["balanced_accuracy"] == pytest.approx(0.5)
    assert f["macro_f1"] == pytest.approx((2 * 0.8 / 1.8) / 2)


def test_file_sizes_zip(tmp_path: Path) -> None:
    (tmp_path / "zeros.bin").write_bytes(bytes(100_000))
    size, zipped = file_sizes(tmp_path / "zeros.bin")
    assert size == 100_000 and zipped < 1_000


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"threads": [2, 4]}, "benchmark.threads=[2, 4]: Value error, must include 1"),
        ({"threads": [1, 0]}, "benchmark.threads.1=0: Input should be greater than or equal to 1"),
        ({"choose_by": "vibes"}, "benchmark.choose_by='vibes': Input should be 'latency',"),
        ({"gates": {"max_size_gb": 1}}, "benchmark.gates.max_size_gb: not an option; "
                                        "did you mean max_size_mb?"),
        ({"iter": 5}, "benchmark.iter: not an option; did you mean iters?"),
        ({"gates": {"min_accuracy": 1.5}}, "benchmark.gates.min_accuracy=1.5: Input should be "
                                           "less than or equal to 1"),
        ({"gates": {"max_macro_f1_drop_pts": -1}}, "benchmark.gates.max_macro_f1_drop_pts=-1: "
                                                  "Input should be greater than or equal to 0"),
        ({"choice_tolerance_pts": "x"}, "benchmark.choice_tolerance_pts='x': Input should be"),
        ({"repeats": 0}, "benchmark.repeats=0: Input should be greater than or equal to 1"),
        ({"repeats": "many"}, "benchmark.repeats='many': Input should be a valid integer"),
        ({"min_repeat_s": 61}, "benchmark.min_repeat_s=61: Input should be less than or equal"),
        ({"serving": {"rates": [100, 0]}}, "benchmark.serving.rates.1=0: Input should be greater"),
        ({"serving": {"rates": []}}, "benchmark.serving.rates=[]: List should have at least 1"),
        ({"serving": {"max_batch": 0}}, "benchmark.serving.max_batch=0: Input should be greater"),
    ],
)  # fmt: skip
def test_params_errors_name_the_key(tmp_path: Path, params: dict, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"benchmark": params}))
    with pytest.raises(ConfigError, match="^params.yaml " + message.replace("[", r"\[")):
        load_section("benchmark", path)


def test_noisy_flag_threshold_is_the_param() -> None:
    r = fake("m") | {"vs_fp32": None}
    r["latency_ms"]["1"]["p50_spread_pct"] = 12.0
    out = {"models": [r]}
    assert flags(out, max_spread_pct=15.0) == []
    (line,) = flags(out, max_spread_pct=10.0)
    assert line.startswith("NOISY: m p50 spread 12.0%") and "target < 10%" in line


def test_numeric_flattens_for_mlflow() -> None:
    d = {"a": {"b": 1, "c": True, "d": "x", "e": float("nan")}, "f": 2.5, "g": [1, 2]}
    assert numeric(d) == {"a.b": 1.0, "a.c": 1.0, "f": 2.5}
    assert numeric({"recall": {"T-shirt/top (v2)": 0.5}}) == {"recall.T-shirt/top _v2_": 0.5}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return shared_zoo(tmp_path_factory)


@pytest.mark.slow
def test_benchmark_stage_on_tiny_models(prepared_workspace, zoo: Zoo) -> None:
    from ai_edge_litert.interpreter import Interpreter
    from mlflow import MlflowClient

    from edge_pipeline.artifacts.datasets import load_split
    from edge_pipeline.core.tracking import configure
    from tasks import benchmark

    fast = {"threads": [1, 2], "repeats": 3, "warmup": 3, "iters": 20, "batch": 8,
            "serving": {"rates": [1000, 1000000], "duration_s": 0.05}}  # fmt: skip
    root = prepared_workspace(params={"benchmark": fast})["root"]
    install_zoo(zoo, root)
    benchmark.main()

    out = json.loads((root / "data/benchmark/results.json").read_text())
    by = {r["id"]: r for r in out["models"]}
    students = {
        f"{stage}/student_{kind}" for stage in ("qat", "export") for kind in ("fp32", "int8")
    }
    assert set(by) == {"teacher_fp32"} | students
    x, y, _ = load_split("test")
    for r in out["models"]:
        for lat in r["latency_ms"].values():
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"]
            assert len(lat["repeat_p50s"]) == 3
        assert set(r["latency_ms"]) == set(r["throughput_ips"]) == {"1", "2"}
        assert r["peak_rss_mb"] > 10 and 0 < r["zipped_mb"] <= r["size_mb"]
        assert sum(r["per_class_recall"].values()) == pytest.approx(
            3 * r["accuracy"]  # 6 test images per class: mean recall = accuracy
        )
    # runtime accuracy = a direct evaluation of the same model
    for model in ("teacher_fp32", "qat/student_fp32", "export/student_fp32"):
        direct = zoo.direct("teacher" if model == "teacher_fp32" else "student", x)
        assert by[model]["accuracy"] == pytest.approx((direct.argmax(1) == y).mean())
    interp = Interpreter(model_path="data/qat/student_int8.tflite")
    interp.allocate_tensors()
    inp, outd = interp.get_input_details()[0], interp.get_output_details()[0]
    s, z = inp["quantization"]
    hits = 0
    for i in range(len(x)):
        q = np.clip(np.round(x[i : i + 1] / 255 / s + z), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        hits += int(interp.get_tensor(outd["index"]).argmax() == y[i])
    assert by["qat/student_int8"]["accuracy"] == pytest.approx(hits / len(y))

    assert by["teacher_fp32"]["vs_baseline"]["speedup"] == 1.0
    assert by["qat/student_int8"]["vs_fp32"]["fp32"] == "qat/student_fp32"
    assert by["export/student_int8"]["vs_fp32"]["fp32"] == "export/student_fp32"

    chosen = json.loads((root / "data/benchmark/chosen.json").read_text())
    passing = [r for r in out["models"] if r["verdict"]["passed"] and r["id"] != "teacher_fp32"]
    top = {k: max(r[k] for r in passing) for k in ("accuracy", "macro_f1")}
    near = [r for r in passing if all(top[k] - r[k] <= 0.01 + 1e-12 for k in top)]
    best = min(near, key=lambda r: r["latency_ms"]["1"]["p50"])
    assert out["majority"] == {"class": "0", "rate": pytest.approx(1 / 3)}
    assert {o["id"] for o in chosen["passed_over"]} == set(by) - {best["id"]}
    assert chosen["chosen"] == best["id"] and chosen["model"]["path"] == best["path"]
    assert chosen["input_shape"] == [16, 16, 1] and chosen["classes"] == ["0", "1", "2"]
    assert set(chosen["per_runtime"]) == {"litert", "onnxruntime"}

    rows = {(r["rate_rps"], r["policy"]): r for r in out["serving"]["rows"]}
    assert (
        rows[(1000000, "dynamic")]["throughput_rps"] > rows[(1000000, "batch1")]["throughput_rps"]
    )

    metrics = json.loads((root / "metrics/benchmark.json").read_text())
    assert metrics["chosen"] == best["id"] and metrics["n_models"] == 5
    assert (
        metrics["models"]["teacher_fp32"]["p95_ms_1t"]
        == by["teacher_fp32"]["latency_ms"]["1"]["p95"]
    )
    table = pd.read_csv(root / "reports/benchmark/benchmark.csv")
    assert len(table) == 5 and {"p99_ms_2t", "speedup_vs_baseline", "passed"} <= set(table)
    md = (root / "reports/benchmark/benchmark.md").read_text()
    assert f"`{best['id']}` **(chosen)**" in md and "(not a candidate)" in md
    for name in ("pareto.png", "pareto.csv", "size.png", "size.csv", "serving/p95_latency.png"):
        assert (root / "plots/benchmark" / name).stat().st_size > 0
    for policy in ("batch1", "dynamic"):
        serving = pd.read_csv(root / f"plots/benchmark/serving/{policy}.csv")
        assert serving["rate_rps"].is_monotonic_increasing and len(serving) == 2
    pareto = pd.read_csv(root / "plots/benchmark/pareto.csv")
    assert list(pareto.loc[pareto["chosen"], "model"]) == [best["id"]]

    run = MlflowClient().search_runs(
        [configure().get_experiment_by_name("edge-pipeline").experiment_id]
    )[0]
    assert run.data.tags["chosen"] == best["id"]
    assert run.data.metrics["models.teacher_fp32.accuracy"] == by["teacher_fp32"]["accuracy"]


@pytest.mark.slow
def test_benchmark_stage_fails_clearly_on_an_ambiguous_baseline(
    prepared_workspace, zoo: Zoo
) -> None:
    from tasks import benchmark

    root = prepared_workspace(params={"benchmark": {"baseline": "student_fp32"}})["root"]
    install_zoo(zoo, root)
    with pytest.raises(ConfigError, match="benchmark.baseline='student_fp32' is ambiguous"):
        benchmark.main()
    assert not (root / "data/benchmark").exists()
