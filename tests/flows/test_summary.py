"""The run summary page (flows/summary.py) and the nightly history
(flows/history.py): built from a workspace's metrics, tolerant of a run that stopped early."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from edge_pipeline.core.errors import EXIT_INPUT, InputError
from flows.history import append_tonight, read_history
from flows.summary import STAGES, build, markdown

REPO = Path(__file__).resolve().parents[2]
REGISTER = {  # metrics/register.json as edge_pipeline/registry/decision_report.py:record writes it
    "model_name": "edge-classifier", "registered": True, "version": 3,
    "candidate": "qat/student_pqat_int8", "test_images": 205, "outcome": "promote",
    "promote": True, "reason": "accuracy 98.05% >= champion v2 (97.56%) - 0.5 pts tolerance",
    "alert": True, "alert_reason": "accuracy on tonight's new images 6.2% below champion",
    "drop_pts": 0.0, "drop_pct": 0.0, "promoted": True, "mcnemar": None,
    "challenger": {"version": "3", "accuracy": 0.980487804878}, "champion": None,
    "previous_champion_version": 2, "champion_version": 3,
    "new_images": {"accuracy": 0.9123456, "n": 89, "reference": 0.93,
                   "reference_kind": "at promotion (v1)"},
}  # fmt: skip


def workspace(root: Path, stages: tuple[str, ...] = STAGES) -> Path:
    """params.yaml and the committed demo metrics of `stages` (register: REGISTER), a chosen.json
    and one report per stage that ran."""
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "metrics").mkdir()
    bench = json.loads((REPO / "metrics/benchmark.json").read_text())
    for stage in stages:
        metrics = json.loads((REPO / f"metrics/{stage}.json").read_text())
        if stage == "register":
            metrics = REGISTER
        (root / f"metrics/{stage}.json").write_text(json.dumps(metrics))
        (root / "reports" / stage).mkdir(parents=True)
        (root / "reports" / stage / f"{stage}.md").write_text("# report\n")
    if "benchmark" in stages:
        (root / "data/benchmark").mkdir(parents=True)
        chosen = {"chosen": bench["chosen"], "rule": "fastest passing model within 1 pt"}
        (root / "data/benchmark/chosen.json").write_text(json.dumps(chosen))
    return root


def test_full_run_page_has_every_section_with_rounded_numbers(tmp_path: Path) -> None:
    s = build(workspace(tmp_path))
    page = markdown(s)
    bench = json.loads((REPO / "metrics/benchmark.json").read_text())
    chosen = bench["chosen"]
    accuracy = f"{100 * bench['models'][chosen]['accuracy']:.1f}%"
    assert s["stopped_after"] == "register" and len(s["ran"]) == len(STAGES)
    for line in (
        "- images kept: 1058", "- quarantined files: 11", "- annotator kappa (Fleiss): 0.66",
        f"| **{chosen}** (chosen) | {accuracy} |", f"- chosen edge model: `{chosen}`",
        "  - why: fastest passing model within 1 pt",
        "- promotion: **promote** (version 3, champion now v3)",
        f"  - reason: {REGISTER['reason']}",
        f"- register: {REGISTER['alert_reason']}",
        "- benchmark: [benchmark.md](benchmark/benchmark.md)",
    ):  # fmt: skip
        assert line in page, line
    assert re.search(r"- train / val / test: \d+ / \d+ / \d+\n", page)
    assert re.search(r"- label issues \(cleanlab\): \d+\n", page)
    assert re.search(r"\| teacher_fp32 \| \d+\.\d% \| \d+\.\d% \| 44\.8 \| [\d.]+ \| fail \|", page)
    assert (
        "- champion accuracy on tonight's new images: 91.2% of 89 (93.0% at promotion (v1))" in page
    )
    # a person reads it in 30 seconds: short, no long decimals
    assert len(page.splitlines()) < 60
    assert not re.search(r"\d\.\d{5,}", page), re.findall(r"\S*\d\.\d{5,}\S*", page)


# the recorded demo's start line (metrics/{train,distill,prune}.json: init_from, scratch_why)
NIGHT_1_START = "scratch (no champion of 'edge-classifier' yet) (teacher, student, pruned model)"


def test_the_page_says_where_tonights_weights_started(tmp_path: Path) -> None:
    root = workspace(tmp_path)

    def started(hows: dict[str, tuple[str, str | None]]) -> str:
        for stage, (how, why) in hows.items():
            path = root / f"metrics/{stage}.json"
            metrics = json.loads(path.read_text()) | {"init_from": how, "scratch_why": why}
            path.write_text(json.dumps(metrics))
        return markdown(build(root))

    first = ("scratch", "no champion of 'edge-classifier' yet")
    page = started({"train": first, "distill": first, "prune": first})  # night 1
    assert "Weights started from: scratch (no champion of 'edge-classifier' yet) (teacher, " \
        "student, pruned model)." in page  # fmt: skip
    warm, refresh = ("champion v4", None), ("scratch", "refresh due: warm.refresh_every=7")
    page = started({"train": warm, "distill": warm, "prune": refresh})
    assert "Weights started from: teacher: champion v4, student: champion v4, pruned model: " \
        "scratch (refresh due: warm.refresh_every=7)." in page  # fmt: skip


def test_a_run_that_stopped_early_still_gets_its_page(tmp_path: Path) -> None:
    s = build(workspace(tmp_path, ("demo", "ingest", "agreement")))
    page = markdown(s)
    assert s["stopped_after"] == "agreement"
    assert "- the run stopped after `agreement`: later stages have no figures" in page
    assert "No model trained in this run." in page
    assert "- chosen edge model: none" in page
    assert "- promotion: not decided (register did not run)" in page
    assert "- label issues (cleanlab): -" in page
    empty = markdown(build(tmp_path / "nothing"))
    assert "Stages with results: 0 of 13." in empty and "- none written" in empty


def test_when_no_model_passes_the_page_says_so_instead_of_a_rule(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    (root / "data/benchmark/chosen.json").write_text(
        json.dumps({"chosen": None, "model": None, "rule": "fastest passing model within 1 pt"})
    )
    bench = json.loads((root / "metrics/benchmark.json").read_text())
    (root / "metrics/benchmark.json").write_text(json.dumps(bench | {"chosen": None}))
    page = markdown(build(root))
    assert "- chosen edge model: none" in page
    assert "  - why: no candidate passes every gate (failures: benchmark report)" in page
    assert "fastest passing model within 1 pt" not in page


def test_invalid_metrics_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    workspace(tmp_path, ("ingest",))
    (tmp_path / "metrics/ingest.json").write_text('{"kept": 1,\n')
    with pytest.raises(InputError, match=r"metrics/ingest.json line 2: invalid JSON"):
        build(tmp_path)


def test_history_one_row_per_night_replaced_on_rerun(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    csv, png = append_tonight(root, build(root), today=dt.date(2025, 1, 1))
    assert csv == root / "plots/history/nights.csv" and png.stat().st_size > 0
    append_tonight(root, build(root), today=dt.date(2025, 1, 1))  # same run printed twice
    demo = json.loads((root / "metrics/demo.json").read_text())
    (root / "metrics/demo.json").write_text(json.dumps(demo | {"night": 2}))
    append_tonight(root, build(root), today=dt.date(2025, 1, 2))
    table = read_history(csv)
    assert list(table["night"]) == [1, 2] and list(table["date"]) == ["2025-01-01", "2025-01-02"]
    row = table.iloc[1]
    bench = json.loads((root / "metrics/benchmark.json").read_text())
    accuracy = bench["models"][bench["chosen"]]["accuracy"]
    assert row["test_accuracy"] == float(f"{accuracy:.4g}") and row["new_images_accuracy"] == 0.9123
    assert row["kappa"] == 0.6597 and row["outcome"] == "promote" and row["p95_ms"] > 0
    assert row["model"] == json.loads((root / "metrics/benchmark.json").read_text())["chosen"]
    assert row["started_from"] == NIGHT_1_START  # the recorded demo is a first night


def test_a_history_written_before_started_from_gets_it_empty(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    csv, _ = append_tonight(root, build(root), today=dt.date(2025, 1, 1))
    pd.read_csv(csv).drop(columns="started_from").to_csv(csv, index=False)  # an older file
    demo = json.loads((root / "metrics/demo.json").read_text())
    (root / "metrics/demo.json").write_text(json.dumps(demo | {"night": 2}))
    append_tonight(root, build(root), today=dt.date(2025, 1, 2))
    table = pd.read_csv(csv, keep_default_na=False)
    assert list(table["started_from"]) == ["", NIGHT_1_START]


def test_history_of_a_workspace_without_demo_numbers_its_nights(tmp_path: Path) -> None:
    root = workspace(tmp_path, ("ingest", "agreement"))
    csv, _ = append_tonight(root, build(root))
    (root / "metrics/ingest.json").write_text(json.dumps({"kept": 5}))
    append_tonight(root, build(root))
    table = pd.read_csv(csv)
    assert list(table["night"]) == [1, 2] and table["test_accuracy"].isna().all()
    csv.write_text("night,date\n1,x\n")
    with pytest.raises(InputError, match="nights.csv: missing columns"):
        append_tonight(root, build(root))


def test_cli_writes_reports_summary_md_prints_it_and_appends_history(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "flows.summary", "--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = (root / "reports/summary.md").read_text()
    assert page.startswith("# Tonight's run") and page in proc.stdout
    assert len(read_history(root / "plots/history/nights.csv")) == 1
    (root / "metrics/train.json").write_text("{")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == EXIT_INPUT and "metrics/train.json line 1" in proc.stderr
