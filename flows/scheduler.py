"""Run the stage graph: submit each stage as soon as its upstream stages completed.

Independent stages run at the same time (at most `orchestration.max_parallel_stages`); after a
permanent failure nothing new is submitted, the stages already running finish, and the run fails
naming the stage. Approval gates pause the flow run with no stage running.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from edge_pipeline.config.orchestration import Orchestration
from flows.alerts import emit_alert
from flows.approval import read_gate, request_approval
from flows.config import warm_started
from flows.dag import Dag
from flows.stages import StageResult, run_stage, start_accepting, terminate_all


class PipelineError(RuntimeError):
    """A stage failed for good (retries spent); the message names it and shows its last output."""

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


def busy_seconds(results: list[StageResult]) -> float:
    """Wall time during which at least one stage process ran (union of their intervals)."""
    spans = sorted((r.started, r.ended) for r in results if r.ended > r.started)
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def gate_to_approve(
    name: str, result: StageResult, dag: Dag, stale: set[str], params: dict[str, Any], root: Path
) -> str | None:
    """Why the run must pause for approval after stage `name`, or None to go on.

    Pause when the stage's params section says `policy: approval`, its metrics report a failed
    gate, and the gated outputs are new to the pipeline: the stage changed in this run, or a
    downstream stage is still stale (e.g. an earlier run was rejected at this gate).
    """
    stage = dag.stages[name]
    if (params.get(stage.section) or {}).get("policy") != "approval":
        return None
    failed, why = read_gate(root, stage)
    logger = get_run_logger()
    if failed is None:
        logger.warning("%s: policy is approval but %s reports no gate verdict", name, why)
        return None
    if not failed:
        return None
    if result.changed or dag.descendants(name) & stale:
        return why
    logger.info("%s: gate failed, but its outputs were approved and used in an earlier run", name)
    return None


def run_dag(
    dag: Dag,
    stale: set[str],
    *,
    root: Path,
    cfg: Orchestration,
    params: dict[str, Any],
    parent_run_id: str | None,
) -> list[StageResult]:
    """Submit each stage once its upstream stages completed; stop submitting after a failure."""
    start_accepting()
    warm = warm_started(params)
    results: dict[str, StageResult] = {}
    futures: dict[str, PrefectFuture[StageResult]] = {}
    running: set[str] = set()
    pending = list(dag.order)
    done: queue.Queue[str] = queue.Queue()
    failure: tuple[str, BaseException] | None = None

    def collect() -> str:
        nonlocal failure
        while True:  # a timeout keeps the main thread responsive to SIGTERM
            try:
                name = done.get(timeout=1.0)
                break
            except queue.Empty:
                continue
        running.discard(name)
        try:
            results[name] = futures[name].result()
        except Exception as exc:
            failure = failure or (name, exc)
        return name

    try:
        while True:
            for name in [] if failure else list(pending):
                stage = dag.stages[name]
                if len(running) >= cfg.max_parallel_stages:
                    break
                if not all(u in results for u in stage.upstream):
                    continue
                needs_run = name in stale or any(results[u].changed for u in stage.upstream)
                policy = cfg.policy(name)
                fut = run_stage.with_options(
                    task_run_name=name,
                    retries=policy.retries,
                    retry_delay_seconds=policy.delays() or 0,
                ).submit(
                    stage,
                    str(root),
                    needs_run,
                    parent_run_id,
                    policy.timeout_seconds,
                    stage.section not in warm,  # DVC's run cache does not know the start model
                    wait_for=[futures[u] for u in stage.upstream],
                )
                futures[name] = fut
                running.add(name)
                pending.remove(name)
                fut.add_done_callback(lambda _f, n=name: done.put(n))
            if not running:
                break
            name = collect()
            why = None
            if failure is None and name in results:
                why = gate_to_approve(name, results[name], dag, stale, params, root)
            if why:
                while running:  # nothing may run while the flow run is paused
                    collect()
                if failure is None:
                    emit_alert(
                        cfg.alerts,
                        stage=name,
                        reason=f"gate failed ({why}): the run waits up to "
                        f"{cfg.approval_timeout_seconds} s for approve or reject in the Prefect UI",
                        flow_run=flow_run.get_name() or "retrain",
                    )
                    request_approval(
                        dag.stages[name],
                        root=root,
                        why=why,
                        timeout_s=cfg.approval_timeout_seconds,
                        poll_s=cfg.approval_poll_seconds,
                    )
    except BaseException:
        terminate_all()
        raise
    if failure is not None:
        name, exc = failure
        raise PipelineError(f"pipeline stopped: {exc}", stage=name) from exc
    return [results[n] for n in dag.order]
