"""Stage `register`: register the chosen edge model in the MLflow model registry.

Reads data/benchmark/chosen.json; the new version gets alias `challenger`, and `champion` when the
rule of edge_pipeline/registry/promotion.py says so (edge_pipeline/registry/model_registry.py does
the MLflow work). Writes metrics/register.json.
"""

from __future__ import annotations

from edge_pipeline.artifacts.catalog import CHOSEN, stage_paths
from edge_pipeline.config import load_section
from edge_pipeline.config.registry import Register
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.io import write_json
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.tracking import stage_run
from edge_pipeline.registry.model_registry import attach_reports, read_chosen, register_chosen

STAGE = "register"


def main() -> None:
    setup_logging(STAGE)
    p: Register = load_section(STAGE)
    chosen_path = stage_paths("benchmark").data / CHOSEN
    chosen = read_chosen(chosen_path)
    paths = stage_paths(STAGE)
    with stage_run(STAGE, p.to_dict()) as mlflow:
        attach_reports(mlflow, paths.reports.parent, chosen_path)
        record = register_chosen(mlflow, chosen, p=p)
    write_json(paths.metrics, record)


if __name__ == "__main__":
    run_stage(main)
