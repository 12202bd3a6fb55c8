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
import pytest
import yaml

from edge_pipeline.config import load_section
from edge_pipeline.config.registry import Register
from edge_pipeline.core.errors import EXIT_CONFIG, ConfigError, InputError
from edge_pipeline.registry.model_registry import read_chosen
from edge_pipeline.registry.promotion import Candidate, Champion, decide
from tests._edge_models import _onnx_linear

REPO = Path(__file__).parents[2]

RULE = {"tolerance_pts": 0.5, "alert_drop_pct": 5.0}


def test_first_run_promotes_when_gates_pass() -> None:
    d = decide(Candidate("m", 0.90, True), None, **RULE)
    assert d.promote and "first champion" in d.reason and not d.alert
    assert d.drop_pts is None and d.drop_pct is None


def test_first_run_does_not_promote_a_failing_model() -> None:
    d = decide(Candidate("m", 0.99, False, ("size 9.00 MB > 5 MB",)), None, **RULE)
    assert not d.promote and "size 9.00 MB > 5 MB" in d.reason and not d.alert


def test_better_model_promotes() -> None:
    d = decide(Candidate("m", 0.95, True), Champion("3", 0.90), **RULE)
    assert d.promote and not d.alert
    assert d.drop_pts == pytest.approx(-5.0)


@pytest.mark.parametrize("accuracy", [0.897, 0.895])  # 0.3 pts, and exactly the tolerance
def test_slightly_worse_within_tolerance_promotes(accuracy: float) -> None:
    d = decide(Candidate("m", accuracy, True), Champion("3", 0.90), **RULE)
    assert d.promote and not d.alert and "tolerance" in d.reason


def test_worse_beyond_tolerance_keeps_champion_without_alert() -> None:
    d = decide(Candidate("m", 0.88, True), Champion("3", 0.90), **RULE)
    assert not d.promote and not d.alert
    assert "keeping champion v3 (90.00%)" in d.reason and "2.00 pts below" in d.reason
    assert d.drop_pts == pytest.approx(2.0) and d.drop_pct == pytest.approx(2.0 / 0.9)


def test_much_worse_keeps_champion_and_alerts() -> None:
    d = decide(Candidate("m", 0.80, True), Champion("3", 0.90), **RULE)
    assert not d.promote and d.alert
    assert d.drop_pct == pytest.approx(100 * 0.10 / 0.90)
    assert "11.1% below champion v3" in d.alert_reason and "threshold 5%" in d.alert_reason


def test_failing_candidate_keeps_champion_and_still_alerts_on_a_big_drop() -> None:
    d = decide(
        Candidate("m", 0.50, False, ("p95 latency 12 ms > 10 ms",)), Champion("1", 0.9), **RULE
    )
    assert not d.promote and d.alert and "fails gates: p95 latency" in d.reason


def test_alert_is_relative_to_the_champion() -> None:
    # 4.5 pts below a 90% champion is 5.0% relative: not above the 5% threshold
    d = decide(Candidate("m", 0.855, True), Champion("1", 0.90), tolerance_pts=10, alert_drop_pct=5)
    assert d.promote and not d.alert


def test_params_yaml_register_section_is_the_schema_default() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())["register"]
    assert Register.model_validate(raw) == Register()
    assert Register().to_dict() == RULE | {"model_name": "edge-classifier"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tolerance_pts": -1}, "register.tolerance_pts=-1: Input should be greater than or equal"),
        ({"alert_drop_pct": -0.1}, "register.alert_drop_pct=-0.1: Input should be greater than"),
        ({"tolerance_pts": "x"}, "register.tolerance_pts='x': Input should be a valid number"),
        ({"tolerance_pt": 1}, "register.tolerance_pt: not an option; did you mean tolerance_pts?"),
        ({"model_name": ""}, "register.model_name='': String should have at least 1 character"),
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
        InputError, match=r"missing keys \['per_runtime', 'input_shape', 'classes'\]"
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


def write_benchmark_outputs(root: Path, accuracy: float | None) -> None:
    """A benchmark stage's outputs (chosen.json contract) around a real tiny ONNX model."""
    model = root / "data" / "export" / "student_int8.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    w = np.eye(16 * 16, 3, dtype=np.float32)
    _onnx_linear(model, [(w, np.zeros(3, np.float32), False)], ["N", 16, 16, 1])
    entry = {
        "id": "student_int8", "name": "student_int8", "stage": "export", "path": str(model),
        "runtime": "onnxruntime", "layout": "NHWC", "dtype": "int8", "source": "student_fp32",
        "accuracy": accuracy, "macro_f1": accuracy, "size_mb": 0.01,
        "latency_ms": {"1": {"p95": 0.2}}, "verdict": {"passed": True, "failures": []},
    }  # fmt: skip
    chosen = {
        "chosen": entry["id"] if accuracy is not None else None,
        "model": entry if accuracy is not None else None,
        "per_runtime": {"onnxruntime": entry} if accuracy is not None else {},
        "input_shape": [16, 16, 1], "classes": ["0", "1", "2"],
    }  # fmt: skip
    (root / "data" / "benchmark").mkdir(parents=True, exist_ok=True)
    (root / "data" / "benchmark" / "chosen.json").write_text(json.dumps(chosen))
    for stage, name in (("benchmark", "benchmark.md"), ("agreement", "kappa.csv")):
        (root / "reports" / stage).mkdir(parents=True, exist_ok=True)
        (root / "reports" / stage / name).write_text("report\n")


@pytest.mark.slow
def test_register_promotion_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import configure
    from tasks import register

    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    params["register"] = {"model_name": "edge-test", "tolerance_pts": 0.5, "alert_drop_pct": 5.0}
    Path("params.yaml").write_text(yaml.safe_dump(params))

    def run(accuracy: float) -> dict:
        write_benchmark_outputs(tmp_path, accuracy)
        register.main()
        return json.loads(Path("metrics/register.json").read_text())

    first = run(0.90)  # no champion yet: promotes
    assert first["promoted"] and first["version"] == 1 and first["champion_version"] == 1
    assert first["previous_champion_version"] is None and not first["alert"]
    better = run(0.95)
    assert better["promoted"] and better["champion_version"] == 2
    assert better["previous_champion_accuracy"] == pytest.approx(0.95 - 0.05)
    within = run(0.947)  # 0.3 pts below, tolerance 0.5
    assert within["promoted"] and within["champion_version"] == 3
    with caplog.at_level(logging.WARNING, logger="edge_pipeline.registry.model_registry"):
        worse = run(0.80)  # 15.5% below: keeps v3, alerts
    assert not worse["promoted"] and worse["alert"] and worse["version"] == 4
    assert worse["champion_version"] == 3 and "15.5% below champion v3" in worse["alert_reason"]
    assert any("ALERT" in r.message and r.levelname == "WARNING" for r in caplog.records)

    configure()
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("edge-test", "champion").version) == "3"
    challenger = client.get_model_version_by_alias("edge-test", "challenger")
    assert str(challenger.version) == "4" and challenger.tags["accuracy"] == "0.8"
    assert "keeping champion v3" in challenger.tags["decision"]
    # the registered champion serves: pyfunc over the ONNX file, logits for float NHWC pixels
    served = mlflow.pyfunc.load_model("models:/edge-test@champion")
    x = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    np.testing.assert_allclose(served.predict(x), x.reshape(2, -1)[:, :3], atol=1e-6)
    artifacts = {a.path for a in client.list_artifacts(challenger.run_id, "reports")}
    assert {"reports/benchmark", "reports/agreement"} <= artifacts

    nothing = run(None)  # no model passed the benchmark gates
    assert not nothing["registered"] and not nothing["promoted"] and nothing["alert"]
    assert nothing["champion_version"] == 3
    assert str(client.get_model_version_by_alias("edge-test", "champion").version) == "3"
