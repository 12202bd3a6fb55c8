"""Rebalancing the train split (never val or test) with imbalanced-learn; class weights.

Methods (`resample.method`):
- `none`, `class_weight`: the train split as is (training may use the class weights instead).
- `random_over`: imblearn RandomOverSampler (duplicates of real images).
- `smote`, `adasyn`: imblearn SMOTE / ADASYN interpolating in flattened pixel space (see
  docs/resample.md for what that means and costs on large images).
- `smoteenn`: the `smote` step, then imblearn EditedNearestNeighbours over all classes (what
  imblearn's SMOTEENN does; run as two steps so the small-class handling below applies).

Small classes: a class with n < k_neighbors + 1 train examples is interpolated with k = n - 1;
a 1-example class is randomly oversampled instead; ADASYN falls back to SMOTE for a group of
classes where it cannot run (no neighbour of another class). Each case is a warning in the metrics.
Class weights are sklearn's "balanced" weights of the original train labels, always written.

Shapes: N examples, K classes, D = H*W*C.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
from imblearn.under_sampling import EditedNearestNeighbours
from imblearn.utils import check_sampling_strategy
from sklearn.utils.class_weight import compute_class_weight

from edge_pipeline.core.errors import ConfigError


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn "balanced" weights, float64 (K,), of int (N,) labels; 0 for a class absent from y."""
    weights = np.zeros(n_classes)
    present = np.unique(y)
    weights[present] = compute_class_weight("balanced", classes=present, y=y)
    return weights


def _sampler(method: str, k: int, targets: dict[int, int], seed: int) -> Any:
    if k == 0:
        return RandomOverSampler(sampling_strategy=targets, random_state=seed)
    if method == "adasyn":
        return ADASYN(sampling_strategy=targets, n_neighbors=k, random_state=seed)
    return SMOTE(sampling_strategy=targets, k_neighbors=k, random_state=seed)


def oversample(
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str,
    sampling_strategy: str | float | dict[int, int],
    k_neighbors: int,
    seed: int,
    names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[int, int], list[str]]:
    """New examples from `random_over`, `smote` or `adasyn`; the inputs are not modified.

    Args:
        x: (N, D) features (float for interpolation; any dtype for random_over).
        y: int (N,) labels.
        sampling_strategy: imblearn over-sampling strategy (dict: class index -> target count).
        names: class names for the warnings (default: the indices).

    Returns:
        x_new: (M, D) added examples, dtype of x; y_new: int (M,) their labels.
        k_used: class index -> neighbours used for it (0 = random oversampling), classes that grew.
        warnings: one line per class whose k was lowered or that fell back to another sampler.
    """
    targets = check_sampling_strategy(sampling_strategy, y, "over-sampling")
    counts = np.bincount(y)
    notes: list[str] = []
    k_used: dict[int, int] = {}
    for cls, n_new in targets.items():
        if n_new == 0:
            continue
        n = int(counts[cls])
        k_used[cls] = 0 if method == "random_over" else min(k_neighbors, n - 1)
        if method != "random_over" and k_used[cls] < k_neighbors:
            how = f"{method} with k={k_used[cls]}" if k_used[cls] else "random oversampling"
            name = names[cls] if names else cls
            notes.append(f"class {name!r}: {n} train example(s) < k_neighbors + 1; {how}")
    # One sampler call per k (most classes share the configured one) keeps copies of x few.
    groups: dict[int, dict[int, int]] = defaultdict(dict)
    for cls, k in k_used.items():
        groups[k][cls] = int(counts[cls] + targets[cls])
    new_x, new_y = [x[:0]], [y[:0]]
    for k, group in sorted(groups.items()):
        try:
            xr, yr = _sampler(method, k, group, seed).fit_resample(x, y)
        except (RuntimeError, ValueError) as err:
            if method != "adasyn":
                raise
            failed = [names[c] if names else c for c in sorted(group)]
            notes.append(f"classes {failed}: ADASYN failed ({err}); used SMOTE with k={k}")
            xr, yr = _sampler("smote", k, group, seed).fit_resample(x, y)
        new_x.append(xr[len(x) :])
        new_y.append(yr[len(y) :])
    return np.concatenate(new_x), np.concatenate(new_y).astype(np.int64), k_used, notes


def resample(
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str,
    sampling_strategy: str | float | dict[int, int],
    k_neighbors: int,
    seed: int,
    names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, int], list[str]]:
    """Resample a train set with `method` (a `resample.method` of params.yaml).

    Args:
        x: uint8 (N, H, W, C) images; y: int (N,) labels.

    Returns:
        x_out: uint8 (M, H, W, C), the kept originals first (in input order), then added rows.
        y_out: int64 (M,); synthetic: bool (M,) True for added rows;
        source: int (M,) input row of each original, -1 for added rows;
        k_used and warnings as in `oversample`.
    """
    y = np.asarray(y, dtype=np.int64)
    if method in ("none", "class_weight"):
        return x, y, np.zeros(len(y), bool), np.arange(len(y)), {}, []
    flat = x.reshape(len(x), -1)
    # SMOTE/ADASYN interpolate: uint8 would wrap around in x_a - x_b, so they work in float32.
    features = flat if method == "random_over" else flat.astype(np.float32)
    base = "smote" if method == "smoteenn" else method
    x_new, y_new, k_used, notes = oversample(
        features, y, method=base, sampling_strategy=sampling_strategy,
        k_neighbors=k_neighbors, seed=seed, names=names,
    )  # fmt: skip
    x_new = np.clip(np.rint(x_new), 0, 255).astype(np.uint8)
    x_all = np.concatenate([flat, x_new]).reshape(-1, *x.shape[1:])
    y_all = np.concatenate([y, y_new])
    source = np.concatenate([np.arange(len(y)), np.full(len(y_new), -1)])
    if method == "smoteenn":
        features = np.concatenate([features, x_new.astype(features.dtype)])
        enn = EditedNearestNeighbours(sampling_strategy="all")
        enn.fit_resample(features, y_all)
        keep = np.sort(enn.sample_indices_)
        lost = sorted(set(np.unique(y_all)) - set(np.unique(y_all[keep])))
        if lost:
            lost = [names[c] if names else c for c in lost]
            notes.append(f"EditedNearestNeighbours removed every example of classes {lost}")
        x_all, y_all, source = x_all[keep], y_all[keep], source[keep]
    return x_all, y_all, source < 0, source, k_used, notes


def parse_strategy(
    value: str | float | dict[str, int], classes: list[str]
) -> str | float | dict[int, int]:
    """params `resample.sampling_strategy` for imblearn: {class name: count} becomes
    {class index: count}; a name not in `classes` is a ConfigError."""
    if isinstance(value, dict):
        unknown = [c for c in value if str(c) not in classes]
        if unknown:
            raise ConfigError(
                f"params.yaml resample.sampling_strategy names unknown classes {unknown}; "
                f"use names from data/ingest/classes.json {classes}"
            )
        return {classes.index(str(c)): int(n) for c, n in value.items()}
    return value
