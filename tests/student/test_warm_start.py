"""Warm start of the student (edge_pipeline/student/warm_start.py)."""

from __future__ import annotations

import logging

import numpy as np

from edge_pipeline.config.student import Distill
from edge_pipeline.student import warm_start
from edge_pipeline.student.model import build_student, student_config


def test_head_columns_follow_class_names():
    old = [np.arange(6.0).reshape(2, 3), np.array([0.0, 1.0, 2.0])]
    fresh = [np.full((2, 3), -1.0), np.full(3, -1.0)]
    kernel, bias = warm_start.remap_columns(old, fresh, ["a", "b", "c"], ["c", "new", "a"])
    assert kernel.tolist() == [[2.0, -1.0, 0.0], [5.0, -1.0, 3.0]]
    assert bias.tolist() == [2.0, -1.0, 0.0]


def test_initial_weights_copy_every_layer_and_grow_the_head():
    small = dict(width=0.5, blocks=[[1, 8, 1, 1]], stem_channels=8, head_channels=16)
    old = build_student(**student_config((8, 8, 1), 2, seed=1, **small))
    config = student_config((8, 8, 1), 3, seed=2, **small)
    model = build_student(**config)
    weights = warm_start.initial_weights(model, old, old_classes=["a", "b"],
                                         classes=["b", "a", "c"])  # fmt: skip
    fresh = build_student(**config)
    fresh.set_weights(weights)
    for layer in fresh.layers:
        if layer.name != "logits" and layer.weights:
            theirs = old.get_layer(layer.name).get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), theirs,
                                                              strict=True))  # fmt: skip
    k_new, k_old = (
        fresh.get_layer("logits").get_weights()[0],
        old.get_layer("logits").get_weights()[0],
    )
    assert np.array_equal(k_new[:, 0], k_old[:, 1]) and np.array_equal(k_new[:, 1], k_old[:, 0])


def test_no_champion_yet_means_scratch(caplog):
    config = student_config((8, 8, 1), 2)
    with caplog.at_level(logging.WARNING):
        init, source = warm_start.load_start(Distill(init="champion"), config, ["a", "b"],
                                             model_name="none-yet")  # fmt: skip
    assert init is None and source is None and "starts from scratch" in caplog.text
