"""Continual learning data: the night each image was first seen, `train.data_window` and
rehearsal (`train.replay`).

The night of an image is known through the lineage of the model a run starts from: each train run
stores `first_seen` (id -> night) next to its weights (edge_pipeline/teacher/warm_start.py); a run
takes the start model's table, gives every image it does not list tonight's night (the start
model's night + 1) and stores the result. A "night" is thus a generation of the model lineage.

With `data_window: N` the train set keeps the real images first seen in the last N nights; the
resampler's synthetic rows (interpolations over old and new images) are dropped. Rehearsal adds
a stratified buffer of `replay.size` images from outside the window (an equal share per class).
Shapes: N train rows, K classes.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.config.teacher import Train
from edge_pipeline.teacher.ewc import stratified_sample

FIRST_SEEN_COLUMNS = ("id", "night")
log = logging.getLogger("tasks.train")


def update_first_seen(
    previous: pd.DataFrame | None, ids: np.ndarray, *, night: int
) -> pd.DataFrame:
    """id,night for the previous table's ids plus the real `ids` (str (N,); '' = synthetic) it
    lacks, which get `night`."""
    prev = previous if previous is not None else pd.DataFrame(columns=list(FIRST_SEEN_COLUMNS))
    real = pd.unique(ids[ids != ""])
    new = pd.DataFrame({"id": real[~np.isin(real, prev["id"].to_numpy())], "night": night})
    return pd.concat([prev, new], ignore_index=True).astype({"id": str, "night": int})


def select_rows(
    p: Train, ids: np.ndarray, y: np.ndarray, first_seen: pd.DataFrame, *, night: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Row indices (into the N train rows) kept by `p.data_window` plus the replay buffer.

    Args:
        ids: str (N,) ids of the resampled train set ('' = synthetic row); y: int (N,) labels.
        first_seen: id,night of `update_first_seen` (covers every real id).
        night: tonight's night.

    Returns:
        (sorted indices, a report {window, night, n_window, n_replay, n_dropped_synthetic,
        n_outside}).
    """
    if p.data_window == "all":
        return np.arange(len(ids)), {"window": "all", "night": night}
    nights = pd.Series(first_seen["night"].to_numpy(), index=first_seen["id"].to_numpy())
    seen = ids != ""
    image_night = np.where(seen, pd.Series(ids).map(nights).fillna(night).to_numpy(), -1)
    inside = seen & (image_night > night - p.data_window)
    outside = np.flatnonzero(seen & ~inside)
    replay = outside[stratified_sample(y[outside], p.replay.size, seed=p.replay.seed)]
    rows = np.sort(np.concatenate([np.flatnonzero(inside), replay]))
    report = {
        "window": p.data_window, "night": night, "n_window": int(inside.sum()),
        "n_replay": len(replay), "n_outside": len(outside),
        "n_dropped_synthetic": int((~seen).sum()),
    }  # fmt: skip
    log.info("data window: last %d night(s) of night %d: %d images, + %d replayed of %d older; "
             "%d synthetic rows dropped", p.data_window, night, report["n_window"], len(replay),
             len(outside), report["n_dropped_synthetic"])  # fmt: skip
    return rows, report
