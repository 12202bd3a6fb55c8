"""Register the chosen edge model in the MLflow model registry; decide whether it becomes champion.

The benchmark's chosen model (`data/benchmark/chosen.json`) is logged as a pyfunc model whose
artifacts are the model file plus the best passing model of each other runtime (so a version holds
its TFLite and ONNX files), with the benchmark table and the data-quality reports attached to the
run. The new version gets alias `challenger`; `decide` (a pure function) says whether it also takes
`champion`. The champion's accuracy is read from its model-version tag `accuracy`.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.core.common import load_params
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.io import read_json, write_json
from edge_pipeline.core.logs import setup_logging

STAGE = "register"
DEFAULTS = {"model_name": "edge-classifier", "tolerance_pts": 0.5, "alert_drop_pct": 5.0}
EPS = 1e-9  # float slack: a drop of exactly the tolerance / threshold counts as within it
ATTACHED_REPORTS = ("benchmark", "agreement", "clean")  # reports/<stage>, when present


@dataclass(frozen=True)
class Candidate:
    """The model up for promotion; accuracy in [0, 1]."""

    name: str
    accuracy: float
    passed: bool
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Champion:
    """The registry's current `champion` version and its recorded test accuracy in [0, 1]."""

    version: str
    accuracy: float


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    alert: bool = False
    alert_reason: str = ""
    drop_pts: float | None = None  # champion accuracy - candidate accuracy, percentage points
    drop_pct: float | None = None  # the same drop relative to the champion's accuracy, percent


def decide(
    candidate: Candidate,
    champion: Champion | None,
    *,
    tolerance_pts: float,
    alert_drop_pct: float,
) -> Decision:
    """Promote iff the candidate passes every gate and, when a champion exists, its accuracy is at
    least the champion's minus `tolerance_pts` points. Alert (whatever the promotion) when its
    accuracy is more than `alert_drop_pct` percent (relative) below the champion's."""
    if tolerance_pts < 0 or alert_drop_pct < 0:
        raise ConfigError(
            f"params.yaml register: tolerance_pts ({tolerance_pts}) and "
            f"alert_drop_pct ({alert_drop_pct}) must be >= 0"
        )
    acc = f"accuracy {candidate.accuracy:.2%}"
    if champion is None:
        if candidate.passed:
            return Decision(True, f"first champion: {candidate.name} passes every gate ({acc})")
        return Decision(
            False,
            f"no champion yet and {candidate.name} fails gates: " + "; ".join(candidate.failures),
        )
    drop_pts = (champion.accuracy - candidate.accuracy) * 100
    drop_pct = drop_pts / champion.accuracy if champion.accuracy > 0 else 0.0  # relative, in %
    versus = f"champion v{champion.version} ({champion.accuracy:.2%})"
    alert = drop_pct > alert_drop_pct + EPS
    alert_reason = ""
    if alert:
        alert_reason = (
            f"{acc} of {candidate.name} is {drop_pct:.1f}% below {versus}; "
            f"alert threshold {alert_drop_pct:g}%"
        )
    common = dict(alert=alert, alert_reason=alert_reason, drop_pts=drop_pts, drop_pct=drop_pct)
    if not candidate.passed:
        return Decision(
            False,
            f"keeping {versus}: {candidate.name} fails gates: " + "; ".join(candidate.failures),
            **common,
        )
    if drop_pts <= tolerance_pts + EPS:
        return Decision(True, f"{acc} >= {versus} - {tolerance_pts:g} pts tolerance", **common)
    return Decision(
        False,
        f"keeping {versus}: {acc} is {drop_pts:.2f} pts below it (tolerance {tolerance_pts:g} pts)",
        **common,
    )


def current_champion(client: Any, model_name: str) -> Champion | None:
    """The version with alias `champion` of `model_name` (None when the model or alias is new)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None
    if "accuracy" not in mv.tags:
        raise ValueError(
            f"MLflow model {model_name!r} v{mv.version} (alias champion) has no 'accuracy' tag; "
            "set it (MlflowClient().set_model_version_tag) or delete the alias to start afresh"
        )
    return Champion(version=str(mv.version), accuracy=float(mv.tags["accuracy"]))


def log_edge_model(mlflow: Any, chosen: dict[str, Any]) -> Any:
    """Log the chosen model as an `EdgeModel` pyfunc; artifacts: `model` (the chosen file) and one
    `<runtime>` file per other runtime's best passing model. Returns the ModelInfo."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    import tasks
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
        code_paths=[str(Path(tasks.__file__).parent)],
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


def main() -> None:
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import stage_run

    log = setup_logging(STAGE)
    params = DEFAULTS | load_params(STAGE)
    name = params["model_name"]
    chosen_path = stage_paths("benchmark").data / "chosen.json"
    chosen = read_json(chosen_path)
    paths = stage_paths(STAGE)
    record: dict[str, Any] = {"model_name": name, "registered": False}
    with stage_run(STAGE, params) as mlflow:
        for stage in ATTACHED_REPORTS:
            if (paths.reports.parent / stage).is_dir():
                mlflow.log_artifacts(str(paths.reports.parent / stage), f"reports/{stage}")
        mlflow.log_artifact(str(chosen_path), artifact_path="benchmark")
        client = MlflowClient()
        champion = current_champion(client, name)
        m = chosen["model"]
        if m is None:
            reason = "no edge model passes the benchmark gates"
            decision = Decision(False, f"{reason}; nothing registered", True, reason)
        else:
            v = m["verdict"]
            candidate = Candidate(m["id"], m["accuracy"], v["passed"], tuple(v["failures"]))
            decision = decide(
                candidate, champion, tolerance_pts=params["tolerance_pts"],
                alert_drop_pct=params["alert_drop_pct"],
            )  # fmt: skip
            version = register_version(mlflow, client, chosen, decision, model_name=name)
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
    write_json(paths.metrics, record)


if __name__ == "__main__":
    main()
