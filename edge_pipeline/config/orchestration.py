"""The `orchestration` section: how flows/retrain.py runs the dvc.yaml stages.

No DVC stage reads this section, so editing it never makes a stage stale. Retry policies are
`defaults` plus per-stage overrides under `stages` (keyed by dvc.yaml stage name, or a `foreach`
group name: `bench` covers `bench@onnx`); `Orchestration.check_stages` rejects a name dvc.yaml
does not have, with the closest stage name suggested.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from edge_pipeline.config.base import Section
from edge_pipeline.core.errors import ConfigError

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


class StagePolicy(Section):
    """How one stage's task is retried and timed out."""

    retries: int = Field(2, ge=0, le=20)  # attempts after the first (bad params/input: never)
    retry_delay_seconds: float = Field(10, ge=0)  # wait before the first retry
    backoff: float = Field(3, ge=1)  # each later retry waits `backoff` times longer
    timeout_seconds: float = Field(3600, gt=0)  # then the stage's process group gets SIGTERM

    def delays(self) -> list[float]:
        """Wait before retry i (0-based): `retry_delay_seconds * backoff**i`."""
        return [self.retry_delay_seconds * self.backoff**i for i in range(self.retries)]


class StageOverride(Section):
    """A stage's own policy: the keys it sets replace those of `defaults`."""

    retries: int | None = Field(None, ge=0, le=20)
    retry_delay_seconds: float | None = Field(None, ge=0)
    backoff: float | None = Field(None, ge=1)
    timeout_seconds: float | None = Field(None, gt=0)

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump only the keys the stage sets, as params.yaml writes them."""
        return {k: v for k, v in handler(self).items() if v is not None}


def _training_stage() -> StageOverride:
    return StageOverride(retries=1, retry_delay_seconds=30, timeout_seconds=7200)


class Schedule(Section):
    """The `nightly` deployment's schedule (flows/deploy.py, prefect.yaml)."""

    cron: str = "0 2 * * *"  # five cron fields: minute hour day-of-month month day-of-week
    timezone: str = "UTC"  # IANA name, e.g. Europe/Berlin

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError("use five cron fields, e.g. '0 2 * * *' (02:00 every day)")
        return v

    @field_validator("timezone")
    @classmethod
    def _iana(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone; use e.g. UTC or Europe/Berlin") from None
        return v


class Alerts(Section):
    """Alerts of a stage's metrics (`alert: true`, `alert_reason`) as Prefect events + a notice."""

    event: str = Field("edge-pipeline.alert", min_length=1)  # the Prefect event per alert
    # where `make serve`'s automation sends each alert; null = events only, no notification
    webhook_url: str | None = None
    # webhook: JSON POST {"subject", "body"}; slack: a Slack incoming-webhook URL
    kind: Literal["webhook", "slack"] = "webhook"


class Orchestration(Section):
    """The Prefect flow over dvc.yaml (flows/retrain.py)."""

    # every stage not listed under `stages` (the I/O and data stages): retry twice
    defaults: StagePolicy = StagePolicy()
    # per-stage overrides of `defaults`; training stages retry once
    stages: dict[str, StageOverride] = Field(
        default_factory=lambda: {s: _training_stage() for s in ("train", "distill", "prune", "qat")}
    )
    max_parallel_stages: int = Field(2, ge=1, le=64)  # independent stages run at the same time
    schedule: Schedule = Schedule()  # the `nightly` deployment
    # Prefect global limit, 1 slot: queues runs in the UI (the workspace lock is a file lock)
    concurrency_limit: str = Field("edge-pipeline-workspace", min_length=1)
    # agreement.policy=approval: a paused run fails after this long without a decision
    approval_timeout_seconds: int = Field(86400, gt=0)
    approval_poll_seconds: int = Field(10, ge=1)
    task_runner: Literal["threads", "dask"] = "threads"  # prefect-dask's DaskTaskRunner for dask
    dask_address: str | None = None  # Dask scheduler address (tcp://host:8786); null = local
    # where MLflow links point when MLFLOW_TRACKING_URI is not an http(s) server
    mlflow_ui: str = "http://127.0.0.1:5000"
    alerts: Alerts = Alerts()  # stage alerts (register: failed gate, worse challenger, drop)
    # a run that changed outputs is committed on branch <prefix><run name> and `dvc push`ed
    record_branch_prefix: str = Field("runs/", min_length=1)

    def policy(self, stage: str) -> StagePolicy:
        """The stage's policy: its own entry, else its `foreach` group's (`bench@x` -> `bench`)."""
        short = stage.rsplit(":", 1)[-1]
        own = self.stages.get(short) or self.stages.get(short.split("@", 1)[0])
        if own is None:
            return self.defaults
        return self.defaults.model_copy(update=own.model_dump(exclude_none=True))

    def check_stages(self, stage_names: Iterable[str]) -> None:
        """Raise ConfigError when `stages` names a stage dvc.yaml does not have."""
        known = {n.rsplit(":", 1)[-1] for n in stage_names}
        known |= {n.split("@", 1)[0] for n in known}
        problems = []
        for name in sorted(set(self.stages) - known):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else f"stages: {', '.join(sorted(known))}"
            problems.append(
                f"params.yaml orchestration.stages.{name}: not a dvc.yaml stage; {hint}"
            )
        if problems:
            raise ConfigError("\n".join(problems))
