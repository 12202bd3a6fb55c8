"""Two demo nights with plain `dvc repro`: night 1's test split survives night 2, none moves, and
the relabel queue shrinks by the items the reviewers settled (issue 11's acceptance test)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from edge_pipeline.quality.demo_nights import advance_night
from tests.test_pipeline import dvc, make_repo

TINY = {"demo": {"max_per_class": 24}, "clean": {"folds": 3}}


def read(root: Path) -> dict:
    return {
        "assign": pd.read_csv(root / "data/split/split.csv", dtype=str).set_index("id")["split"],
        "queue": pd.read_csv(root / "reports/agreement/relabel_queue.csv", dtype=str),
        "labels": pd.read_csv(root / "data/clean/labels.csv", dtype=str).set_index("id"),
        **{
            s: json.loads((root / f"metrics/{s}.json").read_text())
            for s in ("demo", "split", "agreement", "clean")
        },  # fmt: skip
    }


@pytest.mark.slow
def test_two_nights_with_dvc_repro(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo", TINY)
    dvc(root, "repro", "clean")
    one = read(root)
    assert one["split"]["against_previous"]["previous"] is False
    assert one["agreement"]["reviews_found"] is False

    assert advance_night(root / "params.yaml") == 2
    out = dvc(root, "repro", "clean")
    assert "Running stage 'split'" in out
    two = read(root)

    # The split: every surviving night-1 image where it was; the report says so.
    history = two["split"]["against_previous"]
    surviving = one["assign"].index.intersection(two["assign"].index)
    assert len(surviving) == len(one["assign"])  # the demo only adds images
    assert (two["assign"][surviving] == one["assign"][surviving]).all() and history["moved"] == 0
    assert history["previous_test_still_test"] == history["previous_test_surviving"] > 0
    assert history["n_new"] == len(two["assign"]) - len(one["assign"]) > 0
    previous = pd.read_csv(root / "data/split/previous_split.csv", dtype=str)
    assert previous.set_index("id")["split"].equals(one["assign"])

    # The round trip: the reviewers' export settled part of night 1's queue.
    a = two["agreement"]
    assert a["reviews_found"] and a["n_settled"] > 0 and not a["review_warnings"]
    settled = set(two["labels"].index[two["labels"]["reviewed"] == "True"])
    assert len(settled) == a["n_settled"] and settled <= set(one["queue"]["id"])
    assert not settled & set(two["queue"]["id"])
    assert a["n_settled_from_queue"] == a["n_settled"]
    assert a["n_relabel"] == a["n_relabel_before_reviews"] - a["n_settled"]
    old_open = set(one["queue"]["id"]) - settled
    assert set(two["queue"]["id"]) & set(one["queue"]["id"]) == old_open  # shrank by the settled

    # Clean never trims the test split; the test metrics' label basis is stated.
    labels = two["labels"]
    test = labels["split"] == "test"
    assert set(labels.index[test]) == set(two["assign"].index[two["assign"] == "test"])
    assert not (labels.loc[test, "action"] == "dropped").any()
    t = two["clean"]["test_labels"]
    assert t["n"] == int(test.sum()) and t["reviewed"] + t["unreviewed"] == t["n"]
    assert t["reviewed"] == int((labels.loc[test, "reviewed"] == "True").sum())
