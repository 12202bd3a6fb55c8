"""Label-free image embeddings for the clean stage: a one-layer conv net whose filters are learnt
by k-means on whitened image patches (Coates & Ng, "The importance of encoding versus training with
sparse coding and vector quantization", 2011), with triangle activations sum-pooled over a grid.

Why: logistic regression on raw pixels is a weak image model; its confident mistakes are hard
images, not wrong labels (issue 16). These features are much stronger (digits: out-of-fold
accuracy see docs/clean.md) yet need no torch, no GPU and no labels: the filters never see a
label, so a linear model on top, cross-fitted in K folds, still scores every image with a model
that never saw its label. Deterministic for a given seed.
Shapes: N images H x W x C uint8, P = patch side, F filters, G x G pooling grid, E = F * G * G.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from edge_pipeline.config.quality import ConvKmeansOptions

BATCH = 128  # images per transform batch: bounds memory at BATCH * patches * P*P*C floats


@dataclass(frozen=True)
class PatchFilters:
    """The learnt first layer: whitening of normalised patches and F centroids (rows)."""

    mean: np.ndarray  # float32 (P*P*C,)
    whiten: np.ndarray  # float32 (P*P*C, P*P*C) ZCA matrix
    centroids: np.ndarray  # float32 (F, P*P*C)


def prepare(images: np.ndarray, *, max_side: int) -> np.ndarray:
    """float32 (N, H', W', C) in [0, 1], shrunk (box filter) so that no side exceeds `max_side`."""
    n, h, w, c = images.shape
    scale = max(h, w) / max_side
    if scale <= 1:
        return np.asarray(images, dtype=np.float32) / 255.0
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    out = np.empty((n, size[1], size[0], c), dtype=np.float32)
    for i in range(n):
        for ch in range(c):
            im = Image.fromarray(np.ascontiguousarray(images[i, :, :, ch]))
            out[i, :, :, ch] = np.asarray(im.resize(size, Image.Resampling.BOX), np.float32)
    return out / 255.0


def _patches(x: np.ndarray, side: int) -> np.ndarray:
    """float32 (B, R, R2, P*P*C) every side x side patch (stride 1) of (B, H, W, C) images."""
    win = sliding_window_view(x, (side, side), axis=(1, 2))  # (B, R, R2, C, P, P)
    b, r, r2 = win.shape[:3]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(b, r, r2, -1)


def _normalise(p: np.ndarray) -> np.ndarray:
    """Per-patch brightness and contrast normalisation (last axis)."""
    p = p - p.mean(axis=-1, keepdims=True)
    return p / np.sqrt(p.var(axis=-1, keepdims=True) + 0.01)


def fit_filters(x: np.ndarray, *, o: ConvKmeansOptions, seed: int) -> PatchFilters:
    """Learn `o.filters` centroids from `o.sample_patches` random patches of float (N, H, W, C)
    images (spherical k-means after ZCA whitening, `o.kmeans_iters` iterations)."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = x.shape
    side = min(o.patch, h, w)
    m = o.sample_patches
    i, r, c = (
        rng.integers(n, size=m),
        rng.integers(h - side + 1, size=m),
        rng.integers(w - side + 1, size=m),
    )
    grid = np.arange(side)
    sample = x[i[:, None, None], r[:, None, None] + grid[None, :, None], c[:, None, None] + grid]
    sample = _normalise(sample.reshape(m, -1))
    mean = sample.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov(sample - mean, rowvar=False))
    whiten = (vecs / np.sqrt(np.maximum(vals, 0) + o.whiten_eps)) @ vecs.T
    z = (sample - mean) @ whiten
    cent = z[rng.choice(m, size=o.filters, replace=m < o.filters)]
    for _ in range(o.kmeans_iters):
        cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-8
        assign = np.argmax(z @ cent.T, axis=1)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, z)
        empty = np.bincount(assign, minlength=o.filters) == 0
        sums[empty] = z[rng.choice(m, size=int(empty.sum()))]  # restart empty clusters
        cent = sums
    cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-8
    return PatchFilters(mean.astype(np.float32), whiten.astype(np.float32), cent.astype(np.float32))


def transform(x: np.ndarray, f: PatchFilters, *, o: ConvKmeansOptions) -> np.ndarray:
    """float32 (N, E) embeddings of float (N, H, W, C) images: triangle activations
    max(0, mean_k(d) - d_k) of every patch's distance d_k to each filter, summed over a
    `o.pool` x `o.pool` grid of the response map."""
    side = min(o.patch, x.shape[1], x.shape[2])
    out = []
    w_proj = f.whiten @ f.centroids.T  # (D, F): whiten then project in one product
    c_sq = (f.centroids**2).sum(axis=1)
    for start in range(0, len(x), BATCH):
        p = _normalise(_patches(x[start : start + BATCH], side)) - f.mean
        z_sq = ((p @ f.whiten) ** 2).sum(axis=-1, keepdims=True)
        d = np.sqrt(np.maximum(z_sq - 2 * (p @ w_proj) + c_sq, 0))  # (B, R, R2, F)
        act = np.maximum(d.mean(axis=-1, keepdims=True) - d, 0)
        rows = np.array_split(np.arange(act.shape[1]), o.pool)
        cols = np.array_split(np.arange(act.shape[2]), o.pool)
        pooled = [act[:, r][:, :, c].sum(axis=(1, 2)) for r in rows for c in cols]
        out.append(np.concatenate(pooled, axis=1))
    return np.concatenate(out).astype(np.float32)


def embed(images: np.ndarray, *, o: ConvKmeansOptions, seed: int) -> np.ndarray:
    """float32 (N, E) label-free embeddings of uint8 (N, H, W, C) images (fit, then transform)."""
    x = prepare(images, max_side=o.max_side)
    return transform(x, fit_filters(x, o=o, seed=seed), o=o)
