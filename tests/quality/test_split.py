"""split: stratified proportions hold, tiny classes stay in train, the test split is frozen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_pipeline.core.errors import ConfigError
from edge_pipeline.quality import splitting
from tasks import split

FRACTIONS = {"val_fraction": 0.15, "test_fraction": 0.2}


def labels_of(counts: dict[str, int]) -> np.ndarray:
    return np.concatenate([[c] * n for c, n in counts.items()])


def test_stratified_proportions_hold() -> None:
    counts = {"a": 400, "b": 150, "c": 60, "d": 20}
    labels = labels_of(counts)
    assign, notes = splitting.stratified_split(labels, **FRACTIONS, seed=0)
    assert notes == []
    table = pd.crosstab(labels, assign)
    for c, n in counts.items():  # within one example of the exact share, per class and split
        assert abs(table.loc[c, "test"] - 0.2 * n) <= 1, c
        assert abs(table.loc[c, "val"] - 0.15 * n) <= 1, c
    sizes = table.sum()
    assert abs(sizes["test"] - 126) <= 2 and abs(sizes["val"] - 94.5) <= 2.5
    assert splitting.max_proportion_gap(table) < 0.02


def test_deterministic_and_test_ignores_val_fraction() -> None:
    labels = labels_of({"a": 90, "b": 40, "c": 12})
    first, _ = splitting.stratified_split(labels, **FRACTIONS, seed=3)
    again, _ = splitting.stratified_split(labels, **FRACTIONS, seed=3)
    other_val, _ = splitting.stratified_split(labels, val_fraction=0.3, test_fraction=0.2, seed=3)
    other_seed, _ = splitting.stratified_split(labels, **FRACTIONS, seed=4)
    assert (first == again).all()
    assert ((first == "test") == (other_val == "test")).all()
    assert ((first == "test") != (other_seed == "test")).any()


def test_too_small_classes_stay_in_train_with_a_warning() -> None:
    labels = labels_of({"big": 50, "pair": 2, "one": 1, "three": 3})
    assign, notes = splitting.stratified_split(labels, **FRACTIONS, seed=0)
    assert (assign[labels == "pair"] == "train").all() and (
        assign[labels == "one"] == "train"
    ).all()
    assert "class 'pair' has 2 example(s): too few for val and test, all kept in train" in notes
    assert any(n.startswith("class 'one' has 1 example(s)") for n in notes)
    # 3 examples: split by the rounding (here 2 train, 1 test) and the missing split is named
    assert sorted(assign[labels == "three"]) == ["test", "train", "train"]
    assert notes[-1] == "class 'three' has 3 examples: none in val"


def test_max_proportion_gap() -> None:
    table = pd.DataFrame({"train": [80, 20], "val": [10, 10]}, index=["a", "b"])
    assert splitting.max_proportion_gap(table) == pytest.approx(0.3)  # 0.8 vs 0.5


def write_clean(root: Path, labels: np.ndarray, dropped: set[int], *, shuffle: int | None = None):
    ids = [f"img/{i:04d}.png" for i in range(len(labels))]
    actions = ["dropped" if i in dropped else "kept" for i in range(len(labels))]
    table = pd.DataFrame(
        {"id": ids, "label": labels, "given_label": labels, "is_issue": False,
         "action": actions, "label_quality": 0.9}
    )  # fmt: skip
    if shuffle is not None:
        table = table.sample(frac=1.0, random_state=shuffle)
    (root / "data/clean").mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "data/clean/labels.csv", index=False)


def run_main(root: Path) -> pd.DataFrame:
    split.main()
    return pd.read_csv(root / "data/split/split.csv", dtype=str)


def test_main_excludes_dropped_and_freezes_test(prepared_workspace) -> None:
    root = prepared_workspace(n_classes=2, per_class=10)["root"]
    labels = labels_of({"cat": 60, "dog": 30, "eel": 2})
    write_clean(root, labels, dropped={0, 61})
    first = run_main(root)

    assert first.columns.tolist() == ["id", "label", "split"] and len(first) == 90
    assert not {"img/0000.png", "img/0061.png"} & set(first["id"])
    assert (first.loc[first["label"] == "eel", "split"] == "train").all()
    metrics = json.loads(Path("metrics/split.json").read_text())
    assert metrics["n"] == 90 and metrics["n_test"] == int((first["split"] == "test").sum())
    assert metrics["per_class"]["eel"] == {"train": 2, "val": 0, "test": 0}
    assert len(metrics["warnings"]) == 1 and metrics["max_class_share_gap"] > 0
    test_csv = pd.read_csv("plots/split/test.csv")
    assert test_csv.columns.tolist() == ["class", "count", "fraction"]
    assert Path("plots/split/class_distribution.png").read_bytes()[:4] == b"\x89PNG"

    # Same labels in another row order, and another val fraction: the same test split.
    write_clean(root, labels, dropped={0, 61}, shuffle=1)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["split"]["val_fraction"] = 0.25
    Path("params.yaml").write_text(yaml.safe_dump(params))
    second = run_main(root)
    assert set(first.loc[first["split"] == "test", "id"]) == set(
        second.loc[second["split"] == "test", "id"]
    )
    assert (second["split"] == "val").sum() > (first["split"] == "val").sum()


def test_main_rejects_bad_fractions(prepared_workspace) -> None:
    bad = {"val_fraction": 0.5, "test_fraction": 0.5}
    prepared_workspace(n_classes=2, per_class=10, params={"split": bad})
    with pytest.raises(ConfigError, match=r"split\.val_fraction=0\.5 \+ split\.test_fraction=0\.5"):
        split.main()


def test_a_negative_seed_is_a_seed_problem(prepared_workspace) -> None:
    prepared_workspace(n_classes=2, per_class=10, params={"split": {"seed": -5}})
    with pytest.raises(ConfigError, match=r"split\.seed=-5: Input should be greater than or equal"):
        split.main()


def test_a_params_error_exits_78_with_the_key(prepared_workspace) -> None:
    """`python -m tasks.split` maps a ConfigError to EXIT_CONFIG, so the flow does not retry."""
    import os
    import subprocess
    import sys

    from edge_pipeline.core.errors import EXIT_CONFIG

    info = prepared_workspace(n_classes=2, per_class=10, params={"split": {"seed": -5}})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.split"],
        cwd=info["root"], env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "split.seed=-5" in proc.stderr
