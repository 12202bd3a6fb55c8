"""train: the PyTorch teacher (a torchvision architecture), exported to ONNX, tracked in MLflow.

Reads data/ingest, data/split and data/resample through `edge_pipeline.artifacts.datasets`; writes
- data/train/: teacher.pt (plain state_dict), teacher.onnx (input `input` float32 (N, C, H, W) =
  x / 255, output `logits` (N, K)), logits_train.npy (N_train, K) row-aligned with
  data/resample/train.npz, logits_val.npy row-aligned with `load_split("val")`, meta.json,
  models.json;
- reports/train/report.md (+ confusion_matrix.png, training_curves.png), metrics/train.json,
  plots/train/ (history.csv, test_predictions.csv, confusion_matrix.png, training_curves.png).
The ONNX export must pick torch's class on `train.onnx_min_top1_agreement` of the test images.
Library: edge_pipeline/teacher/ (models.py the network, fit.py the training loop, outputs.py
data/train and the metrics, report.py plots, report and MLflow; warm_start.py `train.init`, the
data window, EWC and replay, and the `warm_start/` artifacts a later night starts from).
"""

from __future__ import annotations

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import TEACHER_ONNX, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.tracking import stage_run
from edge_pipeline.teacher import outputs, report, warm_start
from edge_pipeline.teacher.fit import deterministic, predict_logits, setup_device, train_teacher
from edge_pipeline.teacher.models import resolve_weights

STAGE = "train"
log = setup_logging(STAGE)


def main() -> None:
    p: Train = load_section(STAGE)
    resolve_weights(p.arch, p.weights)  # a wrong weights name fails before any data is read
    paths = stage_paths(STAGE)
    d = data.load_fit_sets(check_shapes=True)
    device = setup_device(p.device, threads=p.threads)
    with deterministic(p.seed, strict=device.type == "cpu"), stage_run(STAGE, p.to_dict()) as ml:
        start = warm_start.load_start(
            p, classes=d["classes"], image_shape=d["x_train"].shape[1:],
            model_name=load_section("register").model_name,
        )  # fmt: skip
        plan = warm_start.plan(p, d, start, train_ids=data.load_train()[3])
        ml.set_tags(plan.tags())
        fit_sets = plan.fit_sets(d)
        run = train_teacher(
            p, fit_sets, device=device, on_epoch=report.epoch_logger(ml),
            init_state=start.state if start else None, penalty=plan.penalty(p),
        )  # fmt: skip
        if fit_sets is not d:  # logits_train.npy stays row-aligned with data/resample/train.npz
            run.logits["train"] = predict_logits(run.model, d["x_train"], device=device)
            run.model.cpu()
        meta = outputs.teacher_meta(run, p, d) | plan.meta(ml.active_run().info.run_id)
        parity = outputs.write_artifacts(
            paths.data, run.model, meta, run.logits, d["x_test"],
            min_top1_agreement=p.onnx_min_top1_agreement,
        )  # fmt: skip
        metrics = outputs.stage_metrics(run, meta, d, parity=parity, device=device)
        lineage = ("night", "init_from", "scratch_why", "init_from_run_id", "data_window")
        metrics |= {k: meta[k] for k in lineage}
        figures = report.write_plots_and_report(
            paths, metrics, run.result.history, d["y_test"], run.logits["test"], d["classes"], meta
        )
        write_json(paths.metrics, metrics)
        report.log_to_mlflow(
            ml, metrics, figures, paths.reports, d["x_test"][:2],
            example_logits=run.logits["test"][:2], onnx_file=paths.data / TEACHER_ONNX,
        )  # fmt: skip
        warm_start.log_start_model(ml, p, paths.data, plan, run.model, fit_sets, device=device)
    log.info(
        "test macro-F1 %.4f accuracy %.4f; best epoch %d; %.1fs (%.0f img/s); ONNX max|diff| %.2e",
        metrics["test_macro_f1"], metrics["test_accuracy"], run.result.best_epoch,
        run.result.train_seconds, run.result.images_per_s, parity["max_abs_diff"],
    )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
