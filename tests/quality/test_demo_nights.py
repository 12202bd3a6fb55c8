"""Nights of the demo: night 1 as before, later nights a prefix-preserving growth plus reviews."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edge_pipeline.config.quality import Demo
from edge_pipeline.quality.demo_data import make_demo
from edge_pipeline.quality.demo_nights import advance_night, no_majority
from edge_pipeline.quality.reviews import read_reviews

TINY = {"max_per_class": 12, "bomb_side": 3000}
# sha256 over (path, bytes) of the tiny night-1 tree, as main wrote it before nights existed
NIGHT1_TINY = "4db02d4a592a19907842cc342efb967b59e65a3608f86b20ed8e989235df8161"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[dict[str, bytes], dict]]:
    base = tmp_path_factory.mktemp("nights")
    return {n: (tree(base / str(n)) if (m := make_demo(base / str(n), Demo(night=n, **TINY)))
                else {}, m) for n in (1, 2, 3)}  # fmt: skip


def test_night_one_is_byte_identical_to_the_demo_before_nights(nights) -> None:
    files, metrics = nights[1]
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode())
        h.update(data)
    assert h.hexdigest() == NIGHT1_TINY
    assert "reviews.json" not in files and "night" not in metrics


def test_each_night_keeps_the_previous_ones_and_adds_a_batch(nights) -> None:
    for n in (2, 3):
        before, now = nights[n - 1][0], nights[n][0]
        images = {k: v for k, v in before.items() if k.startswith("images/")}
        assert all(now[k] == v for k, v in images.items())  # no file changed or removed
        new = set(now) - set(before) - {"reviews.json"}
        per_class = json.loads(json.dumps(nights[1][1]["per_class"]))
        expected = sum(round(0.1 * v) for v in per_class.values())  # demo.night_fraction 0.1
        assert len(new) == nights[n][1]["nights"][-1]["new_images"] == expected > 0
        for csv in ("annotations.csv", "truth.csv"):
            assert now[csv].startswith(before[csv])  # rows appended, never rewritten
    stats = nights[3][1]["nights"]
    assert [s["night"] for s in stats] == [2, 3] and all(s["reviewed"] > 0 for s in stats)


def test_reviews_are_a_label_studio_export_of_the_no_majority_images(nights, tmp_path) -> None:
    files, metrics = nights[3]
    export = json.loads(files["reviews.json"])
    night2 = json.loads(nights[2][0]["reviews.json"])
    assert export[: len(night2)] == night2  # cumulative, like a project export
    assert len(export) == sum(s["reviewed"] for s in metrics["nights"])
    path = tmp_path / "reviews.json"
    path.write_bytes(files["reviews.json"])
    ann = pd.read_csv(pd.io.common.BytesIO(files["annotations.csv"]), dtype=str)
    votes = pd.crosstab(ann["image"], ann["label"])
    r = read_reviews(path, ids=set(votes.index), classes=[str(k) for k in range(10)],
                     from_name="label")  # fmt: skip
    assert r.counts["settled"] == len(export) and not r.notes
    reviewed = list(r.label)
    assert no_majority(votes.loc[reviewed].to_numpy()).all()
    true = pd.read_csv(pd.io.common.BytesIO(files["truth.csv"]), dtype=str).set_index("image")
    right = np.mean([r.label[i] == true.loc[i, "label"] for i in reviewed])
    assert right >= 0.9 and set(r.reviewer.values()) == {"reviewer@example.com"}


def test_advance_night_edits_only_the_demo_night(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    text = (Path(__file__).resolve().parents[2] / "params.yaml").read_text()
    params.write_text(text)
    assert advance_night(params) == 2 and advance_night(params) == 3
    after = params.read_text()
    diff = [(a, b) for a, b in zip(text.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(diff) == 1 and diff[0][1].startswith("  night: 3 ")
