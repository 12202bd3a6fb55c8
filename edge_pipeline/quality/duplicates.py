"""Duplicates at ingest: byte-identical files (one file kept), and images with the same content
(a `group` for the split to keep together).

Byte copies (same sha256) are resolved before any label is trusted: kept once when their labels
agree, all quarantined as `duplicate` when they conflict. Content duplicates are found on the
decoded, converted and resized pixels every later stage sees (uint8 (N, H, W, C)):
- `pixels`: identical arrays (e.g. a 16-bit PNG and an RGBA PNG of the same picture);
- `near`: a 64-bit difference hash (dHash: the luma resized to 9 x 8 with Lanczos, bit = pixel
  brighter than its right neighbour, as in N. Krawetz's "Kind of Like That" and the `imagehash`
  package) within `near_duplicate_bits` of each other, and pixels within `near_duplicate_mad`
  grey levels on average. Candidate pairs come from a pigeonhole index (pairs within t bits agree
  exactly on one of t + 1 bit bands), so the cost grows with the hash collisions, not N^2.
Groups are the connected components of these pairs; a group's id is its first (smallest) image id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

# distance: mean absolute difference of the pixels (grey levels, 0 for `pixels`)
PAIR_COLUMNS = ["a", "b", "kind", "distance", "label_a", "label_b"]


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


def near_pairs(
    images: np.ndarray,
    hashes: np.ndarray,
    *,
    max_bits: int,
    max_mad: float,
    fresh: np.ndarray | None = None,
) -> list[tuple[int, int, float]]:
    """(i, j, mean absolute difference) with i < j for near-duplicate images (uint8 (N, H, W, C))
    whose `dhash`es are `hashes` (uint64 (N,), kept with the decoded pixels in the decode cache).

    A pair is near when its dHashes are within `max_bits` bits (found through the band index) and
    its pixels differ by at most `max_mad` grey levels on average (the check that keeps similar but
    distinct small images, e.g. two plain digits, apart). `fresh` (bool (N,)): only pairs with at
    least one fresh image are searched (the others are known from the last run: `NearMemo`).
    """
    fresh = np.ones(len(images), bool) if fresh is None else fresh
    flat = images.reshape(len(images), -1).astype(np.int16)
    found = []
    for band in np.array_split(np.arange(64), min(max_bits + 1, 64)):
        mask = np.uint64(sum(1 << int(b) for b in band))
        keys = hashes & mask
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
        sizes = np.diff(starts)
        with_fresh = np.add.reduceat(fresh[order], starts[:-1]) > 0 if len(order) else sizes > 0
        search = (sizes > 1) & with_fresh  # buckets of >= 2 pictures, one of them fresh
        for lo, hi in zip(starts[:-1][search], starts[1:][search], strict=True):
            idx = order[lo:hi]  # one bucket: ascending image indices
            new = idx[fresh[idx]]
            for x0 in range(0, len(new), 512):  # rows in blocks: memory <= 512 x bucket
                rows = new[x0 : x0 + 512]
                dist = np.bitwise_count(hashes[rows][:, None] ^ hashes[idx][None, :])
                r, c = np.nonzero((dist <= max_bits) & (rows[:, None] != idx[None, :]))
                a, b = rows[r], idx[c]
                found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not found:
        return []
    n = np.int64(len(images))
    keys = np.unique(np.concatenate(found).astype(np.int64) @ np.array([n, 1]))  # i * N + j
    pairs = np.stack([keys // n, keys % n], axis=1)  # (P, 2), i < j, sorted
    mad = np.concatenate(
        [
            np.abs(flat[c[:, 0]] - flat[c[:, 1]]).mean(1)
            for c in np.array_split(pairs, 1 + len(pairs) // 4096)
        ]
    )
    keep = mad <= max_mad
    return [
        (int(a), int(b), round(float(d), 3))
        for (a, b), d in zip(pairs[keep], mad[keep], strict=True)
    ]


@dataclass
class NearMemo:
    """What the near-pair search knew after a run, under one (max_bits, max_mad, image shape):
    the distinct pictures it compared and the near pairs among them, both keyed by the sha1 of
    the pictures' pixels. A later run searches only the pairs with a picture not in `pictures`."""

    pictures: set[str] = field(default_factory=set)
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)  # (a, b) -> distance


def content_groups(
    ids: list[str],
    images: np.ndarray,
    labels: list[str],
    *,
    hashes: np.ndarray,
    max_bits: int | None,
    max_mad: float,
    memo: NearMemo | None = None,
) -> tuple[list[str], pd.DataFrame, NearMemo]:
    """Group ids (N,), the pairs found (PAIR_COLUMNS) for N sorted `ids` and their images, and
    the NearMemo of this run (to pass as `memo` to the next run with the same settings).

    Args:
        ids: sorted image ids; images: uint8 (N, H, W, C), row i = ids[i]; labels: (N,) the given
            label of each image ('' if none yet); hashes: uint64 (N,) `dhash(images)`;
            max_bits, max_mad: the `near` test of `near_pairs` (None: pixel-identical only);
        memo: the last run's NearMemo under the same max_bits, max_mad and image shape, or None.
    """
    ids, labels = list(ids), list(labels)  # plain lists: indexing a Series per pair is slow
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows: list[tuple[int, int, str, float]] = []
    first: dict[bytes, int] = {}
    for i in range(len(ids)):
        key = images[i].tobytes()
        if key in first:
            rows.append((first[key], i, "pixels", 0.0))
        else:
            first[key] = i
    now = NearMemo()
    if max_bits is not None:  # among distinct pictures: one of each pixel-identical set
        reps = np.array(sorted(first.values()), dtype=np.int64)
        keys = [hashlib.sha1(images[i].tobytes()).hexdigest() for i in reps]
        memo = memo or NearMemo()
        fresh = np.array([k not in memo.pictures for k in keys], dtype=bool)
        near = near_pairs(
            images[reps], hashes[reps], max_bits=max_bits, max_mad=max_mad, fresh=fresh
        )
        at = {k: n for n, k in enumerate(keys)}  # known pairs among pictures still here
        known = [(at[a], at[b], d) for (a, b), d in memo.pairs.items() if a in at and b in at]
        near += [(min(a, b), max(a, b), d) for a, b, d in known]
        rows += [(int(reps[a]), int(reps[b]), "near", d) for a, b, d in near]
        now = NearMemo(set(keys), {(keys[a], keys[b]): d for a, b, d in near})
    for a, b, _, _ in rows:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)  # the smallest index (first id) is the root
    pairs = pd.DataFrame(
        [(ids[a], ids[b], kind, d, labels[a], labels[b]) for a, b, kind, d in sorted(rows)],
        columns=PAIR_COLUMNS,
    )
    return [ids[root(i)] for i in range(len(ids))], pairs, now


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
