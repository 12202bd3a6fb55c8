"""edge_pipeline/teacher/models.py: small-input adaptation, weights from the cache only, MACs,
ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edge_pipeline.core.errors import ConfigError
from edge_pipeline.teacher.models import (
    ARCHS,
    build_teacher,
    count_macs,
    count_params,
    export_onnx,
    load_teacher,
    onnx_parity,
    resolve_stem,
    resolve_weights,
)


def test_small_input_resnet_gets_3x3_stride1_stem_without_maxpool():
    model = build_teacher("resnet18", num_classes=7, in_channels=1, image_size=(16, 16))
    conv = model.net.conv1
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (1, (3, 3), (1, 1))
    assert isinstance(model.net.maxpool, nn.Identity)
    assert model.net.fc.out_features == 7
    # 16 px survive to a 2x2 map before the pool: layer4 sees 16 / 8.
    shapes = []
    model.net.layer4.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)) and None)
    out = model.eval()(torch.rand(2, 1, 16, 16))
    assert out.shape == (2, 7)
    assert shapes == [(2, 512, 2, 2)]


def test_large_input_keeps_the_imagenet_stem():
    model = build_teacher("resnet18", num_classes=4, in_channels=3, image_size=(64, 96))
    conv = model.net.conv1
    assert (conv.kernel_size, conv.stride) == ((7, 7), (2, 2))
    assert isinstance(model.net.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize(
    ("side", "stem", "block_px"), [(16, "full", 16), (28, "stride2", 14), (96, "imagenet", 24)]
)
def test_auto_stem_leaves_the_first_block_at_least_14_px(side: int, stem: str, block_px: int):
    assert resolve_stem("auto", (side, side + 10)) == stem
    assert resolve_stem("full", (side, side)) == "full"
    model = build_teacher("resnet18", num_classes=3, in_channels=1, image_size=(side, side))
    shapes = []
    model.net.layer1.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)) and None)
    model.eval()(torch.rand(1, 1, side, side))
    assert shapes == [(1, 64, block_px, block_px)]


def test_width_scales_channels_and_macs_and_needs_no_weights():
    full = build_teacher("resnet18", num_classes=10, in_channels=1, image_size=(28, 28))
    half = build_teacher("resnet18", num_classes=10, in_channels=1, image_size=(28, 28), width=0.5)
    assert half.net.layer4[-1].conv2.out_channels == 256 and half.net.fc.in_features == 256
    ratio = count_macs(full, (1, 28, 28)) / count_macs(half, (1, 28, 28))
    assert 3.5 < ratio < 4.5  # channels halve on both sides of every conv
    mobile = build_teacher(
        "mobilenet_v2", num_classes=4, in_channels=3, image_size=(96, 96), width=0.5
    )
    assert mobile(torch.rand(2, 3, 96, 96)).shape == (2, 4)
    with pytest.raises(ConfigError, match="train.width"):
        build_teacher(
            "efficientnet_b0", num_classes=2, in_channels=1, image_size=(16, 16), width=0.5
        )
    with pytest.raises(ConfigError, match="width 1.0"):
        build_teacher(
            "resnet18", num_classes=2, in_channels=1, image_size=(16, 16),
            weights="DEFAULT", width=0.5,
        )  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_adapts_channels_classes_and_stride(arch: str):
    model = build_teacher(arch, num_classes=5, in_channels=1, image_size=(16, 16)).eval()
    stem = model.net.conv1 if ARCHS[arch] == "resnet" else model.net.features[0][0]
    assert stem.in_channels == 1 and stem.stride == (1, 1)
    assert model(torch.rand(3, 1, 16, 16)).shape == (3, 5)


def test_normalisation_lives_in_the_state_dict():
    model = build_teacher(
        "mobilenet_v3_small",
        num_classes=3,
        in_channels=1,
        image_size=(16, 16),
        mean=[0.2],
        std=[0.3],
    )
    state = model.state_dict()
    assert state["mean"].flatten().tolist() == pytest.approx([0.2])
    assert state["std"].flatten().tolist() == pytest.approx([0.3])


def test_unknown_arch_names_the_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"train\.arch='resnet19'.*resnet18"):
        build_teacher("resnet19", num_classes=3, in_channels=1, image_size=(16, 16))


def test_resolve_weights_accepts_the_usual_spellings_and_rejects_others():
    enum = torchvision.models.ResNet18_Weights
    assert resolve_weights("resnet18", None) is None
    assert resolve_weights("resnet18", "IMAGENET1K_V1") is enum.IMAGENET1K_V1
    assert resolve_weights("resnet18", "ResNet18_Weights.DEFAULT") is enum.DEFAULT
    with pytest.raises(ConfigError, match=r"train\.weights.*ResNet18_Weights\.IMAGENET1K_V1"):
        resolve_weights("resnet18", "ResNet50_Weights.IMAGENET1K_V1")


def _hub_file(weights) -> str:
    return Path(weights.url).name


def test_pretrained_weights_come_from_the_cache_and_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError, match="is not cached"):
        build_teacher(
            "resnet18", num_classes=3, in_channels=1, image_size=(224, 224), weights="DEFAULT"
        )

    # A stand-in checkpoint at the cache path torchvision would use exercises the real loader.
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = torchvision.models.resnet18()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / _hub_file(weights))
    model = build_teacher(
        "resnet18", num_classes=3, in_channels=1, image_size=(224, 224), weights="IMAGENET1K_V1"
    )
    # Grey stem = RGB kernels summed; deeper layers untouched; head rebuilt for K = 3.
    torch.testing.assert_close(model.net.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.net.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert model.net.fc.out_features == 3
    assert model.mean.item() == pytest.approx(np.mean([0.485, 0.456, 0.406]))


def test_count_macs_on_a_hand_counted_net_and_on_torchvision_resnet18():
    tiny = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    assert count_macs(tiny, (1, 8, 8)) == 4 * 8 * 8 * 9 + 256 * 5
    assert count_params(tiny) == 4 * 9 + 4 + 256 * 5 + 5
    # torchvision documents 1.814 G ops (MACs) for resnet18 at 224 x 224.
    ops = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]
    assert count_macs(torchvision.models.resnet18(), (3, 224, 224)) / 1e9 == pytest.approx(
        ops, rel=0.01
    )


def test_state_dict_round_trip_with_weights_only(tmp_path: Path):
    model = build_teacher(
        "resnet18", num_classes=3, in_channels=1, image_size=(16, 16), stem="stride2", width=0.5
    ).eval()
    torch.save(model.state_dict(), tmp_path / "teacher.pt")
    meta = {
        "arch": "resnet18",
        "classes": ["a", "b", "c"],
        "in_channels": 1,
        "image_size": [16, 16],
        "stem": "stride2",
        "width": 0.5,
    }
    loaded = load_teacher(tmp_path / "teacher.pt", meta)
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.slow
def test_onnx_export_has_a_dynamic_batch_and_matches_torch(tmp_path: Path):
    torch.manual_seed(0)
    model = build_teacher("resnet18", num_classes=3, in_channels=1, image_size=(16, 16)).eval()
    path = tmp_path / "teacher.onnx"
    export_onnx(model, path, input_shape=(1, 16, 16), opset=18)
    for n in (1, 7):  # export traced batch 2; other sizes must run
        x = np.random.default_rng(n).random((n, 1, 16, 16), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        parity = onnx_parity(path, x, ref)
        assert parity["top1_agreement"] == 1.0
        assert parity["max_abs_diff"] < 1e-4
