"""Approval gate: a stage whose params section says `policy: approval` and whose metrics report a
failed gate pauses the flow run until a person approves or rejects it in the Prefect UI.

Coordination with the stage is through its metrics JSON only (e.g. metrics/agreement.json). The
verdict is read from the first of these keys that is present (tasks/agreement.py writes `gate`, with
`gate_reason`):

- `gate`: a string (`pass`/`passed`/`ok`/`skipped` pass; `fail`/`failed`/`needs_approval`/
  `blocked`/`warn` fail), a boolean (True = passed), or a mapping with `status` (string as above)
  or `passed` (boolean);
- `gate_status`: a string as above;
- `gate_passed`: a boolean.

With none of them the gate is reported as unknown and the run goes on (a warning is logged).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.dag import Stage, stage_metrics
from flows.publish import artifact_key, stage_markdown

PASSED = {"pass", "passed", "ok", "skipped", "not_applicable", "approved"}
FAILED = {"fail", "failed", "needs_approval", "blocked", "warn", "below_threshold"}
GATE_KEYS = ("gate", "gate_status", "gate_passed")


class ApprovalInput(RunInput):
    """What the Prefect UI asks for when the run pauses at a gate."""

    decision: Literal["approve", "reject"]
    comment: str = ""


class ApprovalRejected(RuntimeError):
    """The gate was rejected, or nobody decided before the timeout."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


def _verdict(value: Any, where: str) -> bool | None:
    """True = gate failed, False = passed, None = not a verdict we understand."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        v = value.strip().lower()
        return True if v in FAILED else False if v in PASSED else None
    if isinstance(value, Mapping):
        if "status" in value:
            return _verdict(value["status"], f"{where}.status")
        if "passed" in value:
            return _verdict(bool(value["passed"]), f"{where}.passed")
    return None


def gate_failed(metrics: Mapping[str, Any]) -> bool | None:
    """The gate verdict in a stage's metrics: True failed, False passed, None when not reported."""
    for key in GATE_KEYS:
        if key in metrics:
            return _verdict(metrics[key], key)
    return None


def read_gate(root: Path, stage: Stage) -> tuple[bool | None, str]:
    """(verdict, explanation) for the stage; verdict None when no metrics file reports one.

    The explanation is the metrics file plus its `gate_reason` when the stage wrote one.
    """
    for rel, metrics in stage_metrics(root, stage):
        verdict = gate_failed(metrics)
        if verdict is not None:
            reason = metrics.get("gate_reason")
            return verdict, f"{rel}: {reason}" if reason else rel
    return None, ", ".join(stage.metrics) or "(no metrics file)"


def request_approval(
    stage: Stage, *, root: Path, why: str, timeout_s: int, poll_s: int
) -> ApprovalInput:
    """Pause the run showing the stage's report; return the approval or raise ApprovalRejected."""
    report = stage_markdown(stage, root=root, status="gate failed: approval needed", seconds=0.0)
    create_markdown_artifact(
        markdown=report,
        key=artifact_key("approval", stage.name),
        description=f"{stage.name}: gate failed, waiting for approval",
    )
    form = ApprovalInput.with_initial_data(
        description=(
            f"**{stage.name}** failed its gate ({why}; policy: approval). Read the report below, "
            f"then approve to continue the pipeline or reject to stop this run.\n\n{report}"
        ),
    )
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=poll_s)
    except FlowPauseTimeout as exc:
        raise ApprovalRejected(
            f"stage '{stage.name}' gate: no decision within {timeout_s} s; run stopped",
            stage=stage.name,
        ) from exc
    if answer.decision != "approve":
        note = f": {answer.comment}" if answer.comment else ""
        raise ApprovalRejected(f"stage '{stage.name}' gate rejected{note}", stage=stage.name)
    return answer
