"""The tf.data input of a distillation fit (distill, prune, qat): sampled rows, gathered batches,
augmentation.

The pipeline carries the row indices of `kd_data.draw_rows` and gathers each batch's pixels from
the caller's uint8 (N, H, W, C) array (no tf.data copy of the train set), with the targets (and
weights) of the same rows, so the teacher logits stay aligned with the images drawn.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402


def make_augment(
    policy: Mapping[str, Any] | None, *, image_size: Sequence[int], seed: int
) -> Callable | None:
    """A batch augmentation (a tf_keras preprocessing Sequential) from the teacher's policy schema.

    Args:
        policy: {"hflip": bool, "rotation_deg": max degrees, "crop_padding": max shift in pixels
            (pad-and-random-crop), "color_jitter": brightness/contrast strength}; flips stay off
            for digits and text. Missing keys or None = off.
        image_size: (H, W), to turn pixel shifts into the layer's fractions.
        seed: seeds every random layer.

    Returns:
        A callable on float32 (B, H, W, C) batches in [0, 1], or None when the policy is all off.
    """
    from tf_keras import layers

    policy = dict(policy or {})
    unknown = set(policy) - {"hflip", "rotation_deg", "crop_padding", "color_jitter"}
    if unknown:
        raise ValueError(
            f"augment: unknown key(s) {sorted(unknown)}; allowed: hflip, rotation_deg, "
            "crop_padding, color_jitter"
        )
    aug: list[Any] = []
    if policy.get("hflip"):
        aug.append(layers.RandomFlip("horizontal", seed=seed))
    if policy.get("rotation_deg"):
        turn = float(policy["rotation_deg"]) / 360.0  # the layer takes a fraction of a full turn
        aug.append(layers.RandomRotation(turn, fill_mode="constant", seed=seed + 1))
    if policy.get("crop_padding"):
        # A random shift of up to +-p pixels is what zero-padding by p and random-cropping does.
        h, w = (float(policy["crop_padding"]) / s for s in image_size[:2])
        aug.append(
            layers.RandomTranslation(
                h, w, fill_mode="constant", interpolation="nearest", seed=seed + 2
            )
        )
    if policy.get("color_jitter"):
        jitter = float(policy["color_jitter"])
        aug.append(layers.RandomBrightness(jitter, value_range=(0.0, 1.0), seed=seed + 3))
        aug.append(layers.RandomContrast(jitter, seed=seed + 4))
    return tf_keras.Sequential(aug, name="augment") if aug else None


def train_dataset(
    x: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray | None,
    rows: np.ndarray,
    *,
    batch_size: int,
    augment: Callable | None,
) -> tf.data.Dataset:
    """Batches (x / 255, targets[, weights]) of the rows (epochs, R) of `draw_rows`, epoch after
    epoch (the last batch of an epoch partial); pixels gathered per batch from x (N, H, W, C)."""
    shape = (None, *x.shape[1:])
    targets = tf.constant(targets)
    weights = None if weights is None else tf.constant(weights)
    # One endless iterator (epochs = steps_per_epoch batches): re-creating the iterator every
    # epoch cost ~1 s per epoch, as much as the epoch's training on 2 cores.
    ds = tf.data.Dataset.from_tensor_slices(rows)
    ds = ds.flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices(epoch).batch(batch_size))

    def prepare(idx: tf.Tensor) -> tuple[tf.Tensor, ...]:
        xb = tf.numpy_function(lambda i: x[i], [idx], tf.uint8, stateful=False)
        xb.set_shape(shape)
        xb = tf.cast(xb, tf.float32) / 255.0
        if augment is not None:
            xb = augment(xb, training=True)
        rest = (tf.gather(targets, idx),) + (() if weights is None else (tf.gather(weights, idx),))
        return (xb, *rest)

    return ds.repeat().map(prepare).prefetch(tf.data.AUTOTUNE)
