"""Prune-preserving QAT to full-integer TFLite, checked through LiteRT; the qat stage's main()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_pipeline.compression import quantization as qat
from edge_pipeline.compression import tflite as lt
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.edge.runtimes import LiteRTRunner
from tests.compression_fixtures import digits, load_with, trained_student, zero_smallest
from tests.train_set_fixtures import add_synthetic_rows

FIT = {"alpha": 1.0, "temperature": 1.0, "batch_size": 32, "lr": 1e-4, "patience": 1, "seed": 0}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return digits(n_classes=3, per_class=40)


@pytest.fixture(scope="module")
def sparse(data):
    """The tiny student pruned to 50% by TF-MOT (what the prune stage hands on)."""
    from edge_pipeline.compression.sparsity import prune_and_finetune

    x, y = data
    model, _ = prune_and_finetune(
        trained_student(x, y, epochs=6), x, y, np.zeros((len(x), 3), np.float32), target=0.5,
        ramp_epochs=2, recovery_epochs=1, tolerance=0.02, x_val=x, y_val=y, n_classes=3,
        **{**FIT, "lr": 1e-3},
    )  # fmt: skip
    return model


def _qat(model, data, **kwargs):
    x, y = data
    teacher = np.zeros((len(x), 3), np.float32)
    rep = x[::4].astype(np.float32) / 255.0
    options = {"io_dtype": "int8", "method": "qat", "fit": {**FIT, "epochs": 1}, **kwargs}
    return qat.qat_int8(model, x, y, teacher, x_val=x, y_val=y, representative=rep, **options)


@pytest.fixture(scope="module")
def pqat(sparse, data):
    return _qat(sparse, data)


@pytest.mark.slow  # TF-MOT fine-tuning of a real model: about a minute
def test_int8_model_loads_in_litert_with_int8_weights_and_zeros_kept(pqat, data):
    from ai_edge_litert.interpreter import Interpreter

    blob, qmodel, report = pqat
    assert report["prune_preserving"] and report["keras_sparsity"] == pytest.approx(0.5, abs=0.02)
    check = qat.check_int8(blob, keras_sparsity=report["keras_sparsity"], tolerance=0.02)
    assert check["int8_weights"] and check["tflite_sparsity"] >= 0.48
    rows = lt.weight_report(blob)
    assert {r["op"] for r in rows} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert all(r["dtype"] == "int8" for r in rows)

    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    x = data[0].astype(np.float32) / 255.0
    int8_pred = lt.litert_logits(blob, x).argmax(1)
    assert np.mean(int8_pred == qmodel.predict(x, verbose=0).argmax(1)) >= 0.95
    assert np.mean(int8_pred == data[1]) >= 0.8


def test_prune_preserving_scheme_keeps_zeros_plain_qat_loses_them(sparse, data):
    from edge_pipeline.student.kd_training import fit_distilled

    x, y = data

    def zeros_after_qat(preserve: bool) -> float:
        model = qat.quantize_for_training(sparse, preserve_sparsity=preserve)
        fit = {**FIT, "lr": 1e-3}
        fit_distilled(model, x, y, np.zeros((len(x), 3), np.float32), x_val=x, y_val=y,
                      n_classes=3, epochs=1, **fit)  # fmt: skip
        kernels = [w.numpy() for w in model.weights if w.name.endswith("/kernel:0")]
        assert len(kernels) == 8  # the 7 Conv2D and the Dense logits
        return float(np.mean(np.concatenate([k.ravel() for k in kernels]) == 0))

    assert zeros_after_qat(True) >= 0.48
    assert zeros_after_qat(False) < 0.1


def test_unsupported_layer_is_named_with_the_way_out(data):
    import tf_keras

    inputs = tf_keras.Input((8, 8, 1))
    h = tf_keras.layers.Rescaling(2.0, offset=-1.0, name="scale_me")(inputs)
    h = tf_keras.layers.Conv2D(4, 3, name="conv")(h)
    h = tf_keras.layers.GlobalAveragePooling2D()(h)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(h))
    with pytest.raises(qat.UnsupportedLayerError, match=r"'scale_me' \(Rescaling\)") as err:
        qat.quantize_for_training(model, preserve_sparsity=False)
    assert "qat.method: ptq" in str(err.value) and "supported" in str(err.value)

    blob, _, report = _qat(model, data, method="ptq")  # the way out works
    assert report["fit"] is None
    assert qat.check_int8(blob, keras_sparsity=0.0, tolerance=0.02)["int8_weights"]


def test_uint8_io_and_fp32_models_are_told_apart(sparse, data):
    x = data[0][:16].astype(np.float32) / 255.0
    u8 = lt.to_tflite(sparse, representative=x, io_dtype="uint8")
    assert LiteRTRunner(u8, layout="NHWC", threads=1).inp["dtype"] == np.uint8
    assert lt.litert_logits(u8, x).shape == (16, 3)
    fp32 = lt.to_tflite(sparse)
    assert {r["dtype"] for r in lt.weight_report(fp32)} == {"float32"}
    np.testing.assert_allclose(lt.litert_logits(fp32, x), sparse.predict(x, verbose=0), atol=1e-4)
    with pytest.raises(ValueError, match="non-int8 filters"):
        qat.check_int8(fp32, keras_sparsity=0.5, tolerance=0.02)


def test_conversion_matches_the_keras_model_converter(sparse, data):
    """to_tflite converts a frozen concrete function (no SavedModel round trip): the flatbuffers
    give the same outputs as `TFLiteConverter.from_keras_model`, FP32 and full-integer QAT alike,
    and keep a dynamic batch."""
    import tensorflow as tf

    x = data[0][:24].astype(np.float32) / 255.0

    def via_keras(model, representative=None):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if representative is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([r[None]] for r in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
        return converter.convert()

    quantized = qat.quantize_for_training(sparse, preserve_sparsity=True)
    for model, rep in ((sparse, None), (quantized, x[:16])):
        ours, theirs = lt.to_tflite(model, representative=rep), via_keras(model, rep)
        np.testing.assert_array_equal(lt.litert_logits(ours, x), lt.litert_logits(theirs, x))
        rows, ref = lt.weight_report(ours), lt.weight_report(theirs)
        assert [(r["dtype"], r["zeros"]) for r in rows] == [(r["dtype"], r["zeros"]) for r in ref]
        assert LiteRTRunner(ours, layout="NHWC", threads=1).inp["shape_signature"][0] == -1


def test_options_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"qat\.io_dtype='int4'"):
        load_with("qat", {"io_dtype": "int4"}, tmp_path)
    with pytest.raises(ConfigError, match=r"qat\.method='dynamic'"):
        load_with("qat", {"method": "dynamic"}, tmp_path)
    # with its keys removed, qat runs as params.yaml says (it used to fall back to 5 / 3)
    fit = load_with("qat", {}, tmp_path).fit_options()
    assert (fit["epochs"], fit["patience"], fit["lr"]) == (10, 5, 5e-4)


@pytest.mark.slow
def test_qat_stage_end_to_end(prepared_workspace):
    from edge_pipeline.artifacts import datasets as d
    from edge_pipeline.compression.channels import channel_prune
    from edge_pipeline.student.kd_training import predict_logits
    from tasks import qat as stage

    params = {"qat": {"epochs": 1, "batch_size": 32, "representative_samples": 16}}
    ws = prepared_workspace(n_classes=3, per_class=30, size=16, params=params)
    root = ws["root"]
    add_synthetic_rows(root, 6)  # qat.sampler: shuffle draws every row, synthetic ones too
    x, y, _, _ = d.load_train()
    student = trained_student(x, y, epochs=4)
    pruned = zero_smallest(channel_prune(student, fraction=0.5)[0], 0.5)
    for name in ("distill", "prune", "train"):
        (root / "data" / name).mkdir(parents=True)
    student.save(root / "data/distill/student.keras")
    pruned.save(root / "data/prune/student_pruned.keras")
    np.save(root / "data/train/logits_train.npy", predict_logits(student, x))

    stage.main()

    entries = json.loads((root / "data/qat/models.json").read_text())
    names = {e["name"] for e in entries}
    assert names == {"student_pqat_int8", "student_fp32", "student_ptq_int8", "pruned_fp32"}
    for e in entries:
        assert (root / "data/qat" / e["file"]).stat().st_size > 0
        assert e["runtime"] == "litert" and e["layout"] == "NHWC" and e["params"] > 0
    by_name = {e["name"]: e for e in entries}
    assert by_name["student_pqat_int8"]["dtype"] == "int8"
    assert by_name["pruned_fp32"]["macs"] < by_name["student_fp32"]["macs"]
    metrics = json.loads((root / "metrics/qat.json").read_text())
    assert metrics["int8_weights"] is True and metrics["prune_preserving"] is True
    assert metrics["tflite_sparsity"] >= 0.48
    assert metrics["rows_per_epoch"] == ws["n_train"] + 6 == 60
    assert metrics["student_pqat_int8"]["bytes"] < metrics["student_fp32"]["bytes"]
    for name in names:
        assert 0.0 <= metrics[name]["accuracy"] <= 1.0
