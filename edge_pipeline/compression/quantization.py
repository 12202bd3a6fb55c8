"""Quantization-aware training (TF-MOT) of the (pruned) student and its INT8 conversion checks.

`qat_int8` wraps the model with `quantize_annotate_model` + `quantize_apply` (with
`Default8BitPrunePreserveQuantizeScheme` when its kernels are sparse, so fine-tuning keeps the
zeros), fine-tunes it with the distillation loss and converts it to a full-integer TFLite model;
`check_int8` verifies through the flatbuffer that every filter is int8 and the zeros survived.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edge_pipeline.compression import tflite as lt

SPARSE_ABOVE = 0.05  # kernels with more zeros than this count as pruned: keep their zeros


class UnsupportedLayerError(ValueError):
    """QAT cannot quantize a layer; the message names it and the way out."""


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
            "GlobalAveragePooling2D, ...; see edge_pipeline/student/model.py), or set "
            "qat.method: ptq in params.yaml to quantize after training instead of QAT"
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
    method: str,
    fit: dict[str, Any],
    real_rows: int | None = None,
) -> tuple[bytes, Any, dict[str, Any]]:
    """Quantization-aware fine-tuning (or none, method="ptq") and full-integer conversion.

    Args:
        model: tf_keras model, float32 (N, H, W, C) in [0, 1] -> (N, K) logits; may be sparse.
        x_train: uint8 (N, H, W, C); y_train: int (N,); teacher_logits: float32 (N, K).
        representative: float32 (R, H, W, C) calibration images.
        io_dtype: "int8" | "uint8" input/output; method: "qat" | "ptq" (no fine-tuning).
        fit: `Qat.fit_options()`, the keywords of `student.kd_training.fit_distilled`.
        real_rows: the non-synthetic train rows: what an epoch of `qat.sampler: balanced` draws
            (None = N).

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
            num_samples=real_rows, **fit,
        )  # fmt: skip
    return lt.to_tflite(model, representative=representative, io_dtype=io_dtype), model, report


def check_int8(model: bytes, *, keras_sparsity: float, tolerance: float) -> dict[str, Any]:
    """Verify a converted model: int8 filters everywhere, zeros of the pruned kernels kept.

    Sparsity is compared over CONV_2D / FULLY_CONNECTED filters (what TF-MOT prunes);
    `tolerance` (params.yaml qat.sparsity_tolerance) is the drop allowed, 0.02 = 2 points.

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
            f"int8 filters), more than qat.sparsity_tolerance={tolerance}: the zeros were not "
            "preserved through QAT"
        )
    return {"int8_weights": True, "tflite_sparsity": tflite_sparsity, "filters": len(rows)}
