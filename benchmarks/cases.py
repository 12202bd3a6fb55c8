"""Real-size generated image sources for benchmarks and tests (issue 13).

`make_case(name, out_dir)` writes what `ingest` reads, like the demo does (tasks/demo.py):
- `images/<folder>/<n>.png`: digits of scikit-learn's set redrawn at the case's size with a random
  affine (rotation, scale, shear, shift), stroke width, ink and background level (colour and
  texture for RGB), blur and pixel noise, so a linear model on pixels stays well below 99%; class k
  keeps `fractions[k]` of `per_class` images (a long tail); plus broken files
  (`edge_pipeline.quality.demo_flaws.CORRUPT_KINDS`);
- `annotations.csv` (`image,annotator,label`): every file rated by three SIMULATED noisy
  annotators (`demo_flaws.simulate_labels`);
- `truth.csv` (`image,label,flaw`): the true class and the injected flaw of every file.

Cases (`CASES`): `gray28` (3,700 images of 28x28x1) and `rgb96` (2,080 images of 96x96x3).
Seeded and deterministic: the same case and seed give the same bytes.
Run: `python -m benchmarks.cases gray28 /tmp/gray28`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from edge_pipeline.config.quality import Annotator
from edge_pipeline.quality.demo_flaws import (
    corrupt_bytes,
    majority_vote,
    png_bytes,
    simulate_labels,
)

K = 10
# Long tail: the shape of the demo's class_fractions, two classes at ~6% of the largest.
FRACTIONS = (1.0, 0.92, 0.85, 0.78, 0.7, 0.06, 0.62, 0.55, 0.48, 0.06)
ANNOTATORS = {
    "careful": Annotator(accuracy=0.95),
    "noisy": Annotator(accuracy=0.72),
    "confuser": Annotator(
        accuracy=0.93, confusions={3: 8, 8: 3, 1: 7, 7: 1, 4: 9}, confusion_rate=0.45
    ),
}
CORRUPT = {"zero_byte": 2, "truncated": 2, "not_image": 2, "bomb": 1, "duplicate_conflict": 2}


@dataclass(frozen=True)
class Case:
    """A generated source: `per_class` images before the long tail, `size` px, C `channels`."""

    size: int
    channels: int
    per_class: int
    seed: int = 13
    fractions: tuple[float, ...] = FRACTIONS
    corrupt: dict[str, int] = field(default_factory=lambda: dict(CORRUPT))
    bomb_side: int = 20000

    @property
    def counts(self) -> list[int]:
        """Images per class 0..K-1 (before the broken files)."""
        return [max(3, round(f * self.per_class)) for f in self.fractions]


CASES: dict[str, Case] = {
    "gray28": Case(size=28, channels=1, per_class=620),  # 3,700 images
    "rgb96": Case(size=96, channels=3, per_class=348),  # 2,080 images
}


def _texture(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """float (size, size, C) background in 0..1: a level, a linear gradient, low-frequency blobs."""
    level = rng.uniform(0.0, 0.55, size=channels)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-0.3, 0.3, channels)
    coarse = rng.random((4, 4, channels))
    blobs = np.stack(
        [
            np.asarray(
                Image.fromarray((coarse[..., c] * 255).astype(np.uint8)).resize(
                    (size, size), Image.Resampling.BICUBIC
                ),
                dtype=np.float64,
            )
            / 255.0
            for c in range(channels)
        ],
        axis=-1,
    )
    return np.clip(level + grad + rng.uniform(0, 0.3) * (blobs - 0.5), 0, 1)


def render(digit: np.ndarray, rng: np.random.Generator, *, size: int, channels: int) -> np.ndarray:
    """uint8 (size, size) or (size, size, 3) image of a (8, 8) 0..16 digit, randomly redrawn."""
    big = size * 2  # draw at twice the size, then downsample (anti-aliasing)
    glyph = Image.fromarray(np.rint(digit * (255 / 16)).astype(np.uint8)).resize(
        (big, big), Image.Resampling.BICUBIC
    )
    # Stroke width: dilate (MaxFilter) or erode (MinFilter) the upscaled glyph.
    width = rng.integers(-1, 3)
    if width:
        f = ImageFilter.MaxFilter if width > 0 else ImageFilter.MinFilter
        glyph = glyph.filter(f(2 * abs(int(width)) * (big // 32) + 1))
    # Inverse affine (output -> input), around the centre.
    angle = np.deg2rad(rng.uniform(-18, 18))
    scale = rng.uniform(0.7, 1.1)
    shear = rng.uniform(-0.25, 0.25)
    shift = rng.uniform(-0.12, 0.12, size=2) * big
    a = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    a = a @ np.array([[1, shear], [0, 1]]) / scale
    c = np.array([big / 2, big / 2])
    offset = c - a @ (c + shift)
    glyph = glyph.transform(
        (big, big),
        Image.Transform.AFFINE,
        (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1]),
        resample=Image.Resampling.BILINEAR,
    )
    glyph = glyph.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.5:
        glyph = glyph.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8) * size / 28))
    ink = np.asarray(glyph, dtype=np.float64)[..., None] / 255.0  # (size, size, 1) coverage
    background = _texture(rng, size, channels)
    # Ink at least 0.35 brighter than the ground's mean (per channel for RGB: a colour).
    colour = np.clip(background.mean((0, 1)) + rng.uniform(0.35, 0.8, size=channels), 0, 1)
    pixels = background * (1 - ink) + colour * ink
    if rng.random() < 0.25:  # dark ink on a light ground
        pixels = 1 - pixels
    pixels += rng.normal(0, rng.uniform(0.02, 0.08), pixels.shape)
    out = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def _encode(pixels: np.ndarray) -> bytes:
    if pixels.ndim == 2:
        return png_bytes(pixels, "L")
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def render_set(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The case's clean images uint8 (N, H, W[, 3]) and int64 (N,) classes (no files written)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(case.seed)
    images, labels = [], []
    for k, n in enumerate(case.counts):
        pool = np.flatnonzero(digits.target == k)
        for i in rng.choice(pool, size=n, replace=n > len(pool)):
            images.append(render(digits.images[i], rng, size=case.size, channels=case.channels))
            labels.append(k)
    return np.stack(images), np.array(labels, dtype=np.int64)


def make_case(name: str, out_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """Write case `name` (a `CASES` key; `overrides` replace its fields) into `out_dir`.

    Returns: images, per_class, corrupt_files, consensus_noise_rate (share of clean images whose
    annotators' majority is wrong), size and channels.
    """
    case = Case(**{**CASES[name].__dict__, **overrides})
    x, y = render_set(case)
    rng = np.random.default_rng(case.seed + 1)
    files: dict[str, bytes] = {}
    rows: list[tuple[str, int, str, int]] = []  # image, true class, flaw, folder
    for i, (img, k) in enumerate(zip(x, y, strict=True)):
        name_i = f"images/{k}/{i:05d}.png"
        files[name_i] = _encode(img)
        rows.append((name_i, int(k), "", int(k)))
    n_good = len(rows)
    serial = iter(range(n_good, 10**6))
    for kind, count in case.corrupt.items():
        for _ in range(count):
            src, k, _, _ = rows[int(rng.integers(n_good))]
            folder = k
            if kind == "duplicate_conflict":  # a byte copy filed (and labelled) as another class
                data, folder = files[src], (k + int(rng.integers(1, K))) % K
            else:
                data = corrupt_bytes(kind, image=files[src], bomb_side=case.bomb_side)
            path = f"images/{folder}/{next(serial):05d}.png"
            files[path] = data
            rows.append((path, k, kind, folder))

    true = np.array([r[1] for r in rows])
    shown = np.array([r[3] for r in rows])
    names = list(ANNOTATORS)
    given = np.stack(
        [simulate_labels(shown, ANNOTATORS[a], rng, n_classes=K) for a in names], axis=1
    )
    votes = np.zeros((len(rows), K), dtype=np.int64)
    for j in range(len(names)):
        np.add.at(votes, (np.arange(len(rows)), given[:, j]), 1)
    noisy = (majority_vote(votes) != true) & (np.arange(len(rows)) < n_good)
    out = Path(out_dir)
    for k in range(K):
        (out / "images" / str(k)).mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        (out / path).write_bytes(data)
    image_col = np.array([r[0] for r in rows])
    pd.DataFrame(
        {
            "image": np.repeat(image_col, len(names)),
            "annotator": np.tile(names, len(rows)),
            "label": given.reshape(-1),
        }
    ).to_csv(out / "annotations.csv", index=False)
    pd.DataFrame(
        {
            "image": image_col,
            "label": true,
            "flaw": np.where(noisy, "label_noise", [r[2] for r in rows]),
        }
    ).to_csv(out / "truth.csv", index=False)
    return {
        "images": n_good,
        "per_class": case.counts,
        "corrupt_files": len(rows) - n_good,
        "consensus_noise_rate": round(float(noisy.sum() / n_good), 4),
        "size": case.size,
        "channels": case.channels,
    }


def linear_probe(name: str, **overrides: Any) -> float:
    """Test accuracy of a logistic regression on the raw pixels of case `name` (hardness check)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    case = Case(**{**CASES[name].__dict__, **overrides})
    x, y = render_set(case)
    x = x.reshape(len(x), -1) / 255.0
    xa, xb, ya, yb = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    return float(LogisticRegression(max_iter=300).fit(xa, ya).score(xb, yb))


def hold_back_night2(
    repo: Path, case: str, hold: Path, *, n_new: int, new_classes: int, seed: int = 0
) -> Callable[[], None]:
    """Move `n_new` images of `new_classes` random classes of case `case` (inside `repo`) and
    their label rows out to `hold`, so that the data stages see night 1; returns the call that
    brings them back (night 2: the whole case)."""
    import shutil

    src = repo / "cases" / case
    truth = pd.read_csv(src / "truth.csv")
    annotations = pd.read_csv(src / "annotations.csv")
    rng = np.random.default_rng(seed)
    good = truth[truth["flaw"] != "label_noise"]  # any image of the chosen classes
    counts = good["label"].value_counts()
    classes = rng.choice(counts.index[counts >= 100], size=new_classes, replace=False)
    pool = good[good["label"].isin(classes)]["image"].to_numpy()
    later = set(rng.choice(pool, size=min(n_new, len(pool)), replace=False))
    for name in later:
        (hold / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src / name, hold / name)
    annotations[~annotations["image"].isin(later)].to_csv(src / "annotations.csv", index=False)
    truth[~truth["image"].isin(later)].to_csv(src / "truth.csv", index=False)
    print(f"night 2 brings {len(later)} images of classes {sorted(map(int, classes))}", flush=True)

    def bring_back() -> None:
        shutil.copytree(hold, src, dirs_exist_ok=True)
        annotations.to_csv(src / "annotations.csv", index=False)
        truth.to_csv(src / "truth.csv", index=False)

    return bring_back


if __name__ == "__main__":
    print(make_case(sys.argv[1], sys.argv[2]))
