"""MLflow stage runs span the whole stage: start when the stage's process started, end with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = """
import time
time.sleep(1.5)  # imports and data loading before the run is opened
from edge_pipeline.core.tracking import stage_run
with stage_run("late", {"a": 1}):
    time.sleep(0.3)
with stage_run("second"):
    time.sleep(0.2)
"""


def test_run_times_cover_the_stage_process_not_only_the_block() -> None:
    begin = time.time()
    subprocess.run(
        [sys.executable, "-c", STAGE], check=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    wall = time.time() - begin
    from mlflow import MlflowClient

    from edge_pipeline.core.tracking import configure

    mlflow = configure()  # this test's store: an earlier test may have pointed mlflow elsewhere
    client = MlflowClient()
    runs = client.search_runs([mlflow.get_experiment_by_name("edge-pipeline").experiment_id])
    by = {r.info.run_name: r.info for r in runs}
    late, second = by["late"], by["second"]
    seconds = (late.end_time - late.start_time) / 1000
    assert 1.8 <= seconds <= wall, (seconds, wall)  # was ~0.3 s: the block only
    assert late.start_time >= 1000 * begin - 1000 and late.status == "FINISHED"
    assert second.start_time >= late.end_time and second.end_time - second.start_time >= 200
    assert client.get_run(late.run_id).data.params == {"late.a": "1"}
