"""Every plot declared in dvc.yaml renders meaningfully in `dvc plots show`.

A tiny workspace (dvc.yaml, params.yaml, the committed plots/ of the demo run, with plots/prune
and plots/benchmark rewritten by their writers from tiny inputs) is rendered with DVC's own code
(`Repo.plots.show` + `match_defs_renderers`, what `dvc plots show` runs): each CSV/JSON plot has a
readable title and x / y fields present in every row of its data.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _benchmark_inputs() -> tuple[dict[str, Any], pd.DataFrame]:
    """`run_benchmark`'s record and `benchmark_outputs.table` for 4 models, 2 serving policies."""
    df = pd.DataFrame({
        "model": ["teacher_fp32", "qat/student_int8", "qat/student_fp32", "export/student_int8"],
        "p50_ms_1t": [7.2, 0.07, 0.09, 0.071],
        "accuracy": [0.98, 0.975, 0.98, 0.975],
        "size_mb": [44.8, 0.05, 0.15, 0.06],
        "zipped_mb": [41.5, 0.02, 0.13, 0.05],
        "passed": [False, True, True, True],
    })  # fmt: skip
    rows = [
        {"rate_rps": r, "policy": pol, "offered_load": 0.03 * r / 500, "requests": r,
         "throughput_rps": 0.98 * r, "latency_ms_p50": lat, "latency_ms_p95": 1.5 * lat,
         "latency_ms_p99": 2 * lat, "mean_batch": 1.0, "max_batch_seen": 1}
        for r in (500, 2000) for pol, lat in (("batch1", 0.07), ("dynamic", 3.6))
    ]  # fmt: skip
    out = {"chosen": "qat/student_int8", "gates": {"max_size_mb": 5.0}, "serving": {"rows": rows}}
    return out, df


def _prune_report() -> dict[str, Any]:
    """`pruning.prune_student`'s report for two layers (what write_prune_plots reads)."""
    return {
        "layers": {
            "stem_conv": {"weights": 144, "zeros": 72, "sparsity": 0.5},
            "b1_expand": {"weights": 256, "zeros": 128, "sparsity": 0.5},
        },
        "expected": {"stem_conv": 0.5, "b1_expand": 0.5},
        "channels": {"b1_expand": {"before": 64, "after": 32}},
    }


@pytest.fixture
def plots_workspace(tmp_path: Path) -> Path:
    from dvc.repo import Repo

    from edge_pipeline.compression.prune_outputs import write_prune_plots
    from edge_pipeline.edge.benchmark_plots import write_plots
    from flows.history import append_tonight
    from flows.summary import build

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "plots", tmp_path / "plots")
    for stage in ("prune", "benchmark"):
        shutil.rmtree(tmp_path / "plots" / stage, ignore_errors=True)
    (tmp_path / "plots/prune").mkdir()
    write_prune_plots(_prune_report(), tmp_path / "plots/prune")
    write_plots(*_benchmark_inputs(), tmp_path / "plots/benchmark")
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    append_tonight(tmp_path, build(tmp_path))  # plots/history/nights.{csv,png}
    Repo.init(str(tmp_path), no_scm=True).close()
    return tmp_path


def _rendered(root: Path) -> dict[str, dict[str, Any]]:
    """{plot file: its filled vega-lite spec} of every CSV/JSON plot, as `dvc plots show` makes."""
    from dvc.render.match import match_defs_renderers
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        data = repo.plots.show()
        errors = {
            path: entry["error"]
            for path, entry in data["workspace"]["sources"]["data"].items()
            if "error" in entry
        }
        assert not errors, f"plots DVC cannot load: {errors}"
        renderers = match_defs_renderers(data=data, templates_dir=repo.plots.templates_dir)
    return {
        r.renderer.name: r.renderer.get_filled_template()
        for r in renderers
        if type(r.renderer).__name__ == "VegaRenderer"
    }


def _fields(node: Any, axis: str) -> set[str]:
    """Every `encoding.<axis>.field` anywhere in a (layered, faceted) vega-lite spec."""
    if isinstance(node, list):
        return set().union(*(_fields(n, axis) for n in node))
    if not isinstance(node, dict):
        return set()
    found = (
        {node["encoding"][axis]["field"]}
        if "field" in node.get("encoding", {}).get(axis, {})
        else set()
    )
    return found.union(*(_fields(v, axis) for k, v in node.items() if k != "data"))


def test_every_declared_plot_has_x_and_y_fields_present_in_its_data(plots_workspace) -> None:
    specs = _rendered(plots_workspace)
    want = {
        "plots/benchmark/pareto.csv", "plots/benchmark/size.csv",
        "plots/benchmark/serving/batch1.csv", "plots/benchmark/serving/dynamic.csv",
        "plots/prune/sparsity.csv", "plots/prune/channels.csv",
        "plots/ingest/class_distribution.csv", "plots/split/train.csv",
        "plots/train/history.csv", "plots/distill/history_student.csv",
        "Nightly history, accuracy and kappa per night",
        "Nightly history, p95 latency of the chosen model per night",
    }  # fmt: skip
    assert want <= set(specs)
    for name, spec in specs.items():
        fields = _fields(spec, "x") | _fields(spec, "y")
        rows = spec["data"]["values"]
        assert rows and _fields(spec, "x") and _fields(spec, "y"), name
        assert "step" not in fields, f"{name}: plotted over the row index"
        missing = {f for f in fields if not all(f in row for row in rows)}
        assert not missing, f"{name}: fields {missing} not in its data"
        title = spec["title"]["text"] if isinstance(spec.get("title"), dict) else spec.get("title")
        assert title and "/" not in title and not title.endswith(".csv"), f"{name}: {title!r}"


def test_pareto_csv_ranks_models_and_marks_the_chosen_one(plots_workspace) -> None:
    pareto = pd.read_csv(plots_workspace / "plots/benchmark/pareto.csv")
    assert list(pareto["rank"]) == [1, 2, 3, 4]
    assert pareto["p50_ms_1t"].is_monotonic_increasing
    assert list(pareto.loc[pareto["chosen"], "model"]) == ["qat/student_int8"]
    assert (plots_workspace / "plots/benchmark/serving/p95_latency.png").stat().st_size > 0


def test_dvc_plots_output_is_git_ignored() -> None:
    assert "/dvc_plots/" in (REPO / ".gitignore").read_text().splitlines()
