"""edge_pipeline/registry/pin_starts.py: a recorded night's start runs pinned in params.yaml."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
import yaml

from edge_pipeline.config import load_params
from edge_pipeline.core.errors import InputError
from edge_pipeline.core.lineage import Source, start_record, start_tags
from edge_pipeline.registry.pin_starts import pin, recorded_starts, set_inits

REPO = Path(__file__).resolve().parents[2]
RUN = "0123456789abcdef" * 2


def test_recorded_starts_pin_a_warm_start_and_keep_a_scratch_one(tmp_path: Path) -> None:
    # the meta.json fields the stages write (lineage.start_record), read back by pin_starts
    champion = Source("train", RUN, "champion v1", "1")
    warm, cold = start_record(champion, "a" * 32), start_record(None, "b" * 32)
    assert warm["init_from"] == "champion v1" and cold["init_from"] == "scratch"
    assert start_tags(champion)["init_from_run_id"] == RUN and start_tags(None) == {
        "init_from": "scratch"
    }
    (tmp_path / "train.json").write_text(json.dumps(warm | {"x": 1}))
    (tmp_path / "prune.json").write_text(json.dumps(cold))
    starts = recorded_starts({"train": tmp_path / "train.json", "prune": tmp_path / "prune.json"})
    assert starts == {"train": f"runs:/{RUN}", "prune": "scratch"}


def test_a_missing_or_pre_lineage_meta_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"distill\.json.*dvc pull"):
        recorded_starts({"distill": tmp_path / "distill.json"})
    (tmp_path / "old.json").write_text(json.dumps({"classes": ["a"]}))
    with pytest.raises(InputError, match="old.json has no init_from_run_id"):
        recorded_starts({"train": tmp_path / "old.json"})


def test_set_inits_changes_only_the_init_lines_and_the_schema_accepts_them() -> None:
    text = (REPO / "params.yaml").read_text()
    pins = {"train": f"runs:/{RUN}", "distill": "scratch", "prune": f"runs:/{'f' * 32}"}
    out = set_inits(text, pins)
    changed = [line for line in difflib.ndiff(text.splitlines(), out.splitlines())
               if line.startswith(("+", "-"))]  # fmt: skip
    assert len(changed) == 6 and all("  init: " in line for line in changed)
    assert "# champion (fine-tune the registry champion's teacher" in out  # comments kept
    distill = [
        next(x for x in t.splitlines() if "# champion (the student" in x) for t in (text, out)
    ]
    assert distill[0].index("#") == distill[1].index("#")  # a shorter value keeps the column
    parsed = load_params(raw=yaml.safe_load(out))
    assert {s: getattr(parsed, s).init for s in pins} == pins
    assert set_inits(out, {"train": "champion"}).count("init: champion") == 1


def test_set_inits_adds_a_missing_key_or_section() -> None:
    text = "train:\n  epochs: 2  # few\nqat:\n  epochs: 1\n"
    out = set_inits(text, {"train": "scratch", "prune": "previous"})
    assert yaml.safe_load(out) == {
        "train": {"init": "scratch", "epochs": 2}, "qat": {"epochs": 1},
        "prune": {"init": "previous"},
    }  # fmt: skip


def test_set_inits_follows_the_sections_indent() -> None:
    text = "train:\n    epochs: 2\n    init: champion   # where\ndistill:\n    epochs: 1\n"
    out = set_inits(text, {"train": "scratch", "distill": f"runs:/{RUN}"})
    assert "    init: scratch    # where\n" in out
    assert yaml.safe_load(out)["distill"] == {"init": f"runs:/{RUN}", "epochs": 1}


def test_pin_refuses_a_layout_it_cannot_edit_and_leaves_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for stage in ("train", "distill", "prune"):
        (tmp_path / "data" / stage).mkdir(parents=True)
        (tmp_path / "data" / stage / "meta.json").write_text(json.dumps({"init_from_run_id": RUN}))
    flow = yaml.safe_dump(yaml.safe_load((REPO / "params.yaml").read_text()),
                          default_flow_style=True)  # fmt: skip
    (tmp_path / "params.yaml").write_text(flow)
    with pytest.raises(
        InputError, match=r"params\.yaml: its layout .* set train\.init: runs:/0123.* by hand"
    ):
        pin(tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == flow  # nothing half-written
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert pin(tmp_path / "params.yaml") == dict.fromkeys(
        ("train", "distill", "prune"), f"runs:/{RUN}"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [("runs:/abc", "32-hex MLflow run id"), ("chmpion", "did you mean champion")],
)
def test_a_wrong_init_gets_one_message_with_the_choices(value: str, message: str) -> None:
    from edge_pipeline.config import apply_overrides, read_yaml
    from edge_pipeline.core.errors import ConfigError

    raw = read_yaml(REPO / "params.yaml")
    with pytest.raises(ConfigError, match=rf"distill\.init='{value}': .*{message}"):
        load_params(raw=apply_overrides(raw, {"distill.init": value}))
