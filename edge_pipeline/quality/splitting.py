"""The train/val/test split as a function of the image: hash buckets of its content key.

Each image's split follows from its key and `split.seed` only: u = the first 8 bytes of
sha256(f"{seed}:{key}") read as a fraction in [0, 1); test when u < test_fraction, val when
u < test_fraction + val_fraction, else train (TFX ExampleGen's hash buckets). The key is the
image's content hash (manifest `sha256`); images of one content-duplicate group (manifest `group`,
when ingest writes it) share the smallest sha256 of the group, so duplicates land in one split.

Unlike a stratified shuffle of the whole set (the split before issue 11), nothing depends on the
other images or on the labels: adding images never moves an existing one, removing one affects only
it, and a label changed by clean or by a reviewer never moves an image out of test. The price is
that the per-class fractions are binomial draws instead of exact: a class of n images has a test
share within +-2 sqrt(f (1 - f) / n) of f = test_fraction about 95% of the time (+-0.04 at n = 400,
+-0.11 at n = 50); the report gives each class's share and z-score and warns beyond
`split.tolerance_sigmas`. A brand-new class of 1-2 images is split like any other image: each
image lands in test with probability test_fraction, so the class may have no train example yet
(warned); it is never moved later to fix that, as moving would leak test images into training.
Shapes: N images, K classes, S = 3 splits.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from edge_pipeline.core.errors import InputError

SPLITS = ("train", "val", "test")


def split_keys(manifest: pd.DataFrame, *, where: str) -> pd.Series:
    """The split key of each manifest row (index = manifest `id`): its `sha256`, or the smallest
    sha256 of its content-duplicate `group` when that column is present and filled."""
    if "sha256" not in manifest or (manifest["sha256"].astype(str).str.len() == 0).any():
        raise InputError(f"{where}: the split needs the `sha256` of every image; re-run ingest")
    keys = manifest["sha256"].astype(str)
    if "group" in manifest:
        group = manifest["group"].fillna("").astype(str)
        grouped = group != ""
        smallest = keys[grouped].groupby(group[grouped]).transform("min")
        keys = keys.where(~grouped, smallest)
    return pd.Series(keys.to_numpy(), index=manifest["id"].astype(str).to_numpy())


def buckets(keys: pd.Series | list[str], *, seed: int) -> np.ndarray:
    """float64 (N,) in [0, 1): the hash bucket of each key under `seed`."""
    prefix = f"{seed}:".encode()
    return np.array(
        [
            int.from_bytes(hashlib.sha256(prefix + str(k).encode()).digest()[:8], "big") / 2.0**64
            for k in keys
        ],
        dtype=np.float64,
    )


def hash_split(
    keys: pd.Series | list[str], *, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """str (N,) train/val/test of each key: test below `test_fraction`, then val, then train.

    The test split depends on `test_fraction` and `seed` only (never on `val_fraction`)."""
    u = buckets(keys, seed=seed)
    rest = np.where(u < test_fraction + val_fraction, "val", "train")
    split = np.where(u < test_fraction, "test", rest)
    return split.astype(str)


def class_shares(
    counts: pd.DataFrame, *, fractions: dict[str, float], sigmas: float
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per class: its share of each split's target fraction and the largest z-score.

    Args:
        counts: K x S counts (classes x splits).
        fractions: the target share of each split (sums to 1).
        sigmas: warn when a class's share is further than this many binomial standard errors
            from the target (only classes of >= 10 images: smaller ones are warned about as such).

    Returns:
        per class {n, train, val, test (shares), max_z}; warnings.
    """
    out, notes = {}, []
    for c, row in counts.iterrows():
        n = int(row.sum())
        shares = {s: round(float(row[s] / n), 4) if n else 0.0 for s in SPLITS}
        z = max(
            abs(row[s] / n - f) / np.sqrt(f * (1 - f) / n) if n and 0 < f < 1 else 0.0
            for s, f in fractions.items()
        )
        out[str(c)] = {"n": n, **shares, "max_z": round(float(z), 2)}
        missing = [s for s in SPLITS if row[s] == 0]
        if n and missing and (n < 10 or "train" in missing):
            notes.append(f"class {c!r} has {n} image(s): none in {'/'.join(missing)} (hash split)")
        elif n >= 10 and z > sigmas:
            notes.append(
                f"class {c!r}: split shares {shares} are {z:.1f} standard errors from the targets "
                f"(split.tolerance_sigmas={sigmas})"
            )
    return out, notes


def compare_with_previous(current: pd.DataFrame, previous: pd.DataFrame | None) -> dict[str, Any]:
    """Against the previous run's split table (`id,split`; None on a first run): surviving images
    that changed split (must be 0), new images per split, removed images."""
    if previous is None:
        return {"previous": False, "n_new": len(current), "moved": 0}
    before = previous.set_index("id")["split"]
    now = current.set_index("id")["split"]
    common = now.index.intersection(before.index)
    moved = now[common] != before[common]
    new = now[~now.index.isin(before.index)]
    transitions = (before[common][moved] + "->" + now[common][moved]).value_counts()
    return {
        "previous": True,
        "n_previous": len(before),
        "n_surviving": len(common),
        "moved": int(moved.sum()),
        "moved_by": {k: int(v) for k, v in transitions.items()},
        "moved_ids": sorted(common[moved.to_numpy()].tolist())[:20],
        "n_new": len(new),
        "new_per_split": {s: int((new == s).sum()) for s in SPLITS},
        "n_removed": int((~before.index.isin(now.index)).sum()),
        "previous_test_surviving": int((was_test := before[common] == "test").sum()),
        "previous_test_still_test": int((was_test & (now[common] == "test")).sum()),
    }


def split_metrics(
    counts: pd.DataFrame, notes: list[str], *, shares: dict[str, Any], history: dict[str, Any]
) -> dict[str, Any]:
    """metrics/split.json from the K x S counts, the warnings, `class_shares` and
    `compare_with_previous`."""
    n = int(counts.to_numpy().sum())
    return {
        "n": n,
        **{f"n_{s}": int(counts[s].sum()) for s in SPLITS},
        "fractions": {s: round(float(counts[s].sum() / n), 4) if n else 0.0 for s in SPLITS},
        "max_class_z": max((v["max_z"] for v in shares.values()), default=0.0),
        "per_class": counts.to_dict(orient="index"),
        "per_class_shares": shares,
        "against_previous": history,
        "warnings": notes,
    }
