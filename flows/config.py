"""The `orchestration` section of params.yaml: retries, timeouts, schedule, limits.

No DVC stage reads this section, so editing it never makes a stage stale. Missing keys take the
defaults below (the same values params.yaml ships with), so a repository without the section
still runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edge_pipeline.core.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "defaults": {"retries": 2, "retry_delay_seconds": 10, "backoff": 3, "timeout_seconds": 3600},
    "stages": {},
    "max_parallel_stages": 2,
    "schedule": {"cron": "0 2 * * *", "timezone": "UTC"},
    "concurrency_limit": "edge-pipeline-workspace",
    "approval_timeout_seconds": 86400,
    "approval_poll_seconds": 10,
    "task_runner": "threads",
    "dask_address": None,
    "mlflow_ui": "http://127.0.0.1:5000",
}
log = logging.getLogger(__name__)
_POLICY_KEYS = ("retries", "retry_delay_seconds", "backoff", "timeout_seconds")


@dataclass(frozen=True)
class StagePolicy:
    """How one stage's task is retried and timed out."""

    retries: int
    retry_delay_seconds: float
    backoff: float
    timeout_seconds: float

    def delays(self) -> list[float]:
        """Wait before retry i (0-based): `retry_delay_seconds * backoff**i`."""
        return [self.retry_delay_seconds * self.backoff**i for i in range(self.retries)]


@dataclass(frozen=True)
class Orchestration:
    defaults: StagePolicy
    stages: dict[str, StagePolicy]
    max_parallel_stages: int
    cron: str
    timezone: str
    concurrency_limit: str
    approval_timeout_seconds: int
    approval_poll_seconds: int
    task_runner: str
    dask_address: str | None
    mlflow_ui: str

    def policy(self, stage: str) -> StagePolicy:
        """The stage's policy: its own entry, else its `foreach` group's (`bench@x` -> `bench`)."""
        short = stage.rsplit(":", 1)[-1]
        return self.stages.get(short) or self.stages.get(short.split("@", 1)[0]) or self.defaults


def _policy(raw: Any, base: dict[str, Any], where: str) -> StagePolicy:
    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml {where} must be a mapping of {list(_POLICY_KEYS)}")
    unknown = sorted(set(raw) - set(_POLICY_KEYS))
    if unknown:
        raise ConfigError(f"params.yaml {where}: unknown key(s) {unknown}; allowed {_POLICY_KEYS}")
    merged = {**base, **raw}
    try:
        policy = StagePolicy(
            retries=int(merged["retries"]),
            retry_delay_seconds=float(merged["retry_delay_seconds"]),
            backoff=float(merged["backoff"]),
            timeout_seconds=float(merged["timeout_seconds"]),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params.yaml {where}: {exc}; use numbers") from exc
    if policy.retries < 0 or policy.retry_delay_seconds < 0 or policy.backoff < 1:
        raise ConfigError(f"params.yaml {where}: need retries >= 0, delay >= 0, backoff >= 1")
    if policy.timeout_seconds <= 0:
        raise ConfigError(f"params.yaml {where}.timeout_seconds must be > 0")
    return policy


def load_orchestration(
    params: dict[str, Any], stage_names: list[str] | None = None
) -> Orchestration:
    """Validate `params['orchestration']`, defaults filled in; `stage_names` checks `stages:`."""
    raw = {**DEFAULTS, **(params.get("orchestration") or {})}
    defaults = _policy(raw["defaults"], DEFAULTS["defaults"], "orchestration.defaults")
    base = {k: getattr(defaults, k) for k in _POLICY_KEYS}
    stages = {
        name: _policy(p, base, f"orchestration.stages.{name}")
        for name, p in (raw["stages"] or {}).items()
    }
    if stage_names is not None:
        known = {n.rsplit(":", 1)[-1] for n in stage_names}
        known |= {n.split("@", 1)[0] for n in known}
        unknown = sorted(set(stages) - known)
        if unknown:  # a typo, or a stage removed from dvc.yaml: say so, but run
            log.warning(
                "params.yaml orchestration.stages names %s, which dvc.yaml does not have "
                "(stages: %s); those entries are ignored",
                unknown,
                sorted(known),
            )
    schedule = {**DEFAULTS["schedule"], **(raw["schedule"] or {})}
    runner = raw["task_runner"]
    if runner not in ("threads", "dask"):
        raise ConfigError(f"params.yaml orchestration.task_runner={runner!r}: use threads or dask")
    if int(raw["max_parallel_stages"]) < 1:
        raise ConfigError("params.yaml orchestration.max_parallel_stages must be >= 1")
    return Orchestration(
        defaults=defaults,
        stages=stages,
        max_parallel_stages=int(raw["max_parallel_stages"]),
        cron=str(schedule["cron"]),
        timezone=str(schedule["timezone"]),
        concurrency_limit=str(raw["concurrency_limit"]),
        approval_timeout_seconds=int(raw["approval_timeout_seconds"]),
        approval_poll_seconds=int(raw["approval_poll_seconds"]),
        task_runner=runner,
        dask_address=raw["dask_address"],
        mlflow_ui=str(raw["mlflow_ui"]).rstrip("/"),
    )
