"""A tiny git + DVC repository with a diamond pipeline (a -> b, a -> c, b + c -> d) for flow tests.

Each stage is `python stage.py <name>`: it reads params.yaml[<name>], concatenates its inputs'
outputs, and writes out/<name>.txt (cached), reports/<name>/report.md (cached) and
metrics/<name>.json (cache: false, with its start/end times). Params make it misbehave on purpose:
`fail_once: <marker path>` fails the first run only, `fail: <text>` always fails, `exit_code: n`
exits with status n (78: bad params, 65: bad input), `sleep: s` waits, `gate: <verdict>` is written
to the metrics, `alert: <reason>` writes `alert: true` and `alert_reason` (as register does),
`mlflow: true` logs an MLflow run via edge_pipeline.core.tracking. With `ingest: {source: dir}`
stage `a` depends on that directory, as the real ingest stage depends on `ingest.source`.

`TinyParams` is the schema of its params.yaml: the flow validates a workspace's params with the
class named by PIPELINE_PARAMS_SCHEMA (flows/config.py), so flow tests set it to `SCHEMA`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from edge_pipeline.config.base import Section
from edge_pipeline.config.orchestration import Orchestration

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "tests.flows_repo:TinyParams"


class TinyStage(Section):
    """The params of one tiny stage (see STAGE_PY)."""

    value: int
    inputs: list[str] = Field(default_factory=list)
    sleep: float = 0.0
    fail: str | None = None
    fail_once: str | None = None
    exit_code: int | None = None
    gate: str | None = None
    alert: str | None = None
    policy: str | None = None
    mlflow: bool = False


class TinyIngest(Section):
    """Optional: a source directory stage `a` depends on (flows/retrain.py checks it)."""

    source: str


class TinyParams(Section):
    """The tiny pipeline's params.yaml."""

    ingest: TinyIngest | None = None
    a: TinyStage
    b: TinyStage
    c: TinyStage
    d: TinyStage
    orchestration: Orchestration = Orchestration()


STAGE_PY = """\
import contextlib, json, sys, time
from pathlib import Path
import yaml

name = sys.argv[1]
p = yaml.safe_load(open("params.yaml"))[name]
start = time.time()
marker = p.get("fail_once")
if marker and not Path(marker).exists():
    Path(marker).write_text("failed once")
    sys.exit(f"{name}: transient failure (first attempt)")
if p.get("exit_code"):
    print(f"{name}: params error: {name}.value is wrong (exit {p['exit_code']})", flush=True)
    sys.exit(p["exit_code"])
if p.get("fail"):
    print(f"{name}: working on it", flush=True)
    sys.exit(f"{name}: permanent failure: {p['fail']}")
run = contextlib.nullcontext()
if p.get("mlflow"):
    from edge_pipeline.core.tracking import stage_run
    run = stage_run(name, {"value": p["value"]})
with run as mlflow:
    print(f"{name}: started", flush=True)
    time.sleep(float(p.get("sleep", 0)))
    text = "".join(Path(f"out/{i}.txt").read_text() for i in p.get("inputs", []))
    Path("out").mkdir(exist_ok=True)
    Path(f"out/{name}.txt").write_text(text + f"{name}={p['value']};")
    Path(f"reports/{name}").mkdir(parents=True, exist_ok=True)
    Path(f"reports/{name}/report.md").write_text(f"Report of **{name}**: value {p['value']}\\n")
    metrics = {"value": p["value"], "start": start, "end": time.time()}
    if "gate" in p:
        metrics["gate"] = p["gate"]
    if p.get("alert"):
        metrics.update(alert=True, alert_reason=p["alert"])
    Path("metrics").mkdir(exist_ok=True)
    Path(f"metrics/{name}.json").write_text(json.dumps(metrics))
    if mlflow:
        mlflow.log_metric("value", p["value"])
"""

UPSTREAM = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def dvc_yaml(source: str | None = None) -> dict[str, Any]:
    stages = {}
    for name, inputs in UPSTREAM.items():
        extra = [source] if source and name == "a" else []
        stages[name] = {
            "cmd": f"python stage.py {name}",
            "deps": ["stage.py", *extra, *[f"out/{i}.txt" for i in inputs]],
            "params": [name],
            "outs": [f"out/{name}.txt", f"reports/{name}"],
            "metrics": [{f"metrics/{name}.json": {"cache": False}}],
        }
    return {"stages": stages}


def base_params() -> dict[str, Any]:
    params: dict[str, Any] = {
        name: {"value": i + 1, "inputs": inputs}
        for i, (name, inputs) in enumerate(UPSTREAM.items())
    }
    params["orchestration"] = {
        "defaults": {"retries": 0, "retry_delay_seconds": 0, "backoff": 1, "timeout_seconds": 120},
        "stages": {},
        "max_parallel_stages": 2,
        "concurrency_limit": "tiny-workspace",
        "approval_timeout_seconds": 60,
        "approval_poll_seconds": 1,
    }
    return params


def run(root: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dvc(root: Path, *args: str) -> str:
    return run(root, sys.executable, "-m", "dvc", *args)


def make_repo(
    root: Path, params: dict[str, Any] | None = None, *, remote: Path | None = None
) -> Path:
    """Create the repository at `root` (params deep-merged into base_params) and commit it.

    `remote`: a directory made the default DVC remote (`dvc remote add -d local <remote>`).
    """
    merged = base_params()
    for section, values in (params or {}).items():
        merged.setdefault(section, {}).update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "stage.py").write_text(STAGE_PY)
    source = (merged.get("ingest") or {}).get("source")
    if source:
        (root / source).mkdir(parents=True, exist_ok=True)
        (root / source / "img.txt").write_text("an image\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml(source), sort_keys=False))
    (root / "params.yaml").write_text("# tiny pipeline\n" + yaml.safe_dump(merged, sort_keys=False))
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    dvc(root, "init", "-q")
    if remote is not None:
        dvc(root, "remote", "add", "-d", "local", str(remote))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "tiny pipeline")
    return root
