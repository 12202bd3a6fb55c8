"""Continual-learning table of docs/nightly.md: night 1 -> night 2 of the teacher, per mode.

Usage: python benchmarks/bench_continual.py WORKSPACE [--ewc 100,1000] [--replay 100,300]
WORKSPACE holds snap/night1 and snap/night2, each with the ingest, split, clean and resample
folders of that night (run the data stages with `demo.night` 1, then 2, and copy data/<stage>).
Or `python -m benchmarks.bench_continual --case gray28 [--new 600] [--new-classes 3]`: a two-night
split of a generated real-size case (benchmarks/cases.py) in a scratch repo: night 2 brings `--new`
images drawn from `--new-classes` classes only (a skewed night, where a model fine-tuned on the
last night alone forgets the other classes), the data stages run once per night, then the table.

Trains the night-1 teacher from scratch (train section of params.yaml), then night 2 per mode:
scratch on all images; warm start (all images); warm start on the last night only
(`data_window: 1`) alone, + EWC, + replay. Prints one row per mode: accuracy on night-1 test
images (forgetting), on the test images new on night 2, on all of night 2's test split, and the
wall time of the fit, plus `uptime` (the machine is shared: compare ratios within one run).
Teacher only, in-process (no ONNX export, no MLflow): the stage's library calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from edge_pipeline.artifacts import datasets as data
from edge_pipeline.config import load_section
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.lineage import Source
from edge_pipeline.teacher import ewc, warm_start
from edge_pipeline.teacher.fit import deterministic, setup_device, train_teacher

DATA_STAGES = ("ingest", "agreement", "split", "clean", "resample")


def case_workspace(case: str, *, n_new: int, new_classes: int, seed: int = 0) -> Path:
    """A scratch repo for `case` whose snap/night1 and snap/night2 hold the data stages' outputs
    of night 1 (the case without the night-2 images) and night 2 (the whole case); returns it."""
    import shutil
    import tempfile

    from benchmarks.bench_flow import run_stage, scratch_repo, stage_env
    from benchmarks.cases import hold_back_night2

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-continual-{case}-"))
    repo = scratch_repo(tmp / "repo", case, {})
    bring_back = hold_back_night2(
        repo, case, tmp / "night2", n_new=n_new, new_classes=new_classes, seed=seed
    )
    env = stage_env(repo, tmp)
    for night in (1, 2):
        if night == 2:
            bring_back()
        for stage in DATA_STAGES:
            wall, _, code = run_stage(repo, stage, env, tmp / "dvc.log")
            if code:
                raise RuntimeError(f"night {night}: {stage} failed; see {tmp / 'dvc.log'}")
        for stage in DATA_STAGES:
            shutil.copytree(repo / "data" / stage, repo / "snap" / f"night{night}" / stage)
    return repo


def night_params(root: Path, night: int) -> Path:
    """A params.yaml whose `paths.data` is snap/night<N> of the workspace."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"]["data"] = str(root / "snap" / f"night{night}")
    path = root / f"params_night{night}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def night_sets(params: Path) -> dict:
    d = data.load_fit_sets(params_path=params)
    d["train_ids"] = data.load_train(params_path=params)[3]
    d["test_ids"] = data.load_split("test", params_path=params)[2]
    return d


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device) -> float:
    from edge_pipeline.teacher.fit import predict_logits

    if len(y) == 0:
        return float("nan")
    return float((predict_logits(model, x, device=device).argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path, nargs="?")
    ap.add_argument("--case", help="build the workspace from a benchmarks/cases.py case")
    ap.add_argument("--new", type=int, default=600)
    ap.add_argument("--new-classes", type=int, default=3)
    ap.add_argument("--ewc", default="100,1000")
    ap.add_argument("--replay", default="100,300")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.case:
        root = case_workspace(args.case, n_new=args.new, new_classes=args.new_classes)
        os.chdir(root)  # the stages' params.yaml and relative paths
    else:
        root = args.workspace.resolve()
    base: Train = load_section("train")
    device = setup_device(base.device, threads=base.threads)
    d1, d2 = night_sets(night_params(root, 1)), night_sets(night_params(root, 2))
    old_test = np.isin(d2["test_ids"], d1["test_ids"])
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"night 1: {len(d1['y_train'])} train rows; night 2: {len(d2['y_train'])} train rows, "
          f"{old_test.sum()} night-1 test images, {(~old_test).sum()} new test images")  # fmt: skip

    with deterministic(base.seed):
        t = time.perf_counter()
        night1 = train_teacher(base, d1, device=device)
        n1_seconds = time.perf_counter() - t
        real = np.flatnonzero(~d1["synthetic"])
        pick = real[ewc.stratified_sample(d1["y_train"][real], base.ewc.samples, seed=0)]
        fisher = ewc.fisher_diagonal(night1.model, d1["x_train"][pick], d1["y_train"][pick],
                                     device=device)  # fmt: skip
    state = {k: v.clone() for k, v in night1.model.state_dict().items()}
    first_seen = warm_start.replay.update_first_seen(None, d1["train_ids"], night=1)
    print(f"night-1 teacher: {n1_seconds:.0f} s, test accuracy "
          f"{accuracy(night1.model, d1['x_test'], d1['y_test'], device):.4f}")  # fmt: skip

    modes = [("scratch", {"init": "scratch"}), ("warm start", {"init": "previous"}),
             ("warm, last night only", {"init": "previous", "data_window": 1})]  # fmt: skip
    modes += [(f"warm, last night + EWC {s:g}",
               {"init": "previous", "data_window": 1, "ewc": {"strength": float(s)}})
              for s in map(float, args.ewc.split(","))]  # fmt: skip
    modes += [(f"warm, last night + replay {r}",
               {"init": "previous", "data_window": 1, "replay": {"size": int(r)}})
              for r in map(int, args.replay.split(","))]  # fmt: skip
    print("| mode | train rows | epochs run | night-1 test acc | new test acc | night-2 test acc "
          "| fit s | vs scratch |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    scratch_s = None
    for name, override in modes:
        p = Train(**(base.model_dump() | override))
        start = None
        if p.init != "scratch":
            source = Source("train", "night-1", "night-1 model")
            start = warm_start.StartModel(source, state, 1, {}, fisher, first_seen)
        plan = warm_start.plan(p, d2, start, train_ids=d2["train_ids"])
        with deterministic(p.seed):
            t = time.perf_counter()
            run = train_teacher(p, plan.fit_sets(d2), device=device,
                                init_state=start.state if start else None,
                                penalty=plan.penalty(p))  # fmt: skip
            seconds = time.perf_counter() - t
        scratch_s = scratch_s or seconds
        x, y = d2["x_test"], d2["y_test"]
        accs = (accuracy(run.model, x[old_test], y[old_test], device),
                accuracy(run.model, x[~old_test], y[~old_test], device),
                accuracy(run.model, x, y, device))  # fmt: skip
        print(
            f"| {name} | {len(plan.rows)} | {len(run.result.history)} | "
            + " | ".join(f"{a:.4f}" for a in accs)
            + f" | {seconds:.0f} | {seconds / scratch_s:.2f} |",
            flush=True,
        )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}; uptime: {load}")


if __name__ == "__main__":
    main()
