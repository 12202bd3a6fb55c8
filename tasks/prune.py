"""prune stage: channel pruning plus TF-MOT sparsity of the distilled student.

Method: edge_pipeline/compression/pruning.py (channels.py, sparsity.py); outputs:
edge_pipeline/compression/prune_outputs.py.

Reads data/distill/student.keras, data/train/logits_train.npy and the splits; writes
data/prune/{student_pruned.keras, meta.json}, metrics/prune.json (parameters, MACs and file size
before/after, test metrics) and plots/prune/ (per-layer sparsity and channel counts, CSV + PNG).
"""

from __future__ import annotations

import time

from edge_pipeline.artifacts.catalog import META, STUDENT, STUDENT_PRUNED, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import atomic_path, read_json, write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.student.kd_data import load_kd_sets

STAGE = "prune"
log = setup_logging(STAGE)


def main() -> None:
    p = load_section(STAGE)
    paths = stage_paths(STAGE)
    d = load_kd_sets()

    from edge_pipeline.compression import prune_outputs as out
    from edge_pipeline.compression import warm_prune
    from edge_pipeline.compression.model_facts import load_keras
    from edge_pipeline.compression.pruning import prune_student
    from edge_pipeline.core.lineage import Scratch, start_record, start_tags
    from edge_pipeline.core.tracking import flatten, stage_run

    src = stage_paths("distill").data / STUDENT
    student = load_keras(src)
    distill_meta = src.parent / META
    config = read_json(distill_meta).get("student_config") if distill_meta.exists() else None
    model_name = load_section("register").model_name
    begin, begin_meta, source = warm_prune.load_start(p, config, d["classes"],
                                                      model_name=model_name)  # fmt: skip
    start = time.perf_counter()
    with stage_run(STAGE, p.to_dict()) as mlflow:
        before = out.model_summary(student, src, d["x_test"], d["y_test"])
        pruned, report = prune_student(
            student, d["x_train"], d["y_train"], d["teacher_train"], x_val=d["x_val"],
            y_val=d["y_val"], x_check=d["x_test"], y_check=d["y_test"], options=p,
            real_rows=int((~d["synthetic"]).sum()), start=begin, start_meta=begin_meta,
        )  # fmt: skip
        if source and not report["warm"]:  # the start disagreed with tonight's student
            source = Scratch(f"{source.how} disagrees with tonight's student (prune.min_agreement)")
        mlflow.set_tags(start_tags(source))
        dst = paths.data / STUDENT_PRUNED
        with atomic_path(dst) as tmp:
            pruned.save(tmp)
        after = out.model_summary(pruned, dst, d["x_test"], d["y_test"])
        metrics = out.prune_metrics(
            before, after, report, options=p, seconds=time.perf_counter() - start
        )
        lineage = start_record(source, mlflow.active_run().info.run_id)
        metrics |= {k: lineage[k] for k in ("init_from", "scratch_why")}
        meta = out.prune_meta(report, pruned, src, options=p, classes=d["classes"],
                              lineage=lineage, student_config=config)  # fmt: skip
        write_json(paths.data / META, meta)
        write_json(paths.metrics, metrics)
        out.write_prune_plots(report, paths.plots)
        mlflow.log_metrics(
            {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        )
        mlflow.log_artifacts(str(paths.plots), artifact_path="plots")
        warm_prune.log_start_model(mlflow, paths.data)
    after = metrics["pruned"]
    log.info(
        "pruned: %d -> %d params, %d -> %d MACs, sparsity %.1f%%, test accuracy %.4f -> %.4f",
        before["params"], after["params"], before["macs"], after["macs"],
        100 * after["sparsity"], before["accuracy"], after["accuracy"],
    )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
