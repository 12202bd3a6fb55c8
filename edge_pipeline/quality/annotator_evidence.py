"""The annotators as evidence for the clean stage: cleanlab's CROWDLAB over the per-annotator labels
of data/ingest/annotations.csv and the out-of-fold probabilities.

CROWDLAB (`cleanlab.multiannotator.get_label_quality_multiannotator`) weights every annotator by
its estimated quality and the model by its accuracy, and returns per image a consensus label. A
given label (agreement's majority vote) is CONFIRMED wrong (the only labels the clean policy may
drop or relabel; cleaning.py) when

1. CROWDLAB's consensus is another label that at least one annotator of the image gave (the
   annotators, weighted by their quality, reject the given label for one of theirs), and
2. the out-of-fold model gives that label a higher probability than the given one (the model,
   which never saw the image's label, agrees).

Requiring cleanlab's own flag as well lost recall for no precision on the digits-28 case
(docs/clean.md): 0.725 vs 0.875 recall, 0.967 vs 0.972 precision.

Images with a single label source (an ImageFolder tree, one rating) carry no annotator evidence and
are never confirmed: their issues are flagged for review only.
Shapes: N images, A annotators, K classes (those present in the given labels).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.multiannotator import get_label_quality_multiannotator

from edge_pipeline.artifacts.catalog import ANNOTATIONS, stage_paths
from edge_pipeline.core.errors import InputError


@dataclass(frozen=True)
class Evidence:
    """What the annotators say about the given labels."""

    consensus: np.ndarray  # int (N,) CROWDLAB consensus label; the given label where unrated
    dissent: np.ndarray  # bool (N,) an annotator proposed the consensus, which is not the given
    annotator_quality: dict[str, float]  # CROWDLAB's quality of each annotator, in [0, 1]


def read_ratings(ids: pd.Series, classes: list[str]) -> tuple[np.ndarray, list[str]]:
    """float (N, A) class index given by annotator a to image `ids[i]` (NaN: not rated) from
    data/ingest/annotations.csv (`id,annotator,label`), and the A annotator names. Ratings of
    images not in `ids` are ignored; the last rating of an (id, annotator) pair wins."""
    path = stage_paths("ingest").data / ANNOTATIONS
    if not path.exists():
        raise InputError(f"{path}: missing; run the ingest stage first (dvc repro ingest)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("id", "annotator", "label") if c not in table]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; re-run the ingest stage")
    code = {c: k for k, c in enumerate(classes)}
    unknown = ~table["label"].isin(code)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise InputError(
            f"{path} line {row + 2}: label {table['label'][row]!r} is not in classes; "
            "re-run the ingest stage"
        )
    row_of = pd.Series(np.arange(len(ids)), index=pd.Index(ids.astype(str)))
    table = table[table["id"].isin(row_of.index)]
    table = table.drop_duplicates(["id", "annotator"], keep="last")
    annotator, names = pd.factorize(table["annotator"], sort=True)
    ratings = np.full((len(ids), len(names)), np.nan)
    ratings[row_of[table["id"]].to_numpy(), annotator] = table["label"].map(code).to_numpy()
    return ratings, [str(n) for n in names]


def crowdlab(
    ratings: np.ndarray, given: np.ndarray, pred_probs: np.ndarray, *, names: list[str]
) -> tuple[Evidence | None, str | None]:
    """CROWDLAB evidence, or (None, why) when the annotators cannot give any (fewer than 2
    annotators, or no image rated twice).

    Args:
        ratings: float (N, A) class indices into the K columns of `pred_probs`, NaN = not rated.
        given: int (N,) the given labels (agreement's consensus) in 0..K-1.
        pred_probs: float (N, K) out-of-fold probabilities.
        names: the A annotator names.
    """
    n_rated = (~np.isnan(ratings)).sum(axis=1)
    if ratings.shape[1] < 2 or not (n_rated >= 2).any():
        return None, "no image has two annotators: no annotator evidence, issues are only flagged"
    rated = n_rated > 0
    keep = (~np.isnan(ratings[rated])).sum(axis=0) > 0  # annotators with a rating left
    sub = ratings[np.ix_(rated, keep)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. annotators with one rating: CROWDLAB copes
        info = get_label_quality_multiannotator(
            sub, pred_probs[rated], consensus_method="best_quality",
            return_detailed_quality=False, verbose=False,
        )  # fmt: skip
    consensus = given.copy()
    consensus[rated] = info["label_quality"]["consensus_label"].to_numpy()
    proposed = (ratings == consensus[:, None]).any(axis=1)
    stats = info["annotator_stats"]["annotator_quality"]
    kept_names = np.array(names)[keep]
    quality = {str(kept_names[int(a)]): round(float(q), 4) for a, q in stats.items()}
    return Evidence(consensus, proposed & (consensus != given), quality), None
