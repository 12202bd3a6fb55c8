"""Warm start of the teacher (`train.init`) and what a run stores so the next night can start
from it (edge_pipeline/core/lineage.py finds the run).

A run that starts from a model (`champion` or `previous`):
- loads the source run's `warm_start/teacher.pt`; its arch, channels and image size must match
  tonight's, else the run starts from scratch with a warning;
- maps the classifier head by class name: a class the old model knew keeps its row (weights and
  bias), a new class gets a freshly initialised row (nn.Linear's default init), and the row of a
  class that is gone is dropped (that class can no longer be predicted; logged);
- fine-tunes for `train.warm.epochs` at `train.warm.lr`, with the EWC penalty when
  `train.ewc.strength` > 0 and the source stored a Fisher, on the images of `train.data_window`
  (plus the replay buffer).
Every train run logs `warm_start/`: teacher.pt, meta.json (classes, night), first_seen.csv
(id,night) and, with EWC on, fisher.pt (name -> diagonal Fisher). Shapes: K classes, D features.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from edge_pipeline.artifacts.catalog import META, TEACHER_STATE
from edge_pipeline.config.teacher import Train
from edge_pipeline.core.io import read_json
from edge_pipeline.core.lineage import (
    WARM_DIR,
    WARM_TAG,
    Scratch,
    Source,
    download,
    find_source,
    start_record,
    start_tags,
    unrelated,
)
from edge_pipeline.teacher import ewc, replay

FISHER = "fisher.pt"  # name -> float32 diagonal Fisher, in WARM_DIR
FIRST_SEEN = "first_seen.csv"  # id,night of every real image the lineage has seen, in WARM_DIR
log = logging.getLogger("tasks.train")


def head_key(state: dict[str, torch.Tensor]) -> str:
    """The classifier's weight key (the last 2-D weight: `net.fc.weight`, `net.classifier.1...`)."""
    return [k for k, v in state.items() if k.endswith(".weight") and v.ndim == 2][-1]


def remap_head(
    state: dict[str, torch.Tensor], old: list[str], new: list[str], *, fill: nn.Linear | None
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """The state with its head rows reordered from classes `old` to `new` (by name).

    A new class's row comes from `fill` (a fresh nn.Linear(D, len(new))), or zeros when None
    (Fisher: a new row is free to move). Returns (state, {"kept", "added", "removed"}).
    """
    key = head_key(state)
    bias = key.removesuffix("weight") + "bias"
    out = dict(state)
    for k in (key, bias):
        if k not in state:
            continue
        fresh = getattr(fill, k.rsplit(".", 1)[1]).detach() if fill is not None else None
        rows = (
            fresh.clone()
            if fresh is not None
            else state[k].new_zeros((len(new), *state[k].shape[1:]))
        )
        for i, c in enumerate(new):
            if c in old:
                rows[i] = state[k][old.index(c)]
        out[k] = rows
    change = {
        "kept": [c for c in new if c in old],
        "added": [c for c in new if c not in old],
        "removed": [c for c in old if c not in new],
    }
    return out, change


@dataclass
class StartModel:
    """A loaded source: its state (head remapped to tonight's classes) and what it stored."""

    source: Source
    state: dict[str, torch.Tensor]
    night: int  # the source's night
    classes: dict[str, list[str]]  # kept / added / removed
    fisher: dict[str, torch.Tensor] | None = None
    first_seen: pd.DataFrame | None = None


def _compatible(p: Train, meta: dict[str, Any], shape: tuple[int, int, int]) -> str:
    h, w, c = shape
    theirs = (meta.get("arch"), meta.get("in_channels"), list(meta.get("image_size", [])))
    if theirs != (p.arch, c, [h, w]):
        return f"it is {theirs}, tonight is {(p.arch, c, [h, w])}"
    return ""


def load_start(p: Train, *, classes: list[str], image_shape: tuple[int, int, int],
               model_name: str) -> StartModel | Scratch:  # fmt: skip
    """The model `p.init` names, remapped to `classes` (K); a Scratch (why) = from scratch (logged).

    image_shape: (H, W, C) of tonight's images. Call inside `fit.deterministic(seed)`: new head
    rows are drawn from torch's seeded generator.
    """
    source = find_source("train", p.init, model_name=model_name, refresh_every=p.warm.refresh_every)
    if not source:
        return source
    with tempfile.TemporaryDirectory() as tmp:
        folder = download(source, Path(tmp))
        meta = read_json(folder / META)
        if why := _compatible(p, meta, image_shape) or unrelated(meta["classes"], classes):
            log.warning("train.init=%s: %s (run %s) cannot be loaded (%s): scratch", p.init,
                        source.how, source.run_id, why)  # fmt: skip
            return Scratch(f"{source.how} does not fit: {why}")
        state = torch.load(folder / TEACHER_STATE, map_location="cpu", weights_only=True)
        fisher = (torch.load(folder / FISHER, map_location="cpu", weights_only=True)
                  if (folder / FISHER).exists() else None)  # fmt: skip
        first_seen = (pd.read_csv(folder / FIRST_SEEN, dtype={"id": str}, keep_default_na=False)
                      if (folder / FIRST_SEEN).exists() else None)  # fmt: skip
    old = [str(c) for c in meta["classes"]]
    head = state[head_key(state)]
    state, change = remap_head(state, old, classes, fill=nn.Linear(head.shape[1], len(classes)))
    if fisher is not None:
        fisher, _ = remap_head(fisher, old, classes, fill=None)
    if change["added"] or change["removed"]:
        log.warning("classes changed since %s: added %s (new head rows), removed %s (rows "
                    "dropped: no longer predicted)", source.how, change["added"],
                    change["removed"])  # fmt: skip
    log.info("train.init=%s: starting from %s (run %s, night %s); fine-tuning for train.warm "
             "(%d epochs at lr %g; train.epochs and train.lr are for scratch nights)", p.init,
             source.how, source.run_id, meta.get("night", 1), p.warm.epochs, p.warm.lr)  # fmt: skip
    return StartModel(source, state, int(meta.get("night", 1)), change, fisher, first_seen)


@dataclass
class WarmPlan:
    """Tonight's start model (or why scratch), night, first_seen table and train rows."""

    start: StartModel | Scratch  # a Scratch (false) says why there is no start model
    night: int
    first_seen: pd.DataFrame
    rows: np.ndarray  # indices of the resampled train rows this run fits on
    window: dict[str, Any] = field(default_factory=dict)

    def penalty(self, p: Train) -> Any:
        """The EWC loss term, or None (off, scratch, or a source without a Fisher)."""
        if not p.ewc.strength or not self.start:
            return None
        if self.start.fisher is None:
            log.warning("train.ewc.strength=%g but %s stored no Fisher: no EWC penalty tonight",
                        p.ewc.strength, self.start.source.how)  # fmt: skip
            return None
        return ewc.ewc_penalty(self.start.state, self.start.fisher, strength=p.ewc.strength)

    def fit_sets(self, d: dict[str, Any]) -> dict[str, Any]:
        """`d` with its train set cut to `rows` (the same dict when every row is kept)."""
        if len(self.rows) == len(d["y_train"]):
            return d
        cut = {k: d[k][self.rows] for k in ("x_train", "y_train", "synthetic")}
        return d | cut

    def meta(self, run_id: str) -> dict[str, Any]:
        """meta.json fields: the night, where the weights started, the run that wrote them."""
        s = self.start
        return {
            "night": self.night, **start_record(s and s.source, run_id),
            "classes_changed": s.classes if s else None, "data_window": self.window,
        }  # fmt: skip

    def tags(self) -> dict[str, str]:
        return start_tags(self.start and self.start.source)


def plan(
    p: Train, d: dict[str, Any], start: StartModel | Scratch, *, train_ids: np.ndarray
) -> WarmPlan:
    """Tonight's night (the source's + 1, or 1), first_seen and the rows `p.data_window` keeps.

    train_ids: str (N,) ids of the resampled train rows ('' = synthetic).
    """
    night = start.night + 1 if start else 1
    first_seen = replay.update_first_seen(start.first_seen if start else None, train_ids,
                                          night=night)  # fmt: skip
    rows, window = replay.select_rows(p, train_ids, d["y_train"], first_seen, night=night)
    return WarmPlan(start, night, first_seen, rows, window)


def log_start_model(mlflow: Any, p: Train, data_dir: Path, plan: WarmPlan, model: nn.Module,
                    fit: dict[str, Any], *, device: torch.device) -> None:  # fmt: skip
    """Log `WARM_DIR` (teacher.pt, meta.json, first_seen.csv, fisher.pt with EWC on) to the
    active run and tag it, so a later night can start from it. `fit`: the fit sets of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plan.first_seen.to_csv(folder / FIRST_SEEN, index=False)
        if p.ewc.strength > 0:
            real = np.flatnonzero(~fit["synthetic"])
            pick = real[ewc.stratified_sample(fit["y_train"][real], p.ewc.samples, seed=p.seed)]
            fisher = ewc.fisher_diagonal(model, fit["x_train"][pick], fit["y_train"][pick],
                                         device=device)  # fmt: skip
            torch.save(fisher, folder / FISHER)
            model.cpu()
        mlflow.log_artifacts(str(folder), WARM_DIR)
    for name in (TEACHER_STATE, META):
        mlflow.log_artifact(str(data_dir / name), WARM_DIR)
    mlflow.set_tag(WARM_TAG, "true")
