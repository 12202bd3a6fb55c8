"""Inter-annotator agreement core: kappas, consensus labels and the relabel queue (pure numpy).

Inputs are R ratings of N items by A annotators into K classes, as integer codes (`Ratings`).
Everything is vectorised over ratings: the one (N, K) count matrix is built once, the per-pair
Cohen's kappas come from a within-item self-join, and Python loops run only over annotator pairs,
annotators or classes, never over rows.

The definitions used are in DEFINITIONS below (report.md repeats them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

DEFINITIONS = """\
- Pairwise: sklearn's `cohen_kappa_score` on the items both annotators rated, with `labels=0..K-1`.
  Undefined (value None plus a reason) when the pair shares fewer than 2 items, or when either
  annotator used a single class on the shared items: both the same class makes chance agreement 1
  (0/0), and one constant annotator makes kappa 0 whatever the observed agreement.
- Fleiss' kappa over items with >= 2 ratings, in Gwet's generalisation to a variable number of
  ratings per item (Gwet, Handbook of Inter-Rater Reliability, 4th ed., 2014; R irrCAC
  `fleiss.kappa.raw`): P_o = mean_i sum_k n_ik (n_ik - 1) / (n_i (n_i - 1)),
  P_e = sum_k pi_k^2 with pi_k = mean_i n_ik / n_i. With equal n_i it is exactly statsmodels'
  `fleiss_kappa`, which asserts equal counts and so cannot take this data.
- Per class: Fleiss' category kappa (the same kappa on the one-vs-rest 2-column table; Fleiss 1971)
  and specific agreement sum_i n_ik (n_ik - 1) / sum_i n_ik (n_i - 1): the chance that another
  rating of an item is k given that one rating is k.
- Consensus: majority vote. Ties go to the tied class with the larger sum of annotator weights
  (each annotator's peer agreement: the mean fraction of the other ratings of an item that match
  theirs), then to the class more frequent overall (the larger prior), then to the lower index.
  Support = the consensus's share of an item's ratings.
- Annotator vs consensus: kappa and accuracy on the items with >= 2 ratings (the annotator's own
  vote is part of the consensus, so both lean optimistic); true accuracy where truth is known.
- Relabel queue: unrated images, tied votes, and images with >= 2 ratings whose support is below
  `agreement.relabel_below`.
- Gate: Fleiss' kappa (one figure for all annotators) against `agreement.min_kappa`.
"""


class Kappa(NamedTuple):
    """A kappa value, or None with the reason it is undefined (reason is '' when defined)."""

    value: float | None
    reason: str = ""


@dataclass(frozen=True)
class Ratings:
    """R ratings as integer codes: item in 0..N-1, annotator in 0..A-1, label in 0..K-1.

    One rating per (item, annotator) pair; `true_label` (N,) holds known true labels, -1 unknown.
    """

    item: np.ndarray  # (R,) int
    annotator: np.ndarray  # (R,) int
    label: np.ndarray  # (R,) int
    n_items: int
    n_annotators: int
    n_classes: int
    true_label: np.ndarray | None = None  # (N,) int, -1 = unknown


@dataclass(frozen=True)
class Consensus:
    """Per-item consensus: label (N,) int (-1 for unrated items), support (N,) float in [0, 1]
    (NaN for unrated items), n_ratings (N,) int, tied (N,) bool (the vote needed a tie-break)."""

    label: np.ndarray
    support: np.ndarray
    n_ratings: np.ndarray
    tied: np.ndarray


def rating_counts(r: Ratings) -> np.ndarray:
    """(N, K) int32 matrix: entry (i, k) = how many annotators put item i in class k."""
    flat = np.bincount(r.item * r.n_classes + r.label, minlength=r.n_items * r.n_classes)
    return flat.astype(np.int32).reshape(r.n_items, r.n_classes)


def fleiss_kappa(counts: np.ndarray) -> Kappa:
    """Fleiss' kappa of an (N, K) count table with any number of ratings per row (Gwet's form).

    Rows with fewer than 2 ratings carry no agreement information and are left out.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    multi = n >= 2
    if not multi.any():
        return Kappa(None, "no item has 2 or more ratings")
    c, n = counts[multi], n[multi]
    p_observed = float(np.mean((c * (c - 1)).sum(axis=1) / (n * (n - 1))))
    pi = (c / n[:, None]).mean(axis=0)
    p_chance = float(np.sum(pi**2))
    if p_chance >= 1.0 - 1e-12:
        return Kappa(None, "every rating is the same class: chance agreement is 1")
    return Kappa((p_observed - p_chance) / (1.0 - p_chance))


def per_class_agreement(counts: np.ndarray, *, classes: Sequence[str]) -> pd.DataFrame:
    """One row per class (K rows): ratings on multi-rated items, category kappa, specific agreement.

    Columns: class, n_ratings, kappa, kappa_reason, specific_agreement (NaN when unused).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    c, n = counts[n >= 2], n[n >= 2]
    kappas = [fleiss_kappa(np.column_stack([c[:, k], n - c[:, k]])) for k in range(c.shape[1])]
    pairs_same = (c * (c - 1)).sum(axis=0)
    pairs_any = (c * (n - 1)[:, None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        specific = np.where(pairs_any > 0, pairs_same / pairs_any, np.nan)
    return pd.DataFrame(
        {
            "class": list(classes),
            "n_ratings": c.sum(axis=0).astype(np.int64),
            "kappa": [np.nan if k.value is None else k.value for k in kappas],
            "kappa_reason": [k.reason for k in kappas],
            "specific_agreement": specific,
        }
    )


def cohen_kappa(
    y1: np.ndarray, y2: np.ndarray, *, classes: Sequence[str], names: tuple[str, str]
) -> Kappa:
    """sklearn's Cohen's kappa of two aligned label-code vectors (M,), or why it is undefined.

    `names` label the two raters in the reason (e.g. ("annotator_a", "annotator_b")).
    """
    if len(y1) < 2:
        return Kappa(None, f"fewer than 2 shared items ({len(y1)})")
    single = [y.min() == y.max() for y in (y1, y2)]
    if single[0] and single[1] and y1[0] == y2[0]:
        return Kappa(None, f"both used only class {classes[y1[0]]!r}: chance agreement is 1")
    for name, one, y in zip(names, single, (y1, y2), strict=True):
        if one:
            return Kappa(None, f"{name} used only class {classes[y[0]]!r}: kappa is 0 by design")
    return Kappa(float(cohen_kappa_score(y1, y2, labels=np.arange(len(classes)))))


def _within_item_pairs(r: Ratings) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (P,), (P,) of every pair of ratings of the same item, annotator a < b.

    P = sum_i n_i (n_i - 1) / 2; built with repeat/cumsum arithmetic, no per-row loop.
    """
    order = np.lexsort((r.annotator, r.item))
    item, ann = r.item[order], r.annotator[order]
    same = (item[1:] == item[:-1]) & (ann[1:] == ann[:-1])
    if same.any():
        raise ValueError("Ratings hold two ratings of one item by one annotator; deduplicate first")
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    sizes = np.diff(np.r_[starts, len(item)])
    later = np.repeat(starts + sizes, sizes) - np.arange(len(item)) - 1  # rows after each row
    left = np.repeat(np.arange(len(item)), later)
    offset = np.arange(len(left)) - np.repeat(np.cumsum(later) - later, later)
    return order[left], order[left + offset + 1]


def pairwise_kappa(r: Ratings, *, classes: Sequence[str]) -> pd.DataFrame:
    """Cohen's kappa for every annotator pair a < b: A (A - 1) / 2 rows.

    Columns: a, b (annotator codes), n_shared, observed_agreement, kappa (NaN when undefined),
    undefined_reason ('' when defined).
    """
    left, right = _within_item_pairs(r)
    key = r.annotator[left].astype(np.int64) * r.n_annotators + r.annotator[right]
    order = np.argsort(key, kind="stable")
    key, y1, y2 = key[order], r.label[left][order], r.label[right][order]
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True]) if len(key) else np.array([0])
    found = {int(key[s]): (s, e) for s, e in zip(bounds[:-1], bounds[1:], strict=True)}
    rows = []
    for a in range(r.n_annotators):
        for b in range(a + 1, r.n_annotators):
            s, e = found.get(a * r.n_annotators + b, (0, 0))
            k = cohen_kappa(y1[s:e], y2[s:e], classes=classes, names=("annotator_a", "annotator_b"))
            agree = float(np.mean(y1[s:e] == y2[s:e])) if e > s else np.nan
            rows.append((a, b, e - s, agree, np.nan if k.value is None else k.value, k.reason))
    columns = ["a", "b", "n_shared", "observed_agreement", "kappa", "undefined_reason"]
    return pd.DataFrame(rows, columns=columns)


def peer_agreement(r: Ratings, counts: np.ndarray) -> np.ndarray:
    """(A,) each annotator's mean fraction of co-ratings that match theirs (NaN if none)."""
    n = counts.sum(axis=1)[r.item]
    multi = n >= 2
    match = (counts[r.item, r.label] - 1)[multi] / (n[multi] - 1)
    total = np.bincount(r.annotator[multi], weights=match, minlength=r.n_annotators)
    rated = np.bincount(r.annotator[multi], minlength=r.n_annotators)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rated > 0, total / np.maximum(rated, 1), np.nan)


def consensus(r: Ratings, counts: np.ndarray, *, weights: np.ndarray) -> Consensus:
    """Majority vote per item with the module's deterministic tie-break; `weights` (A,)."""
    n = counts.sum(axis=1)
    top = counts == counts.max(axis=1, keepdims=True)
    w = np.nan_to_num(np.asarray(weights, dtype=np.float64))[r.annotator]
    flat = np.bincount(r.item * r.n_classes + r.label, w, minlength=r.n_items * r.n_classes)
    weighted = np.where(top, flat.reshape(counts.shape), -np.inf)
    best = weighted == weighted.max(axis=1, keepdims=True)
    prior = np.where(best, counts.sum(axis=0, dtype=np.float64), -np.inf)
    label = np.argmax(prior, axis=1)  # first maximum = lowest class index
    rated = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        support = np.where(rated, counts[np.arange(len(n)), label] / n, np.nan)
    return Consensus(
        label=np.where(rated, label, -1),
        support=support,
        n_ratings=n.astype(np.int64),
        tied=rated & (top.sum(axis=1) > 1),
    )


def relabel_mask(c: Consensus, *, below: float) -> np.ndarray:
    """(N,) items to send for relabelling: unrated, tied, or multi-rated with support < `below`."""
    multi = c.n_ratings >= 2
    return (c.n_ratings == 0) | c.tied | (multi & (np.nan_to_num(c.support, nan=1.0) < below))


def annotator_table(
    r: Ratings, c: Consensus, *, weights: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    """One row per annotator (A rows): volume, peer agreement, agreement with the consensus
    (on items with >= 2 ratings; the annotator's own vote is part of it) and, where true labels
    are known, true accuracy.
    """
    multi = c.n_ratings[r.item] >= 2
    truth = r.true_label[r.item] if r.true_label is not None else np.full(len(r.item), -1)
    known = truth >= 0
    rows = []
    order = np.argsort(r.annotator, kind="stable")
    bounds = np.searchsorted(r.annotator[order], np.arange(r.n_annotators + 1))
    for a in range(r.n_annotators):
        idx = order[bounds[a] : bounds[a + 1]]
        m = idx[multi[idx]]
        mine, cons = r.label[m], c.label[r.item[m]]
        k = cohen_kappa(mine, cons, classes=classes, names=("annotator", "consensus"))
        t = idx[known[idx]]
        rows.append(
            {
                "a": a,
                "n_ratings": len(idx),
                "n_multi_rated": len(m),
                "peer_agreement": weights[a],
                "kappa_vs_consensus": np.nan if k.value is None else k.value,
                "kappa_vs_consensus_reason": k.reason,
                "accuracy_vs_consensus": float(np.mean(mine == cons)) if len(m) else np.nan,
                "n_true_known": len(t),
                "true_accuracy": float(np.mean(r.label[t] == truth[t])) if len(t) else np.nan,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Agreement:
    """Everything the stage reports: Fleiss' kappa, the (A(A-1)/2,) pair table, the (K,) class
    table, the (A,) annotator table, the per-item consensus and the (N,) relabel mask."""

    fleiss: Kappa
    pairwise: pd.DataFrame
    per_class: pd.DataFrame
    annotators: pd.DataFrame
    consensus: Consensus
    relabel: np.ndarray


def measure_agreement(r: Ratings, *, classes: Sequence[str], relabel_below: float) -> Agreement:
    """Run the whole core on R ratings; `classes` (K,) names the class codes."""
    counts = rating_counts(r)
    weights = peer_agreement(r, counts)
    cons = consensus(r, counts, weights=weights)
    return Agreement(
        fleiss=fleiss_kappa(counts),
        pairwise=pairwise_kappa(r, classes=classes),
        per_class=per_class_agreement(counts, classes=classes),
        annotators=annotator_table(r, cons, weights=weights, classes=classes),
        consensus=cons,
        relabel=relabel_mask(cons, below=relabel_below),
    )


def gate(fleiss: Kappa, *, min_kappa: float, policy: str) -> tuple[str, str]:
    """(status, reason) of the agreement gate on Fleiss' kappa.

    status: pass | skipped (kappa undefined) | fail (policy fail) | warn (policy warn) |
    needs_approval (policy approval: the run continues; an orchestrator may pause on it).
    """
    if fleiss.value is None:
        return "skipped", f"Fleiss' kappa is undefined: {fleiss.reason}"
    if fleiss.value >= min_kappa:
        return "pass", f"Fleiss' kappa {fleiss.value:.3f} >= agreement.min_kappa {min_kappa}"
    status = {"fail": "fail", "warn": "warn", "approval": "needs_approval"}[policy]
    return status, f"Fleiss' kappa {fleiss.value:.3f} < agreement.min_kappa {min_kappa}"
