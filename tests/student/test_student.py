"""The tf_keras student: architecture, parameter/MAC counts, rebuilds, and TF-MOT compatibility."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edge_pipeline.student.model import (  # noqa: E402
    build_student,
    count_macs,
    nominal_channels,
    resolve_stem,
    student_config,
)

# 8x8x1 input, stem 8, b0 = [t=1, 8 ch, stride 1] (residual), b1 = [t=2, 16 ch, stride 2], head 16.
SMALL = {
    "input_shape": (8, 8, 1),
    "n_classes": 3,
    "blocks": [[1, 8, 1, 1], [2, 16, 1, 2]],
    "stem_channels": 8,
    "head_channels": 16,
}


def test_small_student_parameter_and_mac_counts_match_hand_count():
    model = build_student(**SMALL)
    # conv/dw kernels + 4 BN params per channel + dense (weights + bias)
    params = (
        (9 * 8 + 4 * 8)  # stem 3x3x1x8 + BN
        + (9 * 8 + 4 * 8) + (8 * 8 + 4 * 8)  # b0: depthwise, project (no expand when t = 1)
        + (8 * 16 + 4 * 16) + (9 * 16 + 4 * 16) + (16 * 16 + 4 * 16)  # b1: expand, dw, project
        + (16 * 16 + 4 * 16)  # head 1x1
        + (16 * 3 + 3)  # logits
    )  # fmt: skip
    assert model.count_params() == params == 1395
    macs = (
        8 * 8 * 8 * 9  # stem on 8x8
        + 8 * 8 * 8 * 9 + 8 * 8 * 8 * 8  # b0 depthwise, project
        + 8 * 8 * 16 * 8 + 4 * 4 * 16 * 9 + 4 * 4 * 16 * 16  # b1: expand, dw stride 2, project
        + 4 * 4 * 16 * 16  # head
        + 16 * 3  # dense
    )  # fmt: skip
    assert count_macs(model) == macs == 32048


def test_layout_names_residuals_and_logits_output():
    model = build_student(**SMALL)
    names = {layer.name for layer in model.layers}
    assert {
        "stem_conv",
        "b0_dw",
        "b0_project",
        "b0_add",
        "b1_expand",
        "b1_dw",
        "head_conv",
    } <= names
    assert "b0_expand" not in names  # expansion 1 has no expand conv
    assert "b1_add" not in names  # stride 2: no residual
    assert model.get_layer("logits").activation.__name__ == "linear"
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    out = model(x, training=False).numpy()
    assert out.shape == (5, 3)
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, not probabilities


def test_default_student_fits_the_edge_budget():
    model = build_student((16, 16, 1), 10)
    assert 10_000 < model.count_params() < 100_000  # tens of thousands, far under 5M (5 MB INT8)
    assert model.output_shape == (None, 10)


def test_width_multiplier_scales_channels_in_multiples_of_8():
    half = nominal_channels(width=0.5)
    assert half["stem_conv"] == 8 and half["b1_project"] == 16 and half["b3_project"] == 16
    assert half["b1_expand"] == 4 * half["b0_project"]
    assert half["head_conv"] == 128  # the head is not width-scaled
    small = build_student((16, 16, 1), 10, width=0.5).count_params()
    assert small < 0.5 * build_student((16, 16, 1), 10).count_params()


def test_same_seed_same_weights_other_seed_differs():
    a, b = build_student(**SMALL, seed=3), build_student(**SMALL, seed=3)
    c = build_student(**SMALL, seed=4)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_layer("stem_conv").kernel, c.get_layer("stem_conv").kernel)


def test_explicit_channels_rebuild_a_thinner_model_from_its_config():
    channels = {"b1_expand": 6, "head_conv": 10}
    config = student_config(**SMALL, channels=channels)
    config = json.loads(json.dumps(config))  # what meta.json stores
    thin = build_student(**config)
    assert thin.get_layer("b1_expand").filters == 6
    assert thin.get_layer("b1_dw").output.shape[-1] == 6  # depthwise follows its expand layer
    assert thin.get_layer("head_conv").filters == 10
    assert thin.count_params() < build_student(**SMALL).count_params()


def test_bad_channel_overrides_name_the_layer():
    with pytest.raises(ValueError, match="b0_project.*residual"):
        build_student(**SMALL, channels={"b0_project": 4})
    with pytest.raises(ValueError, match="unknown layer.*b9_expand"):
        build_student(**SMALL, channels={"b9_expand": 4})
    with pytest.raises(ValueError, match=r"blocks\[0\]"):
        build_student((8, 8, 1), 3, blocks=[[1, 8, 1]])


def test_tfmot_prunes_and_quantizes_the_student():
    import tensorflow_model_optimization as tfmot
    from tf_keras import layers

    model = build_student((16, 16, 1), 10)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    wrapped = {
        layer.layer.name for layer in pruned.layers if type(layer).__name__ == "PruneLowMagnitude"
    }
    convs = {
        layer.name
        for layer in model.layers
        if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D | layers.Dense)
    }
    assert convs <= wrapped
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped), scheme
    )
    assert tfmot.quantization.keras.quantize_model(model).output_shape == (None, 10)
    x = np.random.default_rng(0).random((2, 16, 16, 1), dtype=np.float32)
    assert qat(x, training=False).shape == (2, 10)


@pytest.mark.parametrize(
    ("size", "stem"),
    [((16, 16), "full"), ((28, 28), "full"), ((32, 32), "full"), ((48, 48), "stride2"),
     ((64, 64), "stride2"), ((96, 96), "stride4"), ((224, 224), "stride4"), ((96, 28), "full")],
)  # fmt: skip
def test_auto_stem_leaves_the_first_block_at_most_32_px(size, stem):
    assert resolve_stem("auto", size) == stem
    assert resolve_stem("stride2", size) == "stride2"  # an explicit stem is kept


def test_stride4_stem_shrinks_the_image_before_the_blocks():
    config = student_config((96, 96, 3), 4, stem="auto")
    assert config["stem"] == "stride4"  # resolved, so meta.json rebuilds the same model
    model = build_student(**json.loads(json.dumps(config)))
    assert model.get_layer("stem_conv").output.shape[1:3] == (48, 48)
    assert model.get_layer("stem_pool").output.shape[1:3] == (24, 24)
    # Same weights as the stride-1 model, a 16th of the MACs (every layer sees 1/16 of the area).
    full = build_student((96, 96, 3), 4, stem="full")
    assert model.count_params() == full.count_params()
    assert count_macs(model) < count_macs(full) / 12
    with pytest.raises(ValueError, match="stem='x8'"):
        build_student((96, 96, 3), 4, stem="x8")


def test_stride4_student_prunes_quantizes_and_converts_to_int8_tflite():
    import tensorflow_model_optimization as tfmot

    from edge_pipeline.compression.tflite import litert_logits, to_tflite

    model = build_student((64, 64, 3), 3, stem="stride4")
    stripped = tfmot.sparsity.keras.strip_pruning(tfmot.sparsity.keras.prune_low_magnitude(model))
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat = tfmot.quantization.keras.quantize_apply(
        tfmot.quantization.keras.quantize_annotate_model(stripped), scheme
    )
    x = np.random.default_rng(0).random((8, 64, 64, 3), dtype=np.float32)
    tflite = to_tflite(qat, representative=x)
    out = litert_logits(tflite, x)
    assert out.shape == (8, 3) and np.isfinite(out).all()
