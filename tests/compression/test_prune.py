"""TF-MOT sparsity: schedule, sparsity asserted, structured options; the prune stage's main()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from edge_pipeline.compression import sparsity as sp
from edge_pipeline.core.errors import ConfigError
from tests.compression_fixtures import digits, load_with, trained_student
from tests.train_set_fixtures import add_synthetic_rows


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return digits(n_classes=3, per_class=40)


@pytest.fixture(scope="module")
def trained(data):
    return trained_student(*data, epochs=4)


def _fresh(model):
    """An independent copy (prune_and_finetune trains the layers it is given)."""
    import tf_keras

    copy = tf_keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def _prune(model, data, **kwargs):
    x, y = data
    fit = dict(x_val=x, y_val=y, n_classes=3, alpha=1.0, temperature=1.0, lr=1e-3, patience=1)
    options = {"target": 0.5, "ramp_epochs": 2, "recovery_epochs": 0, "batch_size": 32, **kwargs}
    teacher = np.zeros((len(x), 3), np.float32)
    return sp.prune_and_finetune(
        _fresh(model), x, y, teacher, seed=0, tolerance=0.02, **fit, **options
    )


def test_plan_lands_the_last_update_on_the_last_step():
    assert sp.plan_schedule(23) == sp.PruningPlan(begin_step=0, end_step=22, frequency=2)
    assert sp.plan_schedule(12, frequency=5) == sp.PruningPlan(0, 10, 5)
    assert sp.plan_schedule(2) == sp.PruningPlan(0, 1, 1)
    for steps in (2, 7, 100, 1001):
        plan = sp.plan_schedule(steps)
        assert plan.end_step <= steps - 1 and plan.end_step % plan.frequency == 0
    with pytest.raises(ValueError, match="at least 2"):
        sp.plan_schedule(1)


@pytest.mark.slow  # TF-MOT fine-tuning of a real model: about a minute
def test_sparsity_reached_per_layer_and_wrappers_stripped(trained, data):
    model, info = _prune(trained, data, recovery_epochs=1)
    names = [layer.name for layer in model.layers]
    assert names == [layer.name for layer in trained.layers]
    assert not any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers)
    expected = {n for n in names if n.endswith(("_conv", "_expand", "_project")) or n == "logits"}
    assert set(info["layers"]) == expected
    for name, row in info["layers"].items():
        kernel = model.get_layer(name).get_weights()[0]
        assert row["sparsity"] == pytest.approx(np.mean(kernel == 0))
        assert row["sparsity"] >= 0.48, (name, row)
    assert info["overall_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert info["recovery"]["epochs_run"] == 1


def test_hold_keeps_the_zeros_of_an_already_sparse_model_in_one_fit(trained, data):
    """ramp_epochs=0 (a warm start): no ramp, the masks held at the target from the first step,
    so every weight that was zero stays zero while the recovery epoch trains the others."""
    from tests.compression_fixtures import zero_smallest

    sparse = zero_smallest(_fresh(trained), 0.5)
    zeros = {layer.name: layer.get_weights()[0] == 0 for layer in sp.prunable_layers(sparse)}
    model, info = _prune(sparse, data, ramp_epochs=0, recovery_epochs=1)
    assert info["ramp"] is None and info["recovery"]["epochs_run"] == 1
    assert info["plan"] == sp.HOLD.__dict__
    moved = 0
    for name, was_zero in zeros.items():
        kernel = model.get_layer(name).get_weights()[0]
        assert np.all(kernel[was_zero] == 0), name
        moved += int(
            np.sum(kernel[~was_zero] != sparse.get_layer(name).get_weights()[0][~was_zero])
        )
    assert moved > 0  # the recovery epoch trained the kept weights
    assert info["overall_sparsity"] == pytest.approx(0.5, abs=0.02)


def test_too_short_schedule_fails_with_a_clear_message(trained, data):
    # TF-MOT's usual numbers (update every 100 steps up to step 1000) on a 4-step run: 0% sparsity.
    with pytest.raises(sp.SparsityShortfall, match=r"prune\.ramp_epochs.*prune\.frequency") as err:
        _prune(trained, data, ramp_epochs=1, plan=sp.PruningPlan(0, 1000, 100))
    assert "logits 0.0% < 50.0%" in str(err.value)


@pytest.mark.slow  # TF-MOT fine-tuning of a real model: about a minute
def test_m_by_n_where_input_channels_allow_and_block_sparsity_on_dense(trained, data):
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_utils import (
        is_pruned_m_by_n,
    )

    model, info = _prune(trained, data, target=0.3, m_by_n=(2, 4))
    for name, want in info["expected"].items():
        kernel = model.get_layer(name).get_weights()[0]
        if name == "stem_conv":  # 1 input channel: no groups of 4, element-wise at the target
            assert want == 0.3 and info["layers"][name]["sparsity"] == pytest.approx(0.3, abs=0.02)
        else:
            assert want == 0.5 and bool(is_pruned_m_by_n(tf.constant(kernel), (2, 4))), name

    model, info = _prune(trained, data, block_size=(2, 1))
    dense = model.get_layer("logits").get_weights()[0]  # (16, 3): rows zeroed in pairs
    pairs = (dense.reshape(-1, 2, dense.shape[1]) == 0).sum(axis=1)
    assert set(np.unique(pairs)) <= {0, 2} and info["layers"]["logits"]["sparsity"] >= 0.48


def test_options_fail_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"prune\.block_size\.0=0"):
        load_with("prune", {"block_size": [0, 4]}, tmp_path)
    with pytest.raises(ConfigError, match=r"prune\.channel_scope='everything'.*'hidden' or 'all'"):
        load_with("prune", {"channel_scope": "everything"}, tmp_path)
    with pytest.raises(ConfigError, match=r"prune\.target_sparsity=1\.5"):
        load_with("prune", {"target_sparsity": 1.5}, tmp_path)
    with pytest.raises(ConfigError, match=r"prune\.augment\.rotate: .*did you mean rotation_deg"):
        load_with("prune", {"augment": {"rotate": 10}}, tmp_path)
    with pytest.raises(ConfigError, match=r"prune\.target_sparsty: .*did you mean target_sparsity"):
        load_with("prune", {"target_sparsty": 0.9}, tmp_path)
    assert load_with("prune", {"sparsity_m_by_n": [2, 4]}, tmp_path).sparsity_m_by_n == (2, 4)
    fit = load_with("prune", {"augment": {"rotation_deg": 5}}, tmp_path).fit_options()
    assert fit["augment"] == {
        "hflip": False,
        "rotation_deg": 5,
        "crop_padding": 1,
        "color_jitter": 0,
    }
    assert load_with("prune", {"augment": None}, tmp_path).fit_options()["augment"] is None


def test_defaults_are_the_params_yaml_values(tmp_path):
    """With its keys removed, prune runs as params.yaml says (it used to fall back to 15/3/5e-4)."""
    fit = load_with("prune", {}, tmp_path).fit_options()
    assert (fit["epochs"], fit["patience"], fit["lr"]) == (30, 10, 1e-3)
    assert fit["augment"]["rotation_deg"] == 10 and fit["augment"]["crop_padding"] == 1
    assert load_with("prune", {}, tmp_path).sparsity_tolerance == 0.02


@pytest.mark.slow
def test_prune_stage_end_to_end(prepared_workspace):
    from edge_pipeline.artifacts import datasets as d
    from edge_pipeline.compression.model_facts import load_keras
    from edge_pipeline.student.kd_training import predict_logits
    from tasks import prune

    params = {
        "prune": {"ramp_epochs": 1, "epochs": 1, "batch_size": 32, "calib_samples": 32,
                  "patience": 1, "min_agreement": 0.5, "sampler": "balanced"},
    }  # fmt: skip
    ws = prepared_workspace(n_classes=3, per_class=30, size=16, params=params)
    root = ws["root"]
    add_synthetic_rows(root, 6)  # balanced draws: an epoch is the 54 real rows, not 60
    x, y, _, _ = d.load_train()
    student = trained_student(x, y, epochs=12)
    (root / "data/distill").mkdir(parents=True)
    student.save(root / "data/distill/student.keras")
    (root / "data/train").mkdir(parents=True)
    np.save(root / "data/train/logits_train.npy", predict_logits(student, x))

    prune.main()

    metrics = json.loads((root / "metrics/prune.json").read_text())
    assert metrics["pruned"]["params"] < metrics["student"]["params"]
    assert metrics["macs_ratio"] > 1.3
    assert metrics["pruned"]["sparsity"] >= 0.48
    assert metrics["rows_per_epoch"] == ws["n_train"] == 54
    assert 0.5 <= metrics["channel_pruned"]["agreement_before_finetune"] <= 1.0
    assert metrics["channel_pruned"]["macs"] == metrics["pruned"]["macs"]
    assert 0.0 <= metrics["pruned"]["accuracy"] <= 1.0
    assert metrics["pruned"]["gzip_bytes"] < metrics["pruned"]["bytes"]
    meta = json.loads((root / "data/prune/meta.json").read_text())
    assert meta["channels"]["b1_expand"] == {"before": 24, "after": 12}
    table = pd.read_csv(root / "plots/prune/sparsity.csv")
    assert set(table["layer"]) == set(meta["sparsity"]) and (table["sparsity"] >= 0.48).all()
    assert (root / "plots/prune/channels.png").stat().st_size > 0
    pruned = load_keras(root / "data/prune/student_pruned.keras")
    assert pruned.get_layer("b1_dw").get_weights()[0].shape[2] == 12
