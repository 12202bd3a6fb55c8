"""Big folders: `dvc status`, a no-op `dvc repro` and a no-op flow run on a 100,000-file source
(issue 11 item 5).

Target: the no-op run (`python -m flows.retrain`, Prefect's temporary server included) under 30 s.
A throw-away git + DVC repo holds a 100,000-file source `data/source` of small PNGs (8x8, distinct,
git-ignored; under data/ as the project's own source, so the flow's recovery step lists it too)
and tests/flows_repo.py's tiny diamond pipeline, whose first stage depends on the source (as ingest
depends on `ingest.source`; the stages do not read it: the measurement is the cost of checking the
dependency, not ingest's). Measured, each bounded by a timeout:
- DVC alone: the first `dvc repro` (every file hashed), then `dvc status` and the no-op
  `dvc repro` with DVC's state db warm (entries keyed by inode, mtime and size: no file is read
  again);
- the flow: a first run that has work to do (one stage's params changed: the Prefect and MLflow
  stores are created, the run is recorded), then the no-op run, end to end as a person starts it
  (process start, imports, the temporary Prefect server) and the flow's own phases;
- `dvc status` cold (state db removed: every file read and hashed again), then warm again.
Run: `python -m benchmarks big_folder` or `python benchmarks/bench_big_folder.py [N]`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

TARGET_NOOP_S = 30.0
PROJECT = Path(__file__).resolve().parent.parent
DVC = str(Path(sys.executable).with_name("dvc"))


def timed(cmd: list[str], cwd: Path, *, env: dict[str, str] | None = None,
          timeout: float = 900) -> tuple[float, str]:  # fmt: skip
    """(seconds, stdout + stderr) of a command that must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 2)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return seconds, proc.stdout + proc.stderr


def write_source(src: Path, n: int) -> float:
    """n distinct 8x8 grey PNGs in 10 folders; returns the seconds it took."""
    from edge_pipeline.quality.demo_flaws import png_bytes

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for k in range(n):
        folder = src / f"{k % 10}"
        if k < 10:
            folder.mkdir(parents=True, exist_ok=True)
        px = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        (folder / f"{k:06d}.png").write_bytes(png_bytes(px))
    return round(time.perf_counter() - start, 1)


def flow_env(tmp: Path) -> dict[str, str]:
    """The flow process's environment: the tiny pipeline's schema, stores under `tmp`."""
    from flows.config import SCHEMA_ENV
    from tests.flows_repo import SCHEMA

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return env | {
        SCHEMA_ENV: SCHEMA,
        "PYTHONPATH": str(PROJECT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns.db'}",
        "MLFLOW_ARTIFACT_ROOT": (tmp / "mlartifacts").as_uri(),
        "DVC_NO_ANALYTICS": "1",
    }


def flow_phases(output: str) -> dict[str, float]:
    """The phases the flow prints ("... (phases: prepare 1.2 s, dvc status 3.4 s, ...)")."""
    match = re.search(r"\(phases: ([^)]*)\)", output)
    pairs = re.findall(r"([a-z][a-z ]*?) (\d+\.\d+) s", match.group(1)) if match else []
    return {name: float(s) for name, s in pairs}


def run(n: int = 100_000) -> dict:
    from tests.flows_repo import make_repo

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = make_repo(tmp / "repo", {"ingest": {"source": "data/source"}})
        (repo / ".gitignore").write_text("/data/source/\n")  # data is not in git
        for args in (["rm", "-rq", "--cached", "data/source"], ["add", ".gitignore"],
                     ["commit", "-qm", "source out of git"]):  # fmt: skip
            subprocess.run(["git", *args], cwd=repo, check=True)
        write_s = write_source(repo / "data/source", n)
        subprocess.run([DVC, "config", "core.site_cache_dir", str(tmp / "site")], cwd=repo,
                       check=True)  # fmt: skip
        load_start = os.getloadavg()[0]
        first, _ = timed([DVC, "repro", "-q"], repo)
        status_warm, _ = timed([DVC, "status", "-q"], repo)
        noop_warm, _ = timed([DVC, "repro", "-q"], repo)

        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["d"]["value"] += 1  # the flow's first run has one stage to run
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env, cmd = flow_env(tmp), [sys.executable, "-m", "flows.retrain", "--workspace", str(repo)]
        flow_first, _ = timed(cmd, PROJECT, env=env)
        flow_noop, out = timed(cmd, PROJECT, env=env)
        assert "nothing changed" in out, out[-3000:]
        phases = flow_phases(out)

        shutil.rmtree(tmp / "site", ignore_errors=True)
        status_cold, _ = timed([DVC, "status", "-q"], repo)
        status_rewarm, _ = timed([DVC, "status", "-q"], repo)
        load_end = os.getloadavg()[0]
    figures = {
        "files": n,
        "write_s": write_s,
        "first_repro_s": first,
        "status_warm_s": status_warm,
        "noop_repro_warm_s": noop_warm,
        "flow_first_run_s": flow_first,
        "flow_noop_s": flow_noop,
        "flow_noop_phases_s": phases,
        "status_cold_s": status_cold,
        "status_after_cold_s": status_rewarm,
        "load_1min": [round(load_start, 2), round(load_end, 2)],
        "ratio_to_target": round(flow_noop / TARGET_NOOP_S, 3),
    }
    shown = ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
    print(
        f"big folder: {n} files (written in {write_s} s): first dvc repro {first} s; warm state "
        f"db: dvc status {status_warm} s, no-op dvc repro {noop_warm} s; flow: first run "
        f"{flow_first} s, no-op run {flow_noop} s end to end ({figures['ratio_to_target']:.2f}x "
        f"the {TARGET_NOOP_S:.0f} s limit; in the flow: {shown}); cold state db: dvc status "
        f"{status_cold} s, then {status_rewarm} s; load {load_start:.1f} -> {load_end:.1f}"
    )
    return figures


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
