"""Classification figures shared by the benchmark and the registry: accuracy, balanced accuracy,
macro-F1, per-class recall, and the majority-class rate a useful model must beat."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_figures(pred: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Figures of predicted classes `pred` (N,) against labels `y` (N,), K = len(classes).

    balanced_accuracy is the mean recall over the classes present in `y`; macro_f1 averages over
    all K classes (an absent class that is never predicted counts 0, as in scikit-learn).
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

    labels = np.arange(len(classes))
    recall = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "per_class_recall": dict(zip(classes, map(float, recall), strict=True)),
    }


def majority(y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """{"class", "rate"}: the most frequent label of `y` (N,) and the accuracy of always
    answering it (the first such class on ties)."""
    counts = np.bincount(y, minlength=len(classes))
    k = int(counts.argmax())
    return {"class": classes[k], "rate": float(counts[k] / max(len(y), 1))}
