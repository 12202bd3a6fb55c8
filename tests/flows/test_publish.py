"""flows/publish.py and the scheduler's overhead arithmetic: what the UI shows."""

from __future__ import annotations

import json

import pytest

from edge_pipeline.core.tracking import flatten
from flows.dag import Stage
from flows.publish import MAX_LIST_ITEMS, artifact_key, asset_key, report_files, stage_markdown
from flows.scheduler import busy_seconds
from flows.stages import StageResult


def test_keys_are_valid_for_prefect(tmp_path):
    assert artifact_key("stage", "bench@ONNX_int8") == "stage-bench-onnx-int8"
    assert artifact_key("stage", "sub/dvc.yaml:train") == "stage-sub-dvc-yaml-train"
    root = tmp_path / "my repo"
    assert asset_key(root, "data/ingest") == "dvc://my_repo/data/ingest"


def test_flatten_summarises_long_lists_for_metrics_tables():
    metrics = {"a": {"b": 1, "c": [1, 2]}, "d": list(range(20))}
    assert flatten(metrics, max_items=MAX_LIST_ITEMS) == {
        "a.b": 1, "a.c": "[1, 2]", "d": "[20 items]",
    }  # fmt: skip
    assert flatten(metrics)["d"] == str(list(range(20)))  # MLflow params: the string form


def test_stage_markdown_has_metrics_table_and_reports(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "agreement.json").write_text(
        json.dumps({"fleiss_kappa": 0.41234, "gate": "needs_approval"})
    )
    reports = tmp_path / "reports" / "agreement"
    reports.mkdir(parents=True)
    (reports / "relabel.md").write_text("relabel queue")
    (reports / "report.md").write_text("# Kappa report\nFleiss 0.41")
    stage = Stage(
        "agreement", ("ingest",), ("data/ingest",), ("reports/agreement", "metrics/agreement.json"),
        ("metrics/agreement.json",), ("metrics/agreement.json",), ("agreement",),
    )  # fmt: skip
    assert [p.name for p in report_files(tmp_path, stage.outs)] == ["report.md", "relabel.md"]
    md = stage_markdown(stage, root=tmp_path, status="ran", seconds=3.21)
    assert md.startswith("# Stage `agreement`: ran\n\nStage process: 3.2 s.")
    assert "| fleiss_kappa | 0.4123 |" in md and "| gate | needs_approval |" in md
    assert md.index("# Kappa report") < md.index("relabel queue")


def test_busy_seconds_is_the_union_of_stage_intervals():
    results = [
        StageResult("a", "ran", 0.0, 2.0, 1),
        StageResult("b", "ran", 2.5, 5.0, 1),
        StageResult("c", "ran", 3.0, 4.0, 1),  # inside b: counted once
        StageResult("d", "up to date", 0.0, 0.0, 1),
    ]
    assert busy_seconds(results) == 4.5


@pytest.mark.slow
def test_lineage_events_carry_dvc_hashes(tmp_path, monkeypatch):
    from prefect.assets import Asset

    from flows import publish
    from flows.dag import load_dag, lock_hashes
    from tests.flows_repo import dvc, make_repo

    root = make_repo(tmp_path / "repo")
    dvc(root, "repro", "-q")
    events: list[dict] = []
    monkeypatch.setattr(publish, "emit_event", lambda **kw: events.append(kw))
    publish.emit_lineage(load_dag(root).stages["d"], root=root)

    referenced = [
        e["resource"]["prefect.resource.id"] for e in events if e["event"].endswith("referenced")
    ]
    assert referenced == ["dvc://repo/out/b.txt", "dvc://repo/out/c.txt"]  # stage.py left out
    made = {
        e["resource"]["prefect.resource.name"]: e for e in events if "materialization" in e["event"]
    }
    assert set(made) == {"out/d.txt", "reports/d", "metrics/d.json"}
    hashes = lock_hashes(root)
    out = made["out/d.txt"]
    assert out["event"] == "prefect.asset.materialization.succeeded"
    assert out["payload"]["dvc_md5"] == hashes["out/d.txt"]
    assert out["payload"]["inputs"]["out/b.txt"] == hashes["out/b.txt"]
    assert {r["prefect.resource.id"] for r in out["related"]} == {*referenced, "dvc"}
    for key in [*referenced, *(e["resource"]["prefect.resource.id"] for e in made.values())]:
        Asset(key=key)  # valid Prefect asset keys
