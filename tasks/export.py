"""export stage: ONNX FP32 of the student (tf2onnx) and ONNX INT8 (ONNX Runtime static QDQ).

- FP32: `tf2onnx.convert.from_keras` at `export.opset`, NHWC float32 input named `input` with a
  dynamic batch dimension, logits out.
- INT8: `quant_pre_process` (shape inference + graph optimisation) then `quantize_static` in QDQ
  format, per-channel int8 weights and int8 activations, calibrated on train images by a
  `CalibrationDataReader`.
- Parity on the test set against the source keras model: top-1 agreement (FP32 must reach
  `export.min_fp32_agreement`, default 0.99, else the stage fails; INT8 is reported) and the max
  absolute logit difference. The teacher's ONNX is written by the train stage, not here.

Writes data/export/{student_fp32.onnx, student_int8.onnx, models.json} and metrics/export.json.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edge_pipeline.artifacts import datasets as data  # noqa: E402
from edge_pipeline.artifacts.catalog import stage_paths  # noqa
from edge_pipeline.compression import finetune as cx  # noqa: E402
from edge_pipeline.core.common import load_params  # noqa
from edge_pipeline.core.io import atomic_path, write_json  # noqa
from edge_pipeline.core.logs import setup_logging  # noqa
from edge_pipeline.core.stage_helpers import number  # noqa

STAGE = "export"
log = setup_logging(STAGE)
INPUT_NAME = "input"


def read_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validated `params.yaml[export]` with defaults."""
    opt = {"section": STAGE}
    return {
        "opset": number(cfg, "opset", 17, lo=13, hi=18, integer=True, **opt),  # tf2onnx 1.17
        "calib_samples": number(cfg, "calib_samples", 200, lo=1, integer=True, **opt),
        "min_fp32_agreement": number(cfg, "min_fp32_agreement", 0.99, lo=0.0, hi=1.0, **opt),
        "seed": number(cfg, "seed", 0, integer=True, **opt),
    }


def to_onnx(model: Any, *, opset: int) -> bytes:
    """Serialized ONNX of a tf_keras model: input `input` float32 (N, H, W, C), N dynamic."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return proto.SerializeToString()


def _reader(x: np.ndarray, input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        """Feeds the calibration images one at a time (float32 (1, H, W, C))."""

        def __init__(self) -> None:
            self._items = iter(x[i : i + 1] for i in range(len(x)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {input_name: item}

    return ImageReader()


def quantize_onnx(fp32: bytes, x_calib: np.ndarray) -> bytes:
    """Static INT8 (QDQ, per-channel int8 weights, int8 activations) of an FP32 ONNX model.

    Args:
        fp32: serialized FP32 ONNX model with a float32 NHWC input.
        x_calib: float32 (R, H, W, C) calibration images in [0, 1].
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre), str(out), _reader(x_calib.astype(np.float32), INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        return out.read_bytes()


def ort_logits(model: bytes, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """float32 (N, K) outputs of an ONNX model (CPU, ONNX Runtime) on float32 x (N, H, W, C)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and max |difference| between two (N, K) logit arrays."""
    return {
        "agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        "max_abs_diff": float(np.max(np.abs(reference - candidate))),
    }


def main() -> None:
    from edge_pipeline.student.kd_training import metrics_from_predictions, predict_logits

    o = read_options(load_params(STAGE))
    paths = stage_paths(STAGE)
    student = cx.load_keras(stage_paths("distill").data / "student.keras")
    classes = data.load_classes()
    x_train, _, _, _ = data.load_train()
    x_test_u8, y_test, _ = data.load_split("test")
    x_test = x_test_u8.astype(np.float32) / 255.0
    reference = predict_logits(student, x_test)
    facts = cx.keras_facts(student)

    fp32 = to_onnx(student, opset=o["opset"])
    int8 = quantize_onnx(fp32, cx.calibration_sample(x_train, o["calib_samples"], seed=o["seed"]))
    figures, entries = {}, []
    for name, blob, dtype, description in (
        ("student_fp32", fp32, "float32", f"student, ONNX FP32 (tf2onnx, opset {o['opset']})"),
        ("student_int8", int8, "int8", "student, ONNX Runtime static INT8 (QDQ, per-channel); "
         "float32 input"),
    ):  # fmt: skip
        logits = ort_logits(blob, x_test)
        check = parity(reference, logits)
        if name == "student_fp32" and check["agreement"] < o["min_fp32_agreement"]:
            raise ValueError(
                f"ONNX FP32 agrees with the keras student on {check['agreement']:.2%} of the test "
                f"set, below export.min_fp32_agreement={o['min_fp32_agreement']}; the tf2onnx "
                f"conversion changed the model (max |logit diff| {check['max_abs_diff']:.3g}): "
                "try another export.opset"
            )
        with atomic_path(paths.data / f"{name}.onnx") as tmp:
            tmp.write_bytes(blob)
        m = metrics_from_predictions(y_test, logits.argmax(1), n_classes=len(classes))
        figures[name] = {
            "agreement": round(check["agreement"], 4),
            "max_abs_diff": round(check["max_abs_diff"], 6),
            "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            **cx.file_stats(paths.data / f"{name}.onnx"),
        }  # fmt: skip
        entries.append(cx.model_entry(
            name, f"{name}.onnx", runtime="onnxruntime", dtype=dtype, source="student",
            params=facts["params"], macs=facts["macs"], description=description,
        ))  # fmt: skip
        log.info("%s: agreement %.4f, max |diff| %.3g, %d bytes", name, check["agreement"],
                 check["max_abs_diff"], figures[name]["bytes"])  # fmt: skip
    write_json(paths.data / "models.json", entries)
    write_json(paths.metrics, {**figures, "opset": o["opset"], "n_test": len(y_test)})


if __name__ == "__main__":
    main()
