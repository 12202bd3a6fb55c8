"""Stratified train/val/test split of the cleaned labels; the test split is frozen.

Two sklearn `train_test_split` calls with `stratify`: first test (`test_fraction`) off everything,
then val (`val_fraction` of the whole) off the rest. Rows are sorted by id first (by the caller), so
the split depends only on the set of (id, label) pairs, `test_fraction` and `seed`: re-runs, a
different `val_fraction` and any resampling method leave the test split unchanged.

Classes too small to appear in every split (fewer than 3 examples, or left without a val/test
example by the rounding) are warned about; their examples always keep a place in train.
Shapes: N examples, K classes, S = 3 splits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from edge_pipeline.core.errors import InputError

SPLITS = ("train", "val", "test")


def stratified_split(
    labels: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, list[str]]:
    """Assign each example to train, val or test, stratified by label.

    Args:
        labels: (N,) class labels (any sortable dtype), in a deterministic order (e.g. sorted ids).
        val_fraction, test_fraction: shares of N for val and test (their sum < 1).

    Returns:
        split: str (N,) of train/val/test.
        warnings: one line per class that is missing from val or test (always kept in train).
    """
    labels = np.asarray(labels)
    split = np.full(len(labels), "train", dtype=object)
    values, counts = np.unique(labels, return_counts=True)
    notes = [
        f"class {c!r} has {n} example(s): too few for val and test, all kept in train"
        for c, n in zip(values.tolist(), counts.tolist(), strict=True)
        if n < 3
    ]
    eligible = np.flatnonzero(np.isin(labels, values[counts >= 3]))
    if len(eligible) == 0:
        return split.astype(str), notes
    try:
        rest, test = train_test_split(
            eligible, test_size=test_fraction, stratify=labels[eligible], random_state=seed
        )
        split[test] = "test"
        # A class the test draw left with a single example cannot be stratified again: train.
        rest_values, rest_counts = np.unique(labels[rest], return_counts=True)
        rest = rest[np.isin(labels[rest], rest_values[rest_counts >= 2])]
        val_size = val_fraction / (1.0 - test_fraction)
        _, val = train_test_split(
            rest, test_size=val_size, stratify=labels[rest], random_state=seed
        )
        split[val] = "val"
    except ValueError as err:  # e.g. fewer test examples than classes
        raise InputError(
            f"cannot split {len(eligible)} examples of {len(values)} classes with "
            f"split.val_fraction={val_fraction}, split.test_fraction={test_fraction}: {err}. "
            "Raise the fractions or add data."
        ) from err
    for c, n in zip(values.tolist(), counts.tolist(), strict=True):
        missing = [s for s in ("val", "test") if n >= 3 and not np.any(split[labels == c] == s)]
        if missing:
            notes.append(f"class {c!r} has {n} examples: none in {'/'.join(missing)}")
    return split.astype(str), notes


def max_proportion_gap(table: pd.DataFrame) -> float:
    """Largest difference, over classes and pairs of splits, of a class's share of its split.

    Args:
        table: K x S counts (classes x splits).
    """
    shares = table / table.sum(axis=0).replace(0, np.nan)
    return float((shares.max(axis=1) - shares.min(axis=1)).max())


def split_metrics(counts: pd.DataFrame, notes: list[str]) -> dict[str, Any]:
    """metrics/split.json from the K x S `count_table` of the splits and the warnings."""
    n = int(counts.to_numpy().sum())
    return {
        "n": n,
        **{f"n_{s}": int(counts[s].sum()) for s in SPLITS},
        "fractions": {s: round(float(counts[s].sum() / n), 4) for s in SPLITS},
        "max_class_share_gap": round(max_proportion_gap(counts), 4),
        "per_class": counts.to_dict(orient="index"),
        "warnings": notes,
    }
