"""ONNX exports: tf2onnx FP32 parity, ORT static INT8 (QDQ), and the export stage's main()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_pipeline.compression import onnx_export as export
from edge_pipeline.core.errors import ConfigError
from tests.compression_fixtures import digits, load_with, trained_student


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return digits(n_classes=3, per_class=40)


@pytest.fixture(scope="module")
def model(data):
    return trained_student(*data, epochs=4)


@pytest.fixture(scope="module")
def fp32(model) -> bytes:
    return export.to_onnx(model, opset=17)


def test_fp32_onnx_matches_keras_with_dynamic_batch(model, fp32, data):
    import onnx

    graph = onnx.load_from_string(fp32).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == export.INPUT_NAME
    assert not dims[0].dim_value and [d.dim_value for d in dims[1:]] == [8, 8, 1]  # N? x H x W x C
    x = data[0].astype(np.float32) / 255.0
    keras = model.predict(x, verbose=0)
    check = export.parity(keras, export.ort_logits(fp32, x, batch_size=7))  # ragged last batch
    assert check["agreement"] >= 0.99 and check["max_abs_diff"] < 1e-4


def test_int8_qdq_model_runs_and_mostly_agrees(model, fp32, data):
    import onnx

    x = data[0].astype(np.float32) / 255.0
    int8 = export.quantize_onnx(fp32, x[::4])
    nodes = onnx.load_from_string(int8).graph
    ops = {n.op_type for n in nodes.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in nodes.initializer if i.data_type == onnx.TensorProto.INT8]
    assert any(len(i.dims) == 4 for i in int8_weights)  # conv filters stored as int8
    per_channel = [i for i in nodes.initializer if i.name.endswith("_scale") and i.dims]
    assert per_channel, "expected per-channel weight scales"
    logits = export.ort_logits(int8, x)
    assert logits.shape == (len(x), 3)
    assert export.parity(model.predict(x, verbose=0), logits)["agreement"] >= 0.9


def test_options_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"export\.opset=9: .*greater than or equal to 13"):
        load_with("export", {"opset": 9}, tmp_path)
    with pytest.raises(ConfigError, match=r"export\.min_fp32_agreement=2"):
        load_with("export", {"min_fp32_agreement": 2}, tmp_path)


@pytest.mark.slow
def test_export_stage_end_to_end(prepared_workspace):
    from edge_pipeline.artifacts import datasets as d
    from tasks import export as stage

    params = {"export": {"opset": 17, "calib_samples": 16}}
    ws = prepared_workspace(n_classes=3, per_class=30, size=16, params=params)
    root = ws["root"]
    x, y, _, _ = d.load_train()
    (root / "data/distill").mkdir(parents=True)
    trained_student(x, y, epochs=4).save(root / "data/distill/student.keras")

    stage.main()

    entries = {e["name"]: e for e in json.loads((root / "data/export/models.json").read_text())}
    assert set(entries) == {"student_fp32", "student_int8"}
    for e in entries.values():
        assert e["runtime"] == "onnxruntime" and e["layout"] == "NHWC" and e["source"] == "student"
        assert (root / "data/export" / e["file"]).stat().st_size > 0 and e["macs"] > 0
    metrics = json.loads((root / "metrics/export.json").read_text())
    assert metrics["student_fp32"]["agreement"] >= 0.99
    assert 0.0 <= metrics["student_int8"]["agreement"] <= 1.0
    assert metrics["n_test"] == 18
    # the stage has its MLflow run: metrics and the ONNX files it wrote
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import configure

    client = MlflowClient()
    runs = client.search_runs([configure().get_experiment_by_name("edge-pipeline").experiment_id])
    (run,) = [r for r in runs if r.info.run_name == "export"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["student_fp32.agreement"] == metrics["student_fp32"]["agreement"]
    files = {a.path for a in client.list_artifacts(run.info.run_id, "models")}
    assert files == {f"models/{e['file']}" for e in entries.values()} | {"models/models.json"}
