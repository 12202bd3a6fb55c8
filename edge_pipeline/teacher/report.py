"""What the train stage shows people: plots/train/, reports/train/ and the MLflow run.

Shapes: N test images, K classes. Every file is built in a temporary sibling and renamed into place
(`edge_pipeline.core.io.atomic_path`), so a crash leaves the previous outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from edge_pipeline.artifacts.catalog import HISTORY, TEST_PREDICTIONS, StagePaths  # noqa: E402
from edge_pipeline.core.io import atomic_path  # noqa: E402
from edge_pipeline.core.plots import confusion_figure  # noqa: E402


def _curves_figure(history: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["epoch"], history["train_loss"], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    ax2.plot(history["epoch"], history["val_macro_f1"], "s-", color="C1", label="val macro-F1")
    ax2.set_ylabel("val macro-F1")
    fig.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    return fig


def _save(fig: plt.Figure, *paths: Path) -> None:
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)


def epoch_logger(mlflow: Any) -> Callable[[dict[str, float]], None]:
    """An `on_epoch` callback of `fit` that logs each epoch's loss, val scores and lr to MLflow."""

    def on_epoch(row: dict[str, float]) -> None:
        mlflow.log_metrics(
            {
                "train/loss": row["train_loss"],
                "val/macro_f1": row["val_macro_f1"],
                "val/accuracy": row["val_acc"],
                "train/lr": row["lr"],
            },
            step=int(row["epoch"]),
        )

    return on_epoch


def write_plots_and_report(
    paths: StagePaths,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    y_test: np.ndarray,
    test_logits: np.ndarray,
    classes: list[str],
    meta: dict[str, Any],
) -> dict[str, plt.Figure]:
    """plots/train/ (history.csv, test_predictions.csv, PNGs) and reports/train/ (report + PNGs)."""
    pred = test_logits.argmax(1)
    table = pd.DataFrame(history)[
        ["epoch", "train_loss", "val_macro_f1", "val_acc", "lr", "seconds"]
    ]
    figures = {
        "confusion_matrix.png": confusion_figure(y_test, pred, classes, title="Teacher, test set"),
        "training_curves.png": _curves_figure(table),
    }
    with atomic_path(paths.plots) as tmp:
        tmp.mkdir()
        table.round(6).to_csv(tmp / HISTORY, index=False)
        pd.DataFrame(
            {"actual": np.array(classes)[y_test], "predicted": np.array(classes)[pred]}
        ).to_csv(tmp / TEST_PREDICTIONS, index=False)
        for name, fig in figures.items():
            _save(fig, tmp / name)
    with atomic_path(paths.reports) as tmp:
        tmp.mkdir()
        for name, fig in figures.items():
            _save(fig, tmp / name)
        (tmp / "report.md").write_text(render_report(metrics, table, meta))
    return figures


def render_report(metrics: dict[str, Any], history: pd.DataFrame, meta: dict[str, Any]) -> str:
    """The human-readable summary of reports/train/report.md."""
    per_class = pd.DataFrame(metrics["per_class"]).T.rename_axis("class")
    per_class["support"] = per_class["support"].astype(int)
    # object dtype keeps integer columns (epoch, support) out of the float format
    per_class, epochs = per_class.astype(object), history.drop(columns="lr").astype(object)
    onnx = metrics["onnx"]
    lines = [
        f"# Teacher: {meta['arch']} ({meta['weights'] or 'trained from scratch'})",
        "",
        f"- Test: accuracy **{metrics['test_accuracy']:.4f}**, macro-F1 "
        f"**{metrics['test_macro_f1']:.4f}** on {metrics['n_test']} images.",
        f"- Best epoch {metrics['best_epoch']} of {metrics['epochs_run']} run "
        f"(val macro-F1 {metrics['best_val_macro_f1']:.4f}); early stopping on val macro-F1.",
        f"- Training: {metrics['train_seconds']:.1f} s wall (validation included), "
        f"{metrics['train_images_per_s']:.0f} train images/s on {metrics['device']} with "
        f"{metrics['threads']} torch thread(s); {meta['n_train']} train images per epoch.",
        f"- Model: {meta['params']:,} parameters, {meta['macs']:,} MACs per "
        f"{meta['in_channels']}x{meta['image_size'][0]}x{meta['image_size'][1]} image.",
        f"- ONNX (opset {meta['onnx_opset']}): max |logit diff| {onnx['max_abs_diff']:.2e}, "
        f"top-1 agreement {onnx['top1_agreement']:.2%} on the test set.",
        "",
        "## Per class (test)",
        "",
        per_class.to_markdown(floatfmt=".3f"),  # pandas -> tabulate (a dvc dependency)
        "",
        "## Epochs",
        "",
        epochs.to_markdown(index=False, floatfmt=".4f"),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    return "\n".join(lines)


def log_to_mlflow(
    mlflow: Any,
    metrics: dict[str, Any],
    figures: dict[str, plt.Figure],
    reports_dir: Path,
    example: np.ndarray,
    *,
    example_logits: np.ndarray,
    onnx_file: Path,
) -> None:
    """Final metrics, figures, the report and the model (onnx flavour: `onnx_file`) to MLflow.

    `example`: uint8 (E, H, W, C) test images, the model's input example after x / 255 and NCHW;
    `example_logits`: the teacher's (E, K) logits for them (the signature's output).
    """
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    final = {
        "test/accuracy": metrics["test_accuracy"],
        "test/macro_f1": metrics["test_macro_f1"],
        "best_epoch": metrics["best_epoch"],
        "train/seconds": metrics["train_seconds"],
        "train/images_per_s": metrics["train_images_per_s"],
        "onnx/max_abs_diff": metrics["onnx"]["max_abs_diff"],
        "onnx/top1_agreement": metrics["onnx"]["top1_agreement"],
    }
    mlflow.log_metrics(final)
    for name, fig in figures.items():
        mlflow.log_figure(fig, name)
        plt.close(fig)
    mlflow.log_artifact(str(reports_dir / "report.md"))
    x = np.ascontiguousarray(example.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    # The ONNX file data/train holds (checked against torch, benchmarked as train/teacher_fp32),
    # servable by `mlflow.pyfunc` with ONNX Runtime. A pytorch-flavour (pt2) model would trace the
    # network with torch.export a second time (~8 s a night on 2 cores); the weights for further
    # training are the run's warm_start/teacher.pt. Explicit requirements skip MLflow's slow
    # requirement inference.
    mlflow.onnx.log_model(
        onnx.load(str(onnx_file)),
        name="teacher",
        input_example=x,
        signature=infer_signature(x, np.asarray(example_logits, dtype=np.float32)),
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
    )
