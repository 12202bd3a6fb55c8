"""Model lineage in MLflow (edge_pipeline/core/lineage.py): version tags -> source runs."""

from __future__ import annotations

import json
import logging
import time

import pytest

from edge_pipeline.core.errors import InputError
from edge_pipeline.core.lineage import (
    WARM_DIR,
    WARM_TAG,
    Scratch,
    Source,
    download,
    find_source,
    lineage_tags,
    start_record,
    start_tags,
    unrelated,
)
from edge_pipeline.core.tracking import configure, stage_run


def _warm_run(tmp_path, stage: str, *, start: str | None = None) -> str:
    """A finished stage run that logged WARM_DIR (started from run `start`); returns its id."""
    (tmp_path / "meta.json").write_text(json.dumps({"classes": ["a"]}))
    time.sleep(0.01)  # distinct start times: "latest" is by start time
    with stage_run(stage) as mlflow:
        mlflow.log_artifact(str(tmp_path / "meta.json"), WARM_DIR)
        mlflow.set_tag(WARM_TAG, "true")
        if start:
            mlflow.set_tags(Source(stage, start, "previous run").tags())
        return mlflow.active_run().info.run_id


def test_lineage_tags_read_each_stages_meta(tmp_path, caplog):
    (tmp_path / "train.json").write_text(json.dumps({"mlflow_run_id": "abc"}))
    (tmp_path / "old.json").write_text(json.dumps({"classes": []}))
    with caplog.at_level(logging.WARNING):
        tags = lineage_tags({"train": tmp_path / "train.json", "distill": tmp_path / "old.json",
                             "x": tmp_path / "missing.json"})  # fmt: skip
    assert tags == {"train_run_id": "abc"}
    assert "lineage is unknown" in caplog.text


def test_champion_source_follows_the_version_tag(tmp_path, caplog):
    assert find_source("train", "scratch", model_name="m") == Scratch("init: scratch")
    with caplog.at_level(logging.WARNING):  # first night: scratch, and the why is recorded
        assert find_source("train", "champion", model_name="m") == Scratch("no champion of 'm' yet")
        assert find_source("train", "previous", model_name="m") == Scratch("no finished run yet")
    assert start_record(Scratch("init: scratch"), "r")["scratch_why"] == "init: scratch"
    assert start_tags(Scratch("init: scratch"))["scratch_why"] == "init: scratch"
    assert "first night" in caplog.text
    run_id = _warm_run(tmp_path, "train")
    client = configure().MlflowClient()
    client.create_registered_model("m")
    mv = client.create_model_version("m", f"runs:/{run_id}/{WARM_DIR}", run_id=run_id,
                                     tags={"train_run_id": run_id})  # fmt: skip
    client.set_registered_model_alias("m", "champion", mv.version)
    source = find_source("train", "champion", model_name="m")
    assert source == Source("train", run_id, f"champion v{mv.version}", str(mv.version))
    assert source.tags()["init_from_run_id"] == run_id
    no_tag = Scratch(f"champion v{mv.version} has no lineage tag")  # no distill_run_id tag
    assert find_source("distill", "champion", model_name="m") == no_tag
    assert find_source("train", "previous", model_name="m").run_id == run_id
    later = _warm_run(tmp_path, "train")
    assert find_source("train", "previous", model_name="m").run_id == later
    assert json.loads((download(source, tmp_path / "dl") / "meta.json").read_text())


def test_a_source_without_artifacts_names_the_fix(tmp_path):
    with stage_run("train") as mlflow:
        run_id = mlflow.active_run().info.run_id
    with pytest.raises(InputError, match="train.init to scratch"):
        download(Source("train", run_id, "previous run"), tmp_path)


def test_a_start_model_must_know_half_of_tonights_classes():
    assert unrelated(["0", "1"], ["0", "1", "2"]) == ""  # a new class arrives: warm
    assert unrelated(["0", "1", "2"], ["0"]) == ""  # classes removed: warm
    assert unrelated(["0", "1", "9"], ["0", "1", "2", "3"]) == ""  # half known
    assert "knows 1 of tonight's 3 classes" in unrelated(["0", "cat"], ["0", "1", "2"])
    assert "another data set" in unrelated([0, 1], ["cat", "dog"])


def test_a_pinned_run_is_the_source_whatever_the_champion(tmp_path):
    first = _warm_run(tmp_path, "train")
    _warm_run(tmp_path, "train")  # a later run: `previous` would take it, a pin does not
    source = find_source("train", f"runs:/{first}", model_name="m")
    assert source == Source("train", first, f"pinned run {first[:8]}")
    assert source.tags()["init_from_run_id"] == first
    assert json.loads((download(source, tmp_path / "dl") / "meta.json").read_text())


def test_a_pin_to_a_missing_or_foreign_run_names_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"train\.init: runs:/0{32} is not a run of this MLflow"):
        find_source("train", "runs:/" + "0" * 32, model_name="m")
    distill = _warm_run(tmp_path, "distill")
    with pytest.raises(InputError, match=r"train\.init: run \w+ is a distill run"):
        find_source("train", f"runs:/{distill}", model_name="m")


def test_a_floating_start_refreshes_from_scratch_every_n_runs(tmp_path, caplog):
    def start(init: str, every: int | None) -> str:
        """The start run's id, or why tonight starts from scratch."""
        source = find_source("train", init, model_name="m", refresh_every=every)
        return source.run_id if source else source.why

    first = _warm_run(tmp_path, "train")  # a scratch run: no start recorded
    one = _warm_run(tmp_path, "train", start=first)
    assert start("previous", 3) == one  # 1 warm run in a row: not yet
    two = _warm_run(tmp_path, "train", start=one)
    _warm_run(tmp_path, "distill", start="f" * 32)  # another stage's runs do not count
    with caplog.at_level(logging.WARNING):
        due = "refresh due: warm.refresh_every=3"
        assert start("previous", 3) == due  # 2 = 3 - 1 warm runs in a row: scratch tonight
        assert start("champion", 3) == due  # the same for the champion's lineage
    assert "last 2 finished train runs all fine-tuned another run" in caplog.text
    assert "train.warm.refresh_every=3: tonight trains from scratch" in caplog.text
    assert start("previous", 4) == two and start("previous", None) == two
    assert start(f"runs:/{two}", 2) == two  # a pin names its start: never refreshed
    fresh = _warm_run(tmp_path, "train")  # tonight's refresh ran from scratch ...
    assert start("previous", 2) == fresh  # ... so the next night fine-tunes again
