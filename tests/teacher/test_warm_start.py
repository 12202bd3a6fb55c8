"""Warm start, data window, replay and EWC of the teacher (edge_pipeline/teacher/warm_start.py,
replay.py, ewc.py) and the train section's continual-learning keys."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from edge_pipeline.config import load_section
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.core.lineage import Scratch
from edge_pipeline.teacher import ewc, replay, warm_start


def _section(tmp_path, cfg) -> Train:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": cfg}))
    return load_section("train", path)


@pytest.mark.parametrize(
    ("cfg", "pattern"),
    [
        ({"init": "best"}, r"train\.init"),
        ({"init": "scratch", "ewc": {"strength": 10.0}}, "need a start model"),
        ({"init": "champion", "data_window": 0}, r"train\.data_window"),
        ({"init": "champion", "replay": {"size": 10}}, "replay.size"),
        ({"init": "champion", "warm": {"epoch": 2}}, "did you mean epochs"),
    ],
)
def test_continual_keys_are_checked(tmp_path, cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _section(tmp_path, cfg)


def test_head_rows_follow_the_class_names():
    state = {"net.conv.weight": torch.ones(2, 1, 3, 3),
             "net.fc.weight": torch.arange(6.0).view(3, 2),
             "net.fc.bias": torch.tensor([0.0, 1.0, 2.0]), "mean": torch.zeros(1)}  # fmt: skip
    fill = nn.Linear(2, 3)
    out, change = warm_start.remap_head(state, ["a", "b", "c"], ["c", "a", "new"], fill=fill)
    assert change == {"kept": ["c", "a"], "added": ["new"], "removed": ["b"]}
    assert out["net.fc.weight"][:2].tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert torch.equal(out["net.fc.weight"][2], fill.weight[2].detach())
    assert out["net.fc.bias"][:2].tolist() == [2.0, 0.0]
    assert out["net.conv.weight"] is state["net.conv.weight"]
    fisher, _ = warm_start.remap_head(state, ["a", "b", "c"], ["c", "new"], fill=None)
    assert fisher["net.fc.weight"].tolist() == [[4.0, 5.0], [0.0, 0.0]]  # a new row moves freely


def test_stratified_sample_shares_equally_and_small_classes_give_way():
    y = np.array([0] * 50 + [1] * 3 + [2] * 50)
    pick = ewc.stratified_sample(y, 30, seed=0)
    assert len(pick) == 30 and sorted(np.bincount(y[pick]).tolist()) == [3, 13, 14]
    assert len(ewc.stratified_sample(y, 500, seed=0)) == len(y)
    assert np.array_equal(pick, ewc.stratified_sample(y, 30, seed=0))


def test_data_window_keeps_the_last_nights_and_replays_older_images():
    ids = np.array(["a", "b", "c", "d", "e", "f", ""])  # "" = a synthetic row
    y = np.array([0, 1, 0, 1, 0, 1, 0])
    old = pd.DataFrame({"id": ["a", "b", "c", "d"], "night": [1, 1, 2, 2]})
    first_seen = replay.update_first_seen(old, ids, night=3)
    assert dict(zip(first_seen["id"], first_seen["night"], strict=True)) == {
        "a": 1, "b": 1, "c": 2, "d": 2, "e": 3, "f": 3}  # fmt: skip
    p = Train(init="previous", data_window=2)
    rows, report = replay.select_rows(p, ids, y, first_seen, night=3)
    assert rows.tolist() == [2, 3, 4, 5] and report["n_dropped_synthetic"] == 1
    p = Train(init="previous", data_window=1, replay={"size": 2})
    rows, report = replay.select_rows(p, ids, y, first_seen, night=3)
    assert report["n_replay"] == 2 and set(rows.tolist()) >= {4, 5}
    assert sorted(y[rows[~np.isin(rows, [4, 5])]].tolist()) == [0, 1]  # one per class
    every, _ = replay.select_rows(Train(), ids, y, first_seen, night=3)
    assert every.tolist() == list(range(7))


def test_ewc_penalty_is_zero_at_the_anchor_and_pulls_towards_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = np.random.default_rng(0).integers(0, 256, (12, 2, 2, 1), dtype=np.uint8)
    y = np.arange(12) % 3
    fisher = ewc.fisher_diagonal(model, x, y, device=torch.device("cpu"), batch_size=5)
    assert set(fisher) == {"1.weight", "1.bias"}
    assert all((f >= 0).all() and f.sum() > 0 for f in fisher.values())
    anchor = {k: v.clone() for k, v in model.state_dict().items()}
    penalty = ewc.ewc_penalty(anchor, fisher, strength=10.0)
    assert penalty(model).item() == 0.0
    with torch.no_grad():
        model[1].weight.add_(0.5)
    moved = penalty(model)
    assert moved.item() == pytest.approx(5.0 * (fisher["1.weight"] * 0.25).sum().item())
    moved.backward()
    assert (model[1].weight.grad * fisher["1.weight"] >= 0).all()  # gradient points away


def test_fisher_is_the_mean_of_per_example_squared_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    x = np.random.default_rng(1).integers(0, 256, (7, 3, 3, 1), dtype=np.uint8)[:, :2, :2]
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    fisher = ewc.fisher_diagonal(model, x, y, device=torch.device("cpu"), batch_size=3)
    model.eval()
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):  # by hand: one backward pass per image
        model.zero_grad()
        inp = torch.from_numpy(xi).permute(2, 0, 1)[None].float() / 255.0
        nn.functional.cross_entropy(model(inp), torch.tensor([int(yi)])).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad**2 / len(y)
    for n, f in fisher.items():
        torch.testing.assert_close(f, expected[n], rtol=1e-4, atol=1e-9)
    # the batch-mean shortcut this replaced is far smaller: gradients cancel in the mean
    model.zero_grad()
    xb = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    nn.functional.cross_entropy(model(xb), torch.from_numpy(y)).backward()
    assert (model[3].weight.grad ** 2).sum() < 0.5 * fisher["3.weight"].sum()


def test_first_night_of_champion_falls_back_to_scratch_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        start = warm_start.load_start(Train(init="champion"), classes=["0"],
                                      image_shape=(16, 16, 1), model_name="none-yet")  # fmt: skip
    assert start == Scratch("no champion of 'none-yet' yet")
    assert "starts from scratch" in caplog.text


def test_a_start_model_of_another_data_set_is_not_fine_tuned(tmp_path, caplog):
    """The same image shape and architecture, but it knows 1 of tonight's 3 classes: scratch."""
    from edge_pipeline.core.lineage import WARM_DIR, WARM_TAG
    from edge_pipeline.core.tracking import stage_run

    p = Train(init="previous")
    meta = {"classes": ["cat", "dog", "0"], "arch": p.arch, "in_channels": 1,
            "image_size": [16, 16]}  # fmt: skip
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with stage_run("train") as mlflow:
        mlflow.log_artifact(str(tmp_path / "meta.json"), WARM_DIR)
        mlflow.set_tag(WARM_TAG, "true")
    with caplog.at_level(logging.WARNING):
        start = warm_start.load_start(p, classes=["0", "1", "2"], image_shape=(16, 16, 1),
                                      model_name="m")  # fmt: skip
    assert not start and "knows 1 of tonight's 3 classes" in start.why
    assert "knows 1 of tonight's 3 classes" in caplog.text and "scratch" in caplog.text


@pytest.mark.slow
def test_previous_night_warm_starts_grows_the_head_and_records_its_source(prepared_workspace):
    """Night 1 (no previous run: scratch), then night 2 with a new class starting from it."""
    import mlflow

    from tasks import train

    cfg = {"epochs": 1, "batch_size": 16, "threads": 1, "init": "previous",
           "warm": {"epochs": 1, "lr": 0.001}, "ewc": {"strength": 10.0, "samples": 16},
           "data_window": 1, "replay": {"size": 6}}  # fmt: skip
    ws = prepared_workspace(n_classes=2, per_class=15, params={"train": cfg})
    train.main()
    root = ws["root"]
    meta1 = json.loads((root / "data" / "train" / "meta.json").read_text())
    assert meta1["night"] == 1 and meta1["init_from"] == "scratch" and meta1["mlflow_run_id"]

    prepared_workspace(n_classes=3, per_class=15, params={"train": cfg})  # class 2 arrives
    train.main()
    meta2 = json.loads((root / "data" / "train" / "meta.json").read_text())
    metrics = json.loads((root / "metrics" / "train.json").read_text())
    assert meta2["night"] == 2 and meta2["init_from"] == "previous run"
    assert meta2["init_from_run_id"] == meta1["mlflow_run_id"]
    assert meta2["classes_changed"]["added"] == ["2"] and meta2["classes"] == ["0", "1", "2"]
    assert metrics["data_window"]["n_window"] == 9 and metrics["data_window"]["n_replay"] == 6
    assert np.load(root / "data" / "train" / "logits_train.npy").shape == (27, 3)
    run = mlflow.get_run(meta2["mlflow_run_id"])
    assert run.data.tags["init_from_run_id"] == meta1["mlflow_run_id"]
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "warm_start")}
    assert {f"warm_start/{n}" for n in ("teacher.pt", "meta.json", "fisher.pt",
                                         "first_seen.csv")} <= files  # fmt: skip

    # Re-executing night 2 later: `previous` now means night 2's own run; the pin that
    # `make pin-starts` reads from night 2's meta.json gives night 2's weights again, exactly.
    from edge_pipeline.registry.pin_starts import recorded_starts

    night2 = torch.load(root / "data" / "train" / "teacher.pt", weights_only=True)
    pin = recorded_starts({"train": root / "data" / "train" / "meta.json"})["train"]
    assert pin == f"runs:/{meta1['mlflow_run_id']}"
    prepared_workspace(n_classes=3, per_class=15, params={"train": cfg | {"init": pin}})
    train.main()
    again = json.loads((root / "data" / "train" / "meta.json").read_text())
    assert again["init_from_run_id"] == meta1["mlflow_run_id"] and again["night"] == 2
    replayed = torch.load(root / "data" / "train" / "teacher.pt", weights_only=True)
    assert replayed.keys() == night2.keys()
    assert all(torch.equal(replayed[k], night2[k]) for k in night2)
    replayed_metrics = json.loads((root / "metrics" / "train.json").read_text())
    assert replayed_metrics["test_accuracy"] == metrics["test_accuracy"]

    # Two warm runs in a row (night 2 and its re-execution): with `warm.refresh_every` 3 the next
    # `previous` start trains from scratch, and records no start (pin-starts pins `scratch`)
    refresh = cfg | {"warm": cfg["warm"] | {"refresh_every": 3}}
    prepared_workspace(n_classes=3, per_class=15, params={"train": refresh})
    train.main()
    fresh = json.loads((root / "data" / "train" / "meta.json").read_text())
    assert fresh["init_from"] == "scratch" and fresh["init_from_run_id"] is None
    assert fresh["scratch_why"] == "refresh due: warm.refresh_every=3"  # the run summary says it
    assert recorded_starts({"train": root / "data" / "train" / "meta.json"}) == {"train": "scratch"}
