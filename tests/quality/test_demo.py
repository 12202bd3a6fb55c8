"""The embedded demo set: deterministic, long-tailed, noisy annotators, known broken files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from edge_pipeline.config import load_section
from edge_pipeline.config.quality import Annotator, Demo, Ingest
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.quality.demo_data import make_demo as _make_demo
from edge_pipeline.quality.demo_flaws import simulate_labels
from edge_pipeline.quality.images import Quarantined, decode
from tasks import demo


def make_demo(out: Path, **options: object) -> dict:
    """The demo set with `params.yaml[demo]` keys `options` changed."""
    return _make_demo(out, Demo(**options))


TINY = {"max_per_class": 12, "bomb_side": 3000}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The pipeline's default demo (params.yaml defaults), built once for the module."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, make_demo(out)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = make_demo(tmp_path / "a", seed=3, **TINY)
    b = make_demo(tmp_path / "b", seed=3, **TINY)
    c = make_demo(tmp_path / "c", seed=4, **TINY)
    assert a == b
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    digest_c = tree_digest(tmp_path / "c")
    assert digest_c["annotations.csv"] != tree_digest(tmp_path / "a")["annotations.csv"]
    assert c["images"] == a["images"]  # the seed picks images and labels, not the class sizes


def test_long_tail_and_size(full: tuple[Path, dict]) -> None:
    _, m = full
    counts = np.array(list(m["per_class"].values()))
    assert m["images"] == counts.sum() >= 900
    assert counts.max() == 178  # the largest class (digit 0) keeps all its images
    rare = np.sort(counts)[:2]
    assert np.all(rare / counts.max() <= 0.06) and np.all(rare >= 3)
    assert np.sort(counts)[2] / counts.max() >= 0.45  # only two classes are rare


def test_annotators_have_the_configured_reliability(full: tuple[Path, dict]) -> None:
    out, m = full
    acc = {name: a["accuracy"] for name, a in m["annotators"].items()}
    assert len(acc) >= 3
    assert acc["careful"] >= 0.94
    assert 0.70 <= acc["noisy"] <= 0.80
    assert acc["confuser"] < acc["steady"] < acc["careful"]

    ann = pd.read_csv(out / "annotations.csv", dtype=str)
    truth = pd.read_csv(out / "truth.csv", dtype=str)
    rows = ann.merge(
        truth[truth["flaw"].isin(["", "label_noise"]) | truth["flaw"].isna()], on="image"
    )
    rows = rows.rename(columns={"label_x": "given", "label_y": "true"})
    confuser = rows[rows["annotator"] == "confuser"]
    wrong = confuser[confuser["given"] != confuser["true"]]
    habit = {("3", "8"), ("8", "3"), ("1", "7"), ("7", "1")}
    in_habit = [(t, g) in habit for t, g in zip(wrong["true"], wrong["given"], strict=True)]
    assert np.mean(in_habit) >= 0.85  # the confuser's errors are its habit, not random

    per_image = (
        ann[ann["image"].isin(truth["image"])]
        .groupby("image")["annotator"]
        .agg(["count", "nunique"])
    )
    assert (per_image["count"] == 3).all()  # default ratings_per_image: [3, 3]
    assert (per_image["count"] == per_image["nunique"]).all()


def test_ratings_per_image_range_is_drawn_per_image(tmp_path: Path) -> None:
    make_demo(tmp_path / "d", ratings_per_image=[2, 3], **TINY)
    ann = pd.read_csv(tmp_path / "d/annotations.csv", dtype=str)
    truth = pd.read_csv(tmp_path / "d/truth.csv", dtype=str)
    per_image = (
        ann[ann["image"].isin(truth["image"])]
        .groupby("image")["annotator"]
        .agg(["count", "nunique"])
    )
    assert per_image["count"].between(2, 3).all()
    assert (per_image["count"] == per_image["nunique"]).all()
    assert (per_image["count"] == 2).any() and (per_image["count"] == 3).any()


def test_consensus_noise_is_recorded_and_in_range(full: tuple[Path, dict]) -> None:
    out, m = full
    assert 0.05 <= m["consensus_noise_rate"] <= 0.10
    ann = pd.read_csv(out / "annotations.csv", dtype=str)
    truth = pd.read_csv(out / "truth.csv", dtype=str, keep_default_na=False)
    good = truth[truth["flaw"].isin(["", "label_noise"])]
    votes = ann[ann["image"].isin(good["image"])].groupby("image")["label"]
    # Majority vote, ties to the smallest class: recomputed independently of tasks.demo.
    consensus = votes.agg(lambda s: sorted(s.value_counts().loc[lambda c: c == c.max()].index)[0])
    wrong = good.set_index("image")["label"] != consensus.reindex(good["image"])
    assert int(wrong.sum()) == m["consensus_errors"] == (good["flaw"] == "label_noise").sum()


def test_broken_files_are_what_truth_says(full: tuple[Path, dict]) -> None:
    out, m = full
    truth = pd.read_csv(out / "truth.csv", dtype=str, keep_default_na=False)
    flaws = truth["flaw"].value_counts().to_dict()
    assert {k: flaws.get(k, 0) for k in m["corrupt"]} == m["corrupt"] == {
        "zero_byte": 2, "truncated": 2, "not_image": 2, "bomb": 1, "duplicate_conflict": 2
    }  # fmt: skip
    opts = Ingest(image_size=(8, 8), max_pixels=10_000_000)
    expect = {"truncated": "truncated", "not_image": "undecodable", "bomb": "oversize"}
    for image, flaw in truth[["image", "flaw"]].itertuples(index=False):
        data = (out / image).read_bytes()
        if flaw == "zero_byte":
            assert data == b""
        elif flaw in expect:
            with pytest.raises(Quarantined) as err:
                decode(data, opts)
            assert err.value.reason == expect[flaw]
        elif flaw == "duplicate_conflict":
            twins = [
                p
                for p in (out / "images").rglob("*.png")
                if p.read_bytes() == data and p != out / image
            ]
            assert len(twins) == 1 and twins[0].parent.name != (out / image).parent.name
    assert (out / truth.loc[truth["flaw"] == "bomb", "image"].iloc[0]).stat().st_size < 100_000


def test_good_images_decode_to_the_digits_in_every_mode(tmp_path: Path) -> None:
    make_demo(tmp_path / "d", modes={"L": 1, "RGB": 1, "RGBA": 1, "P": 1, "I;16": 1}, **TINY)
    truth = pd.read_csv(tmp_path / "d/truth.csv", dtype=str, keep_default_na=False)
    digits = load_digits()
    modes = set()
    for image in truth.loc[truth["flaw"].isin(["", "label_noise"]), "image"]:
        i = int(Path(image).stem)
        ref = Image.fromarray(np.rint(digits.images[i] * 255 / 16).astype(np.uint8))
        ref = np.asarray(ref.resize((32, 32), Image.Resampling.BILINEAR))
        got, w, h, mode = decode((tmp_path / "d" / image).read_bytes(), Ingest(image_size=(32, 32)))
        np.testing.assert_array_equal(got[..., 0], ref)
        assert str(digits.target[i]) == Path(image).parent.name
        modes.add(mode)
    assert modes == {"L", "RGB", "RGBA", "P", "I;16"}


def test_bad_rows_are_in_the_csv(tmp_path: Path) -> None:
    m = make_demo(tmp_path / "d", **TINY)
    ann = pd.read_csv(tmp_path / "d/annotations.csv", dtype=str)
    assert m["bad_rows"] == 3
    assert ann["image"].str.startswith("../").sum() == 1
    assert ann["image"].str.startswith("/").sum() == 1
    listed = set(ann["image"]) - {p for p in ann["image"] if p.startswith(("/", ".."))}
    missing = [p for p in listed if not (tmp_path / "d" / p).exists()]
    assert len(missing) == 1


def test_simulated_annotator_rates() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(10, size=20000)
    labels = simulate_labels(
        true, Annotator(accuracy=0.8, confusions={3: 8}, confusion_rate=0.5), rng, n_classes=10
    )
    others = true != 3
    assert abs(np.mean(labels[others] == true[others]) - 0.8) < 0.02
    threes = true == 3
    assert abs(np.mean(labels[threes] == 8) - (0.5 + 0.5 * 0.2 / 9)) < 0.03
    wrong = labels[others & (labels != true)]
    assert np.bincount(wrong, minlength=10).min() > 0  # errors spread over all classes


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"sede": 1}, r"demo\.sede: not an option; did you mean seed\?"),
        ({"class_fractions": [1.0, 0.5]}, r"demo\.class_fractions=\[1\.0, 0\.5\]: List should"),
        ({"ratings_per_image": [2, 9]}, r"demo\.ratings_per_image=\[2, 9\]: need \[min, max\]"),
        ({"modes": {"CMYK": 1}}, r"demo\.modes\.CMYK"),
        ({"corrupt": {"bombs": 1}}, r"demo\.corrupt\.bombs: not an option; did you mean bomb\?"),
    ],
)
def test_bad_params_fail_with_the_key(tmp_path: Path, options: dict, match: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"demo": options}))
    with pytest.raises(ConfigError, match=match):
        load_section("demo", path)


def test_main_writes_data_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["demo"].update(TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    demo.main()
    metrics = json.loads((tmp_path / "metrics/demo.json").read_text())
    truth = pd.read_csv(tmp_path / "data/demo/truth.csv")
    assert (
        len(truth)
        == metrics["images"] + metrics["corrupt_files"]
        == len(list((tmp_path / "data/demo/images").rglob("*.png")))
    )
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["demo"]  # no temp left
