"""The PyTorch teacher: a torchvision architecture adapted to the data's image size, channels and K.

Layout: float32 (N, C, H, W) pixels x / 255 -> per-channel normalisation (buffers `mean`, `std`,
part of the state_dict) -> torchvision network -> (N, K) logits, no softmax.

Adaptations (`build_teacher`):
- the stem (`STEMS`) sets how much the image shrinks before the first block: `full` is a 3x3
  stride-1 conv and ResNets lose their first max-pool (the CIFAR recipe, x1), `stride2` a 3x3
  stride-2 conv without the max-pool (x1/2), `imagenet` torchvision's own (x1/4); `auto` picks the
  largest shrink that leaves the first block at least `MIN_BLOCK_PX` on a side (16 px -> full,
  28 px -> stride2, 96 px -> imagenet), since MACs grow with the area the blocks see. (The
  MobileNets' and EfficientNet's own stem shrinks x1/2: there `imagenet` equals `stride2`.)
- `width` scales every layer's channels (ResNets and MobileNetV2/V3; rounded to multiples of 8),
  the cheap way to fit the teacher to a small data set or a small budget.
- C != 3 input channels: the stem conv is rebuilt for C; with pretrained weights its RGB kernels are
  summed (C = 1) or tiled and rescaled, as timm does, so the stem's response keeps its scale.
- the last linear layer is rebuilt for K classes.

MACs (`count_macs`) are multiply-accumulates of the Conv2d and Linear layers for one image,
counted with forward hooks (out elements x in_channels / groups x kernel area; out x in for
Linear). BatchNorm, activations and additions are left out, the convention fvcore and ptflops
follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from torch import nn

from edge_pipeline.core.errors import ConfigError

# name -> family; the family says where the stem conv and the classifier live.
ARCHS: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "mobilenet_v2": "mobilenet",
    "mobilenet_v3_small": "mobilenet",
    "mobilenet_v3_large": "mobilenet",
    "efficientnet_b0": "mobilenet",  # same layout: features[0][0] stem, classifier[-1] head
}
STEMS = ("auto", "full", "stride2", "imagenet")
MIN_BLOCK_PX = 14  # `auto`: the first block sees at least this many pixels on a side
_SHRINK = {"full": 1, "stride2": 2, "imagenet": 4}


class Teacher(nn.Module):
    """Normalise float32 (N, C, H, W) pixels in [0, 1] with stored per-channel stats, then `net`."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def resolve_weights(arch: str, name: str | None) -> Any:
    """The torchvision weights enum member for `name` (`DEFAULT`, `IMAGENET1K_V1` or
    `ResNet18_Weights.IMAGENET1K_V1`), None for None; a wrong name fails listing the valid ones."""
    if name is None:
        return None
    enum = torchvision.models.get_model_weights(arch)
    prefix, _, member = name.rpartition(".")
    allowed = ["DEFAULT", *enum.__members__]
    if (prefix and prefix != enum.__name__) or member not in allowed:
        raise ConfigError(
            f"params.yaml train.weights={name!r} is not a weights name of {arch}; "
            f"use null or one of {[f'{enum.__name__}.{m}' for m in allowed]}"
        )
    return enum[member]


def _cached_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """Pretrained weights from torch hub's cache only: the pipeline never downloads."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.exists():
        raise ConfigError(
            f"params.yaml train.weights={weights!s}: {path} is not cached; download it once "
            f"(torchvision.models.get_model(..., weights='{weights!s}')) or set train.weights: null"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_stem(stem: str, image_size: tuple[int, int]) -> str:
    """`stem` itself, or for `auto` the one of `STEMS` that fits (H, W) (module docstring)."""
    if stem != "auto":
        return stem
    fits = [s for s, f in _SHRINK.items() if min(image_size) // f >= MIN_BLOCK_PX]
    return fits[-1] if fits else "full"


def _adapt_conv(conv: nn.Conv2d, in_channels: int, *, stem: str, pretrained: bool) -> nn.Conv2d:
    """The stem conv for `in_channels`: a fresh 3x3 one of stride 1 (`full`) or 2 (`stride2`),
    else `conv` with its pretrained kernels mapped to `in_channels` (fresh without weights)."""
    small = stem != "imagenet"
    if not small and in_channels == conv.in_channels:
        return conv
    kernel, stride, padding = (
        ((3, 3), (_SHRINK[stem],) * 2, (1, 1))
        if small
        else (conv.kernel_size, conv.stride, conv.padding)
    )
    new = nn.Conv2d(
        in_channels, conv.out_channels, kernel, stride, padding, bias=conv.bias is not None
    )
    if pretrained and not small:
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                w = w.sum(dim=1, keepdim=True)
            else:
                reps = -(-in_channels // w.shape[1])
                w = w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels)
            new.weight.copy_(w)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def _channels(n: int, width: float) -> int:
    return max(8, int(round(n * width / 8)) * 8)


def _scale_resnet(net: torchvision.models.ResNet, width: float) -> None:
    """Rebuild `net`'s stem and blocks with `width` x the channels (same depth and block type),
    initialised as torchvision initialises a ResNet."""
    block = type(net.layer1[0])
    depths = [len(net.layer1), len(net.layer2), len(net.layer3), len(net.layer4)]
    net.inplanes, net.dilation = _channels(64, width), 1
    net.conv1 = nn.Conv2d(3, net.inplanes, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(net.inplanes)
    for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True), 1):
        stride = 1 if i == 1 else 2
        setattr(net, f"layer{i}", net._make_layer(block, _channels(planes, width), depth, stride))
    net.fc = nn.Linear(net.inplanes, 1000)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _base_net(arch: str, width: float) -> nn.Module:
    """torchvision's `arch` (1000-class head, random init) with `width` x the channels."""
    if width == 1.0:
        return torchvision.models.get_model(arch, weights=None)
    if arch.startswith("mobilenet"):
        return torchvision.models.get_model(arch, weights=None, width_mult=width)
    if ARCHS[arch] != "resnet":
        raise ConfigError(f"params.yaml train.width={width}: {arch} has no width option; use 1.0")
    net = torchvision.models.get_model(arch, weights=None)
    _scale_resnet(net, width)
    return net


def build_teacher(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    weights: str | None = None,
    stem: str = "auto",
    width: float = 1.0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> Teacher:
    """A torchvision `arch` mapping float32 (N, C, H, W) pixels in [0, 1] to (N, K) logits.

    Args:
        arch: one of `ARCHS`.
        num_classes: K.
        in_channels: C.
        image_size: (H, W); picks the stem when `stem` is `auto`.
        weights: torchvision weights name (see `resolve_weights`), loaded from the local torch hub
            cache only; None trains from scratch. Needs `width` 1.0.
        stem: one of `STEMS` (module docstring).
        width: channel multiplier (1.0: torchvision's network).
        mean, std: C per-channel input stats; default the weights' own (pretrained) or 0.5 / 0.25.
    """
    if arch not in ARCHS:
        raise ConfigError(f"params.yaml train.arch={arch!r} is not one of {sorted(ARCHS)}")
    w = resolve_weights(arch, weights)
    if w is not None and width != 1.0:
        raise ConfigError(f"params.yaml train.width={width}: pretrained weights need width 1.0")
    net = _base_net(arch, width)  # 1000-class ImageNet head
    if w is not None:
        net.load_state_dict(_cached_state_dict(w))
        stats = w.transforms()
        # A grey channel stands for the sum of RGB, so it takes the RGB stats' average.
        mean = mean or _fit_stats(list(stats.mean), in_channels)
        std = std or _fit_stats(list(stats.std), in_channels)
    stem = resolve_stem(stem, image_size)
    if ARCHS[arch] == "resnet":
        net.conv1 = _adapt_conv(net.conv1, in_channels, stem=stem, pretrained=w is not None)
        if stem != "imagenet":
            net.maxpool = nn.Identity()
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    else:
        net.features[0][0] = _adapt_conv(
            net.features[0][0], in_channels, stem=stem, pretrained=w is not None
        )
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    return Teacher(net, mean or [0.5] * in_channels, std or [0.25] * in_channels)


def _fit_stats(values: list[float], channels: int) -> list[float]:
    return values if channels == len(values) else [float(np.mean(values))] * channels


def input_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images scaled to [0, 1] (std floored)."""
    pixels = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Conv2d + Linear multiply-accumulates for one (C, H, W) image (see the module docstring)."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * k
        else:
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)


def load_teacher(state_path: Path, meta: dict[str, Any]) -> Teacher:
    """Rebuild the teacher from `meta.json` and load `teacher.pt` (weights_only, CPU)."""
    model = build_teacher(
        meta["arch"],
        num_classes=len(meta["classes"]),
        in_channels=meta["in_channels"],
        image_size=tuple(meta["image_size"]),
        stem=meta["stem"],
        width=meta["width"],
    )
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    return model.eval()


def export_onnx(
    model: nn.Module, path: Path, *, input_shape: tuple[int, int, int], opset: int
) -> None:
    """Export with the torch.export-based exporter: `input` (batch, C, H, W) -> `logits`."""
    import logging

    model = model.eval()
    sample = torch.rand(2, *input_shape, device=next(model.parameters()).device)
    for name in ("onnxscript", "onnx_ir"):  # their graph passes log every rewrite at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        external_data=False,  # one self-contained file (the teacher is far below 2 GB)
        verbose=False,
    )


def onnx_parity(path: Path, x: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Run `path` in ONNX Runtime on float32 (N, C, H, W) `x`; compare with torch's (N, K) logits.

    Returns max |logit difference| and top-1 agreement (fraction of the N argmaxes that match).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate(
        [session.run(None, {"input": x[i : i + 256]})[0] for i in range(0, len(x), 256)]
    )
    return {
        "max_abs_diff": float(np.abs(logits - reference).max()),
        "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
    }
