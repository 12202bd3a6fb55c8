"""clean: cleanlab finds injected noise; the policies and per-class guards do what they say.

The image model, the annotators' evidence and the confirm rule: test_clean_evidence.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_pipeline.config.quality import Clean
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.quality import cleaning
from edge_pipeline.quality.clean_outputs import LABEL_COLUMNS, score_issues
from tasks import clean

MODELS = ("logistic_regression", "random_forest", "hist_gradient_boosting", "knn")


def blobs(n_per_class: int = 60, noise: float = 0.1, seed: int = 0):
    """3 well-separated Gaussian blobs rendered as uint8 (N, 4, 4, 1) images; 10% labels flipped.

    Returns images, true labels, noisy labels.
    """
    rng = np.random.default_rng(seed)
    centres = np.array([[40.0] * 16, [128.0] * 16, [215.0] * 16])
    centres[1, ::2] = 60.0  # a pattern, not only a brightness level
    y = np.repeat(np.arange(3), n_per_class)
    x = np.clip(centres[y] + rng.normal(0, 12, (len(y), 16)), 0, 255).round().astype(np.uint8)
    noisy = y.copy()
    flip = rng.choice(len(y), int(noise * len(y)), replace=False)
    noisy[flip] = (y[flip] + rng.integers(1, 3, len(flip))) % 3
    return x.reshape(-1, 4, 4, 1), y, noisy


# Recall floors: the default model finds almost all; trees/kNN fit some flipped labels.
RECALL_FLOOR = {"logistic_regression": 0.9, "hist_gradient_boosting": 0.8}


@pytest.mark.parametrize("model", MODELS)
def test_cleanlab_recovers_injected_noise(model: str) -> None:
    x, true, noisy = blobs()
    probs, folds, notes = cleaning.out_of_fold_probs(
        x.reshape(len(x), -1) / 255.0, noisy, p=Clean(model=model, folds=5, n_jobs=1)
    )
    assert probs.shape == (180, 3) and folds == 5 and notes == []
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    is_issue, quality = cleaning.find_issues(noisy, probs, p=Clean(n_jobs=1))
    score = score_issues(is_issue, noisy, true, probs.argmax(axis=1))
    assert score["n_label_errors"] == 18
    assert score["precision"] >= 0.9 and score["recall"] >= RECALL_FLOOR.get(model, 0.7), score
    # Issues rank below clean labels.
    assert np.median(quality[is_issue]) < np.median(quality[~is_issue])


ONE_JOB = Clean(folds=5, n_jobs=1)


def test_small_classes_lower_the_folds_with_a_warning() -> None:
    x, _, noisy = blobs(n_per_class=20, noise=0.0)
    keep = np.r_[0:20, 20:40, 40:43]  # class 2 has 3 examples
    probs, folds, notes = cleaning.out_of_fold_probs(
        x[keep].reshape(len(keep), -1) / 255.0, noisy[keep], p=ONE_JOB, names=["a", "b", "c"]
    )
    assert folds == 3 and probs.shape == (43, 3)
    assert notes == ["folds lowered from 5 to 3: classes ['c'] have < 5 examples"]

    single = np.r_[0:20, 20:40, 40]  # a 1-example class never crashes the stage
    probs, folds, notes = cleaning.out_of_fold_probs(
        x[single].reshape(len(single), -1) / 255.0, noisy[single], p=ONE_JOB
    )
    assert folds == 5 and probs.shape == (41, 3)  # a lone example cannot lower K usefully
    assert len(notes) == 1 and notes[0].startswith("classes ['2'] have a single example")


def policy_case():
    """Class 0: 10 examples, 5 issues; class 1: 6 examples, 3 issues (indices 10..15)."""
    labels = np.array([0] * 10 + [1] * 6)
    is_issue = np.zeros(16, bool)
    is_issue[[1, 3, 5, 7, 9, 10, 11, 12]] = True
    quality = np.linspace(0.9, 0.1, 16)  # later rows are more suspicious
    quality[3] = 0.01  # the most suspicious of class 0
    suggested = np.where(is_issue, 1 - labels, labels)
    suggested[9] = 0  # an issue whose suggested label equals its given one
    return labels, suggested, is_issue, quality


def test_drop_respects_max_fraction_and_min_per_class() -> None:
    labels, suggested, is_issue, quality = policy_case()
    new, actions = cleaning.apply_policy(
        labels, suggested, is_issue, quality, policy="drop", max_fraction=0.2, min_per_class=5
    )
    # class 0: cap floor(0.2 * 10) = 2, the two lowest qualities among its issues (3, then 9)
    assert np.flatnonzero(actions == "dropped").tolist() == [3, 9, 12]
    # class 1: 0.2 * 6 -> 1 and 6 - 5 = 1, so only its most suspicious issue (12)
    assert np.flatnonzero(actions == "flagged").tolist() == [1, 5, 7, 10, 11]
    assert (new == labels).all() and (actions[~is_issue] == "kept").all()


def test_relabel_moves_to_suggested_within_caps() -> None:
    labels, suggested, is_issue, quality = policy_case()
    new, actions = cleaning.apply_policy(
        labels, suggested, is_issue, quality, policy="relabel", max_fraction=0.5, min_per_class=0
    )
    # row 9's suggestion is its own label, so it stays flagged; class 0 cap is 5
    assert np.flatnonzero(actions == "relabeled").tolist() == [1, 3, 5, 7, 10, 11, 12]
    assert actions[9] == "flagged"
    assert new[[1, 3, 10]].tolist() == [1, 1, 0] and new[9] == 0


def test_protected_examples_are_never_dropped_or_relabelled() -> None:
    labels, suggested, is_issue, quality = policy_case()
    protected = np.zeros(len(labels), bool)
    protected[[3, 12]] = True  # e.g. test images, or labels a reviewer settled
    for policy, acted in (("drop", "dropped"), ("relabel", "relabeled")):
        new, actions = cleaning.apply_policy(
            labels, suggested, is_issue, quality, policy=policy, max_fraction=1.0,
            min_per_class=0, protected=protected,
        )  # fmt: skip
        assert actions[[3, 12]].tolist() == ["flagged", "flagged"]
        assert (new[protected] == labels[protected]).all()
        assert (actions[is_issue & ~protected] != "flagged").sum() > 0, policy
        assert acted in set(actions)


def test_flag_changes_nothing_and_no_guard_means_all_issues() -> None:
    labels, suggested, is_issue, quality = policy_case()
    new, actions = cleaning.apply_policy(
        labels, suggested, is_issue, quality, policy="flag", max_fraction=0.2, min_per_class=5
    )
    assert (new == labels).all() and (actions == np.where(is_issue, "flagged", "kept")).all()
    _, actions = cleaning.apply_policy(
        labels, suggested, is_issue, quality, policy="drop", max_fraction=1.0, min_per_class=0
    )
    assert (actions == np.where(is_issue, "dropped", "kept")).all()


def test_score_issues_uses_real_errors() -> None:
    given = np.array(["a", "a", "b", "b", "b"])
    true = np.array(["a", "b", "b", "a", "b"])  # rows 1 and 3 are wrong
    is_issue = np.array([False, True, False, False, True])
    score = score_issues(is_issue, given, true, np.array(["a", "b", "b", "b", "a"]))
    assert (score["precision"], score["recall"], score["f1"]) == (0.5, 0.5, 0.5)
    assert score["suggested_label_accuracy"] == 1.0 and score["noise_rate"] == 0.4


def write_agreement(root: Path, noisy_every: int = 8) -> pd.DataFrame:
    """data/agreement/labels.csv from the manifest, every `noisy_every`-th label shifted by one,
    and data/ingest/annotations.csv: annotators a and b give the consensus, c the true label; a
    and b also slip alone (a wrong label) on 20% of the other images."""
    manifest = pd.read_csv(root / "data/ingest/manifest.csv", dtype=str)
    true = manifest["true_label"].astype(int).to_numpy()
    labels = true.copy()
    labels[::noisy_every] = (labels[::noisy_every] + 1) % 3
    table = pd.DataFrame(
        {"id": manifest["id"], "label": labels.astype(str), "n_ratings": 3, "support": 0.6667}
    )
    (root / "data/agreement").mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "data/agreement/labels.csv", index=False)
    rng = np.random.default_rng(0)
    slips = [(rng.random(len(true)) < 0.2) & (labels == true) for _ in range(2)]
    votes = [np.where(slip, (true + rng.integers(1, 3, len(true))) % 3, labels) for slip in slips]
    ratings = [
        pd.DataFrame({"id": manifest["id"], "annotator": name, "label": given.astype(str)})
        for name, given in [("a", votes[0]), ("b", votes[1]), ("c", true)]
    ]
    pd.concat(ratings).to_csv(root / "data/ingest/annotations.csv", index=False)
    return table


@pytest.mark.parametrize("policy", ["drop", "relabel", "flag"])
def test_main_writes_the_contract(prepared_workspace, policy: str) -> None:
    clean_params = {"policy": policy, "n_jobs": 1, "folds": 4, "min_per_class": 5}
    info = prepared_workspace(n_classes=3, per_class=40, params={"clean": clean_params})
    write_agreement(info["root"])
    clean.main()

    labels = pd.read_csv("data/clean/labels.csv", dtype={"label": str, "given_label": str})
    assert labels.columns.tolist() == LABEL_COLUMNS and len(labels) == 120
    metrics = json.loads(Path("metrics/clean.json").read_text())
    assert metrics["n_label_errors"] == 15 and metrics["policy"] == policy
    assert metrics["f1"] >= 0.75, metrics  # digits are easy: the demo's target holds here
    assert metrics["n_issues"] == int(labels["is_issue"].sum())
    acted = {"drop": "dropped", "relabel": "relabeled", "flag": "flagged"}[policy]
    assert metrics["actions"][acted] == int((labels["action"] == acted).sum()) > 0
    for name, counts in metrics["per_class"].items():
        if policy != "flag":  # the guard: at most floor(0.2 * n) per class
            assert counts[acted] <= int(0.2 * counts["examples"]), name
    changed = labels["label"] != labels["given_label"]
    assert (changed == (labels["action"] == "relabeled")).all()
    if policy != "flag":  # only what the annotators' consensus also rejects, and mostly right
        assert metrics["n_confirmed"] <= metrics["n_issues"]
        assert metrics["acted"]["precision"] >= 0.9, metrics["acted"]
        # recall over the errors the policy may touch: those outside the test split
        true = pd.read_csv("data/ingest/manifest.csv", dtype=str).set_index("id")["true_label"]
        wrong = labels["given_label"] != labels["id"].map(true)
        assert metrics["acted"]["n_actable_errors"] == int(
            (wrong & (labels["split"] != "test")).sum()
        )
        assert metrics["acted"]["recall_actable"] >= metrics["acted"]["recall"] > 0
    if policy == "relabel":  # to the annotator c's (true) label
        assert metrics["acted"]["relabel_accuracy"] == 1.0

    # The test split is never trimmed: its suspects go to a review queue (a Label Studio import).
    split = pd.read_csv("data/split/split.csv", dtype=str).set_index("id")["split"]
    assert (labels["split"] == labels["id"].map(split)).all()
    test = labels["split"] == "test"
    assert labels.loc[test, "action"].isin(["kept", "flagged"]).all()
    assert (labels.loc[test, "label"] == labels.loc[test, "given_label"]).all()
    queue = pd.read_csv("reports/clean/relabel_queue.csv", dtype=str)
    assert set(queue["id"]) == set(labels.loc[test & labels["is_issue"], "id"]) and len(queue) > 0
    assert (queue["reason"] == "suspected label error (test)").all()
    tasks = json.loads(Path("reports/clean/relabel_queue.json").read_text())
    assert [t["data"]["item_id"] for t in tasks] == queue["id"].tolist()
    assert metrics["test_labels"] == {
        "n": int(test.sum()), "reviewed": 0, "unreviewed": int(test.sum()),
        "suspected_queued": len(queue), "dropped": 0,
    }  # fmt: skip

    issues = pd.read_csv("reports/clean/label_issues.csv")
    assert (
        len(issues) == metrics["n_issues"] and issues["confirmed"].sum() == metrics["n_confirmed"]
    )
    assert issues["label_quality"].is_monotonic_increasing
    assert "F1" in Path("reports/clean/report.md").read_text()
    counts = pd.read_csv("plots/clean/issues_per_class.csv")
    assert counts["issues"].sum() == metrics["n_issues"]
    assert Path("plots/clean/issues_per_class.png").read_bytes()[:4] == b"\x89PNG"


def test_main_rejects_bad_input(prepared_workspace) -> None:
    info = prepared_workspace(n_classes=3, per_class=10, params={"clean": {"n_jobs": 1}})
    table = write_agreement(info["root"])
    table.loc[4, "label"] = "7"
    table.to_csv("data/agreement/labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels\.csv line 6: label '7' is not in classes"):
        clean.main()

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["clean"]["policy"] = "delete"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"clean\.policy='delete': Input should be 'drop'"):
        clean.main()


def test_model_settings_come_from_the_schema() -> None:
    p = Clean(model="knn", models={"knn": {"n_neighbors": 3, "weights": "uniform"}})
    knn = cleaning.make_classifier(p, n_features=16, n_train=50).steps[-1][1]
    assert (knn.n_neighbors, knn.weights) == (3, "uniform")
    pixel = Clean(model="logistic_regression")
    lr = cleaning.make_classifier(pixel, n_features=16, n_train=50).steps[-1][1]
    assert (lr.C, lr.max_iter) == (1.0, 500)  # params.yaml clean.models.logistic_regression
    lr = cleaning.make_classifier(Clean(), n_features=16, n_train=50).steps[-1][1]
    assert (lr.C, lr.max_iter) == (0.01, 1000)  # params.yaml clean.models.conv_kmeans
