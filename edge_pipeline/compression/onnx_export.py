"""ONNX exports of the student: FP32 (tf2onnx) and ONNX Runtime static INT8, with their parity.

- FP32: `tf2onnx.convert.from_keras` at `export.opset`, NHWC float32 input named `input` with a
  dynamic batch dimension, logits out.
- INT8: `quant_pre_process` (shape inference + graph optimisation) then `quantize_static` in QDQ
  format, per-channel int8 weights and int8 activations, calibrated on train images by a
  `CalibrationDataReader`.
- Parity on the test set against the source keras model: top-1 agreement (FP32 must reach
  `export.min_fp32_agreement`, else `onnx_exports` fails; INT8 is reported) and the max absolute
  logit difference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.artifacts.catalog import ONNX_FP32, ONNX_INT8
from edge_pipeline.compression import model_facts as mf
from edge_pipeline.config.compression import Export

INPUT_NAME = "input"


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


def onnx_exports(
    student: Any, x_calib: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
    options: Export,
) -> list[tuple[bytes, dict[str, Any], dict[str, Any]]]:  # fmt: skip
    """The FP32 and INT8 ONNX models of `student`, each checked on the test set.

    Args:
        student: tf_keras model, float32 (N, H, W, C) in [0, 1] -> (N, K) logits.
        x_calib: float32 (R, H, W, C) calibration images for the INT8 model.
        x_test: float32 (N, H, W, C) in [0, 1]; y_test: int (N,).

    Returns:
        [(ONNX bytes, models.json entry, figures {"agreement", "max_abs_diff", "accuracy",
        "macro_f1", "bytes", "gzip_bytes"})] for student_fp32 and student_int8.

    Raises:
        ValueError: the FP32 model agrees with keras below `options.min_fp32_agreement`.
    """
    from edge_pipeline.student.kd_training import metrics_from_predictions, predict_logits

    reference = predict_logits(student, x_test)
    facts = mf.keras_facts(student)
    fp32 = to_onnx(student, opset=options.opset)
    int8 = quantize_onnx(fp32, x_calib)
    out = []
    for name, file, blob, dtype, description in (
        ("student_fp32", ONNX_FP32, fp32, "float32",
         f"student, ONNX FP32 (tf2onnx, opset {options.opset})"),
        ("student_int8", ONNX_INT8, int8, "int8",
         "student, ONNX Runtime static INT8 (QDQ, per-channel); float32 input"),
    ):  # fmt: skip
        logits = ort_logits(blob, x_test)
        check = parity(reference, logits)
        if name == "student_fp32" and check["agreement"] < options.min_fp32_agreement:
            raise ValueError(
                f"ONNX FP32 agrees with the keras student on {check['agreement']:.2%} of the test "
                f"set, below export.min_fp32_agreement={options.min_fp32_agreement}; the tf2onnx "
                f"conversion changed the model (max |logit diff| {check['max_abs_diff']:.3g}): "
                "try another export.opset"
            )
        m = metrics_from_predictions(y_test, logits.argmax(1), n_classes=reference.shape[1])
        figures = {
            "agreement": round(check["agreement"], 4),
            "max_abs_diff": round(check["max_abs_diff"], 6),
            "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            **mf.blob_stats(blob),
        }  # fmt: skip
        entry = mf.model_entry(
            name, file, runtime="onnxruntime", dtype=dtype, source="student",
            params=facts["params"], macs=facts["macs"], description=description,
        )  # fmt: skip
        out.append((blob, entry, figures))
    return out
