"""The teacher's training loop: augmentation, class-weighted CE or a class-balanced sampler,
AdamW + cosine, early stopping.

`train_teacher(p, d)` builds the `train.arch` network for the fit sets and runs `fit`;
`setup_device` picks the device and torch's CPU threads from the `train` section.

Deterministic on CPU: `deterministic(seed)` seeds torch and switches on deterministic algorithms;
the sampler (shuffle or class-balanced) draws from its own seeded generator; the per-sample
augmentations draw from torch's seeded global generator in-process (`workers: 0`) or, with
workers, from per-worker generators seeded from that sampler's generator; so two runs with the same
params, thread count and worker count give identical weights and metrics.
On CUDA the same seeds are used but results are not bit-identical (docs/benchmarks.md).

Memory: images stay the uint8 (N, H, W, C) arrays the loaders give (memory-mapped where they are
files); the loader and `predict_logits` transpose one item or one batch at a time, never the set.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torchvision.transforms import v2

from edge_pipeline.config.base import Augment
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.errors import ConfigError
from edge_pipeline.teacher.models import Teacher, build_teacher, input_stats

log = logging.getLogger("tasks.train")
SPLITS = ("train", "val", "test")


def augment_transform(augment: Augment, image_size: tuple[int, int]) -> v2.Transform | None:
    """The per-sample v2 pipeline on uint8 (C, H, W) images; None when every option is off.

    Order: pad-and-random-crop back to `image_size` (H, W), rotation, horizontal flip,
    brightness/contrast jitter (works for 1 or 3 channels).
    """
    steps: list[v2.Transform] = []
    if augment.crop_padding:
        steps.append(v2.RandomCrop(image_size, padding=augment.crop_padding))
    if augment.rotation_deg:
        steps.append(v2.RandomRotation(augment.rotation_deg))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter:
        steps.append(v2.ColorJitter(brightness=augment.color_jitter, contrast=augment.color_jitter))
    return v2.Compose(steps) if steps else None


@dataclass
class FitResult:
    """What `fit` hands back; `model` holds the best epoch's weights."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_macro_f1: float = -1.0
    train_seconds: float = 0.0  # wall time of all epochs, validation included
    step_seconds: float = 0.0  # forward/backward/update only (what images/s is measured on)
    images_seen: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.step_seconds if self.step_seconds else 0.0


@contextlib.contextmanager
def deterministic(seed: int, *, strict: bool = True) -> Iterator[None]:
    """Seed python/numpy/torch and use deterministic kernels inside the block (restored after).

    `strict=False` only warns about ops without a deterministic kernel: on CUDA some that every
    torchvision classifier uses (adaptive average pooling's backward) have none.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may draw from the legacy global RNG
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def setup_device(name: str, *, threads: int | None = None) -> torch.device:
    """`cpu`, `cuda` (a ConfigError without a GPU) or `auto` (a GPU when torch sees one).

    `threads` sets torch's CPU threads; None uses the cores this process may run on.
    """
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params.yaml train.device='cuda' but torch sees no GPU; use cpu or auto")
    return torch.device(name)


def to_nchw(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 tensor (N, C, H, W) (a copy of just these N images)."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class _Images(torch.utils.data.Dataset):
    """uint8 (N, H, W, C) images (in memory or memory-mapped), read one (C, H, W) item at a time."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: v2.Transform | None) -> None:
        self.x, self.y, self.transform = x, torch.from_numpy(y), transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.from_numpy(np.ascontiguousarray(self.x[i].transpose(2, 0, 1)))
        return (self.transform(img) if self.transform else img), self.y[i]


def make_sampler(
    y: np.ndarray, kind: str, *, num_samples: int, generator: torch.Generator
) -> torch.utils.data.Sampler:
    """`shuffle`: each of the N rows once per epoch; `balanced`: `num_samples` rows per epoch drawn
    with replacement with weight 1 / (rows of its class), so each class is drawn equally often.

    Args:
        y: int (N,) labels.
        kind: `train.sampler`.
        num_samples: rows per epoch of `balanced` (the real train rows: synthetic copies add none).
        generator: seeded; the only randomness of the draw.
    """
    if kind == "shuffle":
        return torch.utils.data.RandomSampler(range(len(y)), generator=generator)
    counts = np.bincount(y)
    weights = torch.as_tensor(1.0 / counts[y], dtype=torch.double)
    return torch.utils.data.WeightedRandomSampler(
        weights, num_samples, replacement=True, generator=generator
    )


def predict_logits(
    model: nn.Module, x: np.ndarray, *, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """float32 (N, K) logits of uint8 images (N, H, W, C), eval mode, no augmentation."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            batch = to_nchw(x[i : i + batch_size]).to(device, torch.float32) / 255.0
            out.append(model(batch).float().cpu())
    return torch.cat(out).numpy()


def fit(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    class_weights: np.ndarray | None,
    augment: Augment,
    seed: int,
    device: torch.device,
    sampler: str = "shuffle",
    num_samples: int | None = None,
    workers: int = 0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
) -> FitResult:
    """Train `model` in place and leave it holding the epoch with the best validation macro-F1.

    Args:
        model: maps float32 (B, C, H, W) in [0, 1] to (B, K) logits.
        x_train, y_train: uint8 (N, H, W, C) images and int64 (N,) labels.
        x_val, y_val: the same for the M validation images.
        class_weights: float (K,) cross-entropy weights, or None for plain CE.
        patience: stop after this many epochs without a better validation macro-F1.
        sampler, num_samples: `make_sampler`'s kind and rows per epoch (None: N).
        workers: DataLoader worker processes (0: load and augment in-process).
        on_epoch: called after each epoch with its row of `FitResult.history`
            (epoch, train_loss, val_macro_f1, val_acc, lr, seconds).
        penalty: an extra loss term of the model's weights (e.g. teacher/ewc.py), or None.
    """
    model.to(device)
    data = _Images(x_train, y_train, augment_transform(augment, x_train.shape[1:3]))
    generator = torch.Generator().manual_seed(seed)
    rows = make_sampler(y_train, sampler, num_samples=num_samples or len(data), generator=generator)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch_size,
        sampler=rows,
        generator=generator,  # seeds the workers' augmentation
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        drop_last=len(rows) % batch_size == 1,  # BatchNorm cannot train on a batch of one
    )
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    result, best_state = FitResult(), None
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True).float() / 255.0
            yb = yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if penalty is not None:
                loss = loss + penalty(model)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(yb)
            seen += len(yb)
        train_s = time.perf_counter() - start
        pred = predict_logits(model, x_val, device=device).argmax(1)
        row = {
            "epoch": epoch,
            "train_loss": total / seen,
            "val_macro_f1": float(f1_score(y_val, pred, average="macro", zero_division=0)),
            "val_acc": float(accuracy_score(y_val, pred)),
            "lr": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - start,
        }
        result.history.append(row)
        result.train_seconds += row["seconds"]
        result.step_seconds += train_s
        result.images_seen += seen
        log.info(
            "epoch %d/%d loss %.4f val_macro_f1 %.4f val_acc %.4f (%.1fs, %.0f img/s)",
            epoch, epochs, row["train_loss"], row["val_macro_f1"], row["val_acc"],
            row["seconds"], seen / train_s,
        )  # fmt: skip
        if on_epoch:
            on_epoch(row)
        if row["val_macro_f1"] > result.best_val_macro_f1:
            result.best_epoch, result.best_val_macro_f1 = epoch, row["val_macro_f1"]
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= patience:
            log.info("early stop: no better val macro-F1 for %d epochs", patience)
            break
    model.load_state_dict(best_state)
    model.eval()
    return result


@dataclass
class TrainedTeacher:
    """What `train_teacher` hands back: the best epoch's model (CPU, eval mode) and its logits."""

    model: Teacher
    result: FitResult
    logits: dict[str, np.ndarray]  # "train" | "val" | "test" -> float32 (N_split, K)


def train_teacher(
    p: Train,
    d: dict[str, Any],
    *,
    device: torch.device,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
) -> TrainedTeacher:
    """Build the `p.arch` teacher for the data `d` and fit it; call inside `deterministic(seed)`.

    Args:
        p: the `train` params section.
        d: the fit sets of `edge_pipeline.artifacts.datasets.load_fit_sets` (classes, x/y of
            train, val and test, synthetic, class_weights); images uint8 (N, H, W, C).
        device: where to train (`setup_device`).
        on_epoch: called with each epoch's row of `FitResult.history`.
        init_state: warm start (teacher/warm_start.py): the start model's state_dict, fine-tuned
            for `p.warm.epochs` at `p.warm.lr` instead of `p.epochs` at `p.lr`.
        penalty: an extra loss term (EWC), passed to `fit`.
    """
    _, h, w, c = d["x_train"].shape
    k = len(d["classes"])
    log.info(
        "%s on %s (%d threads): %d train (%d synthetic), %d val, %d test, %dx%dx%d, K=%d",
        p.arch, device, torch.get_num_threads(), len(d["y_train"]), d["synthetic"].sum(),
        len(d["y_val"]), len(d["y_test"]), h, w, c, k,
    )  # fmt: skip
    counts = np.bincount(d["y_train"], minlength=k)
    if p.use_class_weights and counts.max() <= 1.5 * max(counts.min(), 1):
        log.warning("train.use_class_weights on a train set already resampled to balance")
    # From scratch the input stats are the train set's; pretrained weights bring their own.
    mean, std = input_stats(d["x_train"]) if p.weights is None else (None, None)
    model = build_teacher(
        p.arch, num_classes=k, in_channels=c, image_size=(h, w), weights=p.weights,
        stem=p.stem, width=p.width, mean=mean, std=std,
    )  # fmt: skip
    epochs, lr = p.epochs, p.lr
    if init_state is not None:
        model.load_state_dict(init_state)
        epochs, lr = p.warm.epochs, p.warm.lr
    result = fit(
        model, d["x_train"], d["y_train"], d["x_val"], d["y_val"],
        epochs=epochs, batch_size=p.batch_size, lr=lr, weight_decay=p.weight_decay,
        patience=p.patience, class_weights=d["class_weights"] if p.use_class_weights else None,
        augment=p.augment, seed=p.seed, device=device, sampler=p.sampler,
        num_samples=int((~d["synthetic"]).sum()), workers=p.workers, on_epoch=on_epoch,
        penalty=penalty,
    )  # fmt: skip
    logits = {s: predict_logits(model, d[f"x_{s}"], device=device) for s in SPLITS}
    return TrainedTeacher(model.cpu(), result, logits)
