"""Elastic weight consolidation (Kirkpatrick et al. 2017) for the teacher (`train.ewc`).

At the end of a run, `fisher_diagonal` estimates the diagonal Fisher information F of each
trainable parameter on (a stratified sample of) the train set; it is stored with the model
(edge_pipeline/teacher/warm_start.py logs it next to teacher.pt). The next night, warm-started
from that model (weights w*), adds `ewc_penalty` = strength / 2 * sum_i F_i (w_i - w*_i)^2 to the
loss: weights that mattered for the old data move less.

F is the empirical Fisher: the per-example squared gradients of the loss, averaged over the N
images (torch.func's vmap over micro-batches). Squaring a mini-batch's *mean* gradient instead
(a common shortcut) is not an estimate of it: at the end of training the per-example gradients
largely cancel in the mean, so F came out near zero and the penalty did nothing (measured: EWC at
any strength gave the same model as no EWC, docs/nightly.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edge_pipeline.teacher.fit import to_nchw


def stratified_sample(y: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Sorted indices of at most n of the labels y (N,), an equal share per class first
    (a class with fewer gives the rest to the others), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == k)) for k in np.unique(y)]
    taken: list[np.ndarray] = []
    left = n
    for i, pool in enumerate(sorted(pools, key=len)):  # small classes first, the rest share
        quota = left // (len(pools) - i)
        taken.append(pool[:quota])
        left -= len(taken[-1])
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)


def fisher_diagonal(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    device: torch.device,
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of every trainable parameter (name -> tensor of its shape, CPU):
    mean over the N images of the squared per-example gradient of the cross-entropy.

    x: uint8 (N, H, W, C) images, y: int (N,) labels; the model runs in eval mode (BatchNorm
    statistics frozen, so examples are independent) without augmentation. `batch_size` examples'
    gradients are held at once (memory: batch_size x the parameter count).
    """
    from torch.func import functional_call, grad, vmap

    model.to(device).eval()
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    fisher = {n: torch.zeros_like(p, device="cpu") for n, p in params.items()}
    xt, yt = to_nchw(x), torch.from_numpy(np.asarray(y, dtype=np.int64))

    def loss_one(w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (w, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    for i in range(0, len(xt), batch_size):
        xb = xt[i : i + batch_size].to(device, torch.float32) / 255.0
        grads = per_example(params, xb, yt[i : i + batch_size].to(device))
        for n, g in grads.items():
            fisher[n] += (g.detach() ** 2).sum(dim=0).cpu() / len(xt)
    return fisher


def ewc_penalty(
    anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], *, strength: float
) -> Callable[[nn.Module], torch.Tensor]:
    """The loss term strength / 2 * sum F (w - w*)^2 over the parameters named in `fisher`.

    `anchor` holds w* (the start model's state_dict, after any head remapping), `fisher` F of
    the same shapes (zeros for a new class's head row: it is free to learn).
    """
    names = sorted(set(fisher) & set(anchor))
    cache: dict[torch.device, list[tuple[str, torch.Tensor, torch.Tensor]]] = {}

    def penalty(model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        device = next(iter(params.values())).device
        if device not in cache:
            cache[device] = [(n, anchor[n].to(device), fisher[n].to(device)) for n in names]
        total = torch.zeros((), device=device)
        for n, w_star, f in cache[device]:
            total = total + (f * (params[n] - w_star) ** 2).sum()
        return 0.5 * strength * total

    return penalty
