"""The tf_keras student: a small MobileNetV2-style classifier that TF-MOT can prune and quantize.

Layout (NHWC input of float32 pixels x / 255, output K logits, no softmax):

    input -> stem_conv 3x3 -> stem_bn -> stem_relu [-> stem_pool 3x3 max, stride 2]
          -> blocks b0..bN-1 (inverted residuals, below)
          -> head_conv 1x1 -> head_bn -> head_relu -> pool (global average) -> dropout -> logits

Block `b{i}` (MobileNetV2, Sandler et al. 2018):

    b{i}_expand 1x1 -> b{i}_expand_bn -> b{i}_expand_relu      (left out when expansion == 1)
    b{i}_dw 3x3 depthwise, stride s -> b{i}_dw_bn -> b{i}_dw_relu
    b{i}_project 1x1 -> b{i}_project_bn                          (linear bottleneck)
    b{i}_add = input + output                                    (stride 1 and same channels)

`blocks` lists stages as `[expansion, channels, repeats, stride]`; the stride applies to the first
repeat. The stem shrinks the image x1 (`full`: stride-1 conv), x1/2 (`stride2`) or x1/4
(`stride4`: stride-2 conv, then `stem_pool`); `auto` (`resolve_stem`) picks the smallest shrink
that leaves the first block at most `MAX_BLOCK_PX` on a side, so a 96 px student costs what a
24 px one does instead of 36x the 16 px demo's MACs.

Every layer is one that both `prune_low_magnitude` and `quantize_apply` (default 8-bit and
prune-preserving schemes) accept: Conv2D / DepthwiseConv2D without bias followed by BatchNorm and
ReLU(max_value=6), so TF-MOT folds each into one INT8 op, and MaxPooling2D (no weights). There is
no Rescaling/Normalization layer (quantize_apply rejects both): inputs are already in [0, 1] and
`stem_conv_bn` normalises the stem.

Rebuilding thinner models (channel pruning): `nominal_channels(...)` returns the filter count of
every Conv2D by layer name (`stem_conv`, `b{i}_expand`, `b{i}_project`, `head_conv`). Pass a
modified copy as `build_student(..., channels=...)`; depthwise layers follow their expand layer.
A residual block keeps its `b{i}_add`, so its `b{i}_project` must keep the channels of the block's
input (the builder raises ValueError otherwise). `student_config(...)` is the JSON-able kwargs dict
that distill writes to `data/distill/meta.json` ("student_config"); `build_student(**config)`
rebuilds the same model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edge_pipeline.config.student import Distill  # noqa: E402

# The architecture's defaults are params.yaml `distill`'s, stated once in its schema.
_D = Distill()
# Keras' 0.99 leaves the moving statistics far from the batch ones after the few hundred steps a
# small data set gives, so validation in inference mode lags training; 0.9 settles in ~50 steps.
BN_MOMENTUM = 0.9
MAX_BLOCK_PX = 32  # `stem: auto`: the first block sees at most this many pixels on a side
# student_config keys that shape no weight a warm start loads: the head is remapped to tonight's
# classes, `seed` only draws initial weights, dropout has none.
NOT_SHAPING = ("n_classes", "seed", "dropout")
_SHRINK = {"full": 1, "stride2": 2, "stride4": 4}


def resolve_stem(stem: str, image_size: Sequence[int]) -> str:
    """`stem` itself, or for `auto` the smallest shrink of `_SHRINK` that leaves the shorter side
    of (H, W) at most `MAX_BLOCK_PX` (the largest, stride4, when none does)."""
    if stem == "auto":
        fits = [s for s, f in _SHRINK.items() if min(image_size[:2]) / f <= MAX_BLOCK_PX]
        return fits[0] if fits else "stride4"
    if stem not in _SHRINK:
        raise ValueError(f"stem={stem!r}: expected auto or one of {sorted(_SHRINK)}")
    return stem


def _divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's rounding of width-scaled channels to a multiple of `divisor` (never below it)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _block_plan(blocks: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """[expansion, channels, repeats, stride] stages -> per-block (expansion, channels, stride)."""
    plan = []
    for i, stage in enumerate(blocks):
        if len(stage) != 4 or min(stage) < 1:
            raise ValueError(
                f"blocks[{i}]={list(stage)}: expected [expansion, channels, repeats, stride] "
                "of positive integers"
            )
        t, c, n, s = (int(v) for v in stage)
        plan += [(t, c, s if r == 0 else 1) for r in range(n)]
    return plan


def nominal_channels(
    *,
    width: float = _D.width,
    blocks: Sequence[Sequence[int]] = tuple(_D.blocks),
    stem_channels: int = _D.stem_channels,
    head_channels: int = _D.head_channels,
) -> dict[str, int]:
    """Filters of every Conv2D by layer name, after the width multiplier (head is not scaled)."""
    if width <= 0:
        raise ValueError(f"width={width}: must be > 0")
    out = {"stem_conv": _divisible(stem_channels * width)}
    c_in = out["stem_conv"]
    for i, (t, c, _) in enumerate(_block_plan(blocks)):
        if t != 1:
            out[f"b{i}_expand"] = c_in * t
        out[f"b{i}_project"] = c_in = _divisible(c * width)
    out["head_conv"] = int(head_channels)
    return out


def student_config(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    width: float = _D.width,
    blocks: Sequence[Sequence[int]] = tuple(_D.blocks),
    stem: str = _D.stem,
    stem_channels: int = _D.stem_channels,
    head_channels: int = _D.head_channels,
    dropout: float = _D.dropout,
    seed: int = _D.seed,
    channels: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The JSON-able kwargs of `build_student` (lists, not tuples), with channels made explicit and
    `stem` resolved for `input_shape` (a config saved before `stem` existed rebuilds as `auto`)."""
    chans = nominal_channels(
        width=width, blocks=blocks, stem_channels=stem_channels, head_channels=head_channels
    )
    unknown = set(channels or {}) - set(chans)
    if unknown:
        raise ValueError(f"channels: unknown layer(s) {sorted(unknown)}; known: {sorted(chans)}")
    chans.update({k: int(v) for k, v in (channels or {}).items()})
    return {
        "input_shape": [int(v) for v in input_shape],
        "n_classes": int(n_classes),
        "width": float(width),
        "blocks": [[int(v) for v in b] for b in blocks],
        "stem": resolve_stem(stem, input_shape),
        "stem_channels": int(stem_channels),
        "head_channels": int(head_channels),
        "dropout": float(dropout),
        "seed": int(seed),
        "channels": chans,
    }


def same_architecture(
    a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Sequence[str] = ()
) -> bool:
    """Whether two `student_config`s build the same weights, `NOT_SHAPING` and `ignore` aside
    (compared as JSON: tuples and lists alike)."""
    import json

    skip = {*NOT_SHAPING, *ignore}
    return json.loads(json.dumps({k: v for k, v in a.items() if k not in skip})) == json.loads(
        json.dumps({k: v for k, v in b.items() if k not in skip})
    )


def build_student(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    width: float = _D.width,
    blocks: Sequence[Sequence[int]] = tuple(_D.blocks),
    stem: str = _D.stem,
    stem_channels: int = _D.stem_channels,
    head_channels: int = _D.head_channels,
    dropout: float = _D.dropout,
    seed: int = _D.seed,
    channels: Mapping[str, int] | None = None,
) -> Any:
    """Build the student (an uncompiled `tf_keras.Model`; see the module docstring for its layout).

    Args:
        input_shape: (H, W, C) of one image.
        n_classes: K, the number of logits.
        width: width multiplier on every stem/block channel count (rounded to multiples of 8).
        blocks: stages as [expansion, channels, repeats, stride].
        stem: auto | full | stride2 | stride4, the image's shrink before the blocks.
        stem_channels, head_channels: filters of the stem and of the 1x1 head conv.
        dropout: rate before the logits layer.
        seed: seeds every initializer, so one seed gives one set of initial weights.
        channels: per-layer filter overrides by Conv2D name (see `nominal_channels`).

    Returns:
        Model mapping float32 (N, H, W, C) in [0, 1] to float32 (N, K) logits.
    """
    import tf_keras
    from tf_keras import layers

    cfg = student_config(
        input_shape, n_classes, width=width, blocks=blocks, stem=stem, stem_channels=stem_channels,
        head_channels=head_channels, dropout=dropout, seed=seed, channels=channels,
    )  # fmt: skip
    chans = cfg["channels"]
    counter = iter(range(seed, seed + 10_000))

    def init() -> Any:  # a distinct, seeded initializer per layer
        return tf_keras.initializers.HeNormal(seed=next(counter))

    def conv_bn(x: Any, name: str, filters: int, *, kernel: int = 1, stride: int = 1, relu=True):
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False,
            kernel_initializer=init(), name=name,
        )(x)  # fmt: skip
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x

    # The residual is part of the architecture, decided by the nominal config only.
    nominal = nominal_channels(
        width=width, blocks=blocks, stem_channels=stem_channels, head_channels=head_channels
    )
    inputs = layers.Input(shape=tuple(cfg["input_shape"]), name="input")
    shrink = _SHRINK[cfg["stem"]]
    x = conv_bn(inputs, "stem_conv", chans["stem_conv"], kernel=3, stride=min(shrink, 2))
    if shrink == 4:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for i, (t, _, stride) in enumerate(_block_plan(cfg["blocks"])):
        c_in = x.shape[-1]
        h = conv_bn(x, f"b{i}_expand", chans[f"b{i}_expand"]) if t != 1 else x
        h = layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False,
            depthwise_initializer=init(), name=f"b{i}_dw",
        )(h)  # fmt: skip
        h = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"b{i}_dw_bn")(h)
        h = layers.ReLU(max_value=6.0, name=f"b{i}_dw_relu")(h)
        h = conv_bn(h, f"b{i}_project", chans[f"b{i}_project"], relu=False)
        prev = nominal["stem_conv"] if i == 0 else nominal[f"b{i - 1}_project"]
        if stride == 1 and prev == nominal[f"b{i}_project"]:
            if h.shape[-1] != c_in:
                raise ValueError(
                    f"channels['b{i}_project']={h.shape[-1]} must equal the block input's "
                    f"{c_in} channels: b{i} is a residual block (prune them together)"
                )
            h = layers.Add(name=f"b{i}_add")([x, h])
        x = h
    x = conv_bn(x, "head_conv", chans["head_conv"])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(cfg["dropout"], seed=seed, name="dropout")(x)
    logits = layers.Dense(
        cfg["n_classes"], name="logits",
        kernel_initializer=tf_keras.initializers.GlorotUniform(seed=next(counter)),
    )(x)  # fmt: skip
    return tf_keras.Model(inputs, logits, name="student")


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass on one image (Conv2D, DepthwiseConv2D, Dense).

    BatchNorm folds into the convolutions at conversion time and activations, pooling and adds are
    not MACs, so those are left out (the usual convention for MobileNet MAC counts).
    """
    from tf_keras import layers

    total = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # TF-MOT wrappers keep the real layer in .layer
        if isinstance(inner, layers.DepthwiseConv2D):  # a Conv2D subclass: test it first
            _, h, w, c = layer.output.shape
            total += h * w * c * inner.kernel_size[0] * inner.kernel_size[1]
        elif isinstance(inner, layers.Conv2D):
            _, h, w, c = layer.output.shape
            k = inner.kernel_size[0] * inner.kernel_size[1]
            total += h * w * c * k * layer.input.shape[-1] // inner.groups
        elif isinstance(inner, layers.Dense):
            total += layer.input.shape[-1] * inner.units
    return int(total)
