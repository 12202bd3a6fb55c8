"""Alerts that reach a person: a Prefect event per alert, and an automation that sends it on.

A stage raises an alert through its metrics JSON (metrics/register.json: a failed gate, a
challenger significantly worse than the champion, an accuracy drop > `register.alert_drop_pct`):
`alerts` (a list of reasons), or `alert: true` with `alert_reason` (reasons joined by "; ").
Nothing here knows a stage by name. After a stage that ran, `emit_alerts` emits one
`orchestration.alerts.event` (`edge-pipeline.alert`) per reason. The flow emits the same event,
through `emit_alert`, when a run stops on a failure (flows/retrain.py: a night that fails must not
wait for someone to open the UI) and when a gate pauses the run for approval
(flows/scheduler.py: the approver has to hear of it). `make serve` (flows/deploy.py) calls
`ensure_alert_automation`, which saves a notification block for `orchestration.alerts.webhook_url`
and an automation that sends every such event through it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from edge_pipeline.config.orchestration import Alerts
from flows.dag import Stage, stage_metrics

AUTOMATION = "edge-pipeline-alerts"
BLOCK = "edge-pipeline-alerts"
SUBJECT = "edge-pipeline alert: {{ event.payload.stage }}"
BODY = "{{ event.payload.reason }} (flow run {{ event.payload.flow_run }}, {{ event.occurred }})"


def alert_reasons(metrics: Mapping[str, Any]) -> list[str]:
    """The alerts a metrics mapping reports: `alerts: [..]`, or `alert: true` + `alert_reason`."""
    listed = metrics.get("alerts")
    if isinstance(listed, list):
        return [str(a.get("reason", a)) if isinstance(a, Mapping) else str(a) for a in listed]
    if metrics.get("alert") is True or str(metrics.get("alert")).lower() == "true":
        text = str(metrics.get("alert_reason") or "alert raised (no reason given)")
        return [r.strip() for r in text.split("; ") if r.strip()]
    return []


def stage_alerts(root: Path, stage: Stage) -> list[tuple[str, str]]:
    """(metrics file, reason) of every alert in the stage's metrics files."""
    return [(rel, r) for rel, metrics in stage_metrics(root, stage) for r in alert_reasons(metrics)]


def emit_alert(cfg: Alerts, *, stage: str, reason: str, flow_run: str, file: str = "") -> None:
    """One Prefect alert event about `stage` (a stage name, or `retrain` for the run itself)."""
    from prefect.events import emit_event

    emit_event(
        event=cfg.event,
        resource={
            "prefect.resource.id": f"edge-pipeline.stage.{stage}",
            "prefect.resource.name": stage,
        },
        payload={"stage": stage, "reason": reason, "file": file, "flow_run": flow_run},
    )


def failure_reason(error: BaseException) -> str:
    """A failed run's cause in a line or two: the exception's first line, and the last ERROR line
    a stage logged (edge_pipeline/core/logs.py format), which names the file or key and the fix."""
    lines = str(error).splitlines() or [type(error).__name__]
    logged = [line for line in lines[1:] if re.match(r"^[\d:.]+ \S+ ERROR ", line)]
    cause = f" ({logged[-1].split(' ERROR ', 1)[1]})" if logged else ""
    return f"run stopped: {lines[0].removeprefix('pipeline stopped: ')}{cause}"


def emit_alerts(stage: Stage, *, root: Path, cfg: Alerts, flow_run: str) -> list[str]:
    """One Prefect event per alert of the stage; returns the reasons (for the run summary)."""
    reasons = []
    for rel, reason in stage_alerts(root, stage):
        emit_alert(cfg, stage=stage.name, reason=reason, flow_run=flow_run, file=rel)
        reasons.append(f"{stage.name}: {reason}")
    return reasons


def notification_block(cfg: Alerts) -> Any:
    """The notification block for `cfg.webhook_url` (Slack's is the same with another URL)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    if cfg.kind == "slack":
        return SlackWebhook(url=cfg.webhook_url)
    return CustomWebhookNotificationBlock(
        name=BLOCK,
        url=cfg.webhook_url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    )


def ensure_alert_automation(cfg: Alerts) -> str:
    """Create (or replace) the block and automation that send every alert event; what was done.

    Without `webhook_url` the events are still emitted (Event feed), nothing is sent.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION):
            client.delete_automation(old.id)
        if not cfg.webhook_url:
            return f"alerts: {cfg.event} events only (orchestration.alerts.webhook_url is null)"
        block_id = notification_block(cfg).save(BLOCK, overwrite=True)
        automation = AutomationCore(
            name=AUTOMATION,
            description="Send every edge-pipeline alert through the notification block",
            trigger=EventTrigger(expect={cfg.event}, posture=Posture.Reactive, threshold=1),
            actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
        )
        client.create_automation(automation)
    host = httpx.URL(cfg.webhook_url).host  # the URL itself may hold a token: not printed
    return f"alerts: each {cfg.event} event is sent to the {cfg.kind} webhook at {host}"
