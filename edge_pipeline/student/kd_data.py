"""The sets a distillation fit reads (distill, prune, qat): the fit sets plus the teacher's logits.

No TensorFlow here: a stage loads (and checks) its data before importing it.
"""

from __future__ import annotations

from typing import Any

from edge_pipeline.artifacts import datasets as data


def load_kd_sets(*, val_logits: bool = False) -> dict[str, Any]:
    """`datasets.load_fit_sets()` with the teacher's logits, checked against N and K.

    Args:
        val_logits: also read the teacher's val logits (distill compares with the teacher there).

    Returns:
        The keys of `load_fit_sets` (classes, x/y train, val and test, synthetic, class_weights)
        plus "teacher_train": float32 (N, K) row-aligned with x_train and, with `val_logits`,
        "teacher_val": float32 (N_val, K) row-aligned with x_val.
    """
    d = data.load_fit_sets()
    k = len(d["classes"])
    d["teacher_train"] = data.read_teacher_logits("train", n_rows=len(d["x_train"]), n_classes=k)
    if val_logits:
        d["teacher_val"] = data.read_teacher_logits("val", n_rows=len(d["x_val"]), n_classes=k)
    return d
