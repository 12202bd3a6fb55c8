"""Night 2 warm-started from the champion against night 1 from scratch, on the demo (issue 12).

Target: the night-2 run with `train.init` and `distill.init` = champion takes at most half the wall
time of night 1 (every stage, prune and qat included), its teacher and student train in at most
half the time, and it reaches the from-scratch night-2 accuracy within 0.5 point.

A scratch git + DVC copy of this repository with its own MLflow store runs every dvc.yaml stage
with `dvc repro -s <stage>` (the flow adds ~6 s of orchestration a run, benchmarks/
bench_orchestration.py): night 1 (`demo.night: 1`, scratch, its model becomes the champion), then
night 2 (`make night`'s `advance_night`) warm-started from that champion, then night 2 again from
scratch (train .. register) for the accuracy comparison. Prints per-stage seconds, the ratios and
the accuracies; the load average before and after (the ratio is measured in one run).
Run: `make bench BENCH=nights` (opt-in: about 10 minutes on 2 idle cores).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_flow import copy_project, run_stage, stage_env
from benchmarks.bench_orchestration import _git_dvc_init
from edge_pipeline.quality.demo_nights import advance_night

TARGET_WALL = 0.5  # night 2 (warm) / night 1
TARGET_ACC_PTS = 0.5  # warm night-2 accuracy >= scratch night-2 accuracy - this
TRAINING = ("train", "distill")


def set_init(params: Path, init: str) -> None:
    spec = yaml.safe_load(params.read_text())
    spec["train"]["init"] = spec["distill"]["init"] = init
    params.write_text(yaml.safe_dump(spec, sort_keys=False))


def night(root: Path, stages: list[str], env: dict[str, str], log: Path, label: str) -> dict:
    """Run `stages` in order; {stage: seconds}, "total_s" and the accuracies of the night."""
    out: dict[str, Any] = {}
    for stage in stages:
        wall, _, code = run_stage(root, stage, env, log)
        out[stage] = round(wall, 1)
        if code:
            raise RuntimeError(f"{label}: stage {stage} failed (exit {code}); see {log}")
    out["total_s"] = round(sum(out[s] for s in stages), 1)
    metrics = {s: json.loads((root / "metrics" / f"{s}.json").read_text())
               for s in ("train", "benchmark", "register")}  # fmt: skip
    bench = json.loads((root / "data" / "benchmark" / "chosen.json").read_text())["model"]
    out["teacher_accuracy"] = round(metrics["train"]["test_accuracy"], 4)
    out["chosen"] = bench["id"]
    out["chosen_accuracy"] = round(bench["accuracy"], 4)
    out["decision"] = metrics["register"]["outcome"]
    times = ", ".join(f"{s} {out[s]:.1f}" for s in stages)
    print(
        f"{label}: {times} -> total {out['total_s']:.1f} s; teacher {out['teacher_accuracy']:.4f}, "
        f"chosen {out['chosen']} {out['chosen_accuracy']:.4f}, {out['decision']}",
        flush=True,
    )
    return out


def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-nights-"))
    root = tmp / "repo"
    copy_project(root)
    _git_dvc_init(root)
    env = stage_env(root, tmp)
    stages = list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    params, log = root / "params.yaml", tmp / "dvc.log"
    load0 = os.getloadavg()
    print(f"load average {load0}; log {log}", flush=True)
    start = time.perf_counter()
    one = night(root, stages, env, log, "night 1, scratch")
    advance_night(params)
    set_init(params, "champion")
    warm = night(root, stages, env, log, "night 2, warm start from the champion")
    set_init(params, "scratch")
    cold = night(root, stages[stages.index("train") :], env, log, "night 2, scratch")
    ratio = warm["total_s"] / one["total_s"]
    training = sum(warm[s] for s in TRAINING) / sum(one[s] for s in TRAINING)
    gaps = {k: round((cold[k] - warm[k]) * 100, 2) for k in ("teacher_accuracy", "chosen_accuracy")}
    figures = {
        "night1": one, "night2_warm": warm, "night2_scratch": cold,
        "wall_ratio": round(ratio, 3), "train_distill_ratio": round(training, 3),
        "scratch_minus_warm_pts": gaps, "load_before": load0, "load_after": os.getloadavg(),
        "bench_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    print(
        f"night 2 warm / night 1: whole run {ratio:.2f}x (target <= {TARGET_WALL}), train + "
        f"distill {training:.2f}x (target <= {TARGET_WALL}); scratch - warm accuracy on night 2: "
        f"teacher "
        f"{gaps['teacher_accuracy']:+.2f} pts, chosen {gaps['chosen_accuracy']:+.2f} pts (target "
        f"<= {TARGET_ACC_PTS}); load average {load0} -> {figures['load_after']}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
