"""Channel (filter) pruning of tf_keras functional models: rank filters, rebuild a thinner model.

TF-MOT only zeroes weights; it never removes filters, so the model runs at the same speed. Here the
weakest filters are removed for real: the model is rebuilt from its config with fewer filters (same
layer names) and the surviving weights are copied over.

Which filters can go (dependencies): a channel group is a Conv2D (the producer) whose output passes
only through channel-wise layers (BatchNormalization, ReLU/activations, DepthwiseConv2D with
depth_multiplier 1, pooling, dropout, padding), one layer after another with no branch, into exactly
one Conv2D or Dense (the consumer). Removing filter c then removes channel c of every layer in
between and input channel c of the consumer, and nothing else. In a MobileNetV2 inverted-residual
block that is the expanded (hidden) channels: `b{i}_expand` filters, its BN, the depthwise
channels and their BN, and the input channels of `b{i}_project`. scope="hidden" (the default)
prunes only such groups (those through a depthwise conv), where the MACs are; scope="all" also
takes e.g. the 1x1 head conv before the logits, which saves little compute and costs more accuracy.

Residual adds: a tensor that reaches an `Add` (or any merge, reshape or model output) branches or
mixes channels, so its producer is never pruned. Residual channels are left whole rather than
pruned jointly: they are the narrow bottleneck (few channels, few MACs) and stay aligned.

Ranking: the L1 norm of each filter after folding the BatchNormalization that follows it
(|gamma| / sqrt(var + eps) scales filter c), i.e. the filter the converted TFLite model runs; a raw
kernel L1 norm would ignore that BN rescales every channel (Li et al. 2017, "Pruning Filters").
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Layers whose output channel c depends only on input channel c (they shrink with the producer).
CHANNELWISE = {
    "BatchNormalization", "ReLU", "Activation", "LeakyReLU", "DepthwiseConv2D", "Dropout",
    "SpatialDropout2D", "ZeroPadding2D", "Cropping2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D",
}  # fmt: skip
CONSUMERS = {"Conv2D", "Dense"}
SCOPES = ("hidden", "all")
ELEMENTWISE_ACTIVATIONS = {"relu", "relu6", "swish", "silu", "sigmoid", "tanh", "elu", "linear"}


@dataclass(frozen=True)
class ChannelGroup:
    """Layers whose channels shrink together when filters of `producer` are removed."""

    producer: str  # Conv2D whose filters are removed
    followers: tuple[str, ...]  # channel-wise layers between producer and consumer, in order
    consumer: str  # Conv2D / Dense whose input channels shrink


def _channelwise(layer_cfg: dict[str, Any]) -> bool:
    cls, cfg = layer_cfg["class_name"], layer_cfg["config"]
    if cls not in CHANNELWISE:
        return False
    if cls == "DepthwiseConv2D":
        return cfg.get("depth_multiplier", 1) == 1
    if cls == "Activation":
        return cfg.get("activation") in ELEMENTWISE_ACTIVATIONS
    if cls == "BatchNormalization":
        return list(np.atleast_1d(cfg.get("axis", -1))) in ([-1], [3])
    return cfg.get("data_format", "channels_last") == "channels_last"


def find_channel_groups(
    model: Any, *, exclude: Collection[str] = (), scope: str = "hidden"
) -> list[ChannelGroup]:
    """Every Conv2D of a functional `model` whose filters can be removed (module docstring).

    Args:
        model: a functional tf_keras model (Sequential models have no branching to analyse).
        exclude: producer layer names never to prune.
        scope: "hidden" (groups through a DepthwiseConv2D) or "all".

    Returns:
        The channel groups, in layer order.
    """
    config = model.get_config()
    if "input_layers" not in config:
        raise ValueError(f"model {model.name!r} is not a functional tf_keras model")
    if scope not in SCOPES:
        raise ValueError(f"channel scope {scope!r} is not one of {list(SCOPES)}")
    layers = {lc["name"]: lc for lc in config["layers"]}
    consumers: dict[str, list[str]] = {name: [] for name in layers}
    n_inputs: dict[str, int] = {}
    for lc in config["layers"]:
        inbound = [t for node in lc["inbound_nodes"] for t in node]
        n_inputs[lc["name"]] = len(inbound)
        for t in inbound:
            consumers[t[0]].append(lc["name"])
    outputs = {t[0] for t in config["output_layers"]}

    groups = []
    for lc in config["layers"]:
        cfg = lc["config"]
        if lc["class_name"] != "Conv2D" or lc["name"] in exclude or cfg.get("groups", 1) != 1:
            continue
        followers: list[str] = []
        current = lc["name"]
        while current not in outputs and len(consumers[current]) == 1:
            nxt = consumers[current][0]
            if n_inputs[nxt] != 1:  # Add / Concatenate / Multiply: channels must stay aligned
                break
            consumer = layers[nxt]
            if consumer["class_name"] in CONSUMERS and consumer["config"].get("groups", 1) == 1:
                hidden = any(layers[f]["class_name"] == "DepthwiseConv2D" for f in followers)
                if hidden or scope == "all":
                    groups.append(ChannelGroup(lc["name"], tuple(followers), nxt))
                break
            if not _channelwise(layers[nxt]):
                break
            followers.append(nxt)
            current = nxt
    return groups


def filter_scores(model: Any, group: ChannelGroup) -> np.ndarray:
    """float64 (C,) L1 norm of each of the producer's C filters, folded with the BN after it."""
    kernel = model.get_layer(group.producer).get_weights()[0]  # (kh, kw, c_in, C)
    scores = np.abs(kernel).sum(axis=(0, 1, 2)).astype(np.float64)
    if group.followers:
        bn = model.get_layer(group.followers[0])
        if type(bn).__name__ == "BatchNormalization":
            gamma = bn.gamma.numpy() if bn.scale else np.ones_like(scores)
            scores *= np.abs(gamma) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    return scores


def select_channels(
    model: Any, groups: list[ChannelGroup], *, fraction: float, min_channels: int = 1
) -> dict[str, np.ndarray]:
    """Kept filter indices per producer: drop the `fraction` of lowest-scoring filters per layer.

    Returns:
        producer name -> sorted int64 (C_kept,) indices into its C filters (C_kept >= min_channels).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"channel fraction {fraction} must be in [0, 1)")
    keep = {}
    for group in groups:
        scores = filter_scores(model, group)
        n_keep = max(min_channels, len(scores) - int(round(fraction * len(scores))))
        keep[group.producer] = np.sort(np.argsort(-scores, kind="stable")[:n_keep])
    return keep


def _slices(
    groups: list[ChannelGroup], keep: Mapping[str, np.ndarray]
) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """layer name -> (kept input channels, kept output channels); None = all."""
    io: dict[str, list[np.ndarray | None]] = {}
    for g in groups:
        if g.producer not in keep:
            continue
        k = keep[g.producer]
        io.setdefault(g.producer, [None, None])[1] = k
        for name in g.followers:
            io[name] = [k, k]
        io.setdefault(g.consumer, [None, None])[0] = k
    return {name: (i, o) for name, (i, o) in io.items()}


def _slice_weights(
    layer: Any, weights: list[np.ndarray], cin: np.ndarray | None, cout: np.ndarray | None
) -> list[np.ndarray]:
    cls = type(layer).__name__
    names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
    out = []
    for name, w in zip(names, weights, strict=True):
        if cls == "Conv2D" and name == "kernel":
            w = w if cin is None else w[:, :, cin, :]
            w = w if cout is None else w[..., cout]
        elif cls == "Dense" and name == "kernel":
            w = w if cin is None else w[cin, :]
        elif cls == "DepthwiseConv2D" and name == "depthwise_kernel":
            w = w if cin is None else w[:, :, cin, :]
        elif w.ndim == 1 and cout is not None and cls != "Dense":  # bias, BN vectors
            w = w[cout]
        out.append(w)
    return out


def rebuild_thinner(model: Any, keep: Mapping[str, np.ndarray]) -> Any:
    """A copy of `model` with only the `keep[producer]` filters of each producer (same layer names).

    Args:
        model: functional tf_keras model.
        keep: producer name -> kept filter indices (from `select_channels`).

    Returns:
        The thinner tf_keras model with the surviving weights copied (uncompiled).
    """
    import tf_keras

    groups = [g for g in find_channel_groups(model, scope="all") if g.producer in keep]
    unknown = set(keep) - {g.producer for g in groups}
    if unknown:
        raise ValueError(f"cannot prune the filters of {sorted(unknown)}: not a prunable producer")
    config = copy.deepcopy(model.get_config())
    for lc in config["layers"]:
        if lc["name"] in keep:
            lc["config"]["filters"] = int(len(keep[lc["name"]]))
    thin = tf_keras.Model.from_config(config)
    io = _slices(groups, keep)
    for layer in thin.layers:
        old = model.get_layer(layer.name)
        cin, cout = io.get(layer.name, (None, None))
        new_weights = _slice_weights(old, old.get_weights(), cin, cout)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(w.shape) for w in new_weights] != expected:
            raise RuntimeError(f"layer {layer.name!r}: sliced weights do not fit {expected}")
        layer.set_weights(new_weights)
    return thin


def _consumer_io(model: Any, name: str, x: np.ndarray, batch_size: int = 256):
    """(rows, C_in) inputs and (rows, C_out) outputs of layer `name` on images x, pixels as rows."""
    import tf_keras

    layer = model.get_layer(name)
    probe = tf_keras.Model(model.inputs, [layer.input, layer.output])
    parts = [probe(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)]
    a, y = (np.concatenate([p[j].numpy() for p in parts]) for j in (0, 1))
    return a.reshape(-1, a.shape[-1]), y.reshape(-1, y.shape[-1])


def reconstruct_consumers(
    original: Any,
    thin: Any,
    groups: list[ChannelGroup],
    x: np.ndarray,
    *,
    max_rows: int = 20_000,
    ridge: float = 1e-3,
    seed: int = 0,
) -> list[str]:
    """Refit each consumer of `thin` so it reproduces the original consumer's output on x.

    Least squares on the surviving channels (He et al. 2017, "Channel Pruning for Accelerating
    Very Deep Neural Networks"): the consumer's (pre-BN) output is matched, so the statistics of the
    BatchNormalization after it stay valid. Consumers are refit in layer order on the activations
    of the already-refit thin model, so earlier errors are compensated. Only 1x1 stride-1 Conv2D and
    Dense consumers without activation are refit; others keep their copied weights.

    Args:
        x: float32 (N, H, W, C) calibration images in [0, 1] (a few hundred train images).
        max_rows: at most this many (pixel, image) rows sampled per layer.

    Returns:
        Names of the refit layers (weights of `thin` are updated in place).
    """
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(seed)
    refit = []
    for g in groups:
        layer = thin.get_layer(g.consumer)
        cfg = layer.get_config()
        linear = cfg.get("activation", "linear") == "linear"
        if not linear or any(
            tuple(cfg.get(k, (1, 1))) != (1, 1) for k in ("kernel_size", "strides")
        ):
            continue
        _, target = _consumer_io(original, g.consumer, x)
        inputs, _ = _consumer_io(thin, g.consumer, x)
        rows = rng.choice(len(inputs), size=min(max_rows, len(inputs)), replace=False)
        fit = Ridge(alpha=ridge, fit_intercept=layer.use_bias).fit(inputs[rows], target[rows])
        weights = layer.get_weights()
        weights[0] = fit.coef_.T.reshape(weights[0].shape).astype(np.float32)
        if layer.use_bias:
            weights[1] = np.asarray(fit.intercept_, dtype=np.float32)
        layer.set_weights(weights)
        refit.append(g.consumer)
    return refit


def channel_prune(
    model: Any,
    *,
    fraction: float,
    x_calib: np.ndarray | None = None,
    exclude: Collection[str] = (),
    scope: str = "hidden",
    min_channels: int = 1,
    seed: int = 0,
) -> tuple[Any, dict[str, dict[str, int]]]:
    """Remove the weakest `fraction` of filters of every prunable Conv2D of `model`.

    Args:
        model: functional tf_keras model.
        fraction: share of each producer's filters to remove, in [0, 1).
        x_calib: float32 (N, H, W, C) images for `reconstruct_consumers`; None = plain copy.
        exclude: producer names left whole.
        scope: "hidden" or "all" (`find_channel_groups`).

    Returns:
        (thinner model, {producer: {"before": C, "after": C_kept}}).
    """
    groups = find_channel_groups(model, exclude=exclude, scope=scope)
    keep = select_channels(model, groups, fraction=fraction, min_channels=min_channels)
    thin = rebuild_thinner(model, keep)
    if x_calib is not None and fraction > 0:
        reconstruct_consumers(model, thin, groups, x_calib, seed=seed)
    counts = {
        g.producer: {
            "before": int(model.get_layer(g.producer).filters),
            "after": int(len(keep[g.producer])),
        }
        for g in groups
    }
    return thin, counts
