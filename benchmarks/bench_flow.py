"""The whole pipeline on a generated real-size case (issue 13): time, throughput, memory, accuracy.

Writes case `BENCH_FLOW_CASE` (gray28 | rgb96, benchmarks/cases.py) into a scratch git + DVC copy
of this repository, points `ingest.source/annotations/truth/image_size/channels` at it, then runs
each dvc.yaml stage after `demo` with `dvc repro -s <stage>`, in order, up to `BENCH_FLOW_UNTIL`
(default: the last stage). Per stage it prints the wall time, the peak resident memory of the
stage's process tree (psutil, sampled every 0.2 s: the sum over dvc and its children), and from
the stage's metrics JSON its images/s, GMACs/image and test accuracy / macro-F1 figures. The load
average is printed before and after: on a shared machine the times are not an idle machine's.

`BENCH_FLOW_SET="train.epochs=1 resample.method=none"` overrides params (values read as YAML).
Run: `python -m benchmarks flow`, or `python -m benchmarks.bench_flow` (same environment keys).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from benchmarks.bench_orchestration import _git_dvc_init
from benchmarks.cases import CASES, Case, K, make_case, render_set

REPO = Path(__file__).resolve().parent.parent
COPIED = ("tasks", "edge_pipeline", "dvc.yaml", "params.yaml", "pyproject.toml")
FIGURES = ("images_per_s", "macs", "accuracy", "macro_f1", "rows_per_epoch")  # keys printed


def copy_project(root: Path) -> None:
    """The code, dvc.yaml and params.yaml of this repository (`COPIED`) into a new `root`."""
    root.mkdir(parents=True)
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)


def stage_env(root: Path, tmp: Path) -> dict[str, str]:
    """The environment of `dvc repro` in scratch copy `root`: its code first, the venv's python,
    and an MLflow store of its own under `tmp`."""
    return {
        **os.environ,
        "PYTHONPATH": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_USE_LEGACY_KERAS": "1",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlruns.db'}",
        "MLFLOW_ARTIFACT_ROOT": (tmp / "mlartifacts").as_uri(),
    }


def scratch_repo(root: Path, case: str, overrides: dict[str, Any]) -> Path:
    """A git + DVC copy of this repository whose ingest reads case `case` (written inside it)."""
    copy_project(root)
    info = make_case(case, root / "cases" / case)
    print(f"case {case}: {json.dumps(info)}", flush=True)
    size = CASES[case].size
    set_params(root / "params.yaml", {
        "ingest.source": f"cases/{case}", "ingest.annotations": "annotations.csv",
        "ingest.truth": "truth.csv", "ingest.image_size": [size, size],
        "ingest.channels": CASES[case].channels, **overrides,
    })  # fmt: skip
    _git_dvc_init(root)
    return root


def set_params(path: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys of the params file at `path` (`{"train.warm.epochs": 5}`)."""
    params = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def parse_overrides(text: str) -> dict[str, Any]:
    """`"train.epochs=1 resample.method=none"` -> {"train.epochs": 1, ...} (values read as YAML)."""
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in text.split())}


def _watch(proc: subprocess.Popen, peak: list[int], stop: threading.Event) -> None:
    """Keep `peak[0]` at the largest RSS sum (bytes) seen over `proc` and its descendants."""
    try:
        parent = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        total = 0
        try:
            for p in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
        except psutil.NoSuchProcess:
            return
        peak[0] = max(peak[0], total)
        stop.wait(0.2)


def run_stage(root: Path, stage: str, env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """`dvc repro -s stage` in `root`; returns (wall s, peak MiB of its process tree, exit code)."""
    peak, stop = [0], threading.Event()
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n===== {stage}\n")
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro", "-s", stage],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        watcher = threading.Thread(target=_watch, args=(proc, peak, stop), daemon=True)
        watcher.start()
        code = proc.wait()
    stop.set()
    watcher.join()
    return time.perf_counter() - start, peak[0] / 2**20, code


def stage_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """Flattened metric keys (depth <= 2) ending in `FIGURES`; MACs become GMACs/image."""
    out: dict[str, float] = {}

    def walk(d: dict[str, Any], prefix: str, depth: int) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and depth < 2 and k != "per_class":
                walk(v, f"{prefix}{k}.", depth + 1)
            elif isinstance(v, int | float) and not isinstance(v, bool) and k.endswith(FIGURES):
                if k.endswith("macs"):
                    out[f"{prefix}{k[:-4]}gmacs"] = round(v / 1e9, 4)
                else:
                    out[f"{prefix}{k}"] = round(v, 4)

    walk(metrics, "", 0)
    return out


def holdout_scores(root: Path, case: str, *, per_class: int = 200) -> dict[str, Any]:
    """Accuracy and macro-F1 of the teacher and the chosen edge model on images the pipeline never
    saw: `per_class` fresh renderings per class (another seed: balanced, clean labels), against
    the same models' figures on the pipeline's own test split (data/benchmark/results.json)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    from edge_pipeline.edge.runtimes import open_runner, predict_batched

    spec = CASES[case]
    fresh = Case(**{**spec.__dict__, "seed": spec.seed + 1000, "fractions": (1.0,) * K})
    x, y = render_set(Case(**{**fresh.__dict__, "per_class": per_class}))
    x = (x if x.ndim == 4 else x[..., None]).astype(np.float32) / 255.0
    results = json.loads((root / "data" / "benchmark" / "results.json").read_text())
    chosen = json.loads((root / "data" / "benchmark" / "chosen.json").read_text())["chosen"]
    baseline = next(r["id"] for r in results["models"] if r["stage"] == "train")
    out: dict[str, Any] = {"holdout_images": len(y)}
    for role, model_id in (("teacher", baseline), ("chosen", chosen)):
        row = next((r for r in results["models"] if r["id"] == model_id), None)
        if row is None:
            continue
        runner = open_runner(str(root / row["path"]), runtime=row["runtime"],
                             layout=row["layout"], threads=1)  # fmt: skip
        pred = predict_batched(runner, x, batch=64).argmax(1)
        out[role] = {
            "model": model_id,
            "test_accuracy": round(row["accuracy"], 4),
            "test_macro_f1": round(row["macro_f1"], 4),
            "holdout_accuracy": round(float(accuracy_score(y, pred)), 4),
            "holdout_macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
        }
    return out


def run() -> dict[str, Any]:
    case = os.environ.get("BENCH_FLOW_CASE", "gray28")
    until = os.environ.get("BENCH_FLOW_UNTIL")
    overrides = parse_overrides(os.environ.get("BENCH_FLOW_SET", ""))
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-flow-{case}-"))
    root = scratch_repo(tmp / "repo", case, overrides)
    env = stage_env(root, tmp)
    stages = [s for s in yaml.safe_load((root / "dvc.yaml").read_text())["stages"] if s != "demo"]
    if until:
        stages = stages[: stages.index(until) + 1]
    load0 = os.getloadavg()
    print(f"case {case}, overrides {overrides}, load average {load0}; log {tmp / 'dvc.log'}")
    figures: dict[str, Any] = {"case": case, "overrides": overrides, "load_before": load0}
    total = 0.0
    for stage in stages:
        wall, peak, code = run_stage(root, stage, env, tmp / "dvc.log")
        total += wall
        metrics_file = root / "metrics" / f"{stage}.json"
        found = stage_figures(json.loads(metrics_file.read_text())) if metrics_file.exists() else {}
        figures[stage] = {"wall_s": round(wall, 1), "peak_mib": round(peak), **found}
        print(f"{stage:10s} {wall:7.1f} s  peak {peak:6.0f} MiB  {json.dumps(found)}", flush=True)
        if code:
            figures["failed"] = stage
            print(f"{stage} failed (exit {code}); see {tmp / 'dvc.log'}")
            break
    figures["total_s"] = round(total, 1)
    figures["load_after"] = os.getloadavg()
    print(f"total {total:.1f} s ({total / 60:.1f} min); load average now {figures['load_after']}")
    if "failed" not in figures and (root / "data" / "benchmark" / "results.json").exists():
        figures["holdout"] = holdout_scores(root, case)
        print(f"pipeline test vs never-seen images: {json.dumps(figures['holdout'])}")
    if "failed" not in figures and not os.environ.get("BENCH_FLOW_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
