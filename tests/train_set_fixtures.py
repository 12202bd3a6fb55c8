"""Edits of a prepared workspace's resampled train set (data/resample/train.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def add_synthetic_rows(root: Path, n: int) -> int:
    """Append n synthetic rows (mirrored copies of the first n real images, their labels), as the
    resample stage stores them (row -1, pixels in x_synthetic); returns the new row count."""
    path = root / "data" / "resample" / "train.npz"
    z = dict(np.load(path))
    z["x_synthetic"] = np.load(root / "data" / "ingest" / "images.npy")[z["rows"][:n]][:, ::-1]
    z["rows"] = np.concatenate([z["rows"], np.full(n, -1)])
    z["y"] = np.concatenate([z["y"], z["y"][:n]])
    z["synthetic"] = np.concatenate([z["synthetic"], np.ones(n, bool)])
    z["ids"] = np.concatenate([z["ids"], np.full(n, "")])
    np.savez(path, **z)
    return len(z["y"])
