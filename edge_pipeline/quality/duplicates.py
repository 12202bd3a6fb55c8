"""Duplicates at ingest: byte-identical files (one file kept), and images with the same content
(a `group` for the split to keep together).

Byte copies (same sha256) are resolved before any label is trusted: kept once when their labels
agree, all quarantined as `duplicate` when they conflict. Content duplicates are found on the
decoded, converted and resized pixels every later stage sees (uint8 (N, H, W, C)):
- `pixels`: identical arrays (e.g. a 16-bit PNG and an RGBA PNG of the same picture), found by
  the sha1 of the pixels (`picture_keys`, kept in the decode cache);
- `near`: a 64-bit difference hash (dHash: the luma resized to 9 x 8 with Lanczos, bit = pixel
  brighter than its right neighbour, as in N. Krawetz's "Kind of Like That" and the `imagehash`
  package) within `near_duplicate_bits` of each other, and pixels within `near_duplicate_mad`
  grey levels on average. Candidate pairs come from a pigeonhole index (pairs within t bits agree
  exactly on one of t + 1 bit bands), so the cost grows with the hash collisions, not N^2.
Groups are the connected components of these pairs; a group's id is its first (smallest) image id.
Everything but the per-image hashes of new pictures is vectorised (no Python step per image).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

# distance: mean absolute difference of the pixels (grey levels, 0 for `pixels`)
PAIR_COLUMNS = ["a", "b", "kind", "distance", "label_a", "label_b"]
_BIG_BUCKET = 64  # near_pairs: bigger buckets are compared by broadcasting, smaller all at once


def resolve_byte_copies(
    ids: list[str],
    label_of: dict[str, str],
    bad: dict[int, tuple[str, str]],
    copies: dict[int, int],
) -> int:
    """Quarantine byte-identical copies into `bad` (in place); returns how many were kept once.

    Copies of a quarantined file share its reason; copies whose labels all agree are dropped (the
    first is kept); a group with conflicting labels is quarantined whole as `duplicate`.
    """
    groups: dict[int, list[int]] = {}
    for i, j in copies.items():
        groups.setdefault(j, []).append(i)
    merged = 0
    for j, members in groups.items():
        if j in bad:
            for i in members:
                bad[i] = (bad[j][0], f"identical to {ids[j]}: {bad[j][1]}")
            continue
        labels = {ids[i]: label_of[ids[i]] for i in [j, *members]}
        if len(set(labels.values())) > 1:
            detail = "same bytes, labels differ: " + ", ".join(
                f"{p}={c}" for p, c in labels.items()
            )
            bad.update({i: ("duplicate", detail) for i in [j, *members]})
        else:
            merged += len(members)
            bad.update(
                {i: ("duplicate", f"identical to {ids[j]}, same label: kept once") for i in members}
            )
    return merged


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit difference hashes, uint64 (N,), of uint8 images (N, H, W, C) (C = 1 or 3)."""
    out = np.zeros(len(images), dtype=np.uint64)
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    for i, im in enumerate(images):
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).convert("L")
        small = np.asarray(pil.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
        bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
        out[i] = np.bitwise_or.reduce(weights[bits]) if bits.any() else 0
    return out


def picture_keys(images: np.ndarray) -> np.ndarray:
    """S40 (N,): the sha1 (hex) of each image's pixels (uint8 (N, H, W, C)): equal keys, equal
    pixels. Kept with the decoded pixels in the decode cache."""
    return np.array([hashlib.sha1(im.tobytes()).hexdigest() for im in images], dtype="S40")


def near_pairs(
    images: np.ndarray,
    hashes: np.ndarray,
    *,
    max_bits: int,
    max_mad: float,
    fresh: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(int64 (P, 2) pairs (i, j), i < j, sorted; float64 (P,) their mean absolute difference,
    rounded to 3 decimals) of near-duplicate images (uint8 (N, H, W, C)) whose `dhash`es are
    `hashes` (uint64 (N,), kept with the decoded pixels in the decode cache).

    A pair is near when its dHashes are within `max_bits` bits (found through the band index) and
    its pixels differ by at most `max_mad` grey levels on average (the check that keeps similar but
    distinct small images, e.g. two plain digits, apart). `fresh` (bool (N,)): only pairs with at
    least one fresh image are searched (the others are known from the last run: `NearMemo`).
    """
    n = len(images)
    fresh = np.ones(n, bool) if fresh is None else fresh
    found = [np.zeros((0, 2), np.int64)]
    for band in np.array_split(np.arange(64), min(max_bits + 1, 64)):
        mask = np.uint64(sum(1 << int(b) for b in band))
        keys = hashes & mask
        order = np.argsort(keys, kind="stable")  # buckets of equal keys, ascending indices
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
        sizes = np.diff(starts)
        big = sizes >= _BIG_BUCKET
        bucket = np.repeat(np.arange(len(sizes)), sizes)  # of order[p]
        rows = np.flatnonzero(fresh[order] & ~big[bucket])  # fresh, in a small bucket
        span = (starts[bucket[rows]], sizes[bucket[rows]])
        found += _small_bucket_pairs(order, rows, *span, hashes=hashes, max_bits=max_bits)
        for lo, hi in zip(starts[:-1][big], starts[1:][big], strict=True):
            idx = order[lo:hi]
            new = idx[fresh[idx]]
            for x0 in range(0, len(new), 512):  # rows in blocks: memory <= 512 x bucket
                part = new[x0 : x0 + 512]
                dist = np.bitwise_count(hashes[part][:, None] ^ hashes[idx][None, :])
                r, c = np.nonzero((dist <= max_bits) & (part[:, None] != idx[None, :]))
                found.append(_ordered(part[r], idx[c]))
    keys = np.unique(np.concatenate(found) @ np.array([n, 1], np.int64))  # i * N + j
    pairs = np.stack([keys // max(n, 1), keys % max(n, 1)], axis=1)  # (P, 2), i < j, sorted
    flat = images.reshape(n, int(np.prod(images.shape[1:])))
    mad = np.concatenate(
        [np.zeros(0)]
        + [
            np.abs(flat[c[:, 0]].astype(np.int16) - flat[c[:, 1]]).mean(1)
            for c in np.array_split(pairs, 1 + len(pairs) // 4096)
        ]
    )
    keep = mad <= max_mad
    return pairs[keep], np.array([round(float(d), 3) for d in mad[keep]], np.float64)


def _small_bucket_pairs(
    order: np.ndarray,
    rows: np.ndarray,
    lo: np.ndarray,
    size: np.ndarray,
    *,
    hashes: np.ndarray,
    max_bits: int,
) -> list[np.ndarray]:
    """Pairs (i < j, int64 (P, 2) blocks) within `max_bits` between each fresh image
    order[rows[k]] and every other member order[lo[k] : lo[k] + size[k]] of its bucket, all
    buckets at once (at most 2e6 candidates at a time)."""
    out = []
    for part in np.array_split(np.arange(len(rows)), 1 + int(size.sum()) // 2_000_000):
        count = size[part]
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        a = order[np.repeat(rows[part], count)]
        b = order[np.repeat(lo[part], count) + offset]
        close = (a != b) & (np.bitwise_count(hashes[a] ^ hashes[b]) <= max_bits)
        out.append(_ordered(a[close], b[close]))
    return out


def _ordered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)


@dataclass
class NearMemo:
    """What the near-pair search knew after a run, under one (max_bits, max_mad, image shape):
    the distinct pictures it compared and the near pairs among them, both by `picture_keys`.
    A later run searches only the pairs with a picture not in `pictures`."""

    pictures: np.ndarray = field(default_factory=lambda: np.zeros(0, "S40"))  # (Q,) sorted
    a: np.ndarray = field(default_factory=lambda: np.zeros(0, "S40"))  # (P,) pair (a, b) ...
    b: np.ndarray = field(default_factory=lambda: np.zeros(0, "S40"))
    distance: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ... at this distance


def positions(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """int64 (P,): the index of each of `keys` (P,) in the sorted array `sorted_keys`, -1 where
    absent."""
    k = np.searchsorted(sorted_keys, keys)
    k[k == len(sorted_keys)] = 0
    hit = sorted_keys[k] == keys if len(sorted_keys) else np.zeros(len(keys), bool)
    return np.where(hit, k, -1)


def smallest_member(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 (n,): for each of n nodes, the smallest node of its connected component under the
    edges (a[e], b[e]) (hooking and pointer jumping, vectorised)."""
    root = np.arange(n)
    while True:
        before = root.copy()
        ra, rb = root[a], root[b]
        low = np.minimum(ra, rb)
        np.minimum.at(root, ra, low)
        np.minimum.at(root, rb, low)
        while not np.array_equal(root, root[root]):
            root = root[root]
        if np.array_equal(root, before):
            return root


def content_groups(
    ids: list[str],
    images: np.ndarray,
    labels: list[str],
    *,
    hashes: np.ndarray,
    pictures: np.ndarray,
    max_bits: int | None,
    max_mad: float,
    memo: NearMemo | None = None,
) -> tuple[list[str], pd.DataFrame, NearMemo]:
    """Group ids (N,), the pairs found (PAIR_COLUMNS) for N sorted `ids` and their images, and
    the NearMemo of this run (to pass as `memo` to the next run with the same settings).

    Args:
        ids: sorted image ids; images: uint8 (N, H, W, C), row i = ids[i]; labels: (N,) the given
            label of each image ('' if none yet); hashes: uint64 (N,) `dhash(images)`;
            pictures: S40 (N,) `picture_keys(images)` (both from the decode cache);
            max_bits, max_mad: the `near` test of `near_pairs` (None: pixel-identical only);
        memo: the last run's NearMemo under the same max_bits, max_mad and image shape, or None.
    """
    n = len(ids)
    keys, first, inverse = np.unique(pictures, return_index=True, return_inverse=True)
    rep = first[inverse]  # the first image with the same pixels
    same = np.flatnonzero(rep != np.arange(n))
    a, b = [rep[same]], [same]
    kind, dist = [np.full(len(same), "pixels", object)], [np.zeros(len(same))]
    now = NearMemo()
    if max_bits is not None:  # among distinct pictures: one of each pixel-identical set
        reps = np.sort(first)  # keys[order] are the pictures of reps
        order = np.argsort(first)
        memo = memo or NearMemo()
        fresh = positions(memo.pictures, keys[order]) < 0
        pairs, mad = near_pairs(
            images[reps], hashes[reps], max_bits=max_bits, max_mad=max_mad, fresh=fresh
        )
        at = np.argsort(order)  # position in reps of each picture of `keys`
        pa, pb = positions(keys, memo.a), positions(keys, memo.b)
        live = (pa >= 0) & (pb >= 0)  # known pairs among the pictures still here
        pa, pb = at[pa[live]], at[pb[live]]
        pairs = np.concatenate([pairs, np.stack([np.minimum(pa, pb), np.maximum(pa, pb)], 1)])
        mad = np.concatenate([mad, memo.distance[live]])
        a.append(reps[pairs[:, 0]])
        b.append(reps[pairs[:, 1]])
        kind.append(np.full(len(pairs), "near", object))
        dist.append(mad)
        rep_keys = keys[order]
        now = NearMemo(keys, rep_keys[pairs[:, 0]], rep_keys[pairs[:, 1]], mad)
    a, b, kind, dist = (np.concatenate(x) for x in (a, b, kind, dist))
    sort = np.lexsort((b, a))
    a, b, kind, dist = a[sort], b[sort], kind[sort], dist[sort]
    root = smallest_member(n, a, b)
    names, given = np.array(ids, dtype=object), np.array(labels, dtype=object)
    pairs_df = pd.DataFrame(
        {
            "a": names[a],
            "b": names[b],
            "kind": kind,
            "distance": dist,
            "label_a": given[a],
            "label_b": given[b],
        },
        columns=PAIR_COLUMNS,
    )
    return names[root].tolist(), pairs_df, now


def group_metrics(groups: list[str], pairs: pd.DataFrame) -> dict[str, int]:
    """Counts for metrics/ingest.json: groups of >= 2 images, their images, pairs by kind."""
    sizes = pd.Series(groups).value_counts()
    multi = sizes[sizes > 1]
    kinds = pairs["kind"].value_counts()
    return {
        "duplicate_groups": len(multi),
        "images_in_duplicate_groups": int(multi.sum()),
        "largest_duplicate_group": int(multi.max()) if len(multi) else 1,
        "pixel_duplicate_pairs": int(kinds.get("pixels", 0)),
        "near_duplicate_pairs": int(kinds.get("near", 0)),
        "label_conflict_pairs": int((pairs["label_a"] != pairs["label_b"]).sum()),
    }
