"""What the register stage reports: metrics/register.json (the record) and
reports/register/decision.md (champion and challenger side by side on the same test images, the
paired test, the decision), also attached to the MLflow run and shown as the Prefect artifact."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edge_pipeline.artifacts.catalog import DECISION_REPORT, StagePaths
from edge_pipeline.core.io import atomic_path, write_json
from edge_pipeline.registry.paired_test import PairedTest
from edge_pipeline.registry.promotion import Decision

FIGURES = ("accuracy", "balanced_accuracy", "macro_f1", "per_class_recall")


def record(
    decision: Decision, scores: dict[str, dict[str, Any]], test: PairedTest | None, *,
    chosen: dict[str, Any], model_name: str, version: str | None, previous: str | None,
    n_images: int, drift: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The metrics/register.json record: the decision, both models' figures on the same
    `n_images` test images, the paired test (None without a champion), the versions, and
    `new_images`: the champion on tonight's new images (edge_pipeline/registry/drift.py; None
    without a champion)."""
    sides = {
        role: {"version": s["version"]} | {k: s[k] for k in FIGURES} for role, s in scores.items()
    }
    if "challenger" in sides:
        m = chosen["model"]
        sides["challenger"] |= {"model": m["id"], "benchmark_accuracy": m["accuracy"]}
    test_fields = None
    if test is not None:
        test_fields = asdict(test) | {
            "n_discordant": test.n_discordant,
            "has_power": test.has_power,
            "significantly_worse": test.significantly_worse,
        }
    return {
        "model_name": model_name,
        "registered": version is not None,
        "version": int(version) if version else None,
        "candidate": chosen["chosen"],
        "test_images": n_images,
        **decision.to_dict(),
        "promoted": decision.promote,
        "mcnemar": test_fields,
        "challenger": sides.get("challenger"),
        "champion": sides.get("champion"),
        "new_images": drift,
        "previous_champion_version": int(previous) if previous else None,
        "champion_version": int(version) if decision.promote and version else (
            int(previous) if previous else None
        ),
    }  # fmt: skip


def markdown(rec: dict[str, Any]) -> str:
    """The decision report: the outcome and why, the figures side by side, the paired test."""
    lines = [
        f"# Promotion decision: {rec['outcome'].replace('_', ' ')}",
        "",
        rec["reason"],
        "",
    ]
    if rec["alert"]:
        lines += [f"**ALERT**: {rec['alert_reason']}", ""]
    if rec.get("new_images"):
        lines += ["## The champion on tonight's new images", "", rec["new_images"]["reason"], ""]
    ch, cp = rec["challenger"], rec["champion"]
    if ch is None:
        return "\n".join(lines)
    cols = [("challenger", ch)] + ([("champion", cp)] if cp else [])
    head = " | ".join(f"{role} v{side['version']}" for role, side in cols)
    lines += [
        f"Both scored on the same {rec['test_images']} test images in this run"
        + (" (challenger `" + ch["model"] + "`)." if ch else "."),
        "",
        f"| figure | {head} |" + (" challenger - champion |" if cp else ""),
        "|---|" + "---|" * (len(cols) + bool(cp)),
    ]

    def row(name: str, get: Any, fmt: str) -> str:
        cells = [fmt.format(get(side)) for _, side in cols]
        diff = [f"{(get(ch) - get(cp)) * 100:+.2f} pts"] if cp else []
        return f"| {name} | " + " | ".join(cells + diff) + " |"

    lines += [
        row("accuracy", lambda s: s["accuracy"], "{:.2%}"),
        row("balanced accuracy", lambda s: s["balanced_accuracy"], "{:.2%}"),
        row("macro-F1", lambda s: s["macro_f1"], "{:.4f}"),
        *(
            row(f"recall `{c}`", lambda s, c=c: s["per_class_recall"][c], "{:.2%}")
            for c in ch["per_class_recall"]
        ),
    ]
    t = rec["mcnemar"]
    if t:
        lines += [
            "",
            "## McNemar's exact test on the paired predictions",
            "",
            f"- both right {t['both_right']}, both wrong {t['both_wrong']}; only the champion "
            f"right (b) {t['champion_only']}, only the challenger right (c) "
            f"{t['challenger_only']}: {t['n_discordant']} discordant images",
            f"- one-sided p (challenger worse) = {t['p_worse']:.4g}; two-sided p = "
            f"{t['p_two_sided']:.4g}; alpha {t['alpha']:g}",
            f"- power rule: with n discordant images the smallest one-sided p is 0.5 ** n, so "
            f"the test can find a worse challenger only from n >= {t['min_discordant']}; "
            + ("this run has enough." if t["has_power"] else "this run has too few."),
        ]
    return "\n".join(lines) + "\n"


def write_decision(rec: dict[str, Any], paths: StagePaths) -> None:
    """metrics/register.json and reports/register/decision.md."""
    with atomic_path(paths.reports) as d:
        d.mkdir()
        (d / DECISION_REPORT).write_text(markdown(rec))
    write_json(paths.metrics, rec)
