"""Night 2 warm-started from the champion against night 1 from scratch (issue 12).

Target: the night-2 run with `train.init`, `distill.init` and `prune.init` = champion takes at
most half the wall time of night 1 (every stage, prune and qat included), its teacher and student
train in at most half the time, and it reaches the from-scratch night-2 accuracy within 0.5 point.

A scratch git + DVC copy of this repository with its own MLflow store runs every dvc.yaml stage
with `dvc repro -s <stage>` (the flow adds ~6 s of orchestration a run, benchmarks/
bench_orchestration.py): night 1 (scratch, its model becomes the champion), then night 2
warm-started from that champion, then night 2 again from scratch (train .. register) for the
accuracy comparison. Prints per-stage seconds, the ratios and the accuracies; the load average
before and after (the ratio is measured in one run).

Nights: the demo's (`demo.night` 1, then `make night`'s `advance_night`), or with
`--case gray28|rgb96` a generated real-size case (benchmarks/cases.py) whose night 2 brings
`--new` images of `--new-classes` classes (`cases.hold_back_night2`, as bench_continual.py).
Run: `make bench BENCH=nights` (opt-in: about 10 minutes on 2 idle cores), or
`python -m benchmarks.bench_nights --case gray28` (about 16 minutes); `--set "K=V ..."` sets params
of every night (e.g. a warm budget: `--set "train.warm.epochs=5"`).

`--reexecute` then checks that the warm night 2 can be re-executed after the champion moved on (the
scratch night 2 may have been promoted): `make pin-starts`'s functions pin the starts night 2's
meta.json files recorded, train .. benchmark run again, and the teacher weights, its logits, the
TFLite models and the accuracies are compared with night 2's (docs/nightly.md "Honest under `dvc
repro`").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_flow import (
    copy_project,
    parse_overrides,
    run_stage,
    scratch_repo,
    set_params,
    stage_env,
)
from benchmarks.bench_orchestration import _git_dvc_init
from benchmarks.cases import hold_back_night2
from edge_pipeline.artifacts.catalog import META, TEACHER_STATE, stage_paths
from edge_pipeline.core.lineage import LINEAGE_STAGES
from edge_pipeline.quality.demo_nights import advance_night
from edge_pipeline.registry.pin_starts import recorded_starts, set_inits

TARGET_WALL = 0.5  # night 2 (warm) / night 1
TARGET_ACC_PTS = 0.5  # warm night-2 accuracy >= scratch night-2 accuracy - this
TRAINING = ("train", "distill")


def set_init(params: Path, init: str) -> None:
    spec = yaml.safe_load(params.read_text())
    spec["train"]["init"] = spec["distill"]["init"] = spec["prune"]["init"] = init
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
    bench = bench or {"id": None, "accuracy": float("nan")}  # no candidate passed the gates
    out["teacher_accuracy"] = round(metrics["train"]["test_accuracy"], 4)
    out["chosen"] = bench["id"]
    out["chosen_accuracy"] = round(bench["accuracy"], 4)
    out["decision"] = metrics["register"]["outcome"] if "register" in stages else "not registered"
    times = ", ".join(f"{s} {out[s]:.1f}" for s in stages)
    print(
        f"{label}: {times} -> total {out['total_s']:.1f} s; teacher {out['teacher_accuracy']:.4f}, "
        f"chosen {out['chosen']} {out['chosen_accuracy']:.4f}, {out['decision']}",
        flush=True,
    )
    return out


def fingerprints(root: Path) -> dict[str, str]:
    """{file: sha256} of what a re-executed night must reproduce byte for byte: the teacher's
    weights and logits, qat's TFLite models (.keras and .onnx files carry timestamps and names)."""
    train, qat = (root / stage_paths(s, root / "params.yaml").data for s in ("train", "qat"))
    files = [
        train / TEACHER_STATE,
        *sorted(train.glob("logits_*.npy")),
        *sorted(qat.glob("*.tflite")),
    ]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def run(
    case: str | None = None,
    *,
    n_new: int = 600,
    new_classes: int = 3,
    overrides: dict[str, Any] | None = None,
    reexecute: bool = False,
) -> dict[str, Any]:
    """The three nights on the demo (`case` None) or on generated case `case`, with params
    `overrides` ({"train.warm.epochs": 5}) on every night, and night 2 re-executed with its starts
    pinned when `reexecute`; the figures."""
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-nights-{case or 'demo'}-"))
    root = tmp / "repo"
    if case is None:
        copy_project(root)
        set_params(root / "params.yaml", overrides or {})
        _git_dvc_init(root)
    else:
        scratch_repo(root, case, overrides or {})
        bring_back = hold_back_night2(
            root, case, tmp / "night2", n_new=n_new, new_classes=new_classes
        )
    env = stage_env(root, tmp)
    stages = list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    if case is not None:
        stages.remove("demo")
    params, log = root / "params.yaml", tmp / "dvc.log"
    load0 = os.getloadavg()
    print(f"{case or 'demo'}: overrides {overrides or {}}; load average {load0}; log {log}",
          flush=True)  # fmt: skip
    start = time.perf_counter()
    one = night(root, stages, env, log, "night 1, scratch")
    if one["decision"] != "promote":  # night 2 would fall back to scratch: two scratch nights
        raise SystemExit(
            f"night 1 registered no champion ({one['decision']}: no edge model passed the "
            f"benchmark gates; see {log}), so night 2 has nothing to warm-start from and the "
            "ratio would compare two scratch nights. Loosen the gates for the measurement, e.g. "
            '--set "benchmark.gates.max_macro_f1_drop_pts=3"'
        )
    if case is None:
        advance_night(params)
    else:
        bring_back()
    set_init(params, "champion")
    warm = night(root, stages, env, log, "night 2, warm start from the champion")
    recorded = {s: root / stage_paths(s, params).data / META for s in LINEAGE_STAGES}
    starts, prints = recorded_starts(recorded), fingerprints(root)
    set_init(params, "scratch")
    cold = night(root, stages[stages.index("train") :], env, log, "night 2, scratch")
    again = reexecuted(root, stages, env, log, starts, warm, prints) if reexecute else None
    ratio = warm["total_s"] / one["total_s"]
    training = sum(warm[s] for s in TRAINING) / sum(one[s] for s in TRAINING)
    gaps = {k: round((cold[k] - warm[k]) * 100, 2) for k in ("teacher_accuracy", "chosen_accuracy")}
    figures = {
        "case": case or "demo", "overrides": overrides or {}, "night1": one,
        "night2_warm": warm, "night2_scratch": cold,
        "wall_ratio": round(ratio, 3), "train_distill_ratio": round(training, 3),
        "scratch_minus_warm_pts": gaps, "load_before": load0, "load_after": os.getloadavg(),
        "night2_reexecuted": again, "bench_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    print(
        f"night 2 warm / night 1: whole run {ratio:.2f}x (target <= {TARGET_WALL}), train + "
        f"distill {training:.2f}x (target <= {TARGET_WALL}); scratch - warm accuracy on night 2: "
        f"teacher "
        f"{gaps['teacher_accuracy']:+.2f} pts, chosen {gaps['chosen_accuracy']:+.2f} pts (target "
        f"<= {TARGET_ACC_PTS}); load average {load0} -> {figures['load_after']}"
    )
    shutil.rmtree(root, ignore_errors=True)  # the log stays: per-epoch times, warnings
    return figures


def reexecuted(
    root: Path,
    stages: list[str],
    env: dict[str, str],
    log: Path,
    starts: dict[str, str],
    warm: dict[str, Any],
    prints: dict[str, str],
) -> dict[str, Any]:
    """Night 2 again (train .. benchmark) from its recorded `starts`; what equals the `warm` run's
    figures and file `prints`."""
    params = root / "params.yaml"
    params.write_text(set_inits(params.read_text(), starts))
    print(f"pinned: {starts}", flush=True)
    again = night(root, stages[stages.index("train") : stages.index("register")], env, log,
                  "night 2 re-executed, pinned starts")  # fmt: skip
    now = fingerprints(root)
    differ = sorted(f for f in prints if now.get(f) != prints[f])
    keys = ("teacher_accuracy", "chosen", "chosen_accuracy")
    same = {k: again[k] == warm[k] for k in keys}
    print(f"re-executed night 2: {len(prints) - len(differ)}/{len(prints)} files byte-identical"
          + (f" ({', '.join(differ)} differ)" if differ else "")
          + f"; equal to night 2's: {', '.join(k for k in keys if same[k]) or 'nothing'}",
          flush=True)  # fmt: skip
    return again | {"starts": starts, "differing_files": differ, "same_figures": same}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=["gray28", "rgb96"], default=None)
    ap.add_argument("--new", type=int, default=600, help="images night 2 brings (--case)")
    ap.add_argument("--new-classes", type=int, default=3, help="of this many classes (--case)")
    ap.add_argument(
        "--set",
        default="",
        metavar='"K=V ..."',
        help='params of every night, e.g. "train.warm.epochs=5 train.warm.lr=0.001"',
    )
    ap.add_argument("--reexecute", action="store_true",
                    help="then re-execute night 2 from its pinned starts and compare")  # fmt: skip
    args = ap.parse_args()
    figures = run(args.case, n_new=args.new, new_classes=args.new_classes,
                  overrides=parse_overrides(args.set), reexecute=args.reexecute)  # fmt: skip
    print(json.dumps(figures, indent=2))
