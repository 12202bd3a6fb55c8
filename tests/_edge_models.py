"""Tiny real edge models in the models.json contract, for the benchmark and register tests.

Fitted on the conftest digits (16 x 16 x 1, 3 classes) so accuracies mean something:
- train:  `teacher_fp32` ONNX FP32, NCHW: random ReLU features (512) + a fitted linear read-out.
- export: `student_fp32` ONNX FP32, NHWC (a fitted linear classifier) and `student_int8` (ORT QDQ).
- qat:    `student_fp32` / `student_int8` TFLite of the same linear classifier (tf_keras, converted
          in a subprocess so TensorFlow never shares a process with anything else).
Every float forward pass also exists in numpy (`Zoo.direct`): the direct evaluation to match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TF_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tensorflow as tf, tf_keras as keras
    z = np.load(sys.argv[1]); out = sys.argv[2]
    x = z["x"].astype(np.float32) / 255.0
    model = keras.Sequential([keras.layers.Input(x.shape[1:]), keras.layers.Flatten(),
                              keras.layers.Dense(z["w"].shape[1])])
    model.layers[-1].set_weights([z["w"], z["b"]])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    open(os.path.join(out, "student_fp32.tflite"), "wb").write(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    open(os.path.join(out, "student_int8.tflite"), "wb").write(conv.convert())
    """
)


@dataclass
class Zoo:
    root: Path  # holds data/{train,qat,export}
    w: np.ndarray  # student (D, K) on NHWC-flattened pixels
    b: np.ndarray
    w1: np.ndarray  # teacher features (D, 512) on NCHW-flattened pixels
    w2: np.ndarray
    b2: np.ndarray

    def direct(self, name: str, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) of the float model `name` computed in numpy from uint8 NHWC images."""
        xf = x.astype(np.float32) / 255.0
        if name == "teacher":
            h = np.maximum(xf.transpose(0, 3, 1, 2).reshape(len(x), -1) @ self.w1, 0)
            return h @ self.w2 + self.b2
        return xf.reshape(len(x), -1) @ self.w + self.b


def entry(
    name: str,
    file: str,
    runtime: str,
    layout: str,
    dtype: str,
    source: str | None,
    params: int,
    macs: int,
) -> dict:
    return {
        "name": name,
        "file": file,
        "runtime": runtime,
        "layout": layout,
        "dtype": dtype,
        "source": source,
        "params": params,
        "macs": macs,
        "description": f"test {name}",
    }


def _onnx_linear(
    path: Path, layers: list[tuple[np.ndarray, np.ndarray | None, bool]], shape: list
) -> None:
    """Flatten then (MatMul [+ Add] [+ Relu]) per layer; input `input` float32 `shape`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Flatten", ["input"], ["h0"], axis=1)]
    inits = []
    for i, (w, b, relu) in enumerate(layers):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"w{i}"], [f"m{i}"]))
        cur = f"m{i}"
        if b is not None:
            inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
            nodes.append(helper.make_node("Add", [cur, f"b{i}"], [f"a{i}"]))
            cur = f"a{i}"
        nodes.append(helper.make_node("Relu" if relu else "Identity", [cur], [f"h{i + 1}"]))
    nodes.append(helper.make_node("Identity", [f"h{len(layers)}"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", layers[-1][0].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def build_zoo(root: Path, x: np.ndarray, y: np.ndarray, n_classes: int) -> Zoo:
    """Fit and write the models of the module docstring under root/data from uint8 x (N,H,W,C)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from sklearn.linear_model import LogisticRegression

    n, h, wd, c = x.shape
    d = h * wd * c
    xf = x.astype(np.float32) / 255.0
    lr = LogisticRegression(max_iter=2000).fit(xf.reshape(n, -1), y)
    w, b = lr.coef_.T.astype(np.float32), lr.intercept_.astype(np.float32)
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1 / np.sqrt(d), (d, 512)).astype(np.float32)
    feats = np.maximum(xf.transpose(0, 3, 1, 2).reshape(n, -1) @ w1, 0)
    head = LogisticRegression(max_iter=2000).fit(feats, y)
    w2, b2 = head.coef_.T.astype(np.float32), head.intercept_.astype(np.float32)

    train, export, qat = (root / "data" / s for s in ("train", "export", "qat"))
    for p in (train, export, qat):
        p.mkdir(parents=True, exist_ok=True)
    _onnx_linear(train / "teacher.onnx", [(w1, None, True), (w2, b2, False)], ["N", c, h, wd])
    (train / "teacher.pt").write_bytes(b"not used by the benchmark")
    (train / "models.json").write_text(
        json.dumps(
            [
                entry("teacher_torch", "teacher.pt", "torch", "NCHW", "float32", None, 0, 0),
                entry(
                    "teacher_fp32",
                    "teacher.onnx",
                    "onnxruntime",
                    "NCHW",
                    "float32",
                    "teacher_torch",
                    w1.size + w2.size + b2.size,
                    d * 512 + 512 * n_classes,
                ),
            ]
        )
    )

    _onnx_linear(export / "student_fp32.onnx", [(w, b, False)], ["N", h, wd, c])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(xf[i : i + 1] for i in range(len(xf)))

        def get_next(self) -> dict | None:
            batch = next(self.it, None)
            return None if batch is None else {"input": batch}

    quantize_static(
        str(export / "student_fp32.onnx"),
        str(export / "student_int8.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
    )
    params, macs = w.size + b.size, d * n_classes
    (export / "models.json").write_text(
        json.dumps(
            [
                entry(
                    "student_fp32",
                    "student_fp32.onnx",
                    "onnxruntime",
                    "NHWC",
                    "float32",
                    "student",
                    params,
                    macs,
                ),
                entry(
                    "student_int8",
                    "student_int8.onnx",
                    "onnxruntime",
                    "NHWC",
                    "int8",
                    "student_fp32",
                    params,
                    macs,
                ),
            ]
        )
    )

    np.savez(qat / "fit.npz", x=x, w=w, b=b)
    proc = subprocess.run(
        [sys.executable, "-c", TF_SCRIPT, str(qat / "fit.npz"), str(qat)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (qat / "fit.npz").unlink()
    (qat / "models.json").write_text(
        json.dumps(
            [
                entry(
                    "student_fp32",
                    "student_fp32.tflite",
                    "litert",
                    "NHWC",
                    "float32",
                    "student",
                    params,
                    macs,
                ),
                entry(
                    "student_int8",
                    "student_int8.tflite",
                    "litert",
                    "NHWC",
                    "int8",
                    "student",
                    params,
                    macs,
                ),
            ]
        )
    )
    return Zoo(root, w, b, w1, w2, b2)


_ZOO: dict[str, Zoo] = {}


def shared_zoo(tmp_path_factory) -> Zoo:
    """One zoo per test session (TFLite conversion costs ~15 s), fitted on the conftest digits."""
    if "zoo" not in _ZOO:
        from tests.conftest import write_prepared

        root = tmp_path_factory.mktemp("zoo")
        write_prepared(root)
        with np.load(root / "data" / "resample" / "train.npz") as z:  # no synthetic rows here
            x, y = np.load(root / "data" / "ingest" / "images.npy")[z["rows"]], z["y"]
        _ZOO["zoo"] = build_zoo(root, x, y, n_classes=3)
    return _ZOO["zoo"]


def install_zoo(zoo: Zoo, root: Path, stages: tuple[str, ...] = ("train", "qat", "export")) -> None:
    """Copy the zoo's data/<stage> model folders into the workspace `root`."""
    import shutil

    for stage in stages:
        shutil.copytree(zoo.root / "data" / stage, root / "data" / stage, dirs_exist_ok=True)
