"""Reader of the label table agreement hands on: data/agreement/labels.csv (-> split, clean).
Later stages read clean's labels through edge_pipeline/artifacts/datasets.py. Shapes: N rows,
K classes."""

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
