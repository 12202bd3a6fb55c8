"""The annotators as evidence for the clean stage: a Dawid-Skene model of each annotator over the
per-annotator labels of data/ingest/annotations.csv, with the out-of-fold probabilities as each
image's prior.

Dawid & Skene (1979) estimate, by EM, a K x K confusion matrix per annotator (P(annotator says j |
true class k)), so a habit such as "says 7 for a 1" is learnt and discounted on those classes only;
the image's posterior over the true class is the out-of-fold model's probabilities times the
likelihood of its ratings. A given label (agreement's majority vote) is CONFIRMED wrong (the only
labels the clean policy may drop or relabel; cleaning.py) when

1. the posterior's most likely label is another one, that at least one annotator of the image gave,
   with posterior probability >= `clean.annotators.min_posterior` (default 0.5: more likely right
   than all other labels together), and
2. the out-of-fold model gives that label a higher probability than the given one (the model,
   which never saw the image's label, agrees).

On the gray28 case (docs/clean.md) cleanlab's CROWDLAB consensus in this rule (one quality number
per annotator) confirmed 112 labels at precision 0.75: 19 of its 28 mistakes were the habitual
confusions of one annotator that the model shared (1/7, 3/8); Dawid-Skene confirmed 84 at 1.00.

Images with a single label source (an ImageFolder tree, one rating) carry no annotator evidence and
are never confirmed: their issues are flagged for review only.
Shapes: N images, A annotators, K classes (those present in the given labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from edge_pipeline.artifacts.catalog import ANNOTATIONS, stage_paths
from edge_pipeline.config.quality import AnnotatorModel
from edge_pipeline.core.errors import InputError


@dataclass(frozen=True)
class Evidence:
    """What the annotators say about the given labels."""

    consensus: np.ndarray  # int (N,) most likely label under the posterior; given where unrated
    dissent: np.ndarray  # bool (N,) an annotator proposed the consensus, which is not the given,
    # and its posterior is >= min_posterior
    annotator_quality: dict[str, float]  # estimated accuracy of each annotator, in [0, 1]


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


def annotator_posterior(
    ratings: np.ndarray,
    given: np.ndarray,
    pred_probs: np.ndarray,
    *,
    names: list[str],
    o: AnnotatorModel,
) -> tuple[Evidence | None, str | None]:
    """Dawid-Skene evidence, or (None, why) when the annotators cannot give any (fewer than 2
    annotators, or no image rated twice).

    Args:
        ratings: float (N, A) class indices into the K columns of `pred_probs`, NaN = not rated.
        given: int (N,) the given labels (agreement's consensus) in 0..K-1.
        pred_probs: float (N, K) out-of-fold probabilities (each image's prior).
        names: the A annotator names.
        o: `params.yaml[clean.annotators]` (iterations, tol, pseudo_count, min_posterior).
    """
    n_rated = (~np.isnan(ratings)).sum(axis=1)
    if ratings.shape[1] < 2 or not (n_rated >= 2).any():
        return None, "no image has two annotators: no annotator evidence, issues are only flagged"
    posterior, confusion = dawid_skene(ratings, pred_probs, o=o)
    rows = np.arange(len(given))
    consensus = np.where(n_rated > 0, posterior.argmax(axis=1), given)
    proposed = (ratings == consensus[:, None]).any(axis=1)
    sure = posterior[rows, consensus] >= o.min_posterior
    rated = ~np.isnan(ratings)
    quality = {}
    for a, name in enumerate(names):
        if rated[:, a].any():  # expected accuracy over the classes of the images it rated
            weight = posterior[rated[:, a]].sum(axis=0)
            quality[name] = round(float(weight @ np.diag(confusion[a]) / weight.sum()), 4)
    dissent = proposed & sure & (consensus != given)
    return Evidence(consensus, dissent, quality), None


def dawid_skene(
    ratings: np.ndarray, pred_probs: np.ndarray, *, o: AnnotatorModel
) -> tuple[np.ndarray, np.ndarray]:
    """EM for the Dawid-Skene model with a per-image prior: float (N, K) posterior over the true
    class and float (A, K, K) confusion matrices (row k: P(rating j | true k)).

    The E-step multiplies the prior `pred_probs` by every rating's likelihood; the M-step counts
    posterior-weighted ratings plus `o.pseudo_count` (a Dirichlet prior: that many pseudo-ratings
    per row, half on the diagonal, half spread over the K classes, so a class an annotator rarely
    saw stays near "mostly right"). Starts from the model's probabilities (the confusions are
    first measured against the model, which never saw the labels); stops after
    `o.iterations` or when no posterior moves by more than `o.tol`.
    """
    n, k = pred_probs.shape
    rated = ~np.isnan(ratings)
    onehot = np.zeros((ratings.shape[1], n, k))  # (A, N, K): one-hot of each rating, 0 if none
    for a in range(ratings.shape[1]):
        onehot[a, rated[:, a], ratings[rated[:, a], a].astype(int)] = 1.0
    prior = np.log(np.clip(pred_probs, 1e-12, None))
    posterior = pred_probs / pred_probs.sum(axis=1, keepdims=True)
    smooth = o.pseudo_count / 2 * (np.eye(k) + np.full((k, k), 1.0 / k))
    confusion = np.zeros((ratings.shape[1], k, k))
    for _ in range(o.iterations):
        counts = np.einsum("nk,anj->akj", posterior, onehot) + smooth
        confusion = counts / counts.sum(axis=2, keepdims=True)
        log_post = prior + np.einsum("anj,akj->nk", onehot, np.log(confusion))
        new = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        new /= new.sum(axis=1, keepdims=True)
        moved = float(np.abs(new - posterior).max())
        posterior = new
        if moved < o.tol:
            break
    return posterior, confusion
