"""Outputs of the distill stage: metrics, data/distill artifacts, report, plots and MLflow logging.

`runs` everywhere is `kd_vs_baseline.train_pair`'s result: {"student" [, "baseline"]: {"model",
"fit", "test"}}, with "fit" from `kd_training.fit_distilled` and "test" from `kd_training.evaluate`;
without a baseline (a warm night, `distill.baseline`) its figures are None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from edge_pipeline.artifacts.catalog import (  # noqa: E402
    BASELINE,
    META,
    MODELS,
    STUDENT,
    TEST_PREDICTIONS,
    StagePaths,
    stage_paths,
)
from edge_pipeline.config.student import Distill  # noqa: E402
from edge_pipeline.core.io import atomic_path, read_json, write_json  # noqa: E402
from edge_pipeline.core.plots import confusion_figure  # noqa: E402

RUNS = ("student", "baseline")
FILES = {"student": STUDENT, "baseline": BASELINE}  # data/distill/<file> of each run


def _pts(a: float | None, b: float | None) -> float | None:
    """(a - b) in percentage points, or None when either is unknown."""
    return None if a is None or b is None else round(100.0 * (a - b), 2)


def build_metrics(
    runs: dict[str, Any], teacher: dict[str, Any], classes: list[str], params: int, macs: int
) -> dict[str, Any]:
    """metrics/distill.json: student and baseline test metrics, gaps in points, costs."""
    s, b = runs["student"], runs.get("baseline")

    def baseline(*keys: str) -> Any:
        return None if b is None else b[keys[0]][keys[1]]

    t = s["test"]
    fits = [run["fit"] for run in runs.values()]
    return {
        "test_accuracy": t["accuracy"],
        "test_macro_f1": t["macro_f1"],
        "test_precision": dict(zip(classes, t["precision"], strict=True)),
        "test_recall": dict(zip(classes, t["recall"], strict=True)),
        "test_support": dict(zip(classes, np.sum(t["confusion"], axis=1).tolist(), strict=True)),
        "n_test": t["n"],
        "params": params,
        "int8_bytes": params,  # one byte per weight as INT8 (benchmark gates the real files)
        "macs": macs,
        "teacher_test_macro_f1": teacher["test_macro_f1"],
        "teacher_test_accuracy": teacher["test_accuracy"],
        "teacher_val_macro_f1": teacher["val_macro_f1"],
        "gap_to_teacher_pts": _pts(teacher["test_macro_f1"], t["macro_f1"]),
        "val_gap_to_teacher_pts": _pts(teacher["val_macro_f1"], s["fit"]["best_val_macro_f1"]),
        "baseline_trained": b is not None,
        "baseline_test_accuracy": baseline("test", "accuracy"),
        "baseline_test_macro_f1": baseline("test", "macro_f1"),
        "kd_gain_pts": _pts(t["macro_f1"], baseline("test", "macro_f1")),
        "best_epoch": s["fit"]["best_epoch"],
        "epochs_run": s["fit"]["epochs_run"],
        "best_val_macro_f1": s["fit"]["best_val_macro_f1"],
        "baseline_best_val_macro_f1": baseline("fit", "best_val_macro_f1"),
        "baseline_best_epoch": baseline("fit", "best_epoch"),
        "baseline_epochs_run": baseline("fit", "epochs_run"),
        "train_seconds": round(sum(f["train_seconds"] for f in fits), 2),
        "student_train_seconds": round(s["fit"]["train_seconds"], 2),
        "baseline_train_seconds": None if b is None else round(b["fit"]["train_seconds"], 2),
        "train_images_per_s": round(s["fit"]["images_per_s"], 1),
        "train_rows_per_epoch": s["fit"]["rows_per_epoch"],
    }


def write_models(
    out_dir: Path,
    runs: dict[str, Any],
    config: dict[str, Any],
    p: Distill,
    d: dict[str, Any],
    metrics: dict[str, Any],
    *,
    lineage: dict[str, Any] | None = None,
) -> None:
    """data/distill/: student.keras, baseline.keras (if trained), meta.json and models.json, all
    or nothing.

    `lineage` (init_from, the run id: edge_pipeline/student/warm_start.py) goes into meta.json."""
    import tensorflow as tf

    teacher_models = stage_paths("train").data / MODELS
    source = read_json(teacher_models)[0]["name"] if teacher_models.exists() else None
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, run in runs.items():
            run["model"].save(tmp / FILES[name])
        write_json(
            tmp / META,
            {
                "student_config": config,  # student.model.build_student(**config) rebuilds it
                "classes": d["classes"],
                "layout": "NHWC",
                "input_scale": "float32 x / 255 (no normalisation layer; stem BN normalises)",
                "output": "logits (N, K), no softmax",
                "alpha": p.alpha,
                "temperature": p.temperature,
                "augment": p.augment.to_dict(),
                "params": metrics["params"],
                "macs": metrics["macs"],
                "best_epoch": metrics["best_epoch"],
                "baseline_best_epoch": metrics["baseline_best_epoch"],
                "n_train": len(d["y_train"]),
                "seed": p.seed,
                "tensorflow": tf.__version__,
            }
            | (lineage or {}),
        )
        write_json(
            tmp / MODELS,
            [
                {
                    "name": "student_keras",
                    "file": STUDENT,
                    "runtime": "keras",
                    "layout": "NHWC",
                    "dtype": "float32",
                    "source": source,
                    "params": metrics["params"],
                    "macs": metrics["macs"],
                    "description": f"MobileNetV2-style tf_keras student (width {p.width}), "
                    f"distilled (alpha {p.alpha}, T {p.temperature}); input float32 x / 255",
                }
            ],
        )


def _curves_figure(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, table in tables.items():
        ax1.plot(table["epoch"], table["val_loss"], "o-", ms=3, label=name)
        ax2.plot(table["epoch"], table["val_macro_f1"], "o-", ms=3, label=name)
    ax1.set(xlabel="epoch", ylabel="val cross-entropy")
    ax2.set(xlabel="epoch", ylabel="val macro-F1")
    ax2.legend()
    fig.tight_layout()
    return fig


def history_table(fit: dict[str, Any]) -> pd.DataFrame:
    """Per-epoch table (epoch 1..E, train loss, val loss/accuracy/macro-F1, seconds)."""
    h = pd.DataFrame(fit["history"]).rename(columns={"loss": "train_loss"})
    h.insert(0, "epoch", np.arange(1, len(h) + 1))
    return h


def write_outputs(
    paths: StagePaths, runs: dict[str, Any], metrics: dict[str, Any], d: dict[str, Any]
) -> dict[str, plt.Figure]:
    """plots/distill/ (CSVs + PNGs), reports/distill/ (report.md + PNGs), metrics/distill.json."""
    classes = d["classes"]
    pred = runs["student"]["test"]["pred"]
    tables = {name: history_table(run["fit"]) for name, run in runs.items()}
    figures = {
        "confusion_matrix.png": confusion_figure(
            d["y_test"], pred, classes, title="Distilled student, test set"
        ),
        "training_curves.png": _curves_figure(tables),
    }
    names = np.array(classes)
    with atomic_path(paths.plots) as tmp:
        tmp.mkdir()
        for name in RUNS:  # dvc.yaml declares both: a run not trained tonight has no epochs
            empty = pd.DataFrame(columns=tables["student"].columns)
            tables.get(name, empty).round(6).to_csv(tmp / f"history_{name}.csv", index=False)
        pd.DataFrame({"actual": names[d["y_test"]], "predicted": names[pred]}).to_csv(
            tmp / TEST_PREDICTIONS, index=False
        )
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
    with atomic_path(paths.reports) as tmp:
        tmp.mkdir()
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
        (tmp / "report.md").write_text(render_report(metrics, tables, classes))
    write_json(paths.metrics, metrics)
    return figures


def render_report(
    metrics: dict[str, Any], tables: dict[str, pd.DataFrame], classes: list[str]
) -> str:
    """reports/distill/report.md: student vs baseline vs teacher, per class, epochs."""
    m = metrics

    def fmt(v: float | None, spec: str = ".4f") -> str:
        return "unknown" if v is None else format(v, spec)

    if not m["baseline_trained"]:
        kd_line = (
            "- Distillation gain: not measured tonight (a warm start; "
            "`distill.baseline: scratch` trains the alpha = 1 baseline on scratch nights)."
        )
        baseline_s = ""
    else:
        kd_line = (
            "- Distillation gain over the same student trained on labels only: "
            f"**{fmt(m['kd_gain_pts'], '+.2f')}** macro-F1 points."
        )
        baseline_s = (
            f" ({m['student_train_seconds']:.1f} s distilled, "
            f"{m['baseline_train_seconds']:.1f} s baseline)"
        )
    rows = pd.DataFrame(
        {
            "test accuracy": [m["test_accuracy"], m["baseline_test_accuracy"],
                              m["teacher_test_accuracy"]],
            "test macro-F1": [m["test_macro_f1"], m["baseline_test_macro_f1"],
                              m["teacher_test_macro_f1"]],
            "val macro-F1 (best)": [m["best_val_macro_f1"], m["baseline_best_val_macro_f1"],
                                    m["teacher_val_macro_f1"]],
        },
        index=pd.Index(["student (distilled)", "baseline (alpha = 1)", "teacher"], name="model"),
    )  # fmt: skip
    per_class = pd.DataFrame(
        {"precision": m["test_precision"], "recall": m["test_recall"], "n": m["test_support"]}
    ).rename_axis("class")
    per_class["n"] = per_class["n"].astype(str)  # counts, not floats, in the markdown
    lines = [
        "# Distilled student",
        "",
        f"- Test macro-F1 **{m['test_macro_f1']:.4f}** (accuracy {m['test_accuracy']:.4f}) on "
        f"{m['n_test']} images; gap to the teacher **{fmt(m['gap_to_teacher_pts'], '+.2f')}** "
        f"points (target <= 1.5; val gap {fmt(m['val_gap_to_teacher_pts'], '+.2f')}).",
        kd_line,
        f"- Model: {m['params']:,} parameters ({m['int8_bytes'] / 1e6:.3f} MB as INT8; the "
        f"benchmark stage gates the real file sizes), {m['macs']:,} MACs per image.",
        f"- Training: {m['train_seconds']:.1f} s{baseline_s}, validation included; "
        f"{m['train_images_per_s']:.0f} images/s, {m['threads']} threads; best epoch "
        f"{m['best_epoch']} of {m['epochs_run']}"
        + (
            f" (baseline {m['baseline_best_epoch']} of {m['baseline_epochs_run']})."
            if m["baseline_trained"]
            else "."
        ),
        "",
        rows.to_markdown(floatfmt=".4f", missingval="unknown"),
        "",
        "## Per class (distilled student, test)",
        "",
        "Macro-F1 weighs every class equally: with n test images in a class, one miss there moves "
        "it by up to 100 / (K n) points.",
        "",
        per_class.to_markdown(floatfmt=".3f"),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    for name, table in tables.items():
        shown = table.round(4).astype({"epoch": str})  # keep epochs integral in the table
        lines += [f"## Epochs: {name}", "", shown.to_markdown(index=False, floatfmt=".4f"), ""]
    return "\n".join(lines)


def log_to_mlflow(
    mlflow: Any,
    runs: dict[str, Any],
    metrics: dict[str, Any],
    figures: dict[str, plt.Figure],
    paths: StagePaths,
    example: np.ndarray,
) -> None:
    """Per-epoch and final metrics, figures, the report and the student (keras flavour)."""
    import tensorflow as tf
    import tf_keras
    from mlflow.models import infer_signature

    for name, run in runs.items():
        prefix = "" if name == "student" else f"{name}/"
        for row in history_table(run["fit"]).to_dict("records"):
            mlflow.log_metrics(
                {
                    f"{prefix}train/loss": row["train_loss"],
                    f"{prefix}val/loss": row["val_loss"],
                    f"{prefix}val/accuracy": row["val_accuracy"],
                    f"{prefix}val/macro_f1": row["val_macro_f1"],
                },
                step=int(row["epoch"]),
            )
    final = {
        "test/accuracy": metrics["test_accuracy"],
        "test/macro_f1": metrics["test_macro_f1"],
        "baseline/test/accuracy": metrics["baseline_test_accuracy"],
        "baseline/test/macro_f1": metrics["baseline_test_macro_f1"],
        "kd_gain_pts": metrics["kd_gain_pts"],
        "gap_to_teacher_pts": metrics["gap_to_teacher_pts"],
        "params": metrics["params"],
        "macs": metrics["macs"],
        "train/seconds": metrics["train_seconds"],
        "train/images_per_s": metrics["train_images_per_s"],
    }
    mlflow.log_metrics({k: v for k, v in final.items() if v is not None})
    for name, fig in figures.items():
        mlflow.log_figure(fig, name)
        plt.close(fig)
    mlflow.log_artifact(str(paths.reports / "report.md"))
    x = example.astype(np.float32) / 255.0
    model = runs["student"]["model"]
    tf_keras.utils.disable_interactive_logging()  # no progress bar from MLflow's example check
    # Explicit requirements skip MLflow's requirement inference (it reloads the model in a
    # subprocess, slow on 2 cores).
    mlflow.tensorflow.log_model(
        model,
        name="student",
        input_example=x,
        signature=infer_signature(x, model.predict(x, verbose=0)),
        pip_requirements=[f"tensorflow=={tf.__version__}", f"tf-keras=={tf.__version__}"],
    )
