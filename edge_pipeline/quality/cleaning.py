"""Confident learning for the clean stage: out-of-fold probabilities, cleanlab issues, the
annotators' evidence, policy.

Out-of-fold predicted probabilities come from `clean.model` under stratified K-fold
(`cross_val_predict(method="predict_proba")`): by default a logistic regression on label-free conv
features (image_features.py), or a fast pixel model. cleanlab's `find_label_issues` turns them into
the SUSPECTED issues, which are flagged for review. The policy (drop or relabel) touches only
CONFIRMED issues: with `confirm: annotators_and_model` the labels that the Dawid-Skene posterior
(annotators' confusion matrices x model) rejects for another annotator's label that the model also
prefers (the rule: annotator_evidence.py), with
`confirm: model` every cleanlab issue; never a `protected` image (the test split, and labels a
reviewer settled: their issues stay `flagged`, and the stage queues the test ones for review).
Guards keep the policy
from gutting a class: at most `max_fraction` of a class is dropped/relabelled (the most suspicious
first) and no class goes below `min_per_class`; confirmed issues over the cap stay `flagged`.
Shapes: N examples, K classes, A annotators, images H x W x C, D features.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

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
from sklearn.preprocessing import StandardScaler

from edge_pipeline.config.quality import Clean
from edge_pipeline.quality.annotator_evidence import Evidence, annotator_posterior
from edge_pipeline.quality.image_features import embed


@dataclass(frozen=True)
class Cleaned:
    """What `clean_labels` found and did, per example (N,) unless said otherwise."""

    labels: np.ndarray  # int, after the policy (the target label where relabelled)
    actions: np.ndarray  # str: kept, flagged, dropped, relabeled
    is_issue: np.ndarray  # bool: suspected (cleanlab's issues, plus the confirmed ones)
    confirmed: np.ndarray  # bool: issues the policy may act on (see `Clean.confirm`)
    quality: np.ndarray  # float in [0, 1], lower = more likely mislabelled
    suggested: np.ndarray  # int, argmax of the out-of-fold probabilities
    target: np.ndarray  # int, the label a confirmed issue is relabelled to (else the given one)
    folds_used: int  # 0 when fewer than 2 classes were present
    seconds: float  # time of the features, the out-of-fold fit, cleanlab and Dawid-Skene
    notes: list[str]  # warnings (folds lowered, single-example classes, no annotator evidence)
    annotator_quality: dict[str, float] = field(default_factory=dict)  # Dawid-Skene accuracy


def clean_labels(
    images: np.ndarray,
    given: np.ndarray,
    *,
    p: Clean,
    classes: list[str],
    ratings: np.ndarray | None = None,
    annotators: list[str] | None = None,
    protected: np.ndarray | None = None,
) -> Cleaned:
    """Find label issues in int (N,) `given` labels (indices into the K `classes`) of uint8
    (N, H, W, C) `images`, confirm them and apply `p.policy` within the guards.

    Args:
        ratings: float (N, A) per-annotator class indices into `classes` (NaN = not rated), for
            `confirm: annotators_and_model`; None = no annotators (nothing is confirmed).
        annotators: the A annotator names.
        protected: bool (N,) images the policy never drops or relabels (the test split, reviewed
            labels); their issues stay flagged and they are never `confirmed`.

    Works on the classes present only: cleanlab needs an example of every probability column.
    """
    present, codes = np.unique(given, return_inverse=True)
    start = time.perf_counter()
    n = len(codes)
    target, quality_of, notes = given.copy(), {}, []
    if len(present) < 2:
        notes.append("fewer than 2 classes: no label issues can be found")
        probs, folds_used = np.ones((n, 1)), 0
        is_issue, quality = np.zeros(n, bool), np.ones(n)
        confirmed = is_issue
    else:
        names = [classes[k] for k in present]
        probs, folds_used, notes = out_of_fold_probs(features(images, p=p), codes, p=p, names=names)
        is_issue, quality = find_issues(codes, probs, p=p)
        if p.confirm == "model":
            confirmed, target = is_issue, present[probs.argmax(axis=1)]
        else:
            evidence, why = _annotator_evidence(ratings, codes, probs, present, annotators, p=p)
            if evidence is None:
                confirmed = np.zeros(n, bool)
                notes.append(why)
            else:
                rows = np.arange(n)
                prefers = probs[rows, evidence.consensus] > probs[rows, codes]
                confirmed = evidence.dissent & prefers
                is_issue = is_issue | confirmed
                target = np.where(confirmed, present[evidence.consensus], given)
                quality_of = evidence.annotator_quality
    if protected is not None:
        confirmed = confirmed & ~protected
    seconds = time.perf_counter() - start
    labels, actions = apply_policy(
        given, target, is_issue, quality, confirmed=confirmed, protected=protected,
        policy=p.policy, max_fraction=p.max_fraction, min_per_class=p.min_per_class,
    )  # fmt: skip
    suggested = present[probs.argmax(axis=1)]
    return Cleaned(
        labels, actions, is_issue, confirmed, quality, suggested, target, folds_used, seconds,
        notes, quality_of,
    )  # fmt: skip


def _annotator_evidence(
    ratings: np.ndarray | None,
    codes: np.ndarray,
    probs: np.ndarray,
    present: np.ndarray,
    names: list[str] | None,
    *,
    p: Clean,
) -> tuple[Evidence | None, str | None]:
    """Dawid-Skene evidence on the K present classes (`codes` index `present`), or (None, why)."""
    if ratings is None:
        return None, "no annotator ratings: issues are only flagged"
    # Ratings of classes absent from the given labels have no probability column: ignored.
    lookup = np.full(int(max(present.max(), np.nanmax(ratings, initial=0))) + 1, np.nan)
    lookup[present] = np.arange(len(present))
    rated = ~np.isnan(ratings)
    recoded = np.full(ratings.shape, np.nan)
    recoded[rated] = lookup[ratings[rated].astype(int)]
    names = names or [str(a) for a in range(ratings.shape[1])]
    return annotator_posterior(recoded, codes, probs, names=names, o=p.annotators)


def features(images: np.ndarray, *, p: Clean) -> np.ndarray:
    """float (N, D) model inputs of uint8 (N, H, W, C) images: label-free conv embeddings for
    `conv_kmeans`, else the flattened pixels scaled to [0, 1]."""
    if p.model == "conv_kmeans":
        return embed(images, o=p.models.conv_kmeans, seed=p.seed)
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def make_classifier(p: Clean, *, n_features: int, n_train: int) -> BaseEstimator:
    """The probabilistic classifier `p.model` (settings `p.models`) on `features`.

    `conv_kmeans`: standardised embeddings -> logistic regression. The pixel models: PCA to
    `p.pca_components` (when the images have more features than that) keeps the fit fast on large
    images; `n_train` (the smallest training fold) bounds the components.
    """
    m = p.models
    if p.model == "conv_kmeans":
        lr = LogisticRegression(C=m.conv_kmeans.C, max_iter=m.conv_kmeans.max_iter)
        return make_pipeline(StandardScaler(), lr)
    steps: list[BaseEstimator] = []
    if p.pca_components and n_features > p.pca_components:
        n = max(1, min(p.pca_components, n_train - 1))
        steps.append(PCA(n_components=n, svd_solver="randomized", random_state=p.seed))
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
    target: np.ndarray,
    is_issue: np.ndarray,
    quality: np.ndarray,
    *,
    confirmed: np.ndarray | None = None,
    protected: np.ndarray | None = None,
    policy: str,
    max_fraction: float,
    min_per_class: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `policy` to the confirmed issues, within the per-class guards, never to `protected`
    ones; flag the others.

    For `drop` and `relabel`, each class k (by given label, n_k examples) loses at most
    min(floor(max_fraction * n_k), n_k - min_per_class) examples, the lowest `quality` first;
    confirmed issues over that cap, and one whose target equals its given label under `relabel`,
    keep their label as `flagged`, as do all suspected (`is_issue`) but unconfirmed ones.

    Args:
        labels, target: int (N,) given labels and the labels to relabel to.
        is_issue: bool (N,) suspected; quality: float (N,).
        confirmed: bool (N,) the issues the policy may act on (default: every issue).
        protected: bool (N,) examples whose label the policy must not touch (None: none).

    Returns:
        new_labels: int (N,) labels after the policy (the target label where relabelled).
        actions: str (N,) one of kept, flagged, dropped, relabeled.
    """
    confirmed = is_issue if confirmed is None else confirmed
    actions = np.where(is_issue | confirmed, "flagged", "kept").astype(object)
    new_labels = labels.copy()
    if policy == "flag":
        return new_labels, actions
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        candidates = members[confirmed[members]]
        if protected is not None:
            candidates = candidates[~protected[candidates]]
        if policy == "relabel":
            candidates = candidates[target[candidates] != k]
        # 1e-9: 0.2 * 10 must give 2, not 1.9999.
        cap = min(int(max_fraction * len(members) + 1e-9), max(0, len(members) - min_per_class))
        chosen = candidates[np.argsort(quality[candidates], kind="stable")[:cap]]
        actions[chosen] = "dropped" if policy == "drop" else "relabeled"
        if policy == "relabel":
            new_labels[chosen] = target[chosen]
    return new_labels, actions
