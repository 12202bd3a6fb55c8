"""clean: find label issues with confident learning and apply a policy (drop, relabel or flag).

Out-of-fold predicted probabilities come from a fast sklearn classifier under stratified K-fold
(`cross_val_predict(method="predict_proba")`); cleanlab's `find_label_issues` turns them into a
boolean issue mask and `get_label_quality_scores` ranks them. Guards keep the policy from gutting a
class: at most `max_fraction` of a class is dropped/relabelled (the most suspicious first) and no
class goes below `min_per_class`; the issues over the cap stay as `flagged`.

Reads data/ingest (images, manifest, classes) and data/agreement/labels.csv; writes
data/clean/labels.csv, reports/clean/{label_issues.csv,report.md}, metrics/clean.json and
plots/clean/. Shapes: N examples, K classes, D = H*W*C features.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import choice, load_params
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.stage_helpers import number
from edge_pipeline.quality.clean_outputs import write_outputs

STAGE = "clean"
MODELS = ("logistic_regression", "random_forest", "hist_gradient_boosting", "knn")
POLICIES = ("drop", "relabel", "flag")
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given", "low_normalized_margin", "low_self_confidence")  # fmt: skip
RANKERS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
log = setup_logging(STAGE)


def make_classifier(
    model: str, *, n_features: int, n_train: int, pca_components: int | None, seed: int
) -> BaseEstimator:
    """A fast probabilistic classifier on flattened pixels in [0, 1].

    PCA to `pca_components` (when the images have more features than that) keeps the fit
    fast on large images; `n_train` (the smallest training fold) bounds the components.
    """
    steps: list[BaseEstimator] = []
    if pca_components and n_features > pca_components:
        n = max(1, min(pca_components, n_train - 1))
        steps.append(PCA(n_components=n, svd_solver="randomized", random_state=seed))
    if model == "logistic_regression":
        # No standardisation: pixels share one [0, 1] scale, and scaling up faint pixels or
        # minor PCA components overfits (F1 0.60-0.77 vs 0.90 on noisy digits).
        steps += [LogisticRegression(C=1.0, max_iter=500)]
    elif model == "knn":
        steps += [KNeighborsClassifier(n_neighbors=min(10, n_train), weights="distance")]
    elif model == "random_forest":
        steps += [RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed)]
    elif model == "hist_gradient_boosting":
        steps += [HistGradientBoostingClassifier(max_iter=100, random_state=seed)]
    else:
        raise ValueError(f"unknown model {model!r}; one of {list(MODELS)}")
    return make_pipeline(*steps)


def out_of_fold_probs(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    model: str = "logistic_regression",
    folds: int = 5,
    pca_components: int | None = 64,
    seed: int = 0,
    n_jobs: int | None = None,
    names: list[str] | None = None,
) -> tuple[np.ndarray, int, list[str]]:
    """Out-of-fold predicted probabilities by stratified K-fold.

    Args:
        x: float (N, D) features (flattened pixels scaled to [0, 1]).
        labels: int (N,) given labels in 0..K-1, every class present at least once.
        names: K class names for the warnings (default: the indices).

    Returns:
        pred_probs: float (N, K), row i predicted by a model that never saw example i.
        folds_used: the number of folds, lowered to the smallest class size (at least 2; classes
            of one example do not count).
        warnings: human-readable notes (folds lowered, classes missing from training folds).
    """
    notes: list[str] = []
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
    clf = make_classifier(
        model, n_features=x.shape[1], n_train=n_train, pca_components=pca_components, seed=seed
    )
    cv = StratifiedKFold(n_splits=used, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Expected with tiny classes; summarised in `notes` instead of repeated per fold.
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        warnings.filterwarnings("ignore", message=".*Number of classes in training fold.*")
        probs = cross_val_predict(clf, x, labels, cv=cv, method="predict_proba", n_jobs=n_jobs)
    return probs, used, notes


def find_issues(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    rank_by: str = "self_confidence",
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's label issues and label-quality scores.

    Args:
        labels: int (N,) given labels; pred_probs: float (N, K) out-of-fold probabilities.

    Returns:
        is_issue: bool (N,); quality: float (N,) in [0, 1], lower = more likely mislabelled.
    """
    is_issue = find_label_issues(
        labels, pred_probs, filter_by=filter_by, frac_noise=frac_noise, n_jobs=n_jobs
    )
    quality = get_label_quality_scores(labels, pred_probs, method=rank_by)
    return np.asarray(is_issue, dtype=bool), quality


def apply_policy(
    labels: np.ndarray,
    suggested: np.ndarray,
    is_issue: np.ndarray,
    quality: np.ndarray,
    *,
    policy: str,
    max_fraction: float = 0.2,
    min_per_class: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `policy` to the issues, within the per-class guards.

    For `drop` and `relabel`, each class k (by given label, n_k examples) loses at most
    min(floor(max_fraction * n_k), n_k - min_per_class) examples, the lowest `quality` first;
    issues over that cap, and an issue whose suggested label equals its given one under
    `relabel`, keep their label as `flagged`.

    Args:
        labels, suggested: int (N,) given and suggested (argmax of pred_probs) labels.
        is_issue: bool (N,); quality: float (N,).

    Returns:
        new_labels: int (N,) labels after the policy (the suggested label where relabelled).
        actions: str (N,) one of kept, flagged, dropped, relabeled.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {list(POLICIES)}")
    actions = np.where(is_issue, "flagged", "kept").astype(object)
    new_labels = labels.copy()
    if policy == "flag":
        return new_labels, actions
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        candidates = members[is_issue[members]]
        if policy == "relabel":
            candidates = candidates[suggested[candidates] != k]
        # 1e-9: 0.2 * 10 must give 2, not 1.9999.
        cap = min(int(max_fraction * len(members) + 1e-9), max(0, len(members) - min_per_class))
        chosen = candidates[np.argsort(quality[candidates], kind="stable")[:cap]]
        actions[chosen] = "dropped" if policy == "drop" else "relabeled"
        if policy == "relabel":
            new_labels[chosen] = suggested[chosen]
    return new_labels, actions


def read_agreement_labels(classes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """data/agreement/labels.csv and its labels as int (N,) indices into `classes`."""
    path = stage_paths("agreement").data / "labels.csv"
    table = pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False)
    for col in ("id", "label"):
        if col not in table:
            raise ValueError(f"{path}: no '{col}' column; expected id,label,n_ratings,support")
    if table["id"].duplicated().any():
        row = int(np.flatnonzero(table["id"].duplicated())[0])
        raise ValueError(f"{path} line {row + 2}: id {table['id'][row]!r} appears twice")
    return table, data.encode_labels(table["label"], classes, source=str(path))


def read_options(cfg: dict) -> dict:
    """Validated `params.yaml[clean]` with defaults."""
    opt = {"section": STAGE}
    return {
        "policy": choice(cfg, "policy", POLICIES, **opt),
        "model": choice({"model": MODELS[0], **cfg}, "model", MODELS, **opt),
        "filter_by": choice({"filter_by": FILTERS[0], **cfg}, "filter_by", FILTERS, **opt),
        "rank_by": choice({"rank_by": RANKERS[0], **cfg}, "rank_by", RANKERS, **opt),
        "folds": number(cfg, "folds", 5, lo=2, integer=True, **opt),
        "frac_noise": number(cfg, "frac_noise", 1.0, lo=1e-6, hi=1.0, **opt),
        "max_fraction": number(cfg, "max_fraction", 0.2, lo=0.0, hi=1.0, **opt),
        "min_per_class": number(cfg, "min_per_class", 5, lo=0, integer=True, **opt),
        "pca": number(cfg, "pca_components", 64, lo=1, integer=True, optional=True, **opt),
        "n_jobs": number(cfg, "n_jobs", 2, lo=-1, integer=True, optional=True, **opt),
        "seed": number(cfg, "seed", 0, integer=True, **opt),
    }


def main() -> None:
    o = read_options(load_params(STAGE))
    classes = data.load_classes()
    manifest = data.load_manifest()
    table, given_all = read_agreement_labels(classes)
    source = str(stage_paths("agreement").data / "labels.csv")
    rows = data.rows_of(table["id"], manifest, source=source)
    x = np.asarray(data.load_images()[rows], dtype=np.float32).reshape(len(rows), -1) / 255.0
    # Work on the classes present: cleanlab needs an example of every pred_probs column.
    present, given = np.unique(given_all, return_inverse=True)
    names = np.array(classes, dtype=object)
    log.info("%d examples x %d features, %d classes; %s", *x.shape, len(present), o["model"])

    start = time.perf_counter()
    if len(present) < 2:
        notes = ["fewer than 2 classes: no label issues can be found"]
        probs, folds_used = np.ones((len(given), 1)), 0
        is_issue, quality = np.zeros(len(given), bool), np.ones(len(given))
    else:
        probs, folds_used, notes = out_of_fold_probs(
            x, given, model=o["model"], folds=o["folds"], pca_components=o["pca"],
            seed=o["seed"], n_jobs=o["n_jobs"], names=list(names[present]),
        )  # fmt: skip
        is_issue, quality = find_issues(
            given, probs, filter_by=o["filter_by"], frac_noise=o["frac_noise"],
            rank_by=o["rank_by"], n_jobs=o["n_jobs"],
        )  # fmt: skip
    seconds = time.perf_counter() - start
    suggested = present[probs.argmax(axis=1)]
    new_labels, actions = apply_policy(
        given_all, suggested, is_issue, quality,
        policy=o["policy"], max_fraction=o["max_fraction"], min_per_class=o["min_per_class"],
    )  # fmt: skip
    for note in notes:
        log.warning(note)

    result = pd.DataFrame({
        "id": table["id"], "label": names[new_labels], "given_label": table["label"],
        "is_issue": is_issue, "action": actions,
        "label_quality": quality.astype(np.float64).round(6),
        "suggested_label": names[suggested],
        "true_label": manifest["true_label"].to_numpy(dtype=str)[rows],
    })  # fmt: skip
    settings = {
        "policy": o["policy"], "model": o["model"], "folds_used": folds_used,
        "filter_by": o["filter_by"], "seconds": round(seconds, 2),
        "oof_accuracy": round(float(np.mean(suggested == given_all)), 4),
    }  # fmt: skip
    metrics = write_outputs(result, classes, settings=settings, notes=notes)
    log.info("%d issues, policy %s, in %.1fs; F1 %s", is_issue.sum(), o["policy"], seconds,
             metrics.get("f1", "n/a (no true labels)"))  # fmt: skip


if __name__ == "__main__":
    main()
