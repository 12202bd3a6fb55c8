"""Promotion: the pure `decide` rule, the `register` params, and the register stage against a
temporary MLflow registry."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_pipeline.config import load_section
from edge_pipeline.core.errors import EXIT_CONFIG, ConfigError, InputError
from edge_pipeline.edge.classification import classification_figures
from edge_pipeline.registry.decision_report import markdown, record
from edge_pipeline.registry.model_registry import (
    challenger_candidate,
    deployables,
    read_chosen,
    sig4,
)
from edge_pipeline.registry.paired_test import PairedTest, mcnemar_exact, min_discordant
from edge_pipeline.registry.promotion import Candidate, Champion, Decision, decide
from tests._edge_models import _onnx_linear

REPO = Path(__file__).parents[2]

RULE = {"tolerance_pts": 0.5, "alert_drop_pct": 5.0}
N = 205  # the demo's test split


def paired(b: int, c: int, *, both_right: int, n: int = N, alpha: float = 0.05) -> PairedTest:
    """The test of constructed predictions: b images only the champion gets right, c only the
    challenger, `both_right` both, the rest of the n images both wrong (shuffled)."""
    old = np.array(
        [True] * both_right + [True] * b + [False] * c + [False] * (n - both_right - b - c)
    )
    new = np.array(
        [True] * both_right + [False] * b + [True] * c + [False] * (n - both_right - b - c)
    )
    order = np.random.default_rng(0).permutation(n)
    return mcnemar_exact(old[order], new[order], alpha=alpha)


def duel(b: int, c: int, *, both_right: int = 190, **rule: float) -> Decision:
    """decide() for the challenger and champion of `paired(b, c)`, scored on the same images."""
    test = paired(b, c, both_right=both_right)
    champion = Champion("3", (both_right + b) / N)
    return decide(Candidate("m", (both_right + c) / N, True), champion, test, **(RULE | rule))


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 1), (7, 2), (12, 2), (2, 9), (30, 20)])
def test_p_values_are_the_exact_binomial_ones(b: int, c: int) -> None:
    from scipy.stats import binomtest
    from statsmodels.stats.contingency_tables import mcnemar

    t = paired(b, c, both_right=150)
    assert (t.champion_only, t.challenger_only, t.both_right) == (b, c, 150)
    assert t.both_wrong == N - 150 - b - c and t.n_discordant == b + c
    one = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    assert t.p_worse == pytest.approx(one, rel=1e-12)
    two = mcnemar([[150, b], [c, N - 150 - b - c]], exact=True).pvalue
    assert t.p_two_sided == pytest.approx(two, rel=1e-12)
    assert t.p_two_sided == pytest.approx(min(1.0, 2 * one)) or b < c  # b >= c: twice the tail


def test_p_values_by_hand() -> None:
    t = paired(7, 2, both_right=190)
    assert t.p_worse == pytest.approx((36 + 9 + 1) / 512)  # P(B >= 7), B ~ Bin(9, 1/2)
    assert t.p_two_sided == pytest.approx(2 * 46 / 512)
    assert paired(12, 2, both_right=190).p_worse == pytest.approx((91 + 14 + 1) / 2**14)


def test_power_rule_needs_five_discordant_images_at_alpha_5_percent() -> None:
    assert [min_discordant(a) for a in (0.05, 0.1, 0.01, 0.0625)] == [5, 4, 7, 5]
    assert paired(4, 0, both_right=190).p_worse == pytest.approx(1 / 16)  # > 0.05: can't reject
    assert paired(5, 0, both_right=190).p_worse == pytest.approx(1 / 32)  # < 0.05: can
    assert not paired(4, 0, both_right=190).has_power and paired(5, 0, both_right=190).has_power


def test_promote_within_tolerance_on_the_same_images() -> None:
    d = duel(1, 0)  # one image worse: 0.49 pts <= 0.5
    assert d.outcome == "promote" and d.promote and not d.alert
    assert d.drop_pts == pytest.approx(100 / N) and "tolerance" in d.reason
    better = duel(0, 6)
    assert better.promote and better.drop_pts == pytest.approx(-600 / N)


def test_promote_when_worse_but_not_significantly() -> None:
    d = duel(7, 2)  # 5 images (2.44 pts) worse, p = 46/512 = 0.0898 >= 0.05
    assert d.outcome == "promote" and not d.alert
    assert "not significantly worse" in d.reason and "one-sided p = 0.0898" in d.reason


def test_reject_when_significantly_worse_and_alert() -> None:
    d = duel(12, 2)  # p = 106/16384 = 0.0065
    assert d.outcome == "reject" and not d.promote and d.alert
    assert "significantly worse than champion v3" in d.alert_reason
    assert "12 images only the champion gets right, 2 only the challenger" in d.reason
    assert d.drop_pts == pytest.approx(1000 / N)


def test_not_enough_test_images_to_tell() -> None:
    d = duel(3, 0)  # 1.46 pts worse, but 3 discordant images can never reach p < 0.05
    assert d.outcome == "not_enough_evidence" and not d.promote and not d.alert
    assert "not enough test images to tell" in d.reason and "needs at least 5" in d.reason
    # the same counts decide when the tolerance covers them
    assert duel(3, 0, tolerance_pts=1.5).promote


def test_first_run_promotes_when_gates_pass() -> None:
    d = decide(Candidate("m", 0.90, True), None, None, **RULE)
    assert d.promote and "first champion" in d.reason and not d.alert
    assert d.drop_pts is None and d.drop_pct is None


def test_first_run_does_not_promote_a_failing_model_and_alerts() -> None:
    d = decide(Candidate("m", 0.99, False, ("size 9.00 MB > 5 MB",)), None, None, **RULE)
    assert d.outcome == "reject" and "size 9.00 MB > 5 MB" in d.reason and d.alert


def test_a_chance_level_model_never_becomes_the_first_champion() -> None:
    """Issue 15.8: 11.11% on 10 balanced classes, even if the benchmark verdict said passed."""
    y = np.arange(90) % 10
    pred = np.where(np.arange(90) < 10, y, (y + 1) % 10)  # 10 of 90 right: 11.11%
    scores = classification_figures(pred, y, [str(k) for k in range(10)])
    chosen = {"gates": {"min_accuracy": 0.5},
              "model": {"id": "m", "verdict": {"passed": True, "failures": []}}}  # fmt: skip
    cand = challenger_candidate(chosen, scores, y, [str(k) for k in range(10)])
    assert not cand.passed and cand.failures == (
        "accuracy 11.11% < floor 50.00% (benchmark.gates.min_accuracy)",
    )
    d = decide(cand, None, None, **RULE)
    assert not d.promote and d.alert and "floor" in d.reason
    # no floor of its own: 11.11% still does not beat a 20% majority class
    y2 = np.array([0] * 18 + list(range(1, 10)) * 8)
    chosen["gates"]["min_accuracy"] = 0.0
    low = classification_figures(np.full(len(y2), 1), y2, [str(k) for k in range(10)])
    assert (
        "majority-class rate 20.00%"
        in challenger_candidate(chosen, low, y2, [str(k) for k in range(10)]).failures[0]
    )


def test_failing_candidate_keeps_champion_and_alerts() -> None:
    test = paired(0, 0, both_right=190)
    d = decide(Candidate("m", 190 / N, False, ("p95 latency 12 ms > 10 ms",)),
               Champion("1", 190 / N), test, **RULE)  # fmt: skip
    assert d.outcome == "reject" and d.alert and "fails gates: p95 latency" in d.reason


def test_alert_on_a_big_relative_drop_whatever_the_outcome() -> None:
    # 4.5 pts below a 90% champion is 5.0% relative: not above the 5% threshold
    t = paired(9, 0, both_right=175, n=200)
    d = decide(Candidate("m", 0.875, True), Champion("1", 0.92), t, tolerance_pts=10,
               alert_drop_pct=5)  # fmt: skip
    assert d.promote and not d.alert and d.drop_pct == pytest.approx(4.5 / 0.92)
    d = decide(Candidate("m", 0.80, True), Champion("1", 0.90), t, **RULE)
    assert d.alert and "11.1% below champion v1" in d.alert_reason


def test_decision_record_and_report_side_by_side() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    classes = ["a", "b", "c"]
    champ = {"version": "3", "pred": y.copy()} | classification_figures(y, y, classes)
    worse = np.array([0, 1, 1, 1, 2, 2, 2, 0])
    chall = {"version": "4", "pred": worse} | classification_figures(worse, y, classes)
    test = mcnemar_exact(champ["pred"] == y, chall["pred"] == y, alpha=0.05)
    cand = Candidate("student_int8", chall["accuracy"], True)
    d = decide(cand, Champion("3", champ["accuracy"]), test, **RULE)
    chosen = {"chosen": "student_int8", "model": {"id": "student_int8", "accuracy": 0.75}}
    rec = record(d, {"challenger": chall, "champion": champ}, test, chosen=chosen,
                 model_name="edge", version="4", previous="3", n_images=len(y))  # fmt: skip
    assert rec["outcome"] == "not_enough_evidence" and rec["champion_version"] == 3
    assert rec["mcnemar"]["champion_only"] == 2 and rec["mcnemar"]["challenger_only"] == 0
    assert rec["mcnemar"]["p_worse"] == pytest.approx(0.25) and not rec["mcnemar"]["has_power"]
    assert rec["challenger"]["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.75}
    assert rec["champion"]["accuracy"] == 1.0 and rec["challenger"]["benchmark_accuracy"] == 0.75
    json.dumps(rec)  # metrics/register.json
    md = markdown(rec)
    assert md.startswith("# Promotion decision: not enough evidence")
    assert "| figure | challenger v4 | champion v3 | challenger - champion |" in md
    assert "| accuracy | 75.00% | 100.00% | -25.00 pts |" in md
    assert "| recall `a` | 50.00% | 100.00% | -50.00 pts |" in md
    assert "only the champion right (b) 2, only the challenger right (c) 0" in md


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tolerance_pts": -1}, "register.tolerance_pts=-1: Input should be greater than or equal"),
        ({"alert_drop_pct": -0.1}, "register.alert_drop_pct=-0.1: Input should be greater than"),
        ({"tolerance_pts": "x"}, "register.tolerance_pts='x': Input should be a valid number"),
        ({"tolerance_pt": 1}, "register.tolerance_pt: not an option; did you mean tolerance_pts?"),
        ({"model_name": ""}, "register.model_name='': String should have at least 1 character"),
        ({"alpha": 0}, "register.alpha=0: Input should be greater than 0"),
        ({"alpha": 1}, "register.alpha=1: Input should be less than 1"),
    ],
)
def test_params_errors_name_the_key(tmp_path: Path, params: dict, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"register": params}))
    with pytest.raises(ConfigError, match="^params.yaml " + message):
        load_section("register", path)


def test_chosen_json_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "chosen.json"
    with pytest.raises(InputError, match="chosen.json: not found; re-run the benchmark stage"):
        read_chosen(path)
    path.write_text('{"chosen": null,\n oops}')
    with pytest.raises(InputError, match="line 2: invalid JSON"):
        read_chosen(path)
    path.write_text('{"chosen": null, "model": null}')
    with pytest.raises(
        InputError, match=r"missing keys \['per_runtime', 'input_shape', 'classes', 'gates'\]"
    ):
        read_chosen(path)


def test_stage_exits_78_on_a_params_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"register": {"tolerance_pts": "x"}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.register"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "params.yaml register.tolerance_pts='x'" in proc.stderr
    assert "Traceback" not in proc.stderr


def write_benchmark_outputs(root: Path, correct: np.ndarray | None) -> None:
    """A benchmark stage's outputs (chosen.json contract) around a real tiny ONNX model whose
    test predictions are right exactly where `correct` (N_test,) is True (None: nothing chosen).

    The model is linear on the pixels, W solved so the logits are 10 x a chosen one-hot per test
    image; every call overwrites the same file, so only the registry still holds older models.
    """
    from edge_pipeline.artifacts.datasets import load_split

    model = root / "data" / "export" / "student_int8.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    entry = None
    if correct is not None:
        x, y, _ = load_split("test")
        want = np.where(correct, y, (y + 1) % 3)
        flat = x.reshape(len(x), -1).astype(np.float64) / 255.0
        w = np.linalg.pinv(flat) @ (10.0 * np.eye(3)[want])
        _onnx_linear(model, [(w.astype(np.float32), None, False)], ["N", 16, 16, 1])
        accuracy = float(correct.mean())
        entry = {
            "id": "student_int8", "name": "student_int8", "stage": "export", "path": str(model),
            "runtime": "onnxruntime", "layout": "NHWC", "dtype": "int8", "source": "student_fp32",
            "accuracy": accuracy, "macro_f1": accuracy, "size_mb": 0.01,
            "latency_ms": {"1": {"p95": 0.2}}, "verdict": {"passed": True, "failures": []},
        }  # fmt: skip
    chosen = {
        "chosen": entry["id"] if entry else None, "model": entry,
        "per_runtime": {"onnxruntime": entry} if entry else {},
        "input_shape": [16, 16, 1], "classes": ["0", "1", "2"], "gates": {"min_accuracy": 0.5},
    }  # fmt: skip
    (root / "data" / "benchmark").mkdir(parents=True, exist_ok=True)
    (root / "data" / "benchmark" / "chosen.json").write_text(json.dumps(chosen))
    for stage, name in (("benchmark", "benchmark.md"), ("agreement", "kappa.csv")):
        (root / "reports" / stage).mkdir(parents=True, exist_ok=True)
        (root / "reports" / stage / name).write_text("report\n")


@pytest.mark.slow
def test_register_decides_on_the_same_test_images(
    prepared_workspace, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import configure
    from tasks import register

    rule = {"model_name": "edge-test", "tolerance_pts": 0.5, "alpha": 0.05, "alert_drop_pct": 5.0}
    root = prepared_workspace(per_class=60, params={"register": rule})["root"]  # 36 test images
    split = pd.read_csv(root / "data/split/split.csv", dtype=str)  # a re-run: no image is new
    split[["id", "split"]].to_csv(root / "data/split/previous_split.csv", index=False)

    def run(correct: np.ndarray | None) -> dict:
        write_benchmark_outputs(root, correct)
        register.main()
        return json.loads(Path("metrics/register.json").read_text())

    n = 36
    good = np.arange(n) >= 2  # 34 / 36 right
    first = run(good)  # no champion yet: promotes
    assert (
        first["outcome"] == "promote" and first["version"] == 1 and first["champion_version"] == 1
    )
    assert first["mcnemar"] is None and first["champion"] is None and not first["alert"]
    assert first["challenger"]["accuracy"] == pytest.approx(34 / 36)
    assert first["test_images"] == n

    same = run(good)  # identical predictions: 0 pts drop, within tolerance
    assert same["outcome"] == "promote" and same["champion_version"] == 2
    assert same["champion"]["version"] == "1"
    assert same["mcnemar"]["n_discordant"] == 0 and same["mcnemar"]["p_worse"] == 1.0

    two_worse = good.copy()
    two_worse[[2, 3]] = False  # 32 / 36: b = 2, c = 0
    unsure = run(two_worse)
    assert unsure["outcome"] == "not_enough_evidence" and unsure["champion_version"] == 2
    assert unsure["champion"]["accuracy"] == pytest.approx(34 / 36)  # v2 scored from the registry
    assert unsure["mcnemar"]["champion_only"] == 2 and unsure["mcnemar"]["p_worse"] == 0.25
    assert "not enough test images to tell" in unsure["reason"]
    assert unsure["alert"]  # 5.9% below the champion (relative) > 5%

    eight_worse = good.copy()
    eight_worse[2:10] = False  # 26 / 36 = 72%: above the floor, b = 8, c = 0, p = 1/256
    with caplog.at_level(logging.WARNING, logger="edge_pipeline.registry.model_registry"):
        worse = run(eight_worse)
    assert worse["outcome"] == "reject" and worse["alert"] and worse["champion_version"] == 2
    assert worse["mcnemar"]["p_worse"] == pytest.approx(1 / 256)
    assert "significantly worse than champion v2" in worse["alert_reason"]
    assert any("ALERT" in r.message and r.levelname == "WARNING" for r in caplog.records)
    md = (root / "reports/register/decision.md").read_text()
    assert md.startswith("# Promotion decision: reject")
    assert "| accuracy | 72.22% | 94.44% | -22.22 pts |" in md

    chance = np.arange(n) % 3 == 0  # 12 / 36 = 33%: below the 50% floor
    floor = run(chance)
    assert floor["outcome"] == "reject" and "floor 50.00%" in floor["reason"]

    configure()
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("edge-test", "champion").version) == "2"
    challenger = client.get_model_version_by_alias("edge-test", "challenger")
    assert str(challenger.version) == "5" and challenger.tags["outcome"] == "reject"
    assert challenger.tags["accuracy"] == "0.3333"  # 4 significant digits
    assert challenger.tags["student_int8.accuracy"] == "0.3333"
    model_dir = mlflow.artifacts.download_artifacts(challenger.source)
    rows = json.loads(next(Path(model_dir).rglob("benchmark_rows.json")).read_text())
    assert [r["id"] for r in rows] == ["student_int8"] and rows[0]["accuracy"] == 12 / 36
    assert next(Path(model_dir).rglob("benchmark_rows.csv")).stat().st_size > 0
    run_data = client.get_run(client.get_model_version("edge-test", "4").run_id).data
    assert run_data.metrics["mcnemar.champion_only"] == 8.0
    assert run_data.metrics["mcnemar.p_worse"] == pytest.approx(1 / 256)
    assert run_data.tags["outcome"] == "reject"
    # the registered champion serves: pyfunc over the ONNX file, logits for float NHWC pixels
    served = mlflow.pyfunc.load_model("models:/edge-test@champion")
    x = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    assert served.predict(x).shape == (2, 3)
    artifacts = {a.path for a in client.list_artifacts(challenger.run_id, "reports")}
    assert {"reports/benchmark", "reports/agreement", "reports/register"} <= artifacts

    nothing = run(None)  # no model passed the benchmark gates
    assert nothing["outcome"] == "nothing_to_register" and not nothing["registered"]
    assert nothing["alert"] and nothing["champion_version"] == 2
    # so far no image was new: nothing to call drift on
    assert nothing["new_images"]["n"] == 0 and not nothing["new_images"]["alert"]

    # An induced drift: 24 of tonight's images are new and relabelled at random; the champion
    # (v2, 94.44% at promotion) gets them right only by chance.
    table = split
    new = table[table["split"] != "test"].index[:24]  # the test split (and its decision) stays
    table.drop(index=new)[["id", "split"]].to_csv(root / "data/split/previous_split.csv",
                                                 index=False)  # fmt: skip
    clean = pd.read_csv(root / "data/clean/labels.csv", dtype=str).set_index("id")
    ids = table["id"][new]
    clean.loc[ids, "label"] = [str(k) for k in np.random.default_rng(1).integers(0, 3, len(new))]
    clean.reset_index().to_csv(root / "data/clean/labels.csv", index=False)
    drift = run(good)
    d = drift["new_images"]
    assert d["n"] == 24 and d["champion_version"] == "2" and d["reference"] == 0.9444
    assert d["accuracy"] < 0.7 and d["alert"] and drift["alert"]
    assert d["reason"] in drift["alert_reason"] and "at promotion (v2)" in d["reason"]
    assert (
        "The champion on tonight's new images"
        in (root / "reports/register/decision.md").read_text()
    )


def _bench_row(i: str, path: str, runtime: str, dtype: str, source: str | None) -> dict:
    """A results.json `models` entry with the keys registration reads."""
    return {
        "id": i, "path": path, "runtime": runtime, "dtype": dtype, "source": source,
        "accuracy": 0.9804878, "macro_f1": 0.95453, "size_mb": 0.134508,
        "latency_ms": {"1": {"p95": 0.0830305}}, "verdict": {"passed": dtype == "int8"},
    }  # fmt: skip


def test_registered_files_are_the_chosen_model_and_its_int8_fp32_siblings(tmp_path: Path) -> None:
    models = [
        _bench_row("teacher_fp32", "t.onnx", "onnxruntime", "float32", None),
        _bench_row("qat/student_fp32", "q32.tflite", "litert", "float32", "student"),
        _bench_row("student_pqat_int8", "q8.tflite", "litert", "int8", "student_pruned"),
        _bench_row("export/student_fp32", "e32.onnx", "onnxruntime", "float32", "student"),
        _bench_row("student_int8", "e8.onnx", "onnxruntime", "int8", "student"),
    ]
    chosen = {"chosen": "student_pqat_int8", "model": models[2], "per_runtime": {}}
    files = deployables(chosen, {"models": models})
    assert [f["path"] for f in files] == ["q8.tflite", "q32.tflite", "e32.onnx", "e8.onnx"]
    assert files[0]["row"] == {
        "id": "student_pqat_int8", "runtime": "litert", "dtype": "int8", "accuracy": 0.9804878,
        "macro_f1": 0.95453, "size_mb": 0.134508, "p95_ms_1t": 0.0830305, "passed": True,
    }  # fmt: skip
    (tmp_path / "chosen.json").write_text(
        json.dumps(chosen | {"input_shape": [8, 8, 1], "classes": ["a"], "gates": {}})
    )
    (tmp_path / "results.json").write_text(json.dumps({"models": models}))
    assert read_chosen(tmp_path / "chosen.json")["deployables"] == files
    assert deployables(chosen, None) == files[:1]  # no results.json: the chosen file only
    assert [sig4(0.9804878), sig4(0.0830305), sig4(44.769915), sig4(3), sig4("x")] == [
        "0.9805", "0.08303", "44.77", "3", "x"
    ]  # fmt: skip
