"""The embedded demo data set: scikit-learn's handwritten digits with realistic flaws whose truth
is kept (the demo stage's generator; contract of `data/demo/` in docs/architecture.md).

Deterministic from `params.yaml[demo]`:
- `images/<true class>/<digits index>.png`: the 8x8 digits (0..16) scaled to 0..255 and upscaled to
  `image_size`; class k keeps `class_fractions[k]` of its images (a long tail); mostly mode L PNGs,
  some RGB, RGBA, P and I;16 (same gray values); plus the broken files of `corrupt`.
- `annotations.csv` (`image,annotator,label`): labels from SIMULATED annotators of different
  reliability, `ratings_per_image` random annotators per file, plus `bad_rows` ingest must reject.
- `truth.csv` (`image,label,flaw`): every file's true class and injected flaw, for evaluation only.
- nights >= 2 (`demo.night`): the next batches of images and rows appended, and `reviews.json`, the
  reviewers' Label Studio export (edge_pipeline/quality/demo_nights.py).

`flaw` is `label_noise` where the annotators' majority vote (ties -> smallest class) is wrong.
Shapes: M files, N good images, A annotators, K = 10 classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from edge_pipeline.artifacts.catalog import SOURCE_ANNOTATIONS, SOURCE_REVIEWS, TRUTH
from edge_pipeline.config.quality import N_DIGITS as K
from edge_pipeline.config.quality import Demo
from edge_pipeline.quality.demo_flaws import (
    CORRUPT_KINDS,
    corrupt_bytes,
    majority_vote,
    png_bytes,
    simulate_ratings,
)
from edge_pipeline.quality.demo_nights import nightly_batches

BAD_PATHS = {  # annotation rows naming files ingest must not read (keys: params demo.bad_rows)
    "missing_file": "images/{k}/{n:04d}.png",
    "escapes_root": "../incoming/{n:04d}.png",
    "absolute_path": "/mnt/labels/images/{k}/{n:04d}.png",
}


def make_demo(out_dir: str | Path, cfg: Demo) -> dict[str, Any]:
    """Write the demo set into `out_dir` (created) and return its metrics.

    Args:
        out_dir: directory to create; receives `images/`, `annotations.csv` and `truth.csv`.
        cfg: `params.yaml[demo]`; e.g. `Demo(max_per_class=20)` makes a tiny set of about 100
            images that keeps every flaw.

    Returns:
        Metrics: images per class, each annotator's true accuracy, consensus noise, broken files.
    """
    rng = np.random.default_rng(cfg.seed)
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)

    def upscaled_png(i: int, mode: str = "L") -> bytes:
        im = Image.fromarray(pixels[i]).resize((cfg.image_size,) * 2, Image.Resampling.BILINEAR)
        return png_bytes(np.asarray(im), mode)

    # Long tail: class k keeps fraction_k of (at most max_per_class of) its shuffled images; the
    # rest are spares, the sources of truncated files (so those duplicate no kept image).
    chosen, spares = [], []
    for k, frac in enumerate(cfg.class_fractions):
        idx = rng.permutation(np.flatnonzero(digits.target == k))
        cap = min(len(idx), cfg.max_per_class or len(idx))
        n = min(cap, max(cfg.min_per_class, round(frac * cap)))
        chosen.extend(idx[:n])
        spares.extend(idx[n:])
    mode_names = list(cfg.modes)
    weights = np.array([cfg.modes[m] for m in mode_names], dtype=float)
    modes = rng.choice(mode_names, size=len(chosen), p=weights / weights.sum())

    files: dict[str, bytes] = {}
    rows: list[tuple[str, int, str, int]] = []  # image, true class, flaw, class folder it sits in
    for i, mode in zip(chosen, modes, strict=True):
        name = f"images/{digits.target[i]}/{i:04d}.png"
        files[name] = upscaled_png(i, str(mode))
        rows.append((name, int(digits.target[i]), "", int(digits.target[i])))
    n_good = len(rows)

    serial = iter(range(len(digits.target), 10**6))  # file numbers after the digits' own indices
    for kind in CORRUPT_KINDS:
        for _ in range(getattr(cfg.corrupt, kind)):
            if kind == "duplicate_conflict":  # a byte copy of a kept image filed as another class
                name, k, _, _ = rows[int(rng.integers(n_good))]
                data, folder = files[name], (k + int(rng.integers(1, K))) % K
            else:
                spare = spares.pop(int(rng.integers(len(spares)))) if spares else chosen[0]
                k = folder = int(digits.target[spare])
                data = corrupt_bytes(kind, image=upscaled_png(spare), bomb_side=cfg.bomb_side)
            name = f"images/{folder}/{next(serial):04d}.png"
            files[name] = data
            rows.append((name, k, kind, folder))

    # Annotators label what they see: the true class, except a misfiled duplicate, which all of
    # its annotators label as the folder it sits in.
    names = list(cfg.annotators)
    true = np.array([r[1] for r in rows])
    shown = np.array([r[3] for r in rows])
    assigned, given = simulate_ratings(shown, cfg, rng, n_classes=K)  # (M, A) each
    misfiled = shown != true
    given[misfiled] = shown[misfiled, None]

    item, rater = np.nonzero(assigned)
    votes = np.zeros((len(rows), K), dtype=np.int64)
    np.add.at(votes, (item, given[item, rater]), 1)
    noisy = (majority_vote(votes) != true) & (np.arange(len(rows)) < n_good)
    truth = pd.DataFrame(
        {
            "image": [r[0] for r in rows],
            "label": true,
            "flaw": np.where(noisy, "label_noise", [r[2] for r in rows]),
        }
    )

    ann = pd.DataFrame(
        {
            "image": truth["image"].to_numpy()[item],
            "annotator": np.array(names)[rater],
            "label": given[item, rater],
        }
    ).sort_values(["annotator", "image"], kind="stable", ignore_index=True)
    bad = [
        (BAD_PATHS[kind].format(k=k, n=next(serial)), names[int(rng.integers(len(names)))], k)
        for kind in BAD_PATHS
        for k in rng.integers(K, size=getattr(cfg.bad_rows, kind))
    ]
    at = np.concatenate([np.arange(len(ann)), rng.uniform(0, len(ann), size=len(bad))])
    ann = pd.concat([ann, pd.DataFrame(bad, columns=ann.columns)], ignore_index=True)
    ann = ann.iloc[np.argsort(at, kind="stable")]  # bad rows land mid-file, as in a real export

    nights = None
    if cfg.night > 1:  # the batches and reviews of nights 2..night (demo_nights.py)
        night1 = pd.DataFrame({"image": truth["image"][:n_good], "label": true[:n_good],
                               "votes": list(votes[:n_good])})  # fmt: skip
        nights = nightly_batches(cfg, target=digits.target, spares=spares, night1=night1,
                                 png=upscaled_png, n_classes=K)  # fmt: skip
        files.update(nights["files"])
        truth = pd.concat([truth, nights["truth"]], ignore_index=True)
        ann = pd.concat([ann, nights["annotations"]], ignore_index=True)

    out = Path(out_dir)
    for k in range(K):
        (out / "images" / str(k)).mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    ann.to_csv(out / SOURCE_ANNOTATIONS, index=False)
    truth.to_csv(out / TRUTH, index=False)
    if nights is not None:
        (out / SOURCE_REVIEWS).write_text(json.dumps(nights["reviews"], indent=1) + "\n")

    good = np.arange(len(rows)) < n_good
    per_class = np.bincount(true[good], minlength=K)
    annotators = {}
    for j, n in enumerate(names):
        mine = assigned[:, j] & good
        accuracy = float(np.mean(given[mine, j] == true[mine])) if mine.any() else float("nan")
        annotators[n] = {"ratings": int(mine.sum()), "accuracy": round(accuracy, 4)}
    return {
        "images": int(n_good),
        "per_class": {str(k): int(v) for k, v in enumerate(per_class)},
        "imbalance_ratio": round(float(per_class.max() / per_class.min()), 2),
        "annotators": annotators,
        "ratings": int(len(item)),
        "consensus_errors": int(noisy.sum()),
        "consensus_noise_rate": round(float(noisy.sum() / n_good), 4),
        "corrupt_files": int(len(rows) - n_good),
        "corrupt": cfg.corrupt.model_dump(),
        "bad_rows": len(bad),
        **({"night": cfg.night, "nights": nights["metrics"]} if nights else {}),
    }
