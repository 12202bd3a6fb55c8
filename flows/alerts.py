"""Alerts that reach a person: a Prefect event per alert, and an automation that sends it on.

A stage raises an alert through its metrics JSON (metrics/register.json: a failed gate, a
challenger significantly worse than the champion, an accuracy drop > `register.alert_drop_pct`):
`alerts` (a list of reasons), or `alert: true` with `alert_reason` (reasons joined by "; ").
Nothing here knows a stage by name. After a stage that ran, `emit_alerts` emits one
`orchestration.alerts.event` (`edge-pipeline.alert`) per reason; `make serve` (flows/deploy.py)
calls `ensure_alert_automation`, which saves a notification block for
`orchestration.alerts.webhook_url` and an automation that sends every such event through it.
"""

from __future__ import annotations

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


def emit_alerts(stage: Stage, *, root: Path, cfg: Alerts, flow_run: str) -> list[str]:
    """One Prefect event per alert of the stage; returns the reasons (for the run summary)."""
    from prefect.events import emit_event

    reasons = []
    for rel, reason in stage_alerts(root, stage):
        emit_event(
            event=cfg.event,
            resource={
                "prefect.resource.id": f"edge-pipeline.stage.{stage.name}",
                "prefect.resource.name": stage.name,
            },
            payload={"stage": stage.name, "reason": reason, "file": rel, "flow_run": flow_run},
        )
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
