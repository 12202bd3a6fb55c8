"""Nights of the demo: what arrives after night 1 (`demo.night` >= 2), and `make night`.

Night n = night 1's files + the batches of nights 2..n (a prefix: night 3 holds night 2's files
and rows unchanged). Each batch adds about `night_fraction` of each class's night-1 images, drawn
from the digits night 1 left unused (a class with none left does not grow), rated like night 1.
Each night n also brings the reviewers' results: the simulated expert `demo.reviewer` labels
`share` of the good images of nights < n that have no majority vote (what agreement's relabel
queue holds under its defaults) and were not reviewed yet, written as the Label Studio JSON export
`reviews.json` (cumulative, as a project export is). Shapes: B new files per night, K classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from edge_pipeline.config.quality import Annotator, Demo
from edge_pipeline.quality.demo_flaws import majority_vote, simulate_labels, simulate_ratings

LS_PREFIX = "/data/local-files/?d=data/demo/"  # image URL in the export (informational)


def no_majority(votes: np.ndarray) -> np.ndarray:
    """bool (M,) items whose top class has at most half of the votes of int (M, K) `votes`."""
    return votes.max(axis=1) * 2 <= votes.sum(axis=1)


def nightly_batches(
    cfg: Demo,
    *,
    target: np.ndarray,
    spares: list[int],
    night1: pd.DataFrame,
    png: Callable[[int, str], bytes],
    n_classes: int,
) -> dict[str, Any]:
    """The files, truth and annotation rows of nights 2..`cfg.night`, and the reviews export.

    Args:
        target: int (D,) true class of every digit; spares: digit indices night 1 left unused.
        night1: night 1's good images (image, label, votes: int (K,) vote counts per image).
        png: (digit index, PNG mode) -> the encoded image, as night 1 writes it.

    Returns:
        {"files": name -> bytes, "truth": image,label,flaw rows, "annotations": image,annotator,
         label rows, "reviews": the Label Studio export (list of tasks), "metrics": per night}.
    """
    names, modes = list(cfg.annotators), list(cfg.modes)
    weights = np.array([cfg.modes[m] for m in modes], dtype=float)
    pool = np.random.default_rng([cfg.seed, 0])
    left = {k: pool.permutation([i for i in spares if target[i] == k]) for k in range(n_classes)}
    per_night = {
        k: round(cfg.night_fraction * int((night1["label"] == k).sum())) for k in range(n_classes)
    }
    files: dict[str, bytes] = {}
    truth, ann, tasks, stats = [], [], [], []
    images, votes = list(night1["image"]), list(night1["votes"])
    labels = list(night1["label"])
    reviewed: set[str] = set()
    expert = Annotator(accuracy=cfg.reviewer.accuracy)
    for night in range(2, cfg.night + 1):
        rng = np.random.default_rng([cfg.seed, night])
        # The reviewers answer (part of) the queue the previous nights left.
        open_ = no_majority(np.array(votes)) & ~np.isin(images, list(reviewed))
        queue = np.flatnonzero(open_).tolist()
        pick = sorted(rng.choice(queue, size=round(cfg.reviewer.share * len(queue)), replace=False))
        said = simulate_labels(np.array([labels[i] for i in pick], dtype=np.int64), expert, rng,
                               n_classes=n_classes) if pick else []  # fmt: skip
        for i, label in zip(pick, said, strict=True):
            tasks.append(export_task(len(tasks) + 1, images[i], str(label), cfg, night=night))
            reviewed.add(images[i])
        # The new batch of images and their ratings.
        idx = np.concatenate([
            left[k][(night - 2) * n : (night - 1) * n] for k, n in per_night.items()
        ]).astype(np.int64)  # fmt: skip
        mode = rng.choice(modes, size=len(idx), p=weights / weights.sum())
        batch = [f"images/{target[i]}/{i:04d}.png" for i in idx]
        for i, m, name in zip(idx, mode, batch, strict=True):
            files[name] = png(int(i), str(m))
        assigned, given = simulate_ratings(target[idx], cfg, rng, n_classes=n_classes)
        item, rater = np.nonzero(assigned)
        counts = np.zeros((len(idx), n_classes), dtype=np.int64)
        np.add.at(counts, (item, given[item, rater]), 1)
        noisy = majority_vote(counts) != target[idx]
        truth.append(pd.DataFrame({"image": batch, "label": target[idx],
                                   "flaw": np.where(noisy, "label_noise", "")}))  # fmt: skip
        rows = {"image": np.array(batch)[item], "annotator": np.array(names)[rater]}
        ann.append(pd.DataFrame({**rows, "label": given[item, rater]}))
        images += batch
        votes += list(counts)
        labels += target[idx].tolist()
        stats.append({"night": night, "new_images": len(idx), "reviewed": len(pick),
                      "queue_before_review": len(queue)})  # fmt: skip
    return {
        "files": files,
        "truth": pd.concat(truth, ignore_index=True),
        "annotations": pd.concat(ann, ignore_index=True),
        "reviews": tasks,
        "metrics": stats,
    }


def export_task(task_id: int, image: str, label: str, cfg: Demo, *, night: int) -> dict[str, Any]:
    """One task of Label Studio's JSON export, reviewed by `cfg.reviewer` on `night`."""
    stamp = f"2024-01-{night:02d}T06:00:00.000000Z"
    region = {"id": f"r{task_id}", "from_name": "label", "to_name": "image", "type": "choices",
              "origin": "manual", "value": {"choices": [label]}}  # fmt: skip
    annotation = {
        "id": task_id, "completed_by": {"id": 1, "email": cfg.reviewer.name, "first_name": "",
                                        "last_name": ""},
        "result": [region], "was_cancelled": False, "ground_truth": False, "created_at": stamp,
        "updated_at": stamp, "lead_time": 3.2, "task": task_id, "project": 1,
    }  # fmt: skip
    return {
        "id": task_id,
        "data": {"image": LS_PREFIX + quote(image), "item_id": image},
        "annotations": [annotation],
        "predictions": [],
        "project": 1,
        "created_at": stamp,
        "updated_at": stamp,
    }


NIGHT_LINE = re.compile(r"^(demo:.*?\n(?:[ #].*\n|\n)*?  night: *)(\d+)", re.MULTILINE)


def advance_night(params: str | Path = "params.yaml") -> int:
    """Raise `demo.night` in `params` by one, comments and layout kept; returns the new night."""
    path = Path(params)
    text = path.read_text()
    m = NIGHT_LINE.search(text)
    if m is None:
        raise ValueError(f"{path}: no `night:` key in the demo section")
    night = int(m.group(2)) + 1
    path.write_text(text[: m.start(2)] + str(night) + text[m.end(2) :])
    return night


if __name__ == "__main__":  # `make night`
    print(f"demo.night: {advance_night()}")
