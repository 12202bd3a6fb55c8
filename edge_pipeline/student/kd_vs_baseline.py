"""The distill stage's experiment: the distilled student against an alpha = 1 baseline.

Both runs start from the same initial weights (same seed), so the difference in their test
metrics is what distillation buys. The teacher's figures are read alongside for the gap.
"""

from __future__ import annotations

import os
from typing import Any

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.config.student import Distill
from edge_pipeline.core.io import read_json
from edge_pipeline.student import kd_training as kd  # sets TF_USE_LEGACY_KERAS, imports TF
from edge_pipeline.student.model import build_student, student_config
from edge_pipeline.student.outputs import RUNS


def set_threads(threads: int | None) -> int:
    """Pin TensorFlow's intra/inter-op threads (None = its default); the intra-op count used."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def architecture(p: Distill, d: dict[str, Any]) -> dict[str, Any]:
    """`build_student` keywords for the images (H, W, C) and K classes of the fit sets `d`."""
    return student_config(
        d["x_train"].shape[1:], len(d["classes"]), width=p.width, blocks=p.blocks,
        stem=p.stem, stem_channels=p.stem_channels, head_channels=p.head_channels,
        dropout=p.dropout, seed=p.seed,
    )  # fmt: skip


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


def train_pair(
    d: dict[str, Any], p: Distill, config: dict[str, Any], *, init_weights: list | None = None
) -> dict[str, Any]:
    """Train the distilled student and (`p.trains_baseline`) the alpha = 1 baseline from the same
    initial weights.

    Args:
        d: `load_kd_sets(val_logits=True)`.
        p: the distill section; config: `architecture(p, d)`.
        init_weights: a warm start's weights (edge_pipeline/student/warm_start.py), trained for
            `p.warm.epochs` at `p.warm.lr`; None = build_student's seeded initialisation.

    Returns:
        {"student" [, "baseline"]: {"model", "fit" (kd.fit_distilled result), "test"
        (kd.evaluate result on the test set)}}.
    """
    common = {
        "x_val": d["x_val"], "y_val": d["y_val"], "n_classes": len(d["classes"]),
        "temperature": p.temperature, "batch_size": p.batch_size, "patience": p.patience,
        "epochs": p.warm.epochs if init_weights else p.epochs,
        "lr": p.warm.lr if init_weights else p.lr, "seed": p.seed, "augment": p.augment.to_dict(),
        "class_weights": d["class_weights"] if p.use_class_weights else None,
        "sampler": p.sampler, "num_samples": int((~d["synthetic"]).sum()),
    }  # fmt: skip
    out = {}
    runs = RUNS if p.trains_baseline(warm=init_weights is not None) else RUNS[:1]
    for name, alpha in zip(runs, (p.alpha, 1.0), strict=False):
        kd.set_determinism(p.seed)
        model = build_student(**config)
        if init_weights is not None:
            model.set_weights(init_weights)
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
