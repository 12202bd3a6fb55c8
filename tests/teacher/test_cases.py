"""benchmarks/cases.py: the generated real-size sources are seeded, flawed like the demo, and
readable by ingest's contract (images/, annotations.csv, truth.csv)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.cases import ANNOTATORS, CASES, CORRUPT, make_case


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


def test_a_small_rgb_case_is_deterministic_long_tailed_and_flawed(tmp_path: Path):
    info = make_case("rgb96", tmp_path / "a", per_class=8, size=32)
    make_case("rgb96", tmp_path / "b", per_class=8, size=32)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    truth = pd.read_csv(tmp_path / "a" / "truth.csv")
    ann = pd.read_csv(tmp_path / "a" / "annotations.csv")
    clean = ~truth["flaw"].isin(list(CORRUPT))  # label_noise rows are clean images
    assert info["images"] == sum(info["per_class"]) == clean.sum()
    assert info["per_class"][0] > info["per_class"][5]  # long tail
    assert truth["flaw"].value_counts().reindex(list(CORRUPT)).tolist() == list(CORRUPT.values())
    assert len(ann) == len(truth) * len(ANNOTATORS)
    assert set(ann["annotator"]) == set(ANNOTATORS)
    first = Image.open(tmp_path / "a" / truth["image"].iloc[0])
    assert first.mode == "RGB" and first.size == (32, 32)


def test_the_cases_are_real_size():
    assert CASES["gray28"].size == 28 and CASES["gray28"].channels == 1
    assert sum(CASES["gray28"].counts) >= 3500
    assert CASES["rgb96"].size == 96 and CASES["rgb96"].channels == 3
    assert 1900 <= sum(CASES["rgb96"].counts) <= 2200
    assert np.argmax(CASES["gray28"].counts) == 0
