"""The relabel round trip: a Label Studio JSON export read back by agreement settles its images."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from edge_pipeline.core.errors import InputError
from edge_pipeline.quality import reviews as rv
from tasks import agreement

CLASSES = ["cat", "dog", "fox"]
STAMP = "2024-05-02T09:14:03.512331Z"


def annotation(aid: int, task: int, label: str | None, *, by: object, cancelled: bool = False):
    """One annotation as Label Studio's JSON export writes it (documented task format)."""
    result = [] if label is None else [{
        "id": f"r{aid}", "from_name": "label", "to_name": "image", "type": "choices",
        "origin": "manual", "value": {"choices": [label]},
    }]  # fmt: skip
    return {
        "id": aid, "completed_by": by, "result": result, "was_cancelled": cancelled,
        "ground_truth": False, "created_at": STAMP, "updated_at": STAMP, "lead_time": 4.288,
        "result_count": 0, "task": task, "project": 3, "parent_prediction": None,
    }  # fmt: skip


def task(tid: int, item: str | None, annotations: list[dict]) -> dict:
    data = {"image": f"/data/local-files/?d=data/src/{item}"}
    if item is not None:
        data["item_id"] = item
    return {
        "id": tid, "data": data, "annotations": annotations, "predictions": [],
        "meta": {"reason": "tie"}, "created_at": STAMP, "updated_at": STAMP, "project": 3,
        "inner_id": tid, "total_annotations": len(annotations), "cancelled_annotations": 0,
    }  # fmt: skip


ANNA = {"id": 1, "email": "anna@lab.example", "first_name": "Anna", "last_name": ""}
EXPORT = [
    task(11, "img/000.png", [annotation(1, 11, "fox", by=ANNA)]),  # settles, disagrees
    task(12, "img/001.png", [annotation(2, 12, "cat", by=7)]),  # settles, agrees; user id only
    task(13, "img/002.png", [annotation(3, 13, "dog", by=ANNA, cancelled=True)]),  # skipped
    task(14, "img/999.png", [annotation(4, 14, "dog", by=ANNA)]),  # not an ingested image
    task(15, "img/003.png", [annotation(5, 15, "wolf", by=ANNA)]),  # not a class
    task(16, "img/004.png", [annotation(6, 16, "dog", by=ANNA),
                             annotation(7, 16, "cat", by=7)]),  # reviewers disagree
    task(17, "img/005.png", [annotation(8, 17, "dog", by=ANNA),
                             annotation(9, 17, "dog", by=7)]),  # two agree: settled
    task(18, "img/006.png", [annotation(10, 18, None, by=ANNA)]),  # no choice made
    task(19, None, [annotation(11, 19, "cat", by=ANNA)]),  # another project's task
]  # fmt: skip


def test_read_reviews_settles_and_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(EXPORT, indent=2))
    ids = {f"img/{i:03d}.png" for i in range(10)}
    r = rv.read_reviews(path, ids=ids, classes=CLASSES, from_name="label")
    assert r.label == {"img/000.png": "fox", "img/001.png": "cat", "img/005.png": "dog"}
    assert r.reviewer["img/000.png"] == "anna@lab.example" and r.reviewer["img/001.png"] == "user 7"
    assert r.reviewer["img/005.png"] == "anna@lab.example; user 7"
    assert r.conflicts == {"img/004.png": "anna@lab.example=dog; user 7=cat"}
    c = r.counts
    assert (c["tasks"], c["settled"], c["skipped"], c["unknown_task"]) == (9, 3, 1, 2)
    assert (c["unknown_label"], c["reviewers_disagree"], c["empty"]) == (1, 1, 1)
    text = "\n".join(r.notes)
    assert "task 14: item 'img/999.png' is not an ingested image" in text
    assert "task 19: no data.item_id" in text
    assert "task 15 (img/003.png) by anna@lab.example" in text
    assert "skipped or cancelled" in text and "reviewers disagree" in text


@pytest.mark.parametrize("content", ["{not json", '{"tasks": []}', "[1, 2]"])
def test_a_file_that_is_not_an_export_is_an_input_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(InputError, match=r"export\.json: .*(JSON|list of tasks)"):
        rv.read_reviews(path, ids=set(), classes=CLASSES, from_name="label")


def write_workspace(root: Path, votes: list[list[str]], *, reviews: list | None) -> None:
    """data/ingest from per-image votes (3 annotators), src/reviews.json, params.yaml."""
    ingest = root / "data/ingest"
    ingest.mkdir(parents=True)
    ids = [f"img/{i:03d}.png" for i in range(len(votes))]
    rows = [(i, f"ann{a}", lab) for i, v in zip(ids, votes, strict=True) for a, lab in enumerate(v)]
    pd.DataFrame(rows, columns=["id", "annotator", "label"]).to_csv(
        ingest / "annotations.csv", index=False
    )
    pd.DataFrame({"id": ids, "path": [f"data/src/{i}" for i in ids], "label": "",
                  "true_label": ""}).to_csv(ingest / "manifest.csv", index=False)  # fmt: skip
    (ingest / "classes.json").write_text(json.dumps(CLASSES))
    (root / "src").mkdir()
    if reviews is not None:
        (root / "src/reviews.json").write_text(json.dumps(reviews))
    paths = {"data": "data", "reports": "reports", "metrics": "metrics", "plots": "plots"}
    params = {"paths": paths, "ingest": {"source": "src"}, "agreement": {"reviews": "reviews.json"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


# img/000..006: ties (queued) except 001 and 005 (clear majority); 007-009 unanimous.
VOTES = [
    ["cat", "dog", "fox"], ["cat", "cat", "dog"], ["dog", "fox", "cat"], ["fox", "cat", "dog"],
    ["dog", "cat", "fox"], ["dog", "dog", "cat"], ["cat", "fox", "dog"],
    ["cat", "cat", "cat"], ["dog", "dog", "dog"], ["fox", "fox", "fox"],
]  # fmt: skip


def run(root: Path, monkeypatch: pytest.MonkeyPatch, reviews: list | None):
    root.mkdir()
    monkeypatch.chdir(root)
    write_workspace(root, VOTES, reviews=reviews)
    agreement.main()
    labels = pd.read_csv("data/agreement/labels.csv", dtype=str, keep_default_na=False)
    queue = pd.read_csv("reports/agreement/relabel_queue.csv", dtype=str)
    metrics = json.loads(Path("metrics/agreement.json").read_text())
    return labels.set_index("id"), queue, metrics


def test_agreement_settles_reviewed_items_and_shrinks_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, queue0, m0 = run(tmp_path / "before", monkeypatch, reviews=None)
    labels, queue, m = run(tmp_path / "after", monkeypatch, reviews=EXPORT)
    assert m0["reviews_found"] is False and m0["n_settled"] == 0
    assert sorted(queue0["id"]) == [f"img/{i:03d}.png" for i in (0, 2, 3, 4, 6)]
    # 000 settled (was queued), 001 and 005 settled (not queued); 004 stays (reviewers disagree)
    assert sorted(queue["id"]) == ["img/002.png", "img/003.png", "img/004.png", "img/006.png"]
    assert queue.set_index("id").loc["img/004.png", "reason"] == "tie"
    assert m["n_relabel"] == m0["n_relabel"] - m["n_settled_from_queue"] == 4
    assert (m["n_settled"], m["n_settled_from_queue"]) == (3, 1)
    assert m["settled_by"] == {"anna@lab.example": 1, "anna@lab.example; user 7": 1, "user 7": 1}
    assert labels.loc["img/000.png", "label"] == "fox" and labels.loc["img/000.png", "reviewed"]
    assert labels.loc["img/000.png", "reviewed"] == "True"
    assert labels.loc["img/007.png", "reviewed"] == "False"
    # 000: consensus (a tie) was not fox; 001 cat = consensus; 005 dog = consensus
    assert m["n_reviewer_disagreed"] == 1 and m["reviewer_disagreement_rate"] == 0.3333
    assert m["review_counts"]["unknown_task"] == 2 and len(m["review_warnings"]) == 5
    report = Path("reports/agreement/report.md").read_text()
    assert "3 images settled (1 of the 5 queued)" in report
    assert "Warning: src/reviews.json" in report


def test_a_review_of_an_unrated_image_gives_it_a_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    export = [task(1, "img/010.png", [annotation(1, 1, "cat", by=2)])]
    write_workspace(tmp_path, VOTES, reviews=export)
    manifest = pd.read_csv("data/ingest/manifest.csv")
    extra = {"id": "img/010.png", "path": "data/src/img/010.png", "label": "", "true_label": ""}
    pd.concat([manifest, pd.DataFrame([extra])]).to_csv("data/ingest/manifest.csv", index=False)
    agreement.main()
    labels = pd.read_csv("data/agreement/labels.csv", dtype=str).set_index("id")
    assert labels.loc["img/010.png", ["label", "n_ratings"]].tolist() == ["cat", "0"]
    queue = pd.read_csv("reports/agreement/relabel_queue.csv", dtype=str)
    assert "img/010.png" not in set(queue["id"])  # unrated, but settled by the review
    metrics = json.loads(Path("metrics/agreement.json").read_text())
    assert metrics["n_items_unrated"] == 1 and metrics["n_settled_from_queue"] == 1
