"""The MLflow side of registration: the current champion, a new version, its aliases and record.

The benchmark's chosen model (data/benchmark/chosen.json) is logged as an `EdgeModel` pyfunc
(edge_pipeline/registry/edge_model.py) whose artifacts are the model file plus the best passing
model of each other runtime (so a version holds its TFLite and ONNX files). The new version gets
alias `challenger`; edge_pipeline/registry/promotion.py:decide says whether it also takes
`champion`. The champion's accuracy is read from its model-version tag `accuracy`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import edge_pipeline
from edge_pipeline.config.registry import Register
from edge_pipeline.core.errors import InputError
from edge_pipeline.registry.promotion import (
    Candidate,
    Champion,
    Decision,
    decide,
    nothing_to_register,
)

ATTACHED_REPORTS = ("benchmark", "agreement", "clean")  # reports/<stage>, when present
log = logging.getLogger(__name__)


CHOSEN_KEYS = ("chosen", "model", "per_runtime", "input_shape", "classes")


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
    return chosen


def current_champion(client: Any, model_name: str) -> Champion | None:
    """The version with alias `champion` of `model_name` (None when the model or alias is new)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None
    if "accuracy" not in mv.tags:
        raise InputError(
            f"MLflow model {model_name!r} v{mv.version} (alias champion) has no 'accuracy' tag; "
            "set it (MlflowClient().set_model_version_tag) or delete the alias to start afresh"
        )
    return Champion(version=str(mv.version), accuracy=float(mv.tags["accuracy"]))


def log_edge_model(mlflow: Any, chosen: dict[str, Any]) -> Any:
    """Log the chosen model as an `EdgeModel` pyfunc; artifacts: `model` (the chosen file) and one
    `<runtime>` file per other runtime's best passing model. Returns the ModelInfo.

    The library package travels with the model (code_paths), so the pyfunc loads anywhere.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from edge_pipeline.registry.edge_model import EdgeModel

    model = chosen["model"]
    artifacts = {"model": model["path"]} | {
        rt: m["path"] for rt, m in chosen["per_runtime"].items() if m["path"] != model["path"]
    }
    h, w, c = chosen["input_shape"]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, h, w, c))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(chosen["classes"])))]),
    )
    pins = [
        f"{p}=={importlib.metadata.version(p)}" for p in ("numpy", "onnxruntime", "ai-edge-litert")
    ]
    return mlflow.pyfunc.log_model(
        name="edge_model",
        python_model=EdgeModel(runtime=model["runtime"], layout=model["layout"]),
        artifacts=artifacts,
        code_paths=[str(Path(edge_pipeline.__file__).parent)],
        signature=signature,
        input_example=np.zeros((1, h, w, c), dtype=np.float32),
        pip_requirements=pins,
    )


def register_version(
    mlflow: Any, client: Any, chosen: dict[str, Any], decision: Decision, *, model_name: str
) -> int:
    """Log and register the chosen model; alias `challenger`, and `champion` if promoted."""
    m = chosen["model"]
    info = log_edge_model(mlflow, chosen)
    tags = {
        "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "model_id": m["id"],
        "runtime": m["runtime"], "dtype": m["dtype"], "size_mb": m["size_mb"],
        "p95_ms_1t": m["latency_ms"]["1"]["p95"], "decision": decision.reason,
    }  # fmt: skip
    mv = mlflow.register_model(
        info.model_uri, model_name, tags={k: str(v) for k, v in tags.items()}
    )
    client.set_registered_model_alias(model_name, "challenger", mv.version)
    if decision.promote:
        client.set_registered_model_alias(model_name, "champion", mv.version)
    return int(mv.version)


def attach_reports(mlflow: Any, reports_root: Path, chosen_path: Path) -> None:
    """Attach reports/<stage> of ATTACHED_REPORTS (those present) and chosen.json to the run."""
    for stage in ATTACHED_REPORTS:
        if (reports_root / stage).is_dir():
            mlflow.log_artifacts(str(reports_root / stage), f"reports/{stage}")
    mlflow.log_artifact(str(chosen_path), artifact_path="benchmark")


def register_chosen(mlflow: Any, chosen: dict[str, Any], *, p: Register) -> dict[str, Any]:
    """Register the chosen model (if any) in the active run, decide on `champion`, log the outcome.

    Returns the metrics/register.json record: registered, version, candidate, the decision's
    fields, and the previous and current champion versions.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    champion = current_champion(client, p.model_name)
    m = chosen["model"]
    record: dict[str, Any] = {"model_name": p.model_name, "registered": False}
    if m is None:
        decision = nothing_to_register()
    else:
        decision = decide(
            Candidate.from_chosen(m), champion,
            tolerance_pts=p.tolerance_pts, alert_drop_pct=p.alert_drop_pct,
        )  # fmt: skip
        version = register_version(mlflow, client, chosen, decision, model_name=p.model_name)
        record |= {"registered": True, "version": version, "candidate": m["id"],
                   "candidate_accuracy": m["accuracy"]}  # fmt: skip
    log.log(
        logging.INFO if decision.promote else logging.WARNING, "%s: %s",
        "PROMOTED" if decision.promote else "NOT PROMOTED", decision.reason,
    )  # fmt: skip
    if decision.alert:
        log.warning("ALERT: %s", decision.alert_reason)
    previous = int(champion.version) if champion else None
    record |= {k: v for k, v in asdict(decision).items() if v is not None} | {
        "promoted": decision.promote,
        "previous_champion_version": previous,
        "previous_champion_accuracy": champion.accuracy if champion else None,
        "champion_version": record["version"] if decision.promote else previous,
    }
    mlflow.log_metrics(
        {"promoted": float(decision.promote), "alert": float(decision.alert)}
        | ({"candidate_accuracy": m["accuracy"]} if m else {})
    )
    mlflow.set_tags({"decision": decision.reason, "alert": str(decision.alert)})
    return record
