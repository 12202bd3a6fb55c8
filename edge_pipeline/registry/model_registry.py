"""The MLflow side of registration: the current champion, a new version, its aliases and record.

The benchmark's chosen model (data/benchmark/chosen.json) is logged as an `EdgeModel` pyfunc
(edge_pipeline/registry/edge_model.py) whose artifacts are the model file plus every deployable
sibling of the same network in results.json (INT8 and FP32, TFLite and ONNX) and their benchmark
rows (benchmark_rows.{csv,json}); the version's tags hold those rows rounded to 4 significant
digits (`<model id>.accuracy`, ...). The new version gets
alias `challenger`; then the new version and the current champion are both scored on the same,
current test split (edge_pipeline/registry/scoring.py, each downloaded from the registry), and
edge_pipeline/registry/promotion.py:decide says whether the new version also takes `champion`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import edge_pipeline
from edge_pipeline.artifacts.catalog import META, RESULTS, stage_paths
from edge_pipeline.config.registry import Register
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.lineage import LINEAGE_STAGES, lineage_tags
from edge_pipeline.edge.benchmark_outputs import numeric
from edge_pipeline.edge.classification import majority
from edge_pipeline.edge.gates import floor_failure
from edge_pipeline.registry.decision_report import record
from edge_pipeline.registry.drift import drift_check
from edge_pipeline.registry.paired_test import PairedTest, mcnemar_exact
from edge_pipeline.registry.promotion import (
    Candidate,
    Champion,
    Decision,
    decide,
    nothing_to_register,
)
from edge_pipeline.registry.scoring import score_versions

ATTACHED_REPORTS = ("benchmark", "agreement", "clean")  # reports/<stage>, when present
log = logging.getLogger(__name__)


CHOSEN_KEYS = ("chosen", "model", "per_runtime", "input_shape", "classes", "gates")
ROW_KEYS = ("id", "runtime", "dtype", "accuracy", "macro_f1", "size_mb", "p95_ms_1t", "passed")


def sig4(x: Any) -> str:
    """A tag value: floats to 4 significant digits, everything else as text."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def family_of(m: dict[str, Any]) -> str:
    """The network a model file came from: its keras `source` without suffixes (`student`,
    `student_pruned` -> `student`), or its own id's first word (`teacher_fp32` -> `teacher`)."""
    return str(m.get("source") or m["id"]).split("_")[0]


def deployables(chosen: dict[str, Any], results: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The chosen model and its siblings of the same network (INT8 and FP32, TFLite and ONNX),
    chosen first, each {path, row: its benchmark row (ROW_KEYS)} (results.json `models`; without
    results.json, the chosen model and the per-runtime picks of chosen.json)."""
    m = chosen["model"]
    pool = (results or {}).get("models") or [m, *chosen["per_runtime"].values()]
    same = [r for r in pool if family_of(r) == family_of(m)]
    unique: dict[str, dict[str, Any]] = {}
    for r in [m, *same]:
        unique.setdefault(r["path"], r)
    return [
        {"path": r["path"], "row": {
            "id": r["id"], "runtime": r["runtime"], "dtype": r["dtype"],
            "accuracy": r.get("accuracy"), "macro_f1": r.get("macro_f1"),
            "size_mb": r.get("size_mb"), "p95_ms_1t": r["latency_ms"]["1"]["p95"],
            "passed": r["verdict"]["passed"],
        }}
        for r in unique.values()
    ]  # fmt: skip


def read_chosen(path: Path) -> dict[str, Any]:
    """data/benchmark/chosen.json (edge_pipeline/edge/benchmark_outputs.py:chosen_record)."""
    fix = "re-run the benchmark stage (`dvc repro benchmark`)"
    try:
        chosen = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found; {fix}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} line {e.lineno}: invalid JSON ({e.msg}); {fix}") from None
    missing = [k for k in CHOSEN_KEYS if not isinstance(chosen, dict) or k not in chosen]
    if missing:
        raise InputError(f"{path}: missing keys {missing}; {fix}")
    results = path.with_name(RESULTS)
    if chosen["model"] is not None:
        siblings = json.loads(results.read_text()) if results.exists() else None
        chosen["deployables"] = deployables(chosen, siblings)
    return chosen


def champion_version(client: Any, model_name: str) -> Any | None:
    """The ModelVersion with alias `champion` of `model_name` (None when the model or alias is
    new)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None


def log_edge_model(mlflow: Any, chosen: dict[str, Any]) -> Any:
    """Log the chosen model as an `EdgeModel` pyfunc; artifacts: `model` (the chosen file), one
    file per deployable sibling (`deployables`, keyed by model id) and `benchmark_rows_{csv,json}`
    (the benchmark row of each file). Returns the ModelInfo.

    The library package travels with the model (code_paths), so the pyfunc loads anywhere.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from edge_pipeline.registry.edge_model import EdgeModel

    model = chosen["model"]
    files = chosen.get("deployables") or deployables(chosen, None)
    tmp = tempfile.TemporaryDirectory(prefix="edge-model-rows-")
    rows_dir = Path(tmp.name)
    rows = pd.DataFrame([f["row"] for f in files])
    rows.to_csv(rows_dir / "benchmark_rows.csv", index=False)
    (rows_dir / "benchmark_rows.json").write_text(json.dumps([f["row"] for f in files], indent=2))
    artifacts = (
        {"model": model["path"]}
        | {re.sub(r"[^\w.-]", "-", f["row"]["id"]): f["path"] for f in files[1:]}
        | {
            "benchmark_rows_csv": str(rows_dir / "benchmark_rows.csv"),
            "benchmark_rows_json": str(rows_dir / "benchmark_rows.json"),
        }
    )
    h, w, c = chosen["input_shape"]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, h, w, c))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(chosen["classes"])))]),
    )
    pins = [
        f"{p}=={importlib.metadata.version(p)}" for p in ("numpy", "onnxruntime", "ai-edge-litert")
    ]
    with tmp:  # the row files are copied into the model, then removed
        return mlflow.pyfunc.log_model(
            name="edge_model",
            python_model=EdgeModel(runtime=model["runtime"], layout=model["layout"]),
            artifacts=artifacts,
            code_paths=[str(Path(edge_pipeline.__file__).parent)],
            signature=signature,
            input_example=np.zeros((1, h, w, c), dtype=np.float32),
            pip_requirements=pins,
        )


def register_version(mlflow: Any, client: Any, chosen: dict[str, Any], *, model_name: str) -> str:
    """Log and register the chosen model with alias `challenger`; returns its version.

    The version is tagged with its lineage (`train_run_id`, `distill_run_id`: the runs whose
    models a warm start loads, edge_pipeline/core/lineage.py)."""
    m = chosen["model"]
    info = log_edge_model(mlflow, chosen)
    tags = {
        "model_id": m["id"], "runtime": m["runtime"], "layout": m["layout"], "dtype": m["dtype"],
        "size_mb": m["size_mb"], "p95_ms_1t": m["latency_ms"]["1"]["p95"],
    }  # fmt: skip
    for f in chosen.get("deployables") or deployables(chosen, None):
        row = f["row"]
        tags |= {f"{row['id']}.{k}": row[k] for k in ROW_KEYS[3:] if row[k] is not None}
    tags |= lineage_tags({s: stage_paths(s).data / META for s in LINEAGE_STAGES})
    mv = mlflow.register_model(
        info.model_uri, model_name, tags={k: sig4(v) for k, v in tags.items()}
    )
    client.set_registered_model_alias(model_name, "challenger", mv.version)
    return str(mv.version)


def attach_reports(mlflow: Any, reports_root: Path, chosen_path: Path) -> None:
    """Attach reports/<stage> of ATTACHED_REPORTS (those present) and chosen.json to the run."""
    for stage in ATTACHED_REPORTS:
        if (reports_root / stage).is_dir():
            mlflow.log_artifacts(str(reports_root / stage), f"reports/{stage}")
    mlflow.log_artifact(str(chosen_path), artifact_path="benchmark")


def challenger_candidate(
    chosen: dict[str, Any], scores: dict[str, Any], y: np.ndarray, classes: list[str]
) -> Candidate:
    """The challenger with its benchmark verdict plus the accuracy floor re-checked on today's
    scores (benchmark.gates.min_accuracy as chosen.json records it, the majority-class rate of
    the test labels y (N,))."""
    m = chosen["model"]
    floor = floor_failure(
        scores["accuracy"],
        min_accuracy=chosen["gates"]["min_accuracy"],
        majority=majority(y, classes),
    )
    failures = (*m["verdict"]["failures"], *([floor] if floor else []))
    return Candidate(m["id"], scores["accuracy"], m["verdict"]["passed"] and not floor, failures)


def champion_drift(
    champion: Any, pred_new: np.ndarray, y_new: np.ndarray, *, today: float | None, p: Register
) -> dict[str, Any]:
    """The champion ModelVersion's predictions pred_new (M,) on tonight's new images (labels
    y_new (M,)) against its accuracy at promotion (tag `accuracy`; else `today`, its accuracy on
    today's test split): edge_pipeline/registry/drift.py's figures plus `champion_version`."""
    tagged = champion.tags.get("accuracy")
    if tagged is not None:
        reference, kind = float(tagged), f"at promotion (v{champion.version})"
    elif today is not None:
        reference, kind = today, "on today's test split"
    else:  # an untagged champion and no challenger scored next to it tonight
        return {
            "n": len(y_new),
            "alert": False,
            "champion_version": str(champion.version),
            "reason": f"champion v{champion.version} has no `accuracy` tag to compare with",
        }
    out = drift_check(pred_new == y_new, reference=reference, reference_kind=kind,
                      alert_drop_pct=p.alert_drop_pct, min_images=p.drift_min_images)  # fmt: skip
    return out | {"champion_version": str(champion.version)}


def register_chosen(
    mlflow: Any, chosen: dict[str, Any], x: np.ndarray, y: np.ndarray, classes: list[str], *,
    new: Callable[[], tuple[np.ndarray, ...]], p: Register,
) -> dict[str, Any]:  # fmt: skip
    """Register the chosen model (if any) in the active run, score it and the current champion on
    the test images x (N, H, W, C) uint8 / labels y (N,), decide on `champion`, log the outcome.
    The champion is also scored on tonight's new images: `new()` returns (x (M, H, W, C), y (M,),
    ...) (artifacts.datasets.load_new_images), called only when there is a champion.

    Returns the metrics/register.json record (edge_pipeline/registry/decision_report.py:record).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    previous = champion_version(client, p.model_name)
    scores: dict[str, dict[str, Any]] = {}
    test = version = None
    if chosen["model"] is not None:
        version = register_version(mlflow, client, chosen, model_name=p.model_name)
    # every (version, images) pair of tonight in one child process: the challenger and the
    # champion on the test split, the champion on tonight's new images (drift)
    requests = {}
    if version is not None:
        requests["challenger"] = (version, x, y, "challenger")
    if previous is not None:
        x_new, y_new, *_ = new()
        requests["new"] = (previous.version, x_new, y_new, "champion")
        if version is not None:
            requests["champion"] = (previous.version, x, y, "champion")
    scored = score_versions(p.model_name, requests, classes, timeout_s=p.timeout_s)
    if version is None:
        decision = nothing_to_register()
    else:
        scores["challenger"] = scored["challenger"]
        if abs(scores["challenger"]["accuracy"] - chosen["model"]["accuracy"]) > 1e-9:
            log.warning(
                "challenger v%s scores %.4f from the registry but %.4f in the benchmark: did the "
                "test split change since the benchmark ran?", version,
                scores["challenger"]["accuracy"], chosen["model"]["accuracy"],
            )  # fmt: skip
        champion = None
        if previous is not None:
            scores["champion"] = scored["champion"]
            champion = Champion(str(previous.version), scores["champion"]["accuracy"])
            test = mcnemar_exact(
                scores["champion"]["pred"] == y, scores["challenger"]["pred"] == y, alpha=p.alpha
            )
        decision = decide(
            challenger_candidate(chosen, scores["challenger"], y, classes), champion, test,
            tolerance_pts=p.tolerance_pts, alert_drop_pct=p.alert_drop_pct,
        )  # fmt: skip
        apply_decision(client, decision, scores, test, model_name=p.model_name, version=version)
    drift = None
    if previous is not None:
        today = scores["champion"]["accuracy"] if "champion" in scores else None
        drift = champion_drift(previous, scored["new"]["pred"], y_new, today=today, p=p)
        log.log(logging.WARNING if drift["alert"] else logging.INFO, "%s", drift["reason"])
        if drift["alert"]:
            reasons = [r for r in (decision.alert_reason, drift["reason"]) if r]
            decision = replace(decision, alert=True, alert_reason="; ".join(reasons))
    log.log(
        logging.INFO if decision.promote else logging.WARNING, "%s: %s",
        decision.outcome.upper().replace("_", " "), decision.reason,
    )  # fmt: skip
    if decision.alert:
        log.warning("ALERT: %s", decision.alert_reason)
    out = record(
        decision, scores, test, chosen=chosen, model_name=p.model_name, version=version,
        previous=str(previous.version) if previous else None, n_images=len(y), drift=drift,
    )  # fmt: skip
    mlflow.log_metrics(numeric(out))
    mlflow.set_tags({"decision": decision.reason[:5000], "outcome": decision.outcome,
                     "alert": str(decision.alert)})  # fmt: skip
    return out


def apply_decision(
    client: Any, decision: Decision, scores: dict[str, dict[str, Any]], test: PairedTest | None,
    *, model_name: str, version: str,
) -> None:  # fmt: skip
    """Tags of the new version (today's figures, the decision, the test) and alias `champion`
    when promoted."""
    c = scores["challenger"]
    tags = {
        "accuracy": c["accuracy"], "balanced_accuracy": c["balanced_accuracy"],
        "macro_f1": c["macro_f1"], "decision": decision.reason[:5000],
        "outcome": decision.outcome,
    }  # fmt: skip
    if test is not None:
        tags |= {"mcnemar_p_worse": test.p_worse, "vs_champion": scores["champion"]["version"]}
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, sig4(v))
    if decision.promote:
        client.set_registered_model_alias(model_name, "champion", version)
