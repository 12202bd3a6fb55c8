"""MLflow logging of the model-writing compression stages (qat, export) inside their stage run.

`log_model_outputs` puts into the active run what a person needs to find a model file again:
the stage's metrics (numbers only), every model file of its models.json with the entries
(artifact `models/`), and a tag per model with its file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_pipeline.artifacts.catalog import MODELS
from edge_pipeline.core.tracking import flatten


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """{'a.b': float} of the numbers (bools as 0/1) in a nested metrics dict; text is dropped."""
    return {
        k: float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, bool | int | float) and v == v  # NaN != NaN
    }


def log_model_outputs(
    mlflow: Any, data_dir: Path, entries: list[dict[str, Any]], metrics: dict[str, Any]
) -> None:
    """Log metrics, data_dir/<entry file> of each models.json entry and models.json itself."""
    mlflow.log_metrics(numeric_metrics(metrics))
    for entry in entries:
        mlflow.log_artifact(str(data_dir / entry["file"]), artifact_path="models")
    mlflow.log_artifact(str(data_dir / MODELS), artifact_path="models")
    mlflow.set_tags({f"model.{e['name']}": e["file"] for e in entries})
