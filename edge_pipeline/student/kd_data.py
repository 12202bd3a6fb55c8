"""The sets a distillation fit reads (distill, prune, qat): the fit sets plus the teacher's logits,
and the rows each epoch draws from them.

No TensorFlow here: a stage loads (and checks) its data before importing it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def rows_per_pass(n: int, *, sampler: str, num_samples: int | None = None) -> int:
    """Rows one pass of `draw_rows` yields: N for `shuffle`, `num_samples` (or N) for `balanced`."""
    return n if sampler == "shuffle" else num_samples or n


def draw_rows(
    y: np.ndarray,
    *,
    sampler: str,
    epochs: int,
    seed: int,
    num_samples: int | None = None,
    passes: int = 1,
) -> np.ndarray:
    """The train rows of every epoch, int64 (epochs, passes x R), deterministic for a seed.

    Args:
        y: int (N,) labels of the train rows.
        sampler: `shuffle` (R = N: every row once per pass, in a new order) or `balanced`
            (R = `num_samples` rows drawn with replacement, weight 1 / (rows of its class), so
            each class is drawn equally often whatever resample added).
        num_samples: R of `balanced` (the real train rows); None = N.
        passes: draws concatenated into one epoch (prune's ramp runs as one long epoch).
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    if sampler == "shuffle":
        order = [rng.permutation(n) for _ in range(epochs * passes)]
        return np.array(order, dtype=np.int64).reshape(epochs, passes * n)
    if sampler != "balanced":
        raise ValueError(f"sampler {sampler!r}: expected shuffle or balanced")
    weights = 1.0 / np.bincount(y)[y]
    size = (epochs, passes * rows_per_pass(n, sampler=sampler, num_samples=num_samples))
    return rng.choice(n, size=size, replace=True, p=weights / weights.sum()).astype(np.int64)
