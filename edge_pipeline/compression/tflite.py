"""TFLite conversion and LiteRT checks shared by the qat stage and the compression benchmark.

- `to_tflite`: FP32, or full-integer INT8 with a representative dataset (int8/uint8 input/output).
- `litert_logits`: run a .tflite model in LiteRT (`ai_edge_litert`), quantising inputs with the
  input tensor's scale/zero point and dequantising outputs.
- `weight_report`: read the flatbuffer (LiteRT's schema) and report, for the filters of every
  CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op, their dtype and fraction of zeros.
- `latency_us`: single-image latency percentiles after warm-up.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

from edge_pipeline.edge.runtimes import dequantize, quantize  # numpy only: no TensorFlow at import

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

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        if io_dtype not in IO_DTYPES:
            raise ValueError(f"io_dtype={io_dtype!r} is not one of {list(IO_DTYPES)}")
        rep = np.asarray(representative, dtype=np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    with warnings.catch_warnings():  # TF warns for every QAT model; the input is quantised anyway
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def interpreter(model: bytes, *, num_threads: int = 1) -> Any:
    """A LiteRT interpreter with its tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model, num_threads=num_threads)
    it.allocate_tensors()
    return it


def litert_logits(model: bytes, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """float32 (N, K) outputs of a .tflite model on float32 images x (N, H, W, C) in [0, 1]."""
    it = interpreter(model)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for start in range(0, len(x), batch_size):
        xb = np.asarray(x[start : start + batch_size], dtype=np.float32)
        if tuple(inp["shape"]) != xb.shape:
            it.resize_tensor_input(inp["index"], list(xb.shape))
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.set_tensor(inp["index"], quantize(xb, inp))
        it.invoke()
        results.append(dequantize(it.get_tensor(out["index"]), out))
    return np.concatenate(results)


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


def latency_us(
    model: bytes, x: np.ndarray, *, num_threads: int = 1, warmup: int = 50, runs: int = 500
) -> dict[str, float]:
    """Batch-1 latency in microseconds (p50, p90, p99) of `invoke` on the first image of float x."""
    it = interpreter(model, num_threads=num_threads)
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], quantize(np.asarray(x[:1], dtype=np.float32), inp))
    for _ in range(warmup):
        it.invoke()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        times[i] = time.perf_counter() - t0
    p50, p90, p99 = np.percentile(times * 1e6, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}
