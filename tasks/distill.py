"""distill: a tf_keras MobileNetV2-style student distilled from the teacher, plus a baseline.

Reads data/ingest, data/split and data/resample through `edge_pipeline.artifacts.datasets`, the teacher's
data/train/logits_train.npy (row-aligned with data/resample/train.npz) and logits_val.npy
(row-aligned with `load_split("val")`), and metrics/train.json (the teacher's test metrics). Trains
the student twice from the same initial weights: with the distillation loss (`alpha`, `temperature`)
and with alpha = 1 (plain cross-entropy, the baseline), so the benefit of distillation is measured.
Writes
- data/distill/: student.keras, baseline.keras, meta.json ("student_config" rebuilds the
  architecture with `edge_pipeline.student.model.build_student(**config)`), models.json;
- reports/distill/report.md (+ confusion_matrix.png, training_curves.png), metrics/distill.json,
  plots/distill/ (history_student.csv, history_baseline.csv, test_predictions.csv, PNGs).
Model: edge_pipeline/student/model.py; loss and loop: edge_pipeline/student/kd_training.py; outputs: edge_pipeline/student/outputs.py.
"""

from __future__ import annotations

import os
from typing import Any

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import read_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.stage_helpers import check_keys, number

STAGE = "distill"
DEFAULTS: dict[str, Any] = {
    "alpha": 0.1,
    "temperature": 4.0,
    "width": 1.0,
    "blocks": [[1, 16, 1, 1], [4, 24, 2, 2], [4, 32, 2, 2]],
    "stem_channels": 16,
    "head_channels": 128,
    "dropout": 0.1,
    "epochs": 40,
    "batch_size": 64,
    "lr": 0.005,
    "patience": 8,
    "seed": 0,
    "use_class_weights": False,
    "augment": {"hflip": False, "rotation_deg": 10.0, "crop_padding": 1, "color_jitter": 0.0},
    "threads": None,
}
# key: (lowest, highest, integer?, null allowed?)
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "alpha": (0.0, 1.0, False, False),
    "temperature": (1e-6, None, False, False),  # T > 0
    "width": (1e-6, 4.0, False, False),  # width > 0
    "stem_channels": (1, 1024, True, False),
    "head_channels": (1, 4096, True, False),
    "dropout": (0.0, 0.95, False, False),
    "epochs": (1, 1000, True, False),
    "batch_size": (2, 4096, True, False),
    "lr": (1e-7, 1.0, False, False),
    "patience": (1, None, True, False),
    "seed": (0, 2**31 - 1, True, False),
    "threads": (1, 256, True, True),
    "rotation_deg": (0.0, 180.0, False, False),
    "crop_padding": (0, 64, True, False),
    "color_jitter": (0.0, 1.0, False, False),
}
FLAGS = ("use_class_weights", "hflip")
MAX_INT8_BYTES = 5_000_000  # the edge budget: weights within 5 MB as INT8 (one byte each)
log = setup_logging(STAGE)


def _check_section(cfg: Any, defaults: dict[str, Any], *, section: str) -> dict[str, Any]:
    """Fill `defaults` into `cfg`, checking every key; ConfigError names the key and the fix."""
    check_keys(cfg, defaults, section=section)
    out = {}
    for key, default in defaults.items():
        value = cfg.get(key, default)
        if key in FLAGS and not isinstance(value, bool):
            raise ConfigError(f"params.yaml {section}.{key}={value!r} must be true or false")
        if key in RANGES:
            lo, hi, integer, optional = RANGES[key]
            value = number(
                cfg, key, default, section=section, lo=lo, hi=hi, integer=integer, optional=optional
            )
        out[key] = value
    return out


def parse_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check `params.yaml[distill]` and fill defaults; any mistake raises ConfigError naming the
    key and the allowed values. Runs before any data is read or TensorFlow is imported."""
    p = _check_section(cfg, DEFAULTS, section=STAGE)
    p["augment"] = _check_section(
        cfg.get("augment") or {}, DEFAULTS["augment"], section=f"{STAGE}.augment"
    )
    blocks = p["blocks"]
    ok = isinstance(blocks, list) and len(blocks) > 0
    for b in blocks if ok else []:
        ok = ok and isinstance(b, list) and len(b) == 4
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in b)
        ok = ok and b[3] in (1, 2)
    if not ok:
        raise ConfigError(
            f"params.yaml {STAGE}.blocks={blocks!r} must be a non-empty list of "
            "[expansion, channels, repeats, stride] (positive integers, stride 1 or 2)"
        )
    return p


def load_inputs() -> dict[str, Any]:
    """Classes, the resampled train set with its teacher logits, val (+ teacher logits) and test."""
    d = data.load_fit_sets()
    k = len(d["classes"])
    d["teacher_train"] = data.read_teacher_logits("train", n_rows=len(d["x_train"]), n_classes=k)
    d["teacher_val"] = data.read_teacher_logits("val", n_rows=len(d["x_val"]), n_classes=k)
    return d


def teacher_reference(d: dict[str, Any]) -> dict[str, Any]:
    """The teacher's figures to compare with: test metrics from metrics/train.json (None when the
    file or key is missing) and val macro-F1 recomputed from its val logits (always known)."""
    from sklearn.metrics import f1_score

    path = stage_paths("train").metrics
    test = read_json(path) if path.exists() else {}
    return {
        "test_macro_f1": test.get("test_macro_f1"),
        "test_accuracy": test.get("test_accuracy"),
        "val_macro_f1": float(
            f1_score(d["y_val"], d["teacher_val"].argmax(1), average="macro", zero_division=0)
        ),
        "source": str(path) if test else None,
    }


def train_pair(d: dict[str, Any], p: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Train the distilled student and the alpha = 1 baseline from the same initial weights.

    Returns {"student" | "baseline": {"model", "fit" (kd.fit_distilled result), "test"
    (kd.evaluate result on the test set)}}.
    """
    from edge_pipeline.student import kd_training as kd
    from edge_pipeline.student.model import build_student

    common = {
        "x_val": d["x_val"], "y_val": d["y_val"], "n_classes": len(d["classes"]),
        "temperature": p["temperature"], "epochs": p["epochs"], "batch_size": p["batch_size"],
        "lr": p["lr"], "patience": p["patience"], "seed": p["seed"], "augment": p["augment"],
        "class_weights": d["class_weights"] if p["use_class_weights"] else None,
    }  # fmt: skip
    out = {}
    for name, alpha in (("student", p["alpha"]), ("baseline", 1.0)):
        kd.set_determinism(p["seed"])
        model = build_student(**config)
        fit = kd.fit_distilled(
            model, d["x_train"], d["y_train"], d["teacher_train"], alpha=alpha,
            log_prefix=f"{name} ", **common,
        )  # fmt: skip
        out[name] = {
            "model": model,
            "fit": fit,
            "test": kd.evaluate(model, d["x_test"], d["y_test"]),
        }
    return out


def main() -> None:
    p = parse_params(load_params(STAGE))  # before any heavy import, data read or training
    paths = stage_paths(STAGE)
    d = load_inputs()
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    from edge_pipeline.core.tracking import stage_run
    from edge_pipeline.student import outputs as distill_report
    from edge_pipeline.student.model import count_macs, student_config

    if p["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(p["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(p["threads"])
    config = student_config(
        d["x_train"].shape[1:], len(d["classes"]), width=p["width"], blocks=p["blocks"],
        stem_channels=p["stem_channels"], head_channels=p["head_channels"],
        dropout=p["dropout"], seed=p["seed"],
    )  # fmt: skip
    log.info(
        "student width %.2f: %d train, %d val, %d test images %s, K=%d, alpha %.2f, T %.1f",
        p["width"], len(d["y_train"]), len(d["y_val"]), len(d["y_test"]),
        "x".join(map(str, d["x_train"].shape[1:])), len(d["classes"]), p["alpha"],
        p["temperature"],
    )  # fmt: skip
    teacher = teacher_reference(d)
    with stage_run(STAGE, p) as mlflow:
        runs = train_pair(d, p, config)
        model = runs["student"]["model"]
        params, macs = int(model.count_params()), count_macs(model)
        if params > MAX_INT8_BYTES:
            raise ValueError(
                f"student has {params:,} parameters, over the 5 MB INT8 budget; lower "
                f"params.yaml {STAGE}.width or {STAGE}.blocks"
            )
        metrics = distill_report.build_metrics(runs, teacher, d["classes"], params, macs)
        metrics["threads"] = (
            tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        )
        distill_report.write_models(paths.data, runs, config, p, d, metrics)
        figures = distill_report.write_outputs(paths, runs, metrics, d)
        distill_report.log_to_mlflow(mlflow, runs, metrics, figures, paths, d["x_test"][:2])
    log.info(
        "student test macro-F1 %.4f (baseline %.4f, KD gain %+.2f pts; teacher gap %s pts); "
        "%d params, %d MACs; %.1fs training",
        metrics["test_macro_f1"], metrics["baseline_test_macro_f1"], metrics["kd_gain_pts"],
        metrics["gap_to_teacher_pts"], params, macs, metrics["train_seconds"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
