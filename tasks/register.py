"""Stage `register`: register the chosen edge model in MLflow and decide on `champion`.

Reads data/benchmark/chosen.json and the test split; the new version gets alias `challenger`.
It and the current champion (downloaded from the registry) are scored on the same test images in
this run, and `champion` moves when the rule of edge_pipeline/registry/promotion.py says so
(McNemar's exact test plus `register.tolerance_pts`; edge_pipeline/registry/model_registry.py does
the MLflow work). The champion is also scored on the images new since the last split
(edge_pipeline/registry/drift.py). Writes metrics/register.json and reports/register/decision.md.
"""

from __future__ import annotations

from edge_pipeline.artifacts.catalog import CHOSEN, stage_paths
from edge_pipeline.artifacts.datasets import load_classes, load_new_images, load_split
from edge_pipeline.config import load_section
from edge_pipeline.config.registry import Register
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.tracking import stage_run
from edge_pipeline.registry.decision_report import write_decision
from edge_pipeline.registry.model_registry import attach_reports, read_chosen, register_chosen

STAGE = "register"


def main() -> None:
    setup_logging(STAGE)
    p: Register = load_section(STAGE)
    chosen_path = stage_paths("benchmark").data / CHOSEN
    chosen = read_chosen(chosen_path)
    x, y, _ = load_split("test")
    paths = stage_paths(STAGE)
    with stage_run(STAGE, p.to_dict()) as mlflow:
        attach_reports(mlflow, paths.reports.parent, chosen_path)
        record = register_chosen(mlflow, chosen, x, y, load_classes(), new=load_new_images, p=p)
        write_decision(record, paths)
        mlflow.log_artifacts(str(paths.reports), artifact_path=f"reports/{STAGE}")


if __name__ == "__main__":
    run_stage(main)
