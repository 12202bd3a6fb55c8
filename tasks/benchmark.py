"""Stage `benchmark`: every runtime artifact side by side, deployment gates, the chosen edge model.

Reads `data/<stage>/models.json` of `benchmark.models_from` (never a model path of its own),
measures each ONNX Runtime / LiteRT model in its own child process on the frozen test split
(edge_pipeline/edge/benchmarking.py), and writes data/benchmark/{results,chosen}.json,
reports/benchmark/{benchmark.md,.csv}, metrics/benchmark.json and plots/benchmark/
(edge_pipeline/edge/benchmark_outputs.py).
"""

from __future__ import annotations

from edge_pipeline.artifacts.catalog import stage_paths
from edge_pipeline.artifacts.datasets import load_classes, load_split
from edge_pipeline.config import load_section
from edge_pipeline.config.edge import Benchmark
from edge_pipeline.core.entry import run_stage
from edge_pipeline.core.logs import setup_logging
from edge_pipeline.core.tracking import stage_run
from edge_pipeline.edge.benchmark_outputs import numeric, write_outputs
from edge_pipeline.edge.benchmark_report import flags
from edge_pipeline.edge.benchmarking import run_benchmark
from edge_pipeline.edge.runtimes import load_models

STAGE = "benchmark"


def main() -> None:
    log = setup_logging(STAGE)
    p: Benchmark = load_section(STAGE)
    paths = stage_paths(STAGE)
    specs = load_models(paths.data.parent, list(p.models_from))
    x, y, _ = load_split("test")
    log.info("%d models from %s on %d test images", len(specs), p.models_from, len(y))
    out = run_benchmark(specs, x, y, load_classes(), p=p)
    metrics = write_outputs(out, paths, max_spread_pct=p.max_p50_spread_pct)
    for line in flags(out, max_spread_pct=p.max_p50_spread_pct):
        log.warning(line)
    log.info("chosen edge model: %s", out["chosen"] or "none (no candidate passes the gates)")
    with stage_run(STAGE, p.to_dict()) as mlflow:
        mlflow.log_metrics(numeric(metrics))
        mlflow.log_artifacts(str(paths.reports), artifact_path="reports")
        mlflow.log_artifacts(str(paths.plots), artifact_path="plots")
        mlflow.set_tag("chosen", out["chosen"] or "none")


if __name__ == "__main__":
    run_stage(main)
