"""Outputs of the qat stage: the INT8 model and its baselines as .tflite files, their models.json
entries (read by the benchmark stage) and metrics/qat.json.

Models (name -> data/qat/<name>.tflite): `student_pqat_int8` (the pruned student, QAT or PTQ,
full INT8), and the baselines a user would try instead, measured the same way: `student_fp32`
(the unpruned student), `student_ptq_int8` (its post-training INT8 on the same representative
data) and `pruned_fp32` (what channel pruning alone buys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.compression import model_facts as mf
from edge_pipeline.compression import tflite as lt
from edge_pipeline.core.io import atomic_path

INT8 = "student_pqat_int8"


def edge_models(
    pqat: bytes, student: Any, pruned: Any, *, representative: np.ndarray, io_dtype: str,
    method: str,
) -> dict[str, tuple[bytes, dict[str, Any]]]:  # fmt: skip
    """The INT8 model and its baselines: name -> (.tflite bytes, its models.json entry)."""
    sf, pf = mf.keras_facts(student), mf.keras_facts(pruned)
    rows = {  # name: (bytes, dtype, source, facts, description)
        INT8: (pqat, io_dtype, "student_pruned", pf, f"pruned student, {method.upper()} full INT8"),
        "student_fp32": (lt.to_tflite(student), "float32", "student", sf, "unpruned student, FP32"),
        "student_ptq_int8": (
            lt.to_tflite(student, representative=representative, io_dtype=io_dtype), io_dtype,
            "student", sf, "unpruned student, post-training full INT8 (same representative data)"),
        "pruned_fp32": (lt.to_tflite(pruned), "float32", "student_pruned", pf,
                        "pruned student (channels removed, sparse), FP32"),
    }  # fmt: skip
    out = {}
    for name, (blob, dtype, source, facts, description) in rows.items():
        entry = mf.model_entry(
            name, f"{name}.tflite", runtime="litert", dtype=dtype, source=source,
            params=facts["params"], macs=facts["macs"], description=description,
        )  # fmt: skip
        out[name] = (blob, entry)
    return out


def write_and_score(
    models: dict[str, tuple[bytes, dict[str, Any]]], out_dir: Path, x_test: np.ndarray,
    y_test: np.ndarray, *, n_classes: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:  # fmt: skip
    """Write every model to out_dir/<file> and score it in LiteRT on float32 x_test (N, H, W, C).

    Returns:
        ({name: {"accuracy", "macro_f1", "bytes", "gzip_bytes", "params", "macs"}},
         {name: int (N,) predicted classes}).
    """
    from edge_pipeline.student.kd_training import metrics_from_predictions

    figures, preds = {}, {}
    for name, (blob, entry) in models.items():
        with atomic_path(out_dir / entry["file"]) as tmp:
            tmp.write_bytes(blob)
        preds[name] = lt.litert_logits(blob, x_test).argmax(axis=1)
        m = metrics_from_predictions(y_test, preds[name], n_classes=n_classes)
        figures[name] = {
            "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
            **mf.file_stats(out_dir / entry["file"]),
            "params": entry["params"], "macs": entry["macs"],
        }  # fmt: skip
    return figures, preds


def qat_metrics(
    figures: dict[str, dict[str, Any]], report: dict[str, Any], check: dict[str, Any], *,
    int8_vs_keras: float, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """metrics/qat.json: every model's figures, the INT8 checks and the accuracy gaps in points.

    Args:
        figures: `write_and_score`'s; report: `quantization.qat_int8`'s; check: `check_int8`'s.
        int8_vs_keras: top-1 agreement of the INT8 flatbuffer with the keras model it came from.
    """
    acc = {k: v["accuracy"] for k, v in figures.items()}
    return {
        **figures,
        "method": report["method"],
        "prune_preserving": report["prune_preserving"],
        "int8_weights": check["int8_weights"],
        "keras_sparsity": round(report["keras_sparsity"], 4),
        "tflite_sparsity": round(check["tflite_sparsity"], 4),
        "int8_vs_keras_agreement": round(float(int8_vs_keras), 4),
        "pqat_vs_fp32_pts": round(100 * (acc[INT8] - acc["student_fp32"]), 2),
        "pqat_vs_ptq_pts": round(100 * (acc[INT8] - acc["student_ptq_int8"]), 2),
        "rows_per_epoch": report["fit"]["rows_per_epoch"] if report["fit"] else None,
        "seconds": round(seconds, 1),
    }
