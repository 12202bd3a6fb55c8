"""split: hash buckets of each image's content; nothing moves as images arrive or labels change."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_pipeline.core.errors import ConfigError
from edge_pipeline.quality import splitting
from tasks import split

FRACTIONS = {"val_fraction": 0.15, "test_fraction": 0.2}
TARGETS = {"train": 0.65, "val": 0.15, "test": 0.2}


def sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def test_shares_per_class_within_the_stated_tolerance() -> None:
    """3,700 long-tailed images: every class's shares lie within 3 binomial standard errors."""
    sizes = [900, 700, 550, 450, 350, 280, 200, 150, 80, 40]
    labels = np.repeat(np.arange(10), sizes)
    assign = splitting.hash_split([sha(i) for i in range(len(labels))], **FRACTIONS, seed=42)
    counts = pd.crosstab(labels, assign).reindex(columns=list(splitting.SPLITS), fill_value=0)
    shares, notes = splitting.class_shares(counts, fractions=TARGETS, sigmas=3.0)
    assert notes == []
    assert max(v["max_z"] for v in shares.values()) < 3.0
    for s, f in TARGETS.items():  # overall: within 2 points
        assert abs((assign == s).mean() - f) < 0.02, s


def test_a_function_of_the_image_only() -> None:
    keys = [sha(i) for i in range(500)]
    first = splitting.hash_split(keys, **FRACTIONS, seed=3)
    reordered = splitting.hash_split(keys[::-1], **FRACTIONS, seed=3)[::-1]
    alone = [splitting.hash_split([k], **FRACTIONS, seed=3)[0] for k in keys[:50]]
    other_val = splitting.hash_split(keys, val_fraction=0.3, test_fraction=0.2, seed=3)
    other_seed = splitting.hash_split(keys, **FRACTIONS, seed=4)
    assert (first == reordered).all() and (first[:50] == alone).all()
    assert ((first == "test") == (other_val == "test")).all()  # val_fraction never moves test
    assert ((first == "test") != (other_seed == "test")).any()


def test_a_second_night_moves_no_image() -> None:
    """Issue 11's case: 600 new images on a 3,700-image set; 100% of night 1's test stays."""
    rng = np.random.default_rng(0)
    night1 = pd.DataFrame({"id": [f"n1/{i}" for i in range(3700)]})
    night1["split"] = splitting.hash_split([sha(i) for i in range(3700)], **FRACTIONS, seed=42)
    removed = set(rng.choice(3700, size=25, replace=False))
    keep = [i for i in range(3700) if i not in removed]
    night2 = pd.DataFrame({"id": [f"n1/{i}" for i in keep] + [f"n2/{i}" for i in range(600)]})
    keys = [sha(i) for i in keep] + [sha(10_000 + i) for i in range(600)]
    night2["split"] = splitting.hash_split(keys, **FRACTIONS, seed=42)
    report = splitting.compare_with_previous(night2, night1)
    assert report["moved"] == 0 and report["n_surviving"] == 3675 and report["n_removed"] == 25
    assert report["previous_test_still_test"] == report["previous_test_surviving"] > 700
    assert report["n_new"] == 600 and sum(report["new_per_split"].values()) == 600
    assert 90 <= report["new_per_split"]["test"] <= 150


def test_duplicate_groups_share_one_split() -> None:
    manifest = pd.DataFrame({
        "id": [f"img/{i}.png" for i in range(300)],
        "sha256": [sha(i) for i in range(300)],
        "group": [f"g{i // 3}" if i < 150 else "" for i in range(300)],
    })  # fmt: skip
    keys = splitting.split_keys(manifest, where="manifest.csv")
    assign = pd.Series(splitting.hash_split(keys.to_numpy(), **FRACTIONS, seed=1))
    groups = manifest["group"][:150]
    assert (assign[:150].groupby(groups.to_numpy()).nunique() == 1).all()
    assert (keys.to_numpy()[150:] == manifest["sha256"][150:]).all()  # ungrouped: own hash
    assert assign[:150].nunique() == 3  # groups still spread over the splits


def test_tiny_classes_are_split_like_any_image_with_a_warning() -> None:
    counts = pd.DataFrame({"train": [60, 0, 2], "val": [15, 1, 0], "test": [25, 1, 0]},
                          index=["big", "new", "pair"])  # fmt: skip
    _, notes = splitting.class_shares(counts, fractions=TARGETS, sigmas=3.0)
    assert notes == [
        "class 'new' has 2 image(s): none in train (hash split)",
        "class 'pair' has 2 image(s): none in val/test (hash split)",
    ]


def write_inputs(root: Path, labels: dict[str, str]) -> None:
    """data/agreement/labels.csv with `labels` (id -> label); the manifest of prepared_workspace."""
    (root / "data/agreement").mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"id": list(labels), "label": list(labels.values())})
    table.to_csv(root / "data/agreement/labels.csv", index=False)


def run_main(root: Path) -> pd.DataFrame:
    split.main()
    return pd.read_csv(root / "data/split/split.csv", dtype=str)


def test_main_reports_against_the_previous_split(prepared_workspace) -> None:
    root = prepared_workspace(n_classes=3, per_class=30)["root"]
    manifest = pd.read_csv(root / "data/ingest/manifest.csv", dtype=str)
    labels = dict(zip(manifest["id"], manifest["label"], strict=True))
    write_inputs(root, labels)
    shutil.rmtree(root / "data/split")  # prepared_workspace's own split: no previous run
    first = run_main(root)
    assert first.columns.tolist() == ["id", "label", "split"] and len(first) == 90
    assert not (root / "data/split/previous_split.csv").exists()
    metrics = json.loads(Path("metrics/split.json").read_text())
    assert metrics["against_previous"] == {"previous": False, "n_new": 90, "moved": 0}
    assert metrics["n"] == 90 and metrics["n_test"] == int((first["split"] == "test").sum())
    assert set(metrics["per_class_shares"]) == {"0", "1", "2"}
    assert pd.read_csv("plots/split/test.csv").columns.tolist() == ["class", "count", "fraction"]
    assert Path("plots/split/class_distribution.png").read_bytes()[:4] == b"\x89PNG"

    # Next night: every test image relabelled, 5 images removed, another val fraction.
    test_ids = first.loc[first["split"] == "test", "id"].tolist()
    gone = first["id"][:5].tolist()
    night2 = {i: ("0" if i in test_ids else lab) for i, lab in labels.items() if i not in gone}
    write_inputs(root, night2)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["split"]["val_fraction"] = 0.3
    Path("params.yaml").write_text(yaml.safe_dump(params))
    second = run_main(root)
    before = first.set_index("id")["split"]
    now = second.set_index("id")["split"]
    assert (now.eq("test") == before[now.index].eq("test")).all()  # relabels move nothing
    previous = pd.read_csv(root / "data/split/previous_split.csv", dtype=str)
    assert previous.equals(first[["id", "split"]])
    history = json.loads(Path("metrics/split.json").read_text())["against_previous"]
    assert history["n_removed"] == 5 and history["n_new"] == 0
    assert history["previous_test_still_test"] == history["previous_test_surviving"]
    assert history["moved"] == int((now != before[now.index]).sum())  # val grew: train -> val only
    assert set(history["moved_by"]) <= {"train->val"}


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
