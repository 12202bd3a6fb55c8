"""Readers of the label tables the quality stages hand on: data/agreement/labels.csv (-> clean)
and data/clean/labels.csv (-> split). Shapes: N rows, K classes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import LABELS, stage_paths
from edge_pipeline.core.errors import InputError


def read_agreement_labels(classes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """data/agreement/labels.csv (`id,label,...`) and its labels as int (N,) indices into
    `classes`; a missing column, a repeated id or an unknown label names the file and line."""
    path = stage_paths("agreement").data / LABELS
    table = pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False)
    for col in ("id", "label"):
        if col not in table:
            raise InputError(f"{path}: no '{col}' column; expected id,label,n_ratings,support")
    if table["id"].duplicated().any():
        row = int(np.flatnonzero(table["id"].duplicated())[0])
        raise InputError(f"{path} line {row + 2}: id {table['id'][row]!r} appears twice")
    return table, data.encode_labels(table["label"], classes, source=str(path))


def read_clean_labels() -> pd.DataFrame:
    """`id,label` of the rows of data/clean/labels.csv that later stages use (action != dropped),
    sorted by id."""
    path = stage_paths("clean").data / LABELS
    table = pd.read_csv(path, dtype={"id": str, "label": str, "action": str}, keep_default_na=False)
    for col in ("id", "label", "action"):
        if col not in table:
            raise InputError(f"{path}: no '{col}' column; re-run the clean stage")
    table = table[table["action"] != "dropped"]
    return table[["id", "label"]].sort_values("id", kind="stable").reset_index(drop=True)
