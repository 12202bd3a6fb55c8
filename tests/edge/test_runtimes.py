"""Edge runners, the models.json contract, child-process measurements (runtimes, measure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edge_pipeline.core.errors import ConfigError, InputError
from edge_pipeline.core.machine import cpu_description
from edge_pipeline.edge.measure import (
    calls_per_repetition,
    latency_stats,
    machine_peak,
    measure_model,
    run_isolated,
)
from edge_pipeline.edge.runtimes import (
    dequantize,
    find_model,
    litert_interpreter,
    load_models,
    open_runner,
    predict_batched,
    quantize,
    read_models_json,
)
from tests._edge_models import Zoo, entry, shared_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return shared_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def test_images(zoo: Zoo) -> tuple[np.ndarray, np.ndarray]:
    """The zoo test split: uint8 (N, 16, 16, 1), int64 (N,); split.csv row i = images.npy row i."""
    split = pd.read_csv(zoo.root / "data" / "split" / "split.csv")
    is_test = (split["split"] == "test").to_numpy()
    x = np.load(zoo.root / "data" / "ingest" / "images.npy")[is_test]
    return x, split["label"].to_numpy(dtype=np.int64)[is_test]


def write_models(folder: Path, entries: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for e in entries:
        (folder / e["file"]).write_bytes(b"x")
    path = folder / "models.json"
    path.write_text(json.dumps(entries))
    return path


def test_models_json_keeps_edge_runtimes_and_resolves_paths(tmp_path: Path) -> None:
    path = write_models(tmp_path / "qat", [
        entry("a_fp32", "a.tflite", "litert", "NHWC", "float32", None, 10, 20),
        entry("a", "a.keras", "keras", "NHWC", "float32", None, 10, 20),
        entry("a_int8", "a8.tflite", "litert", "NHWC", "int8", "a_fp32", 10, 20),
    ])  # fmt: skip
    specs = read_models_json(path, stage="qat")
    assert [s.id for s in specs] == ["a_fp32", "a_int8"]
    assert specs[1].path == str(tmp_path / "qat" / "a8.tflite") and specs[1].is_int
    assert (specs[0].params, specs[0].macs, specs[1].source) == (10, 20, "a_fp32")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("layout"), "missing keys ['layout']"),
        (lambda e: e.update(layout="CHW"), "layout='CHW' is not one of"),
        (lambda e: e.update(dtype="fp16"), "dtype='fp16' is not one of"),
        (lambda e: e.update(file="gone.onnx"), "gone.onnx does not exist; re-run export"),
    ],
)
def test_models_json_errors_name_file_entry_and_fix(tmp_path: Path, mutate, message: str) -> None:
    good = entry("m", "m.onnx", "onnxruntime", "NCHW", "float32", None, 1, 1)
    path = write_models(tmp_path / "export", [good])
    bad = dict(good)
    mutate(bad)
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(InputError, match="entry 1") as err:
        read_models_json(path, stage="export")
    assert str(path) in str(err.value) and message in str(err.value)


def test_models_json_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"run `dvc repro qat` first"):
        read_models_json(tmp_path / "qat" / "models.json", stage="qat")
    (tmp_path / "models.json").write_text('[{"name": "a",\n oops]')
    with pytest.raises(InputError, match="line 2: invalid JSON"):
        read_models_json(tmp_path / "models.json", stage="qat")


def test_ids_unique_across_stages_and_lookup(tmp_path: Path) -> None:
    write_models(
        tmp_path / "qat", [entry("s", "s.tflite", "litert", "NHWC", "float32", None, 1, 1)]
    )
    write_models(tmp_path / "export", [
        entry("s", "s.onnx", "onnxruntime", "NHWC", "float32", None, 1, 1),
        entry("t", "t.onnx", "onnxruntime", "NCHW", "float32", None, 1, 1),
    ])  # fmt: skip
    specs = load_models(tmp_path, ["qat", "export"])
    assert [s.id for s in specs] == ["qat/s", "export/s", "t"]
    assert find_model(specs, "export/s", param="p").path.endswith("s.onnx")
    assert find_model(specs, "export/t", param="p").id == "t"  # stage/name works without a clash
    with pytest.raises(ConfigError, match=r"benchmark.reference='s' is ambiguous.*qat/s"):
        find_model(specs, "s", param="benchmark.reference")
    with pytest.raises(ConfigError, match="matches no model"):
        find_model(specs, "nope", param="benchmark.baseline")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantize_uses_scale_and_zero_point(dtype: type) -> None:
    zp = -128 if dtype == np.int8 else 0
    detail = {"dtype": dtype, "quantization": (1 / 255, zp)}
    x = np.array([0.0, 0.4, 1.0, 2.0], dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == dtype
    assert q.tolist() == [zp, zp + 102, zp + 255, zp + 255]  # 2.0 clips to the top of the range
    np.testing.assert_allclose(dequantize(q, detail)[:3], x[:3], atol=0.5 / 255)
    float_detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert quantize(x, float_detail) is not None and dequantize(x, float_detail) is x


def test_runners_match_direct_evaluation(zoo: Zoo, test_images) -> None:
    from ai_edge_litert.interpreter import Interpreter

    x, y = test_images
    xf = x.astype(np.float32) / 255
    for spec in load_models(zoo.root / "data", ["train", "qat", "export"]):
        logits = predict_batched(
            open_runner(spec.path, runtime=spec.runtime, layout=spec.layout, threads=1), xf, batch=4
        )
        assert logits.shape == (len(x), 3) and logits.dtype == np.float32
        if spec.dtype == "float32":  # numpy forward pass of the same weights
            direct = zoo.direct("teacher" if spec.name == "teacher_fp32" else "student", x)
            np.testing.assert_allclose(logits, direct, atol=1e-4)
        elif spec.runtime == "litert":  # the interpreter driven by hand, one image at a time
            interp = Interpreter(model_path=spec.path)
            interp.allocate_tensors()
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
            s, z = inp["quantization"]
            os_, oz = out["quantization"]
            for i in range(len(x)):
                q = np.clip(np.round(xf[i : i + 1] / s + z), -128, 127).astype(np.int8)
                interp.set_tensor(inp["index"], q)
                interp.invoke()
                ref = (interp.get_tensor(out["index"]).astype(np.float32) - oz) * os_
                np.testing.assert_allclose(logits[i : i + 1], ref, atol=1e-6)
        else:  # ONNX QDQ INT8 agrees with its float source on nearly every image
            agree = (logits.argmax(1) == zoo.direct("student", x).argmax(1)).mean()
            assert agree >= 0.9


def test_predict_batched_pads_the_tail_without_changing_results(zoo: Zoo, test_images) -> None:
    xf = test_images[0].astype(np.float32) / 255
    path = str(zoo.root / "data" / "qat" / "student_fp32.tflite")
    runner = open_runner(path, runtime="litert", layout="NHWC", threads=1)
    whole = runner.predict(xf)
    for batch in (1, 5, 32):
        np.testing.assert_allclose(predict_batched(runner, xf, batch=batch), whole, atol=1e-6)


def test_measure_model_in_a_child_process(zoo: Zoo, test_images) -> None:
    x, _ = test_images
    path = str(zoo.root / "data" / "qat" / "student_int8.tflite")
    raw = run_isolated(
        "edge_pipeline.edge.measure:measure_model",
        dict(path=path, runtime="litert", layout="NHWC", x=x, threads=[1, 2], repeats=3,
             warmup=2, iters=15, batch=8, min_repeat_s=0.0, max_iters=20_000),
    )  # fmt: skip
    runner = open_runner(path, runtime="litert", layout="NHWC", threads=1)
    np.testing.assert_allclose(raw["logits"], runner.predict(x.astype(np.float32) / 255), atol=1e-6)
    assert set(raw["latency_s"]) == {1, 2} and raw["latency_s"][1].shape == (3, 15)
    assert (raw["latency_s"][1] > 0).all() and raw["throughput_ips"][2] > 0
    assert raw["peak_rss_bytes"] >= raw["base_rss_bytes"] > 10e6
    stats = latency_stats(raw["latency_s"][1])
    assert stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"]


def test_measure_model_times_enough_calls_to_fill_min_repeat_s(zoo: Zoo, test_images) -> None:
    x, _ = test_images
    path = str(zoo.root / "data" / "qat" / "student_fp32.tflite")
    raw = measure_model(
        path=path, runtime="litert", layout="NHWC", x=x, threads=[1], repeats=2, warmup=3,
        iters=5, batch=8, min_repeat_s=0.05, max_iters=20_000,
    )  # fmt: skip
    reps, n = raw["latency_s"][1].shape
    assert reps == 2 and n > 5  # a tiny model needs far more than 5 calls for 50 ms
    assert raw["latency_s"][1].sum(axis=1).min() >= 0.5 * 0.05  # about min_repeat_s each


def test_calls_per_repetition_fills_min_repeat_s_within_iters_and_max_iters() -> None:
    times = np.full(7, 1e-4)  # 0.1 ms per call
    assert calls_per_repetition(times, iters=10, min_repeat_s=0.05, max_iters=20_000) == 500
    assert calls_per_repetition(times, iters=800, min_repeat_s=0.05, max_iters=20_000) == 800
    assert calls_per_repetition(times, iters=10, min_repeat_s=0.05, max_iters=100) == 100
    assert calls_per_repetition(np.zeros(3), iters=10, min_repeat_s=0.0, max_iters=50) == 10


def test_litert_interpreter_from_bytes_with_or_without_default_delegates(zoo: Zoo) -> None:
    path = zoo.root / "data" / "qat" / "student_fp32.tflite"
    x = np.random.default_rng(0).random((1, 16, 16, 1), dtype=np.float32)
    outs = []
    for default_delegates in (True, False):
        it = litert_interpreter(path.read_bytes(), threads=1, default_delegates=default_delegates)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    runner = open_runner(str(path), runtime="litert", layout="NHWC", threads=1)
    np.testing.assert_allclose(outs[0], runner.predict(x), atol=1e-6)
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4)


def test_run_isolated_reports_the_child_error() -> None:
    with pytest.raises(RuntimeError, match="no_such_function"):
        run_isolated("edge_pipeline.edge.measure:no_such_function", {}, timeout_s=60)


def test_latency_stats_pool_percentiles_and_spread() -> None:
    s = np.array([[1.0, 1.0, 1.0], [1.1, 1.1, 1.1], [0.9, 0.9, 3.0]]) * 1e-3
    stats = latency_stats(s)
    assert stats["p50"] == pytest.approx(np.percentile(s * 1e3, 50))
    assert stats["p99"] == pytest.approx(np.percentile(s * 1e3, 99))
    assert stats["repeat_p50s"] == pytest.approx([1.0, 1.1, 0.9])
    assert stats["p50_spread_pct"] == pytest.approx(20.0)


def test_machine_peak_is_measured() -> None:
    peak = machine_peak(n=256, reps=2)
    assert peak["float32_gmacs_1t"] > 0.1 and peak["int8_gmacs_1t"] > 0.1
    assert "1 thread" in peak["int8_source"]
    assert peak["cpu"] == cpu_description()  # the report names the machine
