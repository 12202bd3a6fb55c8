"""Orchestration overhead: the retrain flow vs plain `dvc repro` on the same pipeline (issue 6).

- tiny (always): the diamond of tests/flows_repo.py (a -> b, a -> c, b + c -> d), b and c sleeping
  `STAGE_SLEEP_S` each, so the flow's concurrency shows; fixed costs dominate, so its ratio is
  reported, not judged.
- demo (opt-in, several minutes: `BENCH_ORCH_DEMO=<stage>`, e.g. `resample`): the repository's own
  stages up to and including <stage>, on the embedded demo data. Target ratio <= 1.10.

Each pipeline runs from a fresh repository once with `dvc repro` and once with the flow, then the
flow once more with nothing changed (target <= 15 s). The Prefect temporary server and a new MLflow
store are started before timing (one-time costs, reported separately). `flow_s` is the whole flow
call, Prefect bookkeeping included; `overhead_s` is the flow's own account of time outside stage
processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STAGE_SLEEP_S = 2.0
TARGET_RATIO, TARGET_NOOP_S = 1.10, 15.0


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _git_dvc_init(root: Path) -> None:
    steps = [
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "bench@example.com"],
        ["git", "config", "user.name", "bench"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "bench"],
    ]
    for args in steps:
        subprocess.run(args, cwd=root, check=True, capture_output=True)


def demo_copy(root: Path, target: str) -> Path:
    """This repository's stages up to `target` (and their upstream) in a fresh git + DVC repo."""
    from flows.dag import load_dag

    dag = load_dag(REPO)
    keep, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(dag.stages[name].upstream)
    root.mkdir(parents=True)
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    spec["stages"] = {k: v for k, v in spec["stages"].items() if k in keep}
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    _git_dvc_init(root)
    return root


def compare(label: str, plain: Path, flowed: Path) -> dict:
    from flows.retrain import retrain
    from flows.stages import stage_env

    env = stage_env(plain, None)  # the environment the flow gives its stages (venv python first)

    def dvc_repro() -> None:
        argv = [sys.executable, "-m", "dvc", "repro", "-q"]
        subprocess.run(argv, cwd=plain, env=env, check=True)

    dvc_s, _ = _timed(dvc_repro)
    noop_dvc_s, _ = _timed(dvc_repro)
    os.environ["PIPELINE_WORKSPACE"] = str(flowed)  # the workspace is never a flow parameter
    flow_s, first = _timed(retrain)
    noop_s, noop = _timed(retrain)
    del os.environ["PIPELINE_WORKSPACE"]
    assert {s["status"] for s in noop["stages"]} == {"up to date"}
    figures = {
        "dvc_repro_s": round(dvc_s, 2),
        "flow_s": round(flow_s, 2),
        "ratio": round(flow_s / dvc_s, 3),
        "flow_stage_busy_s": round(first["stage_busy_s"], 2),
        "flow_overhead_s": round(first["overhead_s"], 2),
        "flow_phases_s": first["phases_s"],
        "noop_dvc_repro_s": round(noop_dvc_s, 2),
        "noop_flow_s": round(noop_s, 2),
        "noop_overhead_s": round(noop["overhead_s"], 2),
        "noop_vs_target": round(noop_s / TARGET_NOOP_S, 3),
    }
    print(
        f"{label}: dvc repro {dvc_s:.1f} s, flow {flow_s:.1f} s -> ratio {figures['ratio']:.2f} "
        f"(target {TARGET_RATIO} on the demo); flow overhead {first['overhead_s']:.1f} s, "
        f"phases {first['phases_s']}"
    )
    print(
        f"{label} no-op re-run: flow {noop_s:.1f} s (target <= {TARGET_NOOP_S:.0f} s), dvc repro "
        f"{noop_dvc_s:.1f} s; flow overhead {noop['overhead_s']:.1f} s"
    )
    return figures


def run() -> dict:
    from flows.config import SCHEMA_ENV
    from tests.flows_repo import SCHEMA, make_repo

    tmp = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    # Isolated Prefect and MLflow stores; set before Prefect is imported.
    os.environ.update(
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",  # 2 busy cores: 20 s is too short
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlruns.db'}",
        MLFLOW_ARTIFACT_ROOT=(tmp / "mlartifacts").as_uri(),
        DVC_NO_ANALYTICS="1",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
    )
    from prefect import flow

    from edge_pipeline.core.tracking import configure

    startup_s, _ = _timed(flow(lambda: None, name="warm-up"))
    store_s, _ = _timed(configure)
    print(f"one-time, not counted below: Prefect temporary server {startup_s:.1f} s, "
          f"new MLflow store {store_s:.1f} s")  # fmt: skip
    figures: dict = {
        "prefect_server_startup_s": round(startup_s, 2),
        "mlflow_store_s": round(store_s, 2),
    }

    params = {"b": {"sleep": STAGE_SLEEP_S}, "c": {"sleep": STAGE_SLEEP_S}}
    os.environ[SCHEMA_ENV] = SCHEMA  # the tiny pipeline's params schema
    tiny = compare(
        f"tiny diamond (b, c sleep {STAGE_SLEEP_S:.0f} s)",
        make_repo(tmp / "plain", params),
        make_repo(tmp / "flow", params),
    )
    del os.environ[SCHEMA_ENV]
    figures.update({f"tiny_{k}": v for k, v in tiny.items()})
    target = os.environ.get("BENCH_ORCH_DEMO")
    if target:
        demo = compare(
            f"demo stages up to {target}",
            demo_copy(tmp / "demo-plain", target),
            demo_copy(tmp / "demo-flow", target),
        )
        figures.update({f"demo_{k}": v for k, v in demo.items()})
        figures["demo_target"] = target
    shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    run()
