"""flows/approval.py: reading a stage's gate verdict from its metrics JSON."""

from __future__ import annotations

import json

import pytest

from flows.approval import ApprovalInput, gate_failed, read_gate
from flows.dag import Stage


@pytest.mark.parametrize(
    ("metrics", "failed"),
    [
        ({"gate": "needs_approval", "gate_reason": "kappa 0.41 < 0.6"}, True),  # tasks/agreement
        ({"gate": "pass"}, False),
        ({"gate": "skipped"}, False),
        ({"gate": "FAILED"}, True),
        ({"gate": {"status": "fail"}}, True),
        ({"gate": {"passed": True}}, False),
        ({"gate": False}, True),
        ({"gate_status": "blocked"}, True),
        ({"gate_passed": True}, False),
        ({"gate": "maybe"}, None),
        ({"fleiss_kappa": 0.2}, None),
    ],
)
def test_gate_verdicts(metrics, failed):
    assert gate_failed(metrics) is failed


def test_read_gate_reports_the_file_and_reason(tmp_path):
    stage = Stage("agreement", (), (), (), ("metrics/agreement.json",), (), ("agreement",))
    assert read_gate(tmp_path, stage) == (None, "metrics/agreement.json")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "agreement.json").write_text(
        json.dumps({"fleiss_kappa": 0.41, "gate": "needs_approval", "gate_reason": "0.41 < 0.6"})
    )
    assert read_gate(tmp_path, stage) == (True, "metrics/agreement.json: 0.41 < 0.6")


def test_approval_input_accepts_only_approve_or_reject():
    assert ApprovalInput(decision="approve").comment == ""
    with pytest.raises(ValueError):
        ApprovalInput(decision="maybe")
