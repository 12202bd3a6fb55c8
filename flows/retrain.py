"""The retrain flow: every stage of dvc.yaml as one Prefect task, run through DVC.

    python -m flows.retrain                          # reproduce the committed params
    python -m flows.retrain -S train.epochs=3        # a run with overrides = a DVC experiment

The stage list and edges come from dvc.yaml through DVC (flows/dag.py); each stage runs as
`dvc repro --single-item <stage>` (flows/stages.py), so DVC decides what is stale and dvc.lock stays
the record. A stage is submitted as soon as all its upstream stages finished, so independent stages
run at the same time (at most `orchestration.max_parallel_stages`). See docs/orchestration.md.

The workspace is this repository, or `--workspace` (PIPELINE_WORKSPACE): set by whoever starts
the process, never a flow parameter, so a run started from the UI or API cannot point it at
another directory. The run holds the workspace's file lock (flows/workspace.py) throughout.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from edge_pipeline.config import Paths
from edge_pipeline.config.orchestration import Orchestration
from edge_pipeline.core.errors import EXIT_CONFIG, ConfigError, InputError
from flows.alerts import emit_alert, emit_alerts, failure_reason
from flows.config import changed_only, committed_alerts, run_params, schema
from flows.dag import Dag, load_dag, stale_stages
from flows.form import overrides_json_schema
from flows.local_server import (
    guard_temporary_server,
    harden_temporary_server,
    patient_temporary_server,
)
from flows.overrides import WorkspaceSnapshot, parse_set_args, save_experiment, write_overrides
from flows.parent_run import ParentRun, parent_run
from flows.publish import publish_summary
from flows.record import record_run
from flows.scheduler import busy_seconds, run_dag
from flows.stages import StageResult
from flows.workspace import recover, workspace_lock

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_ENV = "PIPELINE_WORKSPACE"
KEEP = "params.yaml"  # the Run form's `approval` choice that changes nothing
Approval = Literal["params.yaml", "fail", "warn", "approval"]


def workspace_root() -> Path:
    """The DVC repository to run in: $PIPELINE_WORKSPACE, else this repository."""
    return Path(os.environ.get(WORKSPACE_ENV) or REPO_ROOT).resolve()


def output_roots(params: dict[str, Any]) -> list[str]:
    """The output roots of params.yaml `paths` (data, reports, metrics, plots)."""
    paths = Paths.model_validate(params.get("paths") or {})
    return [paths.data, paths.reports, paths.metrics, paths.plots]


def requested_overrides(
    overrides: dict[str, Any] | None, source: str | None, approval: str | None
) -> dict[str, Any]:
    """Flow parameters -> params.yaml overrides (`source`, `approval` are shorthands; an empty
    source and approval `params.yaml` change nothing)."""
    requested = dict(overrides or {})
    if source:
        requested["ingest.source"] = source
    if approval and approval != KEEP:
        requested["agreement.policy"] = approval
    return requested


class Phases:
    """Wall time per phase of the flow body, for the overhead report."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return self.last - self.start

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items())


def experiment_name(run_name: str) -> str:
    """A DVC experiment (git ref) name from the flow run name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-.") or "retrain"


def ensure_limit(name: str) -> None:
    """Create the 1-slot global concurrency limit if missing, so every run honours it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                limit = GlobalConcurrencyLimitCreate(name=name, limit=1)
                client.create_global_concurrency_limit(limit)
            except ObjectAlreadyExists:  # another run created it a moment ago
                pass


# The Run form's `overrides`: a mapping of dotted keys whose JSON schema lists every params.yaml
# key with its type and comment (flows/form.py), generated from the params schema at import.
Overrides = Annotated[
    dict[str, Any],
    Field(json_schema_extra=overrides_json_schema(schema(), workspace_root() / "params.yaml")),
]


@flow(name="retrain", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def retrain(
    # A non-optional dict: Prefect's default (V2) Run form offers input only for that.
    overrides: Overrides = {},  # noqa: B006 - never mutated; Prefect validates a copy
    source: str = "",
    approval: Approval = KEEP,
) -> dict[str, Any]:
    """Reproduce the DVC pipeline stage by stage.

    Args:
        overrides: params.yaml keys to change for this run, e.g. {"train.epochs": 3}; recorded as
            a DVC experiment named after the flow run. Unknown keys fail the run before any stage.
        source: an image directory for this run (the override `ingest.source`); empty: params.yaml.
        approval: the override `agreement.policy` (fail | warn | approval); params.yaml: keep.
    """
    clock = Phases()
    guard_temporary_server()  # it must not outlive this process, however it ends
    root = workspace_root()
    params_file = root / "params.yaml"
    name = flow_run.get_name() or "retrain"
    wanted = requested_overrides(overrides, source, approval)
    try:
        requested = changed_only(params_file, wanted)
        effective, cfg = run_params(params_file, requested)  # ConfigError: fails now, no stage ran
    except ConfigError as err:
        if not wanted:  # a night on the committed params.yaml: whoever started it is not watching
            alerts = committed_alerts(params_file)
            emit_alert(alerts, stage="retrain", reason=failure_reason(err), flow_run=name)
        raise
    try:
        return run_workspace(root, effective, cfg, requested, clock, run_name=name)
    except Exception as err:  # a night that stops must reach a person (not on Ctrl-C / cancel)
        stage = getattr(err, "stage", "retrain")  # PipelineError, ApprovalRejected name it
        emit_alert(cfg.alerts, stage=stage, reason=failure_reason(err), flow_run=name)
        raise


def run_workspace(
    root: Path,
    effective: dict[str, Any],
    cfg: Orchestration,
    requested: dict[str, Any],
    clock: Phases,
    *,
    run_name: str,
) -> dict[str, Any]:
    """Under the workspace lock: recover, run the stale stages, publish; the run's summary."""
    logger = get_run_logger()
    parent: ParentRun | None = None
    alerts: list[str] = []
    params_file = root / "params.yaml"
    dag = load_dag(root)
    cfg.check_stages(dag.order)
    experiment = experiment_name(run_name) if requested else None
    uncached = [p for s in dag for p in s.uncached]
    ensure_limit(cfg.concurrency_limit)
    clock.mark("prepare")

    with workspace_lock(root, holder=f"flow run {run_name}", on_wait=logger.warning):
        clock.mark("wait for workspace")  # another run held the workspace
        # No other run of this workspace is alive now: undo what a killed one left behind.
        recover(
            root,
            limit=cfg.concurrency_limit,
            output_roots=output_roots(effective),
            log=logger.warning,
        )
        clock.mark("recover")
        with concurrency(cfg.concurrency_limit, occupy=1, strict=True):
            snapshot = None
            if requested:
                snapshot = WorkspaceSnapshot(root, ["params.yaml", "dvc.lock", *uncached])
                write_overrides(params_file, requested)
            try:
                check_source(root, effective)  # before DVC hashes it: a FIFO would hang DVC
                stale = set(stale_stages(root))
                clock.mark("dvc status")
                if not stale:  # a no-op run: no MLflow run, nothing to record
                    results = run_dag(dag, stale, root=root, cfg=cfg, params=effective,
                                      parent_run_id=None)  # fmt: skip
                    logger.info("nothing changed: no MLflow run, nothing recorded")
                    clock.mark("stages")
                else:
                    results, parent, alerts = changing_run(
                        dag, stale, root=root, cfg=cfg, params=effective, run_name=run_name,
                        experiment=experiment, requested=requested, uncached=uncached, clock=clock,
                    )  # fmt: skip
            finally:
                if snapshot is not None:
                    for warning in snapshot.restore():
                        logger.warning(warning)
                    clock.mark("restore workspace")

    rows = [r.row() for r in results]
    publish_summary(rows, alerts=alerts, root=root)
    clock.mark("summary")
    waited = clock.phases["wait for workspace"]
    wall = clock.total() - waited
    busy = busy_seconds(results)
    print(
        f"{sum(r.changed for r in results)}/{len(results)} stages changed; flow wall {wall:.1f} s, "
        f"stage processes busy {busy:.1f} s, orchestration overhead {wall - busy:.1f} s "
        f"(phases: {clock})"
    )
    return {
        "stages": rows,
        "wall_s": wall,
        "stage_busy_s": busy,
        "overhead_s": wall - busy,
        "phases_s": clock.phases,
        "waited_for_workspace_s": waited,
        "experiment": experiment,
        "alerts": alerts,
        "mlflow_run_id": parent.run_id if parent else None,
        "mlflow_url": parent.url(cfg.mlflow_ui) if parent else None,
        "prefect_url": flow_run.get_flow_run_ui_url(),
    }


def check_source(root: Path, params: dict[str, Any]) -> None:
    """InputError when `ingest.source` holds entries DVC cannot hash (edge_pipeline.quality).

    Ingest quarantines FIFOs, sockets, devices, dangling links and links leaving the source, but
    DVC hashes the source (a dependency of ingest) first: it blocks forever reading a FIFO and
    fails on a dangling link. So the run fails here, before `dvc status`, naming every entry;
    a generated .dvcignore would instead change what DVC hashes behind the person's back.
    """
    from edge_pipeline.quality.sources import special_entries

    source = (params.get("ingest") or {}).get("source")
    path = root / source if source else None
    if path is None or not path.is_dir():
        return
    found = special_entries(path)
    if found:
        shown = ", ".join(f"{rel} ({why})" for rel, why in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise InputError(
            f"params.yaml ingest.source={source}: {len(found)} entries"
            f" that DVC cannot hash (a FIFO would hang it, a dangling link fails it): "
            f"{shown}{more}. Remove them or move them out of {source}, then run again; "
            "nothing was run."
        )


def changing_run(
    dag: Dag,
    stale: set[str],
    *,
    root: Path,
    cfg: Orchestration,
    params: dict[str, Any],
    run_name: str,
    experiment: str | None,
    requested: dict[str, Any],
    uncached: list[str],
    clock: Phases,
) -> tuple[list[StageResult], ParentRun, list[str]]:
    """A run with stale stages: MLflow parent, stages, alerts, record on a branch, DVC push."""
    logger = get_run_logger()
    with parent_run(
        name=run_name,
        root=root,
        experiment=experiment,
        flow_run_id=str(flow_run.get_id()),
        params=requested,
    ) as parent:
        create_link_artifact(
            link=parent.url(cfg.mlflow_ui),
            link_text=f"MLflow run {run_name}",
            key="mlflow-run",
            description="the MLflow parent run of this flow run",
        )
        clock.mark("mlflow")
        results = run_dag(
            dag, stale, root=root, cfg=cfg, params=params, parent_run_id=parent.run_id
        )
        clock.mark("stages")
        alerts = [
            reason
            for r in results
            if r.changed
            for reason in emit_alerts(
                dag.stages[r.name], root=root, cfg=cfg.alerts, flow_run=run_name
            )  # fmt: skip
        ]
        for alert in alerts:
            logger.warning("ALERT %s", alert)
        branch = cfg.record_branch_prefix + experiment_name(run_name)
        record = record_run(root, branch=branch, message=f"retrain run {run_name}",
                            uncached=uncached)  # fmt: skip
        parent.record(commit=record.commit, branch=record.branch, pushed=record.pushed,
                      experiment=experiment)  # fmt: skip
        log = logger.info if record.pushed.startswith("outputs pushed") else logger.warning
        log("recorded as %s on branch %s; %s", record.commit[:12] or "(nothing)",
            record.branch or "-", record.pushed)  # fmt: skip
        clock.mark("record")
        if experiment:
            save_experiment(root, experiment, uncached)
            logger.info("recorded DVC experiment %s (dvc exp show / apply)", experiment)
            clock.mark("dvc exp save")
        parent.log_stage_seconds({r.name: r.seconds for r in results if r.changed})
    return results, parent, alerts


def build_flow(cfg: Orchestration) -> Any:
    """The flow with the task runner params.yaml asks for (threads, or Dask for scale-out)."""
    if cfg.task_runner != "dask":
        return retrain
    from prefect_dask import DaskTaskRunner

    runner = (
        DaskTaskRunner(address=cfg.dask_address)
        if cfg.dask_address
        else DaskTaskRunner(
            cluster_kwargs={"n_workers": cfg.max_parallel_stages, "threads_per_worker": 1}
        )
    )
    return retrain.with_options(task_runner=runner)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n")[0])
    ap.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml key for this run (recorded as a DVC experiment)",
    )
    ap.add_argument("--source", help="shorthand for -S ingest.source=PATH")
    ap.add_argument(
        "--approval",
        choices=["fail", "warn", "approval"],
        help="shorthand for -S agreement.policy=...",
    )
    ap.add_argument("--workspace", help="DVC repository to run in (default: this one)")
    args = ap.parse_args(argv)
    if args.workspace:
        os.environ[WORKSPACE_ENV] = str(Path(args.workspace).resolve())
    root = workspace_root()
    try:  # fail fast, before Prefect starts anything
        overrides = parse_set_args(args.set_param)
        requested = requested_overrides(overrides, args.source, args.approval)
        _, cfg = run_params(root / "params.yaml", requested)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    harden_temporary_server()
    exit_promptly_on_ctrl_c()
    with patient_temporary_server():
        out = build_flow(cfg)(
            overrides=overrides, source=args.source or "", approval=args.approval or KEEP
        )
    print(where_to_look(out, root))
    return 0


INTERRUPT_EXIT_S = 10.0  # after Ctrl-C the process exits within this long, whatever it waits for


def exit_promptly_on_ctrl_c() -> None:
    """Ctrl-C: KeyboardInterrupt (the run stops its stages), and exit 130 at most 10 s later.

    The terminal's SIGINT also ends Prefect's temporary server (it is in our process group), after
    which Prefect's client would retry the dead API for minutes before the process exits. The stage
    process groups are ended by flows/watchdog.py even after an immediate exit. A second Ctrl-C
    exits at once.
    """

    def on_sigint(signum: int, frame: Any) -> None:
        if getattr(on_sigint, "fired", False):
            os._exit(130)
        on_sigint.fired = True  # type: ignore[attr-defined]
        timer = threading.Timer(INTERRUPT_EXIT_S, os._exit, args=(130,))
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def where_to_look(out: dict[str, Any], root: Path) -> str:
    """The end-of-run pointers `make demo` prints: Prefect UI, MLflow run, reports."""
    prefect = out.get("prefect_url")
    if not prefect or not os.environ.get("PREFECT_API_URL"):
        prefect = "`make serve`, then http://127.0.0.1:4200 (runs are kept in PREFECT_HOME)"
    reports = sorted(str(p.relative_to(root)) for p in root.glob("reports/*/*.md"))
    lines = [
        "",
        f"Prefect UI   {prefect}",
        f"MLflow run   {out['mlflow_url'] or '(none: nothing changed)'}"
        "  (`make mlflow-ui` serves the local store)",
        "DVC          dvc metrics show; dvc plots show; dvc exp show",
        "Reports      " + ("\n             ".join(reports) if reports else "(none yet)"),
    ]
    if out["experiment"]:
        lines.append(f"Experiment   {out['experiment']}: dvc exp apply {out['experiment']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
