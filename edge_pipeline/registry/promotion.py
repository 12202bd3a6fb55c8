"""The champion/challenger rule: whether a registered edge model also becomes `champion`.

Pure: `decide` sees the challenger's and the champion's figures on the same, current test split
and their paired test (edge_pipeline/registry/paired_test.py), never MLflow;
edge_pipeline/registry/model_registry.py applies its decision. With a champion (drop = champion's
accuracy - challenger's, in points, on the same images):

1. the challenger fails a gate (benchmark gates, the accuracy floor): keep the champion, alert;
2. drop <= `tolerance_pts`: promote (within tolerance);
3. McNemar's one-sided p < `alpha`: keep the champion, alert (significantly worse);
4. fewer discordant images than the test needs to reach p < alpha: keep the champion, "not
   enough test images to tell" (a promotion would be a coin flip);
5. otherwise promote (not significantly worse).

Independently, an accuracy more than `alert_drop_pct` percent (relative) below the champion's
alerts. Without a champion the challenger becomes the first champion iff it passes every gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge_pipeline.registry.paired_test import PairedTest

EPS = 1e-9  # float slack: a drop of exactly the tolerance / threshold counts as within it
Outcome = Literal["promote", "reject", "not_enough_evidence", "nothing_to_register"]


@dataclass(frozen=True)
class Candidate:
    """The challenger: accuracy in [0, 1] on today's test split, and its gate verdict."""

    name: str
    accuracy: float
    passed: bool
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Champion:
    """The registry's current `champion` version and its accuracy on today's test split."""

    version: str
    accuracy: float


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    alert: bool = False
    alert_reason: str = ""
    drop_pts: float | None = None  # champion accuracy - challenger accuracy, percentage points
    drop_pct: float | None = None  # the same drop relative to the champion's accuracy, percent

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome, "promote": self.promote, "reason": self.reason,
            "alert": self.alert, "alert_reason": self.alert_reason,
            "drop_pts": self.drop_pts, "drop_pct": self.drop_pct,
        }  # fmt: skip


def _alerts(*reasons: str) -> dict[str, Any]:
    kept = [r for r in reasons if r]
    return {"alert": bool(kept), "alert_reason": "; ".join(kept)}


def decide(
    candidate: Candidate,
    champion: Champion | None,
    test: PairedTest | None,
    *,
    tolerance_pts: float,
    alert_drop_pct: float,
) -> Decision:
    """The decision of the module docstring; `test` is required when there is a champion.

    Limits are >= 0 (params.yaml `register`, checked by edge_pipeline/config/registry.py); the
    significance level is `test.alpha`.
    """
    acc = f"accuracy {candidate.accuracy:.2%}"
    gates = f"{candidate.name} fails gates: " + "; ".join(candidate.failures)
    if champion is None:
        if candidate.passed:
            return Decision(
                "promote", f"first champion: {candidate.name} passes every gate ({acc})"
            )
        return Decision("reject", f"no champion yet and {gates}", **_alerts(gates))
    if test is None:
        raise ValueError("a champion needs the paired test of both models' predictions")
    drop_pts = (champion.accuracy - candidate.accuracy) * 100
    drop_pct = drop_pts / champion.accuracy if champion.accuracy > 0 else 0.0  # relative, in %
    versus = f"champion v{champion.version} ({champion.accuracy:.2%} on the same images)"
    counts = (
        f"McNemar exact: {test.champion_only} images only the champion gets right, "
        f"{test.challenger_only} only the challenger, one-sided p = {test.p_worse:.3g}"
    )
    big_drop = ""
    if drop_pct > alert_drop_pct + EPS:
        big_drop = f"{acc} of {candidate.name} is {drop_pct:.1f}% below {versus}; alert "
        big_drop += f"threshold {alert_drop_pct:g}%"
    figures = dict(drop_pts=drop_pts, drop_pct=drop_pct)
    if not candidate.passed:
        return Decision(
            "reject", f"keeping {versus}: {gates}", **_alerts(gates, big_drop), **figures
        )
    if drop_pts <= tolerance_pts + EPS:
        return Decision(
            "promote", f"{acc} >= {versus} - {tolerance_pts:g} pts tolerance ({counts})",
            **_alerts(big_drop), **figures,
        )  # fmt: skip
    below = f"{acc} is {drop_pts:.2f} pts below {versus} (tolerance {tolerance_pts:g} pts)"
    if test.significantly_worse:
        worse = f"{candidate.name} is significantly worse than champion v{champion.version}"
        worse += f" ({counts} < alpha {test.alpha:g})"
        return Decision(
            "reject", f"keeping the champion: {below}; {worse}",
            **_alerts(worse, big_drop), **figures,
        )  # fmt: skip
    if not test.has_power:
        return Decision(
            "not_enough_evidence",
            f"keeping the champion: not enough test images to tell: {below}, but only "
            f"{test.n_discordant} of {test.n_images} images are discordant and McNemar's exact "
            f"test needs at least {test.min_discordant} to find a worse model at alpha "
            f"{test.alpha:g} (0.5 ** n < alpha)",
            **_alerts(big_drop), **figures,
        )  # fmt: skip
    return Decision(
        "promote", f"{below}, but not significantly worse ({counts} >= alpha {test.alpha:g})",
        **_alerts(big_drop), **figures,
    )  # fmt: skip


def nothing_to_register() -> Decision:
    """The decision when no edge model passed the benchmark gates: no version, an alert."""
    reason = "no edge model passes the benchmark gates"
    return Decision("nothing_to_register", f"{reason}; nothing registered", True, reason)
