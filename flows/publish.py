"""What a person reads in the Prefect UI: a markdown artifact per stage, lineage events, a summary.

Generic over stages: a stage's artifact is its metrics file(s) as a table plus every markdown report
among its outputs (`reports/<stage>/*.md`: the kappa report, label-issue summary, benchmark table,
promotion decision ...). Nothing here knows a stage by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from edge_pipeline.core.tracking import flatten
from flows.dag import Stage, lock_hashes

MAX_REPORT_CHARS = 20_000  # per report file, so one huge report cannot swamp the artifact
MAX_LIST_ITEMS = 8  # a longer list in a metrics file is shown as `[N items]`
_BAD_KEY_CHARS = re.compile(r"[^a-z0-9-]+")
_BAD_ASSET_CHARS = re.compile(r"[\s#?&%\"'<>\[\]{}|\\^`]")


def artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes: `c@x` -> `stage-c-x`."""
    return f"{prefix}-{_BAD_KEY_CHARS.sub('-', name.lower()).strip('-')}"


def asset_key(root: Path, path: str) -> str:
    """A stable asset URI for a workspace path: `dvc://<repo dir name>/<path>`."""
    return _BAD_ASSET_CHARS.sub("_", f"dvc://{root.name}/{path}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def metrics_markdown(root: Path, metric_files: Iterable[str]) -> str:
    parts = []
    for rel in metric_files:
        path = root / rel
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            parts.append(f"`{rel}` could not be read: {exc}")
            continue
        flat = flatten(data if isinstance(data, dict) else {rel: data}, max_items=MAX_LIST_ITEMS)
        rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in flat.items())
        parts.append(f"**{rel}**\n\n| metric | value |\n|---|---|\n{rows}")
    return "\n\n".join(parts)


def report_files(root: Path, outs: Iterable[str]) -> list[Path]:
    """Markdown reports among the outputs: `*.md` outs and top-level `*.md` in output dirs."""
    found: list[Path] = []
    for rel in outs:
        path = root / rel
        if path.is_dir():
            found.extend(sorted(path.glob("*.md"), key=lambda p: (p.name != "report.md", p.name)))
        elif path.suffix == ".md" and path.is_file():
            found.append(path)
    return found


def stage_markdown(stage: Stage, *, root: Path, status: str, seconds: float) -> str:
    lines = [f"# Stage `{stage.name}`: {status}", ""]
    if status != "up to date":
        lines.append(f"Stage process: {seconds:.1f} s.")
    else:
        lines.append("DVC found nothing changed; the outputs below are those of an earlier run.")
    metrics = metrics_markdown(root, stage.metrics)
    if metrics:
        lines += ["", "## Metrics", "", metrics]
    for path in report_files(root, stage.outs):
        text = path.read_text(errors="replace")
        if len(text) > MAX_REPORT_CHARS:
            text = text[:MAX_REPORT_CHARS] + f"\n\n... (truncated; full report in `{path}`)"
        lines += ["", f"## {path.relative_to(root)}", "", text]
    return "\n".join(lines)


def publish_stage(stage: Stage, *, root: Path, status: str, seconds: float) -> None:
    """Markdown artifact for the stage; asset materialization events when its outputs changed."""
    create_markdown_artifact(
        markdown=stage_markdown(stage, root=root, status=status, seconds=seconds),
        key=artifact_key("stage", stage.name),
        description=f"dvc stage {stage.name}: {status}",
    )
    if status != "up to date":
        emit_lineage(stage, root=root)


def emit_lineage(stage: Stage, *, root: Path) -> None:
    """Asset events as `prefect.assets.materialize` emits them, with DVC hashes from dvc.lock.

    Inputs are the stage's data dependencies (source code deps left out to keep lineage readable);
    every output gets a `prefect.asset.materialization.succeeded` event naming its inputs.
    """
    hashes = lock_hashes(root)
    inputs = [d for d in stage.deps if not d.endswith(".py")]
    related = [_related(root, d) for d in inputs]
    by_dvc = {"prefect.resource.id": "dvc", "prefect.resource.role": "asset-materialized-by"}
    for dep in inputs:
        emit_event(
            event="prefect.asset.referenced",
            resource={"prefect.resource.id": asset_key(root, dep)},
        )
    payload_inputs = {d: hashes.get(d, "") for d in stage.deps}
    for out in stage.outs:
        emit_event(
            event="prefect.asset.materialization.succeeded",
            resource={"prefect.resource.id": asset_key(root, out), "prefect.resource.name": out},
            related=[*related, by_dvc],
            payload={"stage": stage.name, "dvc_md5": hashes.get(out, ""), "inputs": payload_inputs},
        )


def _related(root: Path, path: str) -> dict[str, str]:
    return {"prefect.resource.id": asset_key(root, path), "prefect.resource.role": "asset"}


def summary_markdown(root: Path, *, alerts: list[str]) -> str:
    """The run's one page (flows.summary), then the alert events it sent."""
    from flows.summary import build, markdown

    lines = [markdown(build(root)).rstrip(), "", "## Alert events sent", ""]
    lines += [f"- {a}" for a in alerts] or ["None in this run."]
    return "\n".join(lines)


def publish_summary(
    results: list[dict[str, Any]], *, alerts: list[str], root: Path, key: str = "retrain-summary"
) -> None:
    """Table artifact (one row per stage: status, seconds, attempts) and the run's summary page."""
    create_table_artifact(table=results, key=key, description="stages of this flow run")
    create_markdown_artifact(
        markdown=summary_markdown(root, alerts=alerts),
        key="run-summary",
        description=f"this run's summary; {len(alerts)} alert(s)",
    )
