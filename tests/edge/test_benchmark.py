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
from edge_pipeline.edge.benchmark_outputs import flags, numeric
from edge_pipeline.edge.benchmark_plots import pareto_front
from edge_pipeline.edge.benchmarking import classification_figures, file_sizes
from edge_pipeline.edge.gates import add_comparisons, choose, fp32_counterpart, verdict
from tests._edge_models import Zoo, install_zoo, shared_zoo

PEAK = {"float32_gmacs_1t": 10.0, "int8_gmacs_1t": 40.0}


def fake(
    id: str, *, acc: float = 0.9, size: float = 1.0, p50: float = 1.0, p95: float | None = None,
    runtime: str = "litert", dtype: str = "float32", source: str | None = None,
    stage: str = "qat", macs: int = 10**6,
) -> dict:  # fmt: skip
    """A result dict with the figures the pure functions read (shapes as benchmark_model's)."""
    return {
        "id": id, "name": id.split("/")[-1], "stage": stage, "runtime": runtime, "dtype": dtype,
        "source": source, "macs": macs, "accuracy": acc, "size_mb": size,
        "latency_ms": {"1": {"p50": p50, "p95": p95 if p95 is not None else 1.2 * p50}},
    }  # fmt: skip


GATES = Gates(max_size_mb=5.0, max_accuracy_drop_pts=1.0, max_latency_ms_p95=10.0)


def test_verdict_passes_within_every_gate() -> None:
    v = verdict(fake("m", acc=0.905, size=4.9, p95=9.9), reference_accuracy=0.91, gates=GATES)
    assert v == {"passed": True, "failures": []}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"size": 5.2}, "size 5.20 MB > 5 MB"),
        ({"acc": 0.89}, "accuracy 89.00% is 2.00 pts below the reference (91.00%) > 1 pts"),
        ({"p95": 12.5}, "p95 latency 12.500 ms at 1 thread > 10 ms"),
    ],
)
def test_verdict_names_each_failing_gate(kwargs: dict, reason: str) -> None:
    v = verdict(fake("m", **kwargs), reference_accuracy=0.91, gates=GATES)
    assert v == {"passed": False, "failures": [reason]}


def test_verdict_lists_all_failures() -> None:
    v = verdict(fake("m", acc=0.5, size=50, p95=50), reference_accuracy=0.91, gates=GATES)
    assert not v["passed"] and len(v["failures"]) == 3


def with_verdicts(results: list[dict], ref: float = 0.9) -> list[dict]:
    for r in results:
        r["verdict"] = verdict(r, reference_accuracy=ref, gates=GATES)
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
    chosen, per_rt = choose(results, candidates=everyone, choose_by="latency")
    assert chosen == "int8" and per_rt == {"litert": "int8", "onnxruntime": "onnx_int8"}
    assert choose(results, candidates=everyone, choose_by="accuracy")[0] == "fp32"
    assert choose(results, candidates=everyone, choose_by="size")[0] == "int8"
    assert choose(results, candidates=["fp32"], choose_by="latency")[0] == "fp32"
    assert choose(results, candidates=["fast_but_bad"], choose_by="latency") == (None, {})


def test_choose_breaks_ties_with_the_other_criteria() -> None:
    results = with_verdicts([fake("a", acc=0.9, p50=1.0), fake("b", acc=0.95, p50=1.0)])
    assert choose(results, candidates=["a", "b"], choose_by="latency")[0] == "b"


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


def test_classification_figures_match_sklearn_definitions() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    f = classification_figures(logits, y, ["a", "b", "c"])
    assert f["accuracy"] == pytest.approx(4 / 6)
    assert f["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    assert f["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))


def test_file_sizes_zip(tmp_path: Path) -> None:
    (tmp_path / "zeros.bin").write_bytes(bytes(100_000))
    size, zipped = file_sizes(tmp_path / "zeros.bin")
    assert size == 100_000 and zipped < 1_000


def test_params_yaml_benchmark_section_is_the_schema_default() -> None:
    raw = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())["benchmark"]
    assert Benchmark.model_validate(raw) == Benchmark()
    assert Benchmark().gates == Gates(max_size_mb=5.0, max_accuracy_drop_pts=1.0,
                                      max_latency_ms_p95=10.0)  # fmt: skip


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"threads": [2, 4]}, "benchmark.threads=[2, 4]: Value error, must include 1"),
        ({"threads": [1, 0]}, "benchmark.threads.1=0: Input should be greater than or equal to 1"),
        ({"choose_by": "vibes"}, "benchmark.choose_by='vibes': Input should be 'latency',"),
        ({"gates": {"max_size_gb": 1}}, "benchmark.gates.max_size_gb: not an option; "
                                        "did you mean max_size_mb?"),
        ({"iter": 5}, "benchmark.iter: not an option; did you mean iters?"),
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
    best = min(passing, key=lambda r: r["latency_ms"]["1"]["p50"])
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
    for name in ("pareto.png", "pareto.csv", "size.png", "size.csv", "serving.csv"):
        assert (root / "plots/benchmark" / name).stat().st_size > 0

    run = MlflowClient().search_runs(
        [configure().get_experiment_by_name("edge-pipeline").experiment_id]
    )[0]
    assert run.data.tags["chosen"] == best["id"]
    assert run.data.metrics["models.teacher_fp32.accuracy"] == by["teacher_fp32"]["accuracy"]


@pytest.mark.slow
def test_benchmark_stage_fails_clearly_on_unknown_reference(prepared_workspace, zoo: Zoo) -> None:
    from tasks import benchmark

    root = prepared_workspace(params={"benchmark": {"reference": "student_fp32"}})["root"]
    install_zoo(zoo, root)
    with pytest.raises(ConfigError, match="benchmark.reference='student_fp32' is ambiguous"):
        benchmark.main()
    assert not (root / "data/benchmark").exists()
