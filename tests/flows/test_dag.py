"""flows/dag.py: the stage graph and staleness come from DVC itself (templating, foreach)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.dag import load_dag, lock_hashes, stale_stages
from tests.flows_repo import dvc, make_repo


def _add_foreach_stage(root: Path) -> None:
    """e@x, e@y: a templated foreach stage after d, reading a list from params.yaml."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["e"] = {
        "foreach": "${targets}",
        "do": {"cmd": "cp out/d.txt out/e-${item}.txt", "deps": ["out/d.txt"],
               "outs": ["out/e-${item}.txt"]},
    }  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["targets"] = ["x", "y"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_stage_graph_follows_dvc_yaml_with_foreach_resolved(tmp_path):
    root = make_repo(tmp_path / "repo")
    _add_foreach_stage(root)
    dag = load_dag(root)

    assert dag.order == ["a", "b", "c", "d", "e@x", "e@y"]
    assert dag.stages["d"].upstream == ("b", "c")
    assert dag.stages["b"].upstream == ("a",) and dag.stages["a"].upstream == ()
    assert dag.stages["e@y"].upstream == ("d",) and dag.stages["e@y"].section == "e"
    assert dag.descendants("b") == {"d", "e@x", "e@y"}
    assert dag.descendants("e@x") == set()
    b = dag.stages["b"]
    assert b.deps == ("stage.py", "out/a.txt") and b.params == ("b",)
    assert b.outs == ("out/b.txt", "reports/b", "metrics/b.json")
    assert b.metrics == b.uncached == ("metrics/b.json",)


@pytest.mark.slow
def test_stale_stages_and_lock_hashes_track_dvc(tmp_path):
    root = make_repo(tmp_path / "repo")
    assert set(stale_stages(root)) == {"a", "b", "c", "d"}
    assert lock_hashes(root) == {}

    dvc(root, "repro", "-q")
    assert stale_stages(root) == {}
    hashes = lock_hashes(root)
    assert hashes["out/a.txt"] == "a5b77d66ca55bddfa94dcc1ebc37e284"  # md5 of "a=1;"
    assert hashes["reports/b"].endswith(".dir")

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["c"]["value"] = 30
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert set(stale_stages(root)) == {"c"}  # d's deps have not changed (yet)
