"""export stage: ONNX FP32 of the student (tf2onnx) and ONNX INT8 (ONNX Runtime static QDQ).

Method and parity checks: edge_pipeline/compression/onnx_export.py. The teacher's ONNX is written
by the train stage, not here.
Writes data/export/{student_fp32.onnx, student_int8.onnx, models.json} and metrics/export.json;
its MLflow run holds the metrics and the ONNX files (compression/run_logging.py).
"""

from __future__ import annotations

import numpy as np

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import MODELS, STUDENT, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.core.logs import setup_logging

STAGE = "export"
log = setup_logging(STAGE)


def main() -> None:
    p = load_section(STAGE)
    paths = stage_paths(STAGE)
    d = data.load_fit_sets()

    from edge_pipeline.compression.model_facts import calibration_sample, load_keras
    from edge_pipeline.compression.onnx_export import onnx_exports
    from edge_pipeline.compression.run_logging import log_model_outputs
    from edge_pipeline.core.tracking import stage_run

    student = load_keras(stage_paths("distill").data / STUDENT)
    x_calib = calibration_sample(d["x_train"], p.calib_samples, seed=p.seed)
    x_test = d["x_test"].astype(np.float32) / 255.0
    with stage_run(STAGE, p.to_dict()) as mlflow:
        exports = onnx_exports(student, x_calib, x_test, d["y_test"], options=p)
        for blob, entry, figures in exports:
            with atomic_path(paths.data / entry["file"]) as tmp:
                tmp.write_bytes(blob)
            log.info("%s: agreement %.4f, max |diff| %.3g, %d bytes", entry["name"],
                     figures["agreement"], figures["max_abs_diff"], figures["bytes"])  # fmt: skip
        entries = [entry for _, entry, _ in exports]
        write_json(paths.data / MODELS, entries)
        figures = {entry["name"]: figures for _, entry, figures in exports}
        metrics = {**figures, "opset": p.opset, "n_test": len(d["y_test"])}
        write_json(paths.metrics, metrics)
        log_model_outputs(mlflow, paths.data, entries, metrics)


if __name__ == "__main__":
    run_stage(main)
