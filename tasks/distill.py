"""distill: a tf_keras MobileNetV2-style student distilled from the teacher, plus a baseline.

Reads data/ingest, data/split and data/resample through `edge_pipeline.artifacts.datasets`, the
teacher's data/train/logits_{train,val}.npy and metrics/train.json (the teacher's test metrics).
Trains the student twice from the same initial weights: with the distillation loss (`alpha`,
`temperature`) and with alpha = 1 (the baseline), so the benefit of distillation is measured; a
warm-started night trains the student only (`distill.baseline: scratch`, the default).
Writes
- data/distill/: student.keras, baseline.keras (when trained), meta.json ("student_config"
  rebuilds the architecture with `edge_pipeline.student.model.build_student(**config)`),
  models.json;
- reports/distill/report.md (+ PNGs), metrics/distill.json, plots/distill/ (CSVs, PNGs).
Library: edge_pipeline/student/ (model.py, kd_training.py, kd_vs_baseline.py, outputs.py,
warm_start.py `distill.init` and the `warm_start/` artifacts a later night starts from).
"""

from __future__ import annotations

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.student.kd_data import load_kd_sets

STAGE = "distill"
log = setup_logging(STAGE)


def main() -> None:
    p = load_section(STAGE)  # before any data read, TensorFlow import or training
    paths = stage_paths(STAGE)
    d = load_kd_sets(val_logits=True)

    from edge_pipeline.core.lineage import start_record, start_tags
    from edge_pipeline.core.tracking import stage_run
    from edge_pipeline.student import kd_vs_baseline as kvb
    from edge_pipeline.student import outputs, warm_start
    from edge_pipeline.student.model import count_macs

    threads = kvb.set_threads(p.threads)
    config = kvb.architecture(p, d)
    log.info(
        "student width %.2f: %d train, %d val, %d test images %s, K=%d, alpha %.2f, T %.1f",
        p.width, len(d["y_train"]), len(d["y_val"]), len(d["y_test"]),
        "x".join(map(str, d["x_train"].shape[1:])), len(d["classes"]), p.alpha, p.temperature,
    )  # fmt: skip
    teacher = kvb.teacher_reference(d)
    model_name = load_section("register").model_name
    init, source = warm_start.load_start(p, config, d["classes"], model_name=model_name)
    with stage_run(STAGE, p.to_dict()) as mlflow:
        mlflow.set_tags(start_tags(source))
        runs = kvb.train_pair(d, p, config, init_weights=init)
        model = runs["student"]["model"]
        params, macs = int(model.count_params()), count_macs(model)
        metrics = outputs.build_metrics(runs, teacher, d["classes"], params, macs)
        metrics["threads"] = threads
        lineage = start_record(source, mlflow.active_run().info.run_id)
        metrics |= {k: lineage[k] for k in ("init_from", "scratch_why")}
        outputs.write_models(paths.data, runs, config, p, d, metrics, lineage=lineage)
        figures = outputs.write_outputs(paths, runs, metrics, d)
        outputs.log_to_mlflow(mlflow, runs, metrics, figures, paths, d["x_test"][:2])
        warm_start.log_start_model(mlflow, paths.data)
    log.info(
        "student test macro-F1 %.4f (baseline %s, KD gain %s pts; teacher gap %s pts); "
        "%d params, %d MACs; %.1fs training",
        metrics["test_macro_f1"],
        "not trained" if metrics["baseline_test_macro_f1"] is None
        else f"{metrics['baseline_test_macro_f1']:.4f}",
        metrics["kd_gain_pts"], metrics["gap_to_teacher_pts"], params, macs,
        metrics["train_seconds"],
    )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
