"""TFLite conversion and LiteRT checks shared by the qat stage and the compression benchmark.

- `to_tflite`: FP32, or full-integer INT8 with a representative dataset (int8/uint8 input/output).
- `litert_logits`: run a .tflite flatbuffer through the edge runtimes' `LiteRTRunner` (the one
  LiteRT inference path: inputs quantised with the input tensor's scale/zero point, outputs
  dequantised).
- `weight_report`: read the flatbuffer (LiteRT's schema) and report, for the filters of every
  CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op, their dtype and fraction of zeros.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np

from edge_pipeline.edge.runtimes import LiteRTRunner, predict_batched  # numpy only at import

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
IO_DTYPES = ("int8", "uint8")


def to_tflite(
    model: Any,
    *,
    representative: np.ndarray | None = None,
    io_dtype: str = "int8",
) -> bytes:
    """Convert a tf_keras model to a TFLite flatbuffer.

    Args:
        model: tf_keras model taking float32 (N, H, W, C) in [0, 1].
        representative: float32 (R, H, W, C) calibration images; None = plain FP32 model.
        io_dtype: "int8" or "uint8" input/output of the full-integer model.

    Returns:
        The .tflite bytes (full-integer INT8, builtins only, when `representative` is given).
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    # A frozen concrete function, not `from_keras_model`: that one first saves the model as a
    # SavedModel and loads it back (keras tracing of every layer), which made each conversion
    # 10-17x slower (demo student 3.1 s -> 0.27 s; QAT model 7.6 s -> 0.44 s) for the same
    # outputs (tests/compression/test_qat.py checks the parity).
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
    func = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([func], model)
    converter.experimental_lower_to_saved_model = False
    if representative is not None:
        if io_dtype not in IO_DTYPES:
            raise ValueError(f"io_dtype={io_dtype!r} is not one of {list(IO_DTYPES)}")
        rep = np.asarray(representative, dtype=np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    absl = logging.getLogger("absl")  # "Using new converter: ... please file a bug" per model
    level = absl.level
    absl.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():  # TF warns for every QAT model; the input is quantised
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return converter.convert()
    finally:
        absl.setLevel(level)


def litert_logits(model: bytes, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """float32 (N, K) outputs of a .tflite model on float32 images x (N, H, W, C) in [0, 1].

    One LiteRT thread, batches of `batch_size` (the last one padded, see `predict_batched`).
    """
    runner = LiteRTRunner(model, layout="NHWC", threads=1)
    return predict_batched(runner, np.asarray(x, dtype=np.float32), batch=batch_size)


def weight_report(model: bytes) -> list[dict[str, Any]]:
    """One row per filter tensor of the model's conv / fully-connected ops.

    Returns:
        [{"op", "tensor", "dtype", "weights", "zeros", "sparsity"}]; for int8 tensors a zero is a
        quantised value equal to the tensor's zero point (0 for TFLite's symmetric weights).
    """
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    rows = []
    for op in m.subgraphs[0].operators:
        code = m.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        if name not in WEIGHT_OPS:
            continue
        tensor = m.subgraphs[0].tensors[op.inputs[1]]
        raw = m.buffers[tensor.buffer].data
        if raw is None:  # filter computed at run time (e.g. dequantised): no constant to read
            continue
        dtype = type_names[tensor.type]
        values = np.frombuffer(bytes(raw), dtype=np.dtype(dtype if dtype != "float16" else "<f2"))
        zero_points = tensor.quantization.zeroPoint if tensor.quantization else None
        zero = 0 if zero_points is None or len(zero_points) == 0 else int(zero_points[0])
        zeros = int(np.count_nonzero(values == zero))
        rows.append({
            "op": name, "tensor": tensor.name.decode() if isinstance(tensor.name, bytes)
            else str(tensor.name), "dtype": dtype, "weights": int(values.size), "zeros": zeros,
            "sparsity": zeros / max(1, values.size),
        })  # fmt: skip
    return rows
