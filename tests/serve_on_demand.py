"""Serve `on-demand` for a tiny workspace as `make serve` does, for tests/test_flows_ui.py.

    PREFECT_API_URL=http://127.0.0.1:PORT/api python -m tests.serve_on_demand <workspace>

The deployment is flows/deploy.py's `on-demand` (built from the workspace's params.yaml) with one
change: its default `workspace` parameter is the tiny repository, so the UI's Run form starts
pre-filled with it. `nightly` is not served, so its cron can never start a run in this repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(workspace: str) -> None:
    from prefect import serve

    from edge_pipeline.core.common import load_all_params
    from flows.config import load_orchestration
    from flows.deploy import build_deployments
    from flows.retrain import ensure_limit

    os.chdir(REPO)  # the deployment's entrypoint flows/retrain.py is relative to the repository
    params = load_all_params(Path(workspace) / "params.yaml")
    ensure_limit(load_orchestration(params).concurrency_limit)
    _, on_demand = build_deployments(params)
    assert on_demand.name == "on-demand"
    on_demand.parameters = {"workspace": workspace}
    serve(on_demand)


if __name__ == "__main__":
    main(sys.argv[1])
