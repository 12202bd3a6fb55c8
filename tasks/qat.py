"""qat stage: prune-preserving quantization-aware training to a full-integer INT8 TFLite model.

The pruned student (data/prune) is fine-tuned with fake quantization (prune-preserving when its
kernels are sparse) and the distillation loss, then converted with a representative dataset from
the train split to a TFLite model whose weights, activations and input/output are integers
(`qat.io_dtype`). Checked through LiteRT: every conv / fully-connected filter is int8, the zeros
survived (within `qat.sparsity_tolerance`), and the test accuracy, against three baselines.

Method: edge_pipeline/compression/quantization.py (tflite.py); outputs: qat_outputs.py.
Writes data/qat/{student_pqat_int8, student_fp32, student_ptq_int8, pruned_fp32}.tflite,
data/qat/models.json and metrics/qat.json; its MLflow run holds the metrics and the model files
(compression/run_logging.py).
"""

from __future__ import annotations

import time

import numpy as np

from edge_pipeline.artifacts.catalog import MODELS, STUDENT, STUDENT_PRUNED, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.student.kd_data import load_kd_sets

STAGE = "qat"
log = setup_logging(STAGE)


def main() -> None:
    p = load_section(STAGE)
    paths = stage_paths(STAGE)
    d = load_kd_sets()

    from edge_pipeline.compression import qat_outputs as out
    from edge_pipeline.compression.model_facts import calibration_sample, load_keras
    from edge_pipeline.compression.quantization import check_int8, qat_int8
    from edge_pipeline.compression.run_logging import log_model_outputs
    from edge_pipeline.core.tracking import stage_run

    student = load_keras(stage_paths("distill").data / STUDENT)
    pruned = load_keras(stage_paths("prune").data / STUDENT_PRUNED)
    rep = calibration_sample(d["x_train"], p.representative_samples, seed=p.seed)
    x_test = d["x_test"].astype(np.float32) / 255.0
    start = time.perf_counter()
    with stage_run(STAGE, p.to_dict()) as mlflow:
        pqat, qmodel, report = qat_int8(
            pruned, d["x_train"], d["y_train"], d["teacher_train"], x_val=d["x_val"],
            y_val=d["y_val"], representative=rep, io_dtype=p.io_dtype, method=p.method,
            fit=p.fit_options(), real_rows=int((~d["synthetic"]).sum()),
        )  # fmt: skip
        check = check_int8(
            pqat, keras_sparsity=report["keras_sparsity"], tolerance=p.sparsity_tolerance
        )
        models = out.edge_models(
            pqat, student, pruned, representative=rep, io_dtype=p.io_dtype,
            method=report["method"],
        )  # fmt: skip
        figures, preds = out.write_and_score(
            models, paths.data, x_test, d["y_test"], n_classes=len(d["classes"])
        )
        # conversion parity: the INT8 flatbuffer against the (fake-quantized) model it came from
        parity = np.mean(preds[out.INT8] == qmodel.predict(x_test, verbose=0).argmax(1))
        metrics = out.qat_metrics(
            figures, report, check, int8_vs_keras=parity, seconds=time.perf_counter() - start
        )
        entries = [entry for _, entry in models.values()]
        write_json(paths.data / MODELS, entries)
        write_json(paths.metrics, metrics)
        log_model_outputs(mlflow, paths.data, entries, metrics)
    log.info(
        "INT8 %s: %d bytes, accuracy %.4f (FP32 student %.4f, PTQ INT8 %.4f), sparsity %.1f%%",
        report["method"], figures[out.INT8]["bytes"], figures[out.INT8]["accuracy"],
        figures["student_fp32"]["accuracy"], figures["student_ptq_int8"]["accuracy"],
        100 * check["tflite_sparsity"],
    )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
