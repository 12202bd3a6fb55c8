"""Channel pruning: dependency analysis, thinner rebuild, surviving weights, agreement."""

from __future__ import annotations

import numpy as np
import pytest

from edge_pipeline.compression import channels as cp
from edge_pipeline.compression.model_facts import conv_channels, prediction_agreement
from tests.compression_fixtures import digits, tiny_student, trained_student


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return digits(n_classes=3, per_class=60)


@pytest.fixture(scope="module")
def trained(data):
    return trained_student(*data, epochs=6)


def test_groups_are_the_hidden_channels_of_inverted_residual_blocks():
    model = tiny_student()
    groups = cp.find_channel_groups(model)
    # b0 has no expand conv (t=1) and its input feeds a residual Add: stem_conv is never pruned.
    assert [g.producer for g in groups] == ["b1_expand", "b2_expand"]
    b1 = groups[0]
    assert b1.followers == ("b1_expand_bn", "b1_expand_relu", "b1_dw", "b1_dw_bn", "b1_dw_relu")
    assert b1.consumer == "b1_project"
    every = [g.producer for g in cp.find_channel_groups(model, scope="all")]
    assert every == ["b1_expand", "b2_expand", "head_conv"]
    assert cp.find_channel_groups(model, exclude={"b2_expand"})[0].producer == "b1_expand"
    # project convs feed Adds (or the next block's input): never producers
    assert not any("project" in p or p == "stem_conv" for p in every)


def test_thinner_model_has_fewer_filters_and_aligned_residuals():
    model = tiny_student()
    thin, counts = cp.channel_prune(model, fraction=0.5)
    assert counts == {
        "b1_expand": {"before": 24, "after": 12},
        "b2_expand": {"before": 24, "after": 12},
    }
    before, after = conv_channels(model), conv_channels(thin)
    assert [layer.name for layer in thin.layers] == [layer.name for layer in model.layers]
    for i in (1, 2):
        assert after[f"b{i}_expand"] == after[f"b{i}_dw"] == 12
        assert thin.get_layer(f"b{i}_project").kernel.shape[2] == 12
        assert after[f"b{i}_project"] == before[f"b{i}_project"]  # block outputs untouched
    for layer in thin.layers:
        if type(layer).__name__ == "Add":  # residual inputs still have equal channels
            assert len({tuple(t.shape) for t in layer.input}) == 1
    assert thin.count_params() < model.count_params()


def test_surviving_weights_are_copied_and_fraction_zero_is_identity(data):
    model = tiny_student(seed=3)
    x = data[0][::7].astype(np.float32) / 255.0
    identical, _ = cp.channel_prune(model, fraction=0.0)
    np.testing.assert_allclose(
        identical.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )

    groups = cp.find_channel_groups(model)
    keep = cp.select_channels(model, groups, fraction=0.5)
    scores = cp.filter_scores(model, groups[0])
    kept = keep["b1_expand"]
    assert scores[kept].min() >= np.delete(scores, kept).max()  # the strongest filters survive
    thin = cp.rebuild_thinner(model, keep)

    def weight(m, layer, i=0):
        return m.get_layer(layer).get_weights()[i]

    same = np.testing.assert_array_equal
    same(weight(thin, "b1_expand"), weight(model, "b1_expand")[..., kept])
    same(weight(thin, "b1_dw"), weight(model, "b1_dw")[:, :, kept])
    for i in range(4):  # gamma, beta, moving mean, moving variance
        same(weight(thin, "b1_dw_bn", i), weight(model, "b1_dw_bn", i)[kept])
    same(weight(thin, "b1_project"), weight(model, "b1_project")[:, :, kept])


def test_pruned_model_predicts_the_same_class_before_finetuning(trained, data):
    x = data[0].astype(np.float32) / 255.0
    plain, _ = cp.channel_prune(trained, fraction=0.5)
    refit, _ = cp.channel_prune(trained, fraction=0.5, x_calib=x[::3], seed=0)
    agree_plain = prediction_agreement(trained, plain, x)
    agree_refit = prediction_agreement(trained, refit, x)
    assert agree_refit >= 0.8, agree_refit
    assert agree_refit > agree_plain  # least-squares refit of the project convs pays off


def test_bad_inputs_fail_clearly():
    import tf_keras

    model = tiny_student()
    with pytest.raises(ValueError, match="not a prunable producer"):
        cp.rebuild_thinner(model, {"b1_project": np.arange(4)})
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        cp.select_channels(model, cp.find_channel_groups(model), fraction=1.0)

    class Sub(tf_keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="not a functional"):
        cp.find_channel_groups(Sub())


def test_low_agreement_halves_the_fraction_then_fails_naming_the_way_out(
    trained, data, monkeypatch
):
    from edge_pipeline.compression import model_facts as mf
    from edge_pipeline.compression import pruning
    from edge_pipeline.config.compression import Prune

    x, _ = data
    xf = x.astype(np.float32) / 255.0
    calib = mf.calibration_sample(x, 32, seed=0)
    agree = {
        f: prediction_agreement(trained, cp.channel_prune(trained, fraction=f, x_calib=calib,
                                                          seed=0)[0], xf)
        for f in (0.8, 0.4)
    }  # fmt: skip
    assert agree[0.8] < agree[0.4], agree  # removing more channels costs agreement
    options = Prune(channel_fraction=0.8, min_agreement=agree[0.4], calib_samples=32, seed=0)
    thin, _, agreement, fraction = pruning._channel_prune(trained, x, xf, options=options)
    assert fraction == 0.4 and agreement == agree[0.4]
    assert thin.count_params() > cp.channel_prune(trained, fraction=0.8)[0].count_params()

    monkeypatch.setattr(mf, "prediction_agreement", lambda *a, **k: 0.0)  # never good enough
    with pytest.raises(ValueError, match=r"80%: 0.0%, 40%: 0.0%, 20%: 0.0%, 10%: 0.0%.*"
                                         r"prune.channel_fraction: 0"):  # fmt: skip
        pruning._channel_prune(trained, x, xf, options=options)
