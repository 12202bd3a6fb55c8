"""qat stage: prune-preserving quantization-aware training to a full-integer INT8 TFLite model.

The pruned student (data/prune) is wrapped by `quantize_annotate_model` + `quantize_apply` (with
`Default8BitPrunePreserveQuantizeScheme` when its kernels are sparse, so fine-tuning keeps the
zeros), fine-tuned with the distillation loss, and converted with a representative dataset from
the train split to a TFLite model whose weights, activations and input/output are integers
(`qat.io_dtype`).

Checked after conversion, through LiteRT: every conv / fully-connected filter is int8, the zeros
survived (fraction of zero int8 weights vs the keras model), and the test accuracy.

Baselines a user would try instead, measured the same way: the unpruned student as FP32 TFLite,
its post-training INT8 quantization (same representative data, no QAT), and the pruned student
as FP32 TFLite (what channel pruning alone buys in latency).

Writes data/qat/{student_pqat_int8, student_fp32, student_ptq_int8, pruned_fp32}.tflite,
data/qat/models.json and metrics/qat.json.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edge_pipeline.artifacts.catalog import stage_paths  # noqa
from edge_pipeline.compression import finetune as cx  # noqa: E402
from edge_pipeline.compression import tflite as lt  # noqa: E402
from edge_pipeline.core.common import choice, load_params  # noqa
from edge_pipeline.core.io import atomic_path, write_json  # noqa
from edge_pipeline.core.logs import setup_logging  # noqa
from edge_pipeline.core.stage_helpers import number  # noqa

STAGE = "qat"
log = setup_logging(STAGE)
SPARSE_ABOVE = 0.05  # kernels with more zeros than this count as pruned: keep their zeros


class UnsupportedLayerError(ValueError):
    """QAT cannot quantize a layer; the message names it and the way out."""


def read_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validated `params.yaml[qat]` with defaults."""
    opt = {"section": STAGE}
    return {
        "method": choice({"method": "qat", **cfg}, "method", ("qat", "ptq"), **opt),
        "io_dtype": choice({"io_dtype": "int8", **cfg}, "io_dtype", lt.IO_DTYPES, **opt),
        "representative_samples": number(
            cfg, "representative_samples", 200, lo=1, integer=True, **opt
        ),
        "fit": cx.fit_options({"lr": 5e-4, **cfg}, section=STAGE, epochs=5),
    }


def quantize_for_training(model: Any, *, preserve_sparsity: bool) -> Any:
    """`quantize_annotate_model` + `quantize_apply` (prune-preserving scheme if asked).

    Raises:
        UnsupportedLayerError: a layer has no 8-bit quantize config; the message names it.
    """
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    scheme = (
        tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if preserve_sparsity
        else qk.default_8bit.Default8BitQuantizeScheme()
    )
    try:
        return qk.quantize_apply(qk.quantize_annotate_model(model), scheme)
    except (RuntimeError, ValueError) as err:
        found = re.search(r"Layer (\S+?):<class '([\w.]+)'>", str(err))
        layer = f"{found[1]!r} ({found[2].rsplit('.', 1)[-1]})" if found else "of the model"
        raise UnsupportedLayerError(
            f"QAT cannot quantize layer {layer}: {err}\nWay out: replace it with a layer TF-MOT "
            "quantizes (Conv2D/DepthwiseConv2D + BatchNormalization + ReLU, Dense, Add, "
            "GlobalAveragePooling2D, ...; see edge_pipeline/student/model.py), or set qat.method: ptq in "
            "params.yaml to quantize after training instead of QAT"
        ) from err


def qat_int8(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    representative: np.ndarray,
    io_dtype: str,
    method: str = "qat",
    fit: dict[str, Any],
) -> tuple[bytes, Any, dict[str, Any]]:
    """Quantization-aware fine-tuning (or none, method="ptq") and full-integer conversion.

    Args:
        model: tf_keras model, float32 (N, H, W, C) in [0, 1] -> (N, K) logits; may be sparse.
        x_train: uint8 (N, H, W, C); y_train: int (N,); teacher_logits: float32 (N, K).
        representative: float32 (R, H, W, C) calibration images.
        fit: `compression.fit_options` for `edge_pipeline.student.kd_training.fit_distilled`.

    Returns:
        (.tflite bytes, the keras model converted (fake-quantized for QAT),
         {"method", "keras_sparsity", "prune_preserving", "fit"}).
    """
    from edge_pipeline.compression.sparsity import (
        kernel_sparsity,
        overall_sparsity,
        prunable_layers,
    )
    from edge_pipeline.student.kd_training import fit_distilled

    names = [layer.name for layer in prunable_layers(model)]
    sparsity = overall_sparsity(kernel_sparsity(model, names))
    sparse = sparsity > SPARSE_ABOVE
    report: dict[str, Any] = {"method": method, "keras_sparsity": sparsity, "fit": None}
    report["prune_preserving"] = sparse and method == "qat"
    if method == "qat":
        model = quantize_for_training(model, preserve_sparsity=sparse)
        fit = dict(fit)
        report["fit"] = fit_distilled(
            model, x_train, y_train, teacher_logits, x_val=x_val, y_val=y_val,
            n_classes=int(teacher_logits.shape[1]), epochs=fit.pop("epochs"), log_prefix="qat ",
            **fit,
        )  # fmt: skip
    return lt.to_tflite(model, representative=representative, io_dtype=io_dtype), model, report


def check_int8(model: bytes, *, keras_sparsity: float, tolerance: float = 0.02) -> dict[str, Any]:
    """Verify a converted model: int8 filters everywhere, zeros of the pruned kernels kept.

    Sparsity is compared over CONV_2D / FULLY_CONNECTED filters (what TF-MOT prunes).

    Raises:
        ValueError: a filter is not int8, or the sparsity dropped by more than `tolerance`.
    """
    rows = lt.weight_report(model)
    not_int8 = [f"{r['tensor']} ({r['dtype']})" for r in rows if r["dtype"] != "int8"]
    pruned = [r for r in rows if r["op"] != "DEPTHWISE_CONV_2D"]
    zeros, total = sum(r["zeros"] for r in pruned), sum(r["weights"] for r in pruned)
    tflite_sparsity = zeros / total if total else 0.0
    if not rows or not_int8:
        raise ValueError(f"the INT8 model has non-int8 filters: {not_int8 or 'no filters found'}")
    if tflite_sparsity < keras_sparsity - tolerance:
        raise ValueError(
            f"sparsity fell from {keras_sparsity:.1%} (keras) to {tflite_sparsity:.1%} (TFLite "
            "int8 filters): the zeros were not preserved through QAT"
        )
    return {"int8_weights": True, "tflite_sparsity": tflite_sparsity, "filters": len(rows)}


def edge_models(
    pqat: bytes, student: Any, pruned: Any, *, representative: np.ndarray, io_dtype: str,
    method: str,
) -> dict[str, tuple[bytes, dict[str, Any]]]:  # fmt: skip
    """The INT8 model and its baselines: name -> (.tflite bytes, its models.json entry)."""
    sf, pf = cx.keras_facts(student), cx.keras_facts(pruned)
    rows = {  # name: (bytes, dtype, source, facts, description)
        "student_pqat_int8": (pqat, io_dtype, "student_pruned", pf,
                              f"pruned student, {method.upper()} full INT8"),
        "student_fp32": (lt.to_tflite(student), "float32", "student", sf, "unpruned student, FP32"),
        "student_ptq_int8": (
            lt.to_tflite(student, representative=representative, io_dtype=io_dtype), io_dtype,
            "student", sf, "unpruned student, post-training full INT8 (same representative data)"),
        "pruned_fp32": (lt.to_tflite(pruned), "float32", "student_pruned", pf,
                        "pruned student (channels removed, sparse), FP32"),
    }  # fmt: skip
    out = {}
    for name, (blob, dtype, source, facts, description) in rows.items():
        entry = cx.model_entry(
            name, f"{name}.tflite", runtime="litert", dtype=dtype, source=source,
            params=facts["params"], macs=facts["macs"], description=description,
        )  # fmt: skip
        out[name] = (blob, entry)
    return out


def main() -> None:
    from edge_pipeline.core.tracking import stage_run
    from edge_pipeline.student.kd_training import metrics_from_predictions

    cfg = load_params(STAGE)
    o = read_options(cfg)
    paths = stage_paths(STAGE)
    student = cx.load_keras(stage_paths("distill").data / "student.keras")
    pruned = cx.load_keras(stage_paths("prune").data / "student_pruned.keras")
    d = cx.load_fit_data()
    rep = cx.calibration_sample(d["x_train"], o["representative_samples"], seed=o["fit"]["seed"])
    x_test = d["x_test"].astype(np.float32) / 255.0
    start = time.perf_counter()
    with stage_run(STAGE, cfg) as mlflow:
        pqat, qmodel, report = qat_int8(
            pruned, d["x_train"], d["y_train"], d["teacher"], x_val=d["x_val"], y_val=d["y_val"],
            representative=rep, io_dtype=o["io_dtype"], method=o["method"], fit=o["fit"],
        )  # fmt: skip
        check = check_int8(pqat, keras_sparsity=report["keras_sparsity"])
        models = edge_models(
            pqat, student, pruned, representative=rep, io_dtype=o["io_dtype"],
            method=report["method"],
        )  # fmt: skip
        figures, preds = {}, {}
        for name, (blob, entry) in models.items():
            with atomic_path(paths.data / entry["file"]) as tmp:
                tmp.write_bytes(blob)
            preds[name] = lt.litert_logits(blob, x_test).argmax(axis=1)
            m = metrics_from_predictions(d["y_test"], preds[name], n_classes=len(d["classes"]))
            figures[name] = {
                "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
                **cx.file_stats(paths.data / entry["file"]),
                "params": entry["params"], "macs": entry["macs"],
            }  # fmt: skip
        acc = {k: v["accuracy"] for k, v in figures.items()}
        # conversion parity: the INT8 flatbuffer against the (fake-quantized) model it came from
        parity = np.mean(preds["student_pqat_int8"] == qmodel.predict(x_test, verbose=0).argmax(1))
        metrics = {
            **figures,
            "method": report["method"],
            "prune_preserving": report["prune_preserving"],
            "int8_weights": check["int8_weights"],
            "keras_sparsity": round(report["keras_sparsity"], 4),
            "tflite_sparsity": round(check["tflite_sparsity"], 4),
            "int8_vs_keras_agreement": round(float(parity), 4),
            "pqat_vs_fp32_pts": round(100 * (acc["student_pqat_int8"] - acc["student_fp32"]), 2),
            "pqat_vs_ptq_pts": round(100 * (acc["student_pqat_int8"] - acc["student_ptq_int8"]), 2),
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_json(paths.data / "models.json", [entry for _, entry in models.values()])
        write_json(paths.metrics, metrics)
        mlflow.log_metrics({
            f"{k}.{m}": float(v) for k, f in figures.items() for m, v in f.items()
        })  # fmt: skip
    log.info(
        "INT8 %s: %d bytes, accuracy %.4f (FP32 student %.4f, PTQ INT8 %.4f), sparsity %.1f%%",
        report["method"], figures["student_pqat_int8"]["bytes"], acc["student_pqat_int8"],
        acc["student_fp32"], acc["student_ptq_int8"], 100 * check["tflite_sparsity"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
