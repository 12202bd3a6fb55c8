"""Serve `on-demand` for a tiny workspace as `make serve` does (tests/flows/test_ui, test_served).

    PREFECT_API_URL=http://127.0.0.1:PORT/api python -m tests.serve_on_demand <workspace>

The deployment is flows/deploy.py's `on-demand` (built from the workspace's params.yaml); its runs
work in the tiny repository because this process sets PIPELINE_WORKSPACE, which the flow-run
processes inherit (the workspace is no flow parameter). `nightly` is not served, so its cron can
never start a run in this repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(workspace: str) -> None:
    # before flows.retrain is imported: the Run form's descriptions come from this params.yaml
    os.environ["PIPELINE_WORKSPACE"] = workspace
    from prefect import serve

    from flows.alerts import ensure_alert_automation
    from flows.config import run_params
    from flows.deploy import build_deployments
    from flows.retrain import WORKSPACE_ENV, ensure_limit

    os.chdir(REPO)  # the deployment's entrypoint flows/retrain.py is relative to the repository
    os.environ[WORKSPACE_ENV] = workspace
    _, cfg = run_params(Path(workspace) / "params.yaml", {})  # PIPELINE_PARAMS_SCHEMA: the tiny's
    ensure_limit(cfg.concurrency_limit)
    print(ensure_alert_automation(cfg.alerts), flush=True)  # as flows/deploy.py main() does
    _, on_demand = build_deployments(cfg)
    assert on_demand.name == "on-demand"
    serve(on_demand)


if __name__ == "__main__":
    main(sys.argv[1])
