"""Confident learning for the clean stage: out-of-fold probabilities, cleanlab issues, policy.

Out-of-fold predicted probabilities come from a fast sklearn classifier under stratified K-fold
(`cross_val_predict(method="predict_proba")`); cleanlab's `find_label_issues` turns them into a
boolean issue mask and `get_label_quality_scores` ranks them. Guards keep the policy from gutting a
class: at most `max_fraction` of a class is dropped/relabelled (the most suspicious first) and no
class goes below `min_per_class`; the issues over the cap stay as `flagged`. Protected examples
(the test split, and labels a reviewer settled) are never dropped or relabelled: their issues stay
`flagged` (the clean stage queues the test ones for review).
Shapes: N examples, K classes, D = H*W*C features.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from edge_pipeline.config.quality import Clean


@dataclass(frozen=True)
class Cleaned:
    """What `clean_labels` found and did, per example (N,) unless said otherwise."""

    labels: np.ndarray  # int, after the policy (the suggested label where relabelled)
    actions: np.ndarray  # str: kept, flagged, dropped, relabeled
    is_issue: np.ndarray  # bool
    quality: np.ndarray  # float in [0, 1], lower = more likely mislabelled
    suggested: np.ndarray  # int, argmax of the out-of-fold probabilities
    folds_used: int  # 0 when fewer than 2 classes were present
    seconds: float  # time of the out-of-fold fit and cleanlab
    notes: list[str]  # warnings (folds lowered, single-example classes)


def clean_labels(
    x: np.ndarray,
    given: np.ndarray,
    *,
    p: Clean,
    classes: list[str],
    protected: np.ndarray | None = None,
) -> Cleaned:
    """Find label issues in int (N,) `given` labels (indices into the K `classes`) of float (N, D)
    features `x`, and apply `p.policy` within the guards, never to bool (N,) `protected` examples.
    Works on the classes present only: cleanlab needs an example of every probability column."""
    present, codes = np.unique(given, return_inverse=True)
    start = time.perf_counter()
    if len(present) < 2:
        notes = ["fewer than 2 classes: no label issues can be found"]
        probs, folds_used = np.ones((len(codes), 1)), 0
        is_issue, quality = np.zeros(len(codes), bool), np.ones(len(codes))
    else:
        names = [classes[k] for k in present]
        probs, folds_used, notes = out_of_fold_probs(x, codes, p=p, names=names)
        is_issue, quality = find_issues(codes, probs, p=p)
    seconds = time.perf_counter() - start
    suggested = present[probs.argmax(axis=1)]
    labels, actions = apply_policy(
        given, suggested, is_issue, quality,
        policy=p.policy, max_fraction=p.max_fraction, min_per_class=p.min_per_class,
        protected=protected,
    )  # fmt: skip
    return Cleaned(labels, actions, is_issue, quality, suggested, folds_used, seconds, notes)


def make_classifier(p: Clean, *, n_features: int, n_train: int) -> BaseEstimator:
    """The fast probabilistic classifier `p.model` (settings `p.models`) on pixels in [0, 1].

    PCA to `p.pca_components` (when the images have more features than that) keeps the fit
    fast on large images; `n_train` (the smallest training fold) bounds the components.
    """
    steps: list[BaseEstimator] = []
    if p.pca_components and n_features > p.pca_components:
        n = max(1, min(p.pca_components, n_train - 1))
        steps.append(PCA(n_components=n, svd_solver="randomized", random_state=p.seed))
    m = p.models
    if p.model == "logistic_regression":
        # No standardisation: pixels share one [0, 1] scale, and scaling up faint pixels or
        # minor PCA components overfits (F1 0.60-0.77 vs 0.90 on noisy digits).
        lr = m.logistic_regression
        steps += [LogisticRegression(C=lr.C, max_iter=lr.max_iter)]
    elif p.model == "knn":
        k = min(m.knn.n_neighbors, n_train)
        steps += [KNeighborsClassifier(n_neighbors=k, weights=m.knn.weights)]
    elif p.model == "random_forest":
        # n_jobs=1: the folds already run in parallel (p.n_jobs)
        rf = RandomForestClassifier(
            n_estimators=m.random_forest.n_estimators, n_jobs=1, random_state=p.seed
        )
        steps += [rf]
    else:  # hist_gradient_boosting (the schema allows no other)
        hgb = m.hist_gradient_boosting
        steps += [HistGradientBoostingClassifier(max_iter=hgb.max_iter, random_state=p.seed)]
    return make_pipeline(*steps)


def out_of_fold_probs(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    p: Clean,
    names: list[str] | None = None,
) -> tuple[np.ndarray, int, list[str]]:
    """Out-of-fold predicted probabilities by stratified K-fold.

    Args:
        x: float (N, D) features (flattened pixels scaled to [0, 1]).
        labels: int (N,) given labels in 0..K-1, every class present at least once.
        p: `params.yaml[clean]` (model, models, pca_components, folds, seed, n_jobs).
        names: K class names for the warnings (default: the indices).

    Returns:
        pred_probs: float (N, K), row i predicted by a model that never saw example i.
        folds_used: the number of folds, lowered to the smallest class size (at least 2; classes
            of one example do not count).
        warnings: human-readable notes (folds lowered, classes missing from training folds).
    """
    notes: list[str] = []
    folds = p.folds
    counts = np.bincount(labels)
    names = names or [str(k) for k in range(len(counts))]
    # A 1-example class is never in a training fold whatever K is, so it does not lower K.
    used = max(2, min(folds, int(counts[counts >= 2].min(initial=folds))))
    if used < folds:
        small = [names[k] for k in np.flatnonzero((counts >= 2) & (counts < folds))]
        notes.append(
            f"folds lowered from {folds} to {used}: classes {small} have < {folds} examples"
        )
    if counts.min() < 2:
        single = [names[k] for k in np.flatnonzero(counts < 2)]
        notes.append(
            f"classes {single} have a single example: never in a training fold, it looks like an "
            "issue (the guards still apply)"
        )
    n_train = int(len(labels) * (used - 1) / used)
    clf = make_classifier(p, n_features=x.shape[1], n_train=n_train)
    cv = StratifiedKFold(n_splits=used, shuffle=True, random_state=p.seed)
    with warnings.catch_warnings():
        # Expected with tiny classes; summarised in `notes` instead of repeated per fold.
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        warnings.filterwarnings("ignore", message=".*Number of classes in training fold.*")
        probs = cross_val_predict(clf, x, labels, cv=cv, method="predict_proba", n_jobs=p.n_jobs)
    return probs, used, notes


def find_issues(
    labels: np.ndarray, pred_probs: np.ndarray, *, p: Clean
) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label issues and label-quality scores.

    Args:
        labels: int (N,) given labels; pred_probs: float (N, K) out-of-fold probabilities.
        p: `params.yaml[clean]` (filter_by, frac_noise, rank_by, n_jobs).

    Returns:
        is_issue: bool (N,); quality: float (N,) in [0, 1], lower = more likely mislabelled.
    """
    is_issue = find_label_issues(
        labels, pred_probs, filter_by=p.filter_by, frac_noise=p.frac_noise, n_jobs=p.n_jobs
    )
    quality = get_label_quality_scores(labels, pred_probs, method=p.rank_by)
    return np.asarray(is_issue, dtype=bool), quality


def apply_policy(
    labels: np.ndarray,
    suggested: np.ndarray,
    is_issue: np.ndarray,
    quality: np.ndarray,
    *,
    policy: str,
    max_fraction: float,
    min_per_class: int,
    protected: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `policy` to the issues, within the per-class guards, never to `protected` ones.

    For `drop` and `relabel`, each class k (by given label, n_k examples) loses at most
    min(floor(max_fraction * n_k), n_k - min_per_class) examples, the lowest `quality` first;
    issues over that cap, and an issue whose suggested label equals its given one under
    `relabel`, keep their label as `flagged`.

    Args:
        labels, suggested: int (N,) given and suggested (argmax of pred_probs) labels.
        is_issue: bool (N,); quality: float (N,).
        protected: bool (N,) examples whose label the policy must not touch (None: none).

    Returns:
        new_labels: int (N,) labels after the policy (the suggested label where relabelled).
        actions: str (N,) one of kept, flagged, dropped, relabeled.
    """
    actions = np.where(is_issue, "flagged", "kept").astype(object)
    new_labels = labels.copy()
    if policy == "flag":
        return new_labels, actions
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        candidates = members[is_issue[members]]
        if protected is not None:
            candidates = candidates[~protected[candidates]]
        if policy == "relabel":
            candidates = candidates[suggested[candidates] != k]
        # 1e-9: 0.2 * 10 must give 2, not 1.9999.
        cap = min(int(max_fraction * len(members) + 1e-9), max(0, len(members) - min_per_class))
        chosen = candidates[np.argsort(quality[candidates], kind="stable")[:cap]]
        actions[chosen] = "dropped" if policy == "drop" else "relabeled"
        if policy == "relabel":
            new_labels[chosen] = suggested[chosen]
    return new_labels, actions
