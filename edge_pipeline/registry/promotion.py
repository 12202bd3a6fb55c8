"""The champion/challenger rule: whether a registered edge model also becomes `champion`.

Pure: `decide` sees the candidate (the benchmark's chosen model) and the registry's current
champion, never MLflow; edge_pipeline/registry/model_registry.py applies its decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EPS = 1e-9  # float slack: a drop of exactly the tolerance / threshold counts as within it


@dataclass(frozen=True)
class Candidate:
    """The model up for promotion; accuracy in [0, 1]."""

    name: str
    accuracy: float
    passed: bool
    failures: tuple[str, ...] = ()

    @classmethod
    def from_chosen(cls, model: dict[str, Any]) -> Candidate:
        """From the `model` entry of data/benchmark/chosen.json (id, accuracy, verdict)."""
        verdict = model["verdict"]
        return cls(model["id"], model["accuracy"], verdict["passed"], tuple(verdict["failures"]))


@dataclass(frozen=True)
class Champion:
    """The registry's current `champion` version and its recorded test accuracy in [0, 1]."""

    version: str
    accuracy: float


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    alert: bool = False
    alert_reason: str = ""
    drop_pts: float | None = None  # champion accuracy - candidate accuracy, percentage points
    drop_pct: float | None = None  # the same drop relative to the champion's accuracy, percent


def decide(
    candidate: Candidate,
    champion: Champion | None,
    *,
    tolerance_pts: float,
    alert_drop_pct: float,
) -> Decision:
    """Promote iff the candidate passes every gate and, when a champion exists, its accuracy is at
    least the champion's minus `tolerance_pts` points. Alert (whatever the promotion) when its
    accuracy is more than `alert_drop_pct` percent (relative) below the champion's.

    Both limits are >= 0 (params.yaml `register`, checked by edge_pipeline/config/registry.py).
    """
    acc = f"accuracy {candidate.accuracy:.2%}"
    if champion is None:
        if candidate.passed:
            return Decision(True, f"first champion: {candidate.name} passes every gate ({acc})")
        return Decision(
            False,
            f"no champion yet and {candidate.name} fails gates: " + "; ".join(candidate.failures),
        )
    drop_pts = (champion.accuracy - candidate.accuracy) * 100
    drop_pct = drop_pts / champion.accuracy if champion.accuracy > 0 else 0.0  # relative, in %
    versus = f"champion v{champion.version} ({champion.accuracy:.2%})"
    alert = drop_pct > alert_drop_pct + EPS
    alert_reason = ""
    if alert:
        alert_reason = (
            f"{acc} of {candidate.name} is {drop_pct:.1f}% below {versus}; "
            f"alert threshold {alert_drop_pct:g}%"
        )
    common = dict(alert=alert, alert_reason=alert_reason, drop_pts=drop_pts, drop_pct=drop_pct)
    if not candidate.passed:
        return Decision(
            False,
            f"keeping {versus}: {candidate.name} fails gates: " + "; ".join(candidate.failures),
            **common,
        )
    if drop_pts <= tolerance_pts + EPS:
        return Decision(True, f"{acc} >= {versus} - {tolerance_pts:g} pts tolerance", **common)
    return Decision(
        False,
        f"keeping {versus}: {acc} is {drop_pts:.2f} pts below it (tolerance {tolerance_pts:g} pts)",
        **common,
    )


def nothing_to_register() -> Decision:
    """The decision when no edge model passed the benchmark gates: no version, an alert."""
    reason = "no edge model passes the benchmark gates"
    return Decision(False, f"{reason}; nothing registered", True, reason)
