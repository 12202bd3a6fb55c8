"""Agreement stage: kappas vs sklearn/statsmodels, undefined cases, consensus, gate, outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from edge_pipeline.core.errors import ConfigError, InputError
from edge_pipeline.quality import agreement_stats as st
from tasks import agreement

CLASSES = ["cat", "dog", "fox"]


def ratings_from_matrix(m: np.ndarray, truth: np.ndarray | None = None) -> st.Ratings:
    """Ratings from an (N, A) matrix of class codes, -1 = not rated."""
    item, ann = np.nonzero(m >= 0)
    return st.Ratings(
        item=item,
        annotator=ann,
        label=m[item, ann],
        n_items=m.shape[0],
        n_annotators=m.shape[1],
        n_classes=int(m.max()) + 1,
        true_label=truth,
    )


def noisy_matrix(n: int, a: int, k: int, *, seed: int, missing: float) -> np.ndarray:
    """(n, a) labels: each annotator right 75% of the time, else uniform; some ratings missing."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    m = np.where(rng.random((n, a)) < 0.75, truth[:, None], rng.integers(0, k, (n, a)))
    return np.where(rng.random((n, a)) < missing, -1, m)


# --- kappas against the library references -------------------------------------------------------


def test_pairwise_kappa_equals_sklearn_on_each_pairs_shared_items() -> None:
    m = noisy_matrix(60, 4, 3, seed=0, missing=0.3)
    pw = st.pairwise_kappa(ratings_from_matrix(m), classes=CLASSES)
    assert len(pw) == 6 and (pw["undefined_reason"] == "").all()
    for row in pw.itertuples():
        both = (m[:, row.a] >= 0) & (m[:, row.b] >= 0)
        y1, y2 = m[both, row.a], m[both, row.b]
        assert row.n_shared == both.sum()
        assert row.kappa == pytest.approx(cohen_kappa_score(y1, y2, labels=[0, 1, 2]), abs=1e-12)
        assert row.observed_agreement == pytest.approx(np.mean(y1 == y2))


def test_fleiss_equals_statsmodels_when_every_item_has_the_same_number_of_ratings() -> None:
    m = noisy_matrix(50, 5, 4, seed=1, missing=0.0)
    table, _ = aggregate_raters(m, n_cat=4)
    counts = st.rating_counts(ratings_from_matrix(m))
    np.testing.assert_array_equal(counts, table)
    assert st.fleiss_kappa(counts).value == pytest.approx(sm_fleiss_kappa(table), abs=1e-12)


def test_fleiss_variable_ratings_per_item_uses_gwets_form_and_ignores_single_ratings() -> None:
    table = np.array([[2, 0, 0], [1, 1, 0], [2, 1, 0], [0, 1, 2], [1, 0, 0]])
    # P_o = (1 + 0 + 1/3 + 1/3) / 4 = 5/12; pi = (13, 7, 4) / 24 -> P_e = 234/576; kappa = 1/57.
    assert st.fleiss_kappa(table).value == pytest.approx(1 / 57, abs=1e-12)
    assert st.fleiss_kappa(table[:4]).value == pytest.approx(1 / 57, abs=1e-12)


def test_per_class_kappa_is_fleiss_on_the_one_vs_rest_table() -> None:
    m = noisy_matrix(40, 4, 3, seed=2, missing=0.0)
    counts = st.rating_counts(ratings_from_matrix(m))
    pc = st.per_class_agreement(counts, classes=CLASSES)
    for k in range(3):
        binary = np.column_stack([counts[:, k], 4 - counts[:, k]])
        assert pc.loc[k, "kappa"] == pytest.approx(sm_fleiss_kappa(binary), abs=1e-12)
    # specific agreement of class 0 in the hand table above: 4 agreeing pairs of 7 possible
    hand = st.per_class_agreement(
        np.array([[2, 0, 0], [1, 1, 0], [2, 1, 0], [0, 1, 2]]), classes=CLASSES
    )
    assert hand.loc[0, "specific_agreement"] == pytest.approx(4 / 7)
    assert hand.loc[0, "n_ratings"] == 5


# --- undefined kappas ----------------------------------------------------------------------------


def test_undefined_pairs_carry_reasons_not_nan_crashes() -> None:
    m = np.array(
        [
            # a0 a1 a2 a3 a4
            [0, 0, 0, -1, 1],
            [0, 0, 1, -1, 1],
            [0, 0, -1, 2, 1],
            [1, -1, -1, -1, 0],
        ]
    )
    pw = st.pairwise_kappa(ratings_from_matrix(m), classes=CLASSES).set_index(["a", "b"])
    assert pw.loc[(0, 1), "undefined_reason"] == "both used only class 'cat': chance agreement is 1"
    assert pw.loc[(1, 3), "undefined_reason"] == "fewer than 2 shared items (1)"
    assert pw.loc[(2, 3), "undefined_reason"] == "fewer than 2 shared items (0)"
    assert pw.loc[(0, 2), "undefined_reason"].startswith("annotator_a used only class 'cat'")
    assert np.isnan(pw.loc[(0, 1), "kappa"]) and pw.loc[(0, 1), "n_shared"] == 3
    # a0 vs a4 disagree on all 4 items, neither constant: defined, equal to sklearn
    assert pw.loc[(0, 4), "kappa"] == pytest.approx(cohen_kappa_score([0, 0, 0, 1], [1, 1, 1, 0]))


def test_fleiss_undefined_without_overlap_or_with_one_class() -> None:
    assert st.fleiss_kappa(np.array([[1, 0], [0, 1]])) == st.Kappa(
        None, "no item has 2 or more ratings"
    )
    assert st.fleiss_kappa(np.array([[3, 0], [2, 0]])).reason.startswith("every rating is")


# --- consensus -----------------------------------------------------------------------------------


def test_consensus_majority_support_and_tie_broken_by_the_more_reliable_annotator() -> None:
    m = np.array([[0, 0, 0], [1, 1, 2], [0, 0, 1], [2, -1, 1], [-1, -1, -1], [1, -1, -1]])
    r = ratings_from_matrix(m)
    counts = st.rating_counts(r)
    weights = st.peer_agreement(r, counts)
    # a0 matches (1, 1/2, 1/2, 0) of its co-ratings, a2 (1, 0, 0, 0): a0 is more reliable
    np.testing.assert_allclose(weights, [0.5, 2 / 3, 0.25])
    c = st.consensus(r, counts, weights=weights)
    np.testing.assert_array_equal(c.label, [0, 1, 0, 2, -1, 1])  # item 3: a0's 2 beats a2's 1
    np.testing.assert_allclose(c.support, [1, 2 / 3, 2 / 3, 0.5, np.nan, 1])
    np.testing.assert_array_equal(c.tied, [False, False, False, True, False, False])
    np.testing.assert_array_equal(c.n_ratings, [3, 3, 3, 2, 0, 1])
    relabel = st.relabel_mask(c, below=0.7)
    np.testing.assert_array_equal(relabel, [False, True, True, True, True, False])


def test_tie_with_equal_weights_goes_to_the_more_frequent_class_then_the_lower_index() -> None:
    m = np.array([[0, 2], [2, 2], [2, 2], [0, 1], [0, 0]])
    r = ratings_from_matrix(m)
    c = st.consensus(r, st.rating_counts(r), weights=np.ones(2))
    # item 0: 0 vs 2, class 2 has 5 ratings overall, class 0 has 4; item 3: 0 (4) vs 1 (1)
    assert c.label[0] == 2 and c.label[3] == 0
    m2 = np.array([[0, 1], [1, 0]])  # classes 0 and 1 equally frequent: lower index
    r2 = ratings_from_matrix(m2)
    np.testing.assert_array_equal(
        st.consensus(r2, st.rating_counts(r2), weights=np.ones(2)).label, [0, 0]
    )


def test_gate_statuses() -> None:
    low, high, none = st.Kappa(0.4), st.Kappa(0.8), st.Kappa(None, "no overlap")
    assert st.gate(high, min_kappa=0.6, policy="fail")[0] == "pass"
    assert st.gate(low, min_kappa=0.6, policy="fail")[0] == "fail"
    assert st.gate(low, min_kappa=0.6, policy="warn")[0] == "warn"
    assert st.gate(low, min_kappa=0.6, policy="approval")[0] == "needs_approval"
    assert st.gate(none, min_kappa=0.6, policy="fail") == (
        "skipped",
        "Fleiss' kappa is undefined: no overlap",
    )


# --- the stage: workspace, outputs, gate, skip ---------------------------------------------------


def write_workspace(root: Path, m: np.ndarray, *, truth: np.ndarray | None, **params) -> None:
    """data/ingest/{annotations,manifest,classes} from an (N, A) code matrix, plus params.yaml."""
    ingest = root / "data" / "ingest"
    ingest.mkdir(parents=True)
    ids = [f"img/{i:03d}.png" for i in range(len(m))]
    item, ann = np.nonzero(m >= 0)
    pd.DataFrame(
        {
            "id": np.asarray(ids)[item],
            "annotator": [f"ann{a}" for a in ann],
            "label": np.asarray(CLASSES)[m[item, ann]],
        }
    ).to_csv(ingest / "annotations.csv", index=False)
    true_label = [""] * len(m) if truth is None else list(np.asarray(CLASSES)[truth])
    pd.DataFrame(
        {"id": ids, "path": [f"data/src/{i}" for i in ids], "label": "", "true_label": true_label}
    ).to_csv(ingest / "manifest.csv", index=False)
    (ingest / "classes.json").write_text(json.dumps(CLASSES))
    cfg = {"min_kappa": 0.6, "policy": "warn", "relabel_below": 0.6, **params}
    paths = {"data": "data", "reports": "reports", "metrics": "metrics", "plots": "plots"}
    (root / "params.yaml").write_text(yaml.safe_dump({"paths": paths, "agreement": cfg}))


def declared_outputs() -> list[str]:
    """The agreement stage's outs, metrics and plots from the repo's dvc.yaml, default roots."""
    repo = Path(__file__).resolve().parents[2]
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["agreement"]
    entries = stage["outs"] + stage["metrics"] + stage["plots"]
    names = [e if isinstance(e, str) else next(iter(e)) for e in entries]
    for root in ("data", "reports", "metrics", "plots"):
        names = [n.replace(f"${{paths.{root}}}", root) for n in names]
    return names


def load_metrics() -> dict:
    def no_nan(token: str) -> None:
        raise AssertionError(f"{token} in metrics JSON")

    return json.loads(Path("metrics/agreement.json").read_text(), parse_constant=no_nan)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_main_end_to_end_writes_every_declared_output_with_the_core_figures(
    workspace: Path,
) -> None:
    rng = np.random.default_rng(3)
    m = noisy_matrix(80, 3, 3, seed=3, missing=0.25)
    m[5] = -1  # one unrated image goes to the queue, not to labels.csv
    truth = rng.integers(0, 3, 80)
    write_workspace(workspace, m, truth=truth)
    agreement.main()

    for out in declared_outputs():
        assert Path(out).exists(), out
    r = ratings_from_matrix(m, truth)
    res = st.measure_agreement(r, classes=CLASSES, relabel_below=0.6)
    metrics = load_metrics()
    assert metrics["fleiss_kappa"] == pytest.approx(res.fleiss.value, abs=1e-4)
    unrated = (m < 0).all(axis=1)
    assert metrics["n_ratings"] == (m >= 0).sum() and metrics["n_items_unrated"] == unrated.sum()
    assert metrics["gate"] in {"pass", "warn"} and metrics["status"] == "measured"
    c = res.consensus
    assert metrics["consensus_true_accuracy"] == pytest.approx(
        np.mean(c.label[c.label >= 0] == truth[c.label >= 0]), abs=1e-4
    )

    labels = pd.read_csv("data/agreement/labels.csv", dtype={"label": str})
    assert list(labels.columns) == ["id", "label", "n_ratings", "support", "reviewed", "reviewer"]
    assert len(labels) == 80 - unrated.sum() and "img/005.png" not in set(labels["id"])
    assert list(labels["label"]) == [CLASSES[k] for k in c.label[c.label >= 0]]

    pairwise = pd.read_csv("reports/agreement/pairwise.csv")
    assert set(zip(pairwise.annotator_a, pairwise.annotator_b, strict=True)) == {
        ("ann0", "ann1"),
        ("ann0", "ann2"),
        ("ann1", "ann2"),
    }
    ann = pd.read_csv("reports/agreement/annotators.csv")
    assert ann["n_ratings"].tolist() == list((m >= 0).sum(axis=0))
    queue = pd.read_csv("reports/agreement/relabel_queue.csv", keep_default_na=False)
    assert len(queue) == res.relabel.sum() and queue.loc[0, "reason"] == "no rating"


def test_label_studio_queue_matches_its_labelling_config(workspace: Path) -> None:
    m = np.array([[0, 1, -1], [0, 0, 0], [2, 1, 0], [-1, -1, -1], [1, 1, 2]])
    write_workspace(workspace, m, truth=None, label_studio={"url_prefix": "/data/local-files/?d="})
    agreement.main()
    tasks = json.loads(Path("reports/agreement/relabel_queue.json").read_text())
    config = ET.parse("reports/agreement/label_studio_config.xml").getroot()
    image, choices = config.find("Image"), config.find("Choices")
    assert [c.get("value") for c in choices.findall("Choice")] == CLASSES
    by_id = {t["data"]["item_id"]: t for t in tasks}
    assert set(by_id) == {"img/000.png", "img/002.png", "img/003.png"}  # tie, 3-way tie, unrated
    for task in tasks:
        assert set(task) <= {"data", "meta", "predictions"}
        assert task["data"][image.get("value").lstrip("$")] == (
            "/data/local-files/?d=data/src/" + task["data"]["item_id"]
        )
    assert "predictions" not in by_id["img/003.png"]
    pred = by_id["img/000.png"]["predictions"][0]
    assert pred["score"] == 0.5
    (result,) = pred["result"]
    assert (result["from_name"], result["to_name"], result["type"]) == (
        choices.get("name"),
        image.get("name"),
        "choices",
    )
    assert result["value"]["choices"] == [by_id["img/000.png"]["meta"]["consensus"]]
    assert by_id["img/000.png"]["meta"]["votes"] == "ann0=cat; ann1=dog"


def test_gate_fail_exits_input_error_after_writing_the_reports(workspace: Path, caplog) -> None:
    """A failed data-quality gate is permanent for that data: EXIT_INPUT, so no flow retry."""
    from edge_pipeline.core.entry import run_stage
    from edge_pipeline.core.errors import EXIT_INPUT

    m = noisy_matrix(40, 3, 3, seed=4, missing=0.0)
    write_workspace(workspace, m, truth=None, min_kappa=0.95, policy="fail")
    with pytest.raises(SystemExit) as exc:
        run_stage(agreement.main)
    assert exc.value.code == EXIT_INPUT
    assert "agreement gate failed" in caplog.text and "policy fail" in caplog.text
    assert load_metrics()["gate"] == "fail"
    assert "**fail**" in Path("reports/agreement/report.md").read_text()
    assert Path("reports/agreement/relabel_queue.json").exists()


@pytest.mark.parametrize(("policy", "gate"), [("warn", "warn"), ("approval", "needs_approval")])
def test_gate_warn_and_approval_continue(workspace: Path, policy: str, gate: str) -> None:
    m = noisy_matrix(40, 3, 3, seed=4, missing=0.0)
    write_workspace(workspace, m, truth=None, min_kappa=0.95, policy=policy)
    agreement.main()  # no SystemExit
    assert load_metrics()["gate"] == gate


def test_no_annotations_is_skipped_and_passes_imagefolder_labels_through(workspace: Path) -> None:
    write_workspace(workspace, np.full((4, 1), -1), truth=None)
    manifest = pd.read_csv("data/ingest/manifest.csv", keep_default_na=False)
    manifest["label"] = ["cat", "dog", "dog", "fox"]
    manifest.to_csv("data/ingest/manifest.csv", index=False)
    agreement.main()
    metrics = load_metrics()
    assert (metrics["status"], metrics["gate"]) == ("skipped", "skipped")
    assert metrics["fleiss_kappa"] is None and metrics["n_labelled"] == 4
    labels = pd.read_csv("data/agreement/labels.csv")
    assert labels["label"].tolist() == ["cat", "dog", "dog", "fox"]
    assert (labels["n_ratings"] == 1).all() and (labels["support"] == 1.0).all()
    assert json.loads(Path("reports/agreement/relabel_queue.json").read_text()) == []
    for out in declared_outputs():
        assert Path(out).exists(), out


def test_no_image_rated_twice_is_skipped_but_still_gives_consensus_labels(workspace: Path) -> None:
    write_workspace(workspace, np.array([[0, -1], [-1, 1], [2, -1]]), truth=None, policy="fail")
    agreement.main()  # nothing to gate on: no exit even with policy fail
    metrics = load_metrics()
    assert (metrics["status"], metrics["gate"]) == ("skipped", "skipped")
    assert metrics["skip_reason"] == "no item has 2 or more ratings"
    pairwise = pd.read_csv("reports/agreement/pairwise.csv")
    assert pairwise.loc[0, "undefined_reason"] == "fewer than 2 shared items (0)"
    labels = pd.read_csv("data/agreement/labels.csv")
    assert labels["label"].tolist() == ["cat", "dog", "fox"]


# --- bad input -----------------------------------------------------------------------------------


def test_unknown_label_names_the_file_and_line(workspace: Path) -> None:
    write_workspace(workspace, np.array([[0, 1], [1, 1]]), truth=None)
    ann = pd.read_csv("data/ingest/annotations.csv")
    ann.loc[2, "label"] = "wolf"
    ann.to_csv("data/ingest/annotations.csv", index=False)
    with pytest.raises(InputError, match=r"annotations\.csv:4: label 'wolf' is unknown"):
        agreement.main()


def test_duplicate_rating_keeps_the_last(workspace: Path) -> None:
    write_workspace(workspace, np.array([[0, 1], [1, 1]]), truth=None)
    ann = pd.read_csv("data/ingest/annotations.csv")
    extra = pd.DataFrame({"id": ["img/000.png"], "annotator": ["ann0"], "label": ["dog"]})
    pd.concat([ann, extra]).to_csv("data/ingest/annotations.csv", index=False)
    agreement.main()
    labels = pd.read_csv("data/agreement/labels.csv")
    assert labels.loc[0, "label"] == "dog" and labels.loc[0, "support"] == 1.0
    assert load_metrics()["n_duplicate_ratings"] == 1


@pytest.mark.parametrize(
    ("params", "match"),
    [({"policy": "block"}, "agreement.policy"), ({"min_kappa": 2}, "agreement.min_kappa")],
)
def test_bad_params_name_the_key(workspace: Path, params: dict, match: str) -> None:
    write_workspace(workspace, np.array([[0, 1], [1, 1]]), truth=None, **params)
    with pytest.raises(ConfigError, match=match):
        agreement.main()
