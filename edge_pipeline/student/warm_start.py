"""Warm start of the student (`distill.init`) and what a distill run stores for the next night.

`champion` takes the student of the run the registry's champion came from (version tag
`distill_run_id`, edge_pipeline/core/lineage.py), `previous` the last finished distill run.
Its `warm_start/student.keras` gives the initial weights of tonight's student and baseline, layer
by layer by name; the `logits` layer is mapped by class name as the teacher's head is
(edge_pipeline/teacher/warm_start.py: a kept class keeps its column, a new class gets the fresh
initial column, a removed class's column is dropped). A different architecture (any
`student_config` key but `n_classes`) starts from scratch with a warning. A warm-started pair
trains for `distill.warm.epochs` at `distill.warm.lr`. Shapes: D head features, K classes.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_pipeline.artifacts.catalog import META, STUDENT
from edge_pipeline.config.student import Distill
from edge_pipeline.core.io import read_json
from edge_pipeline.core.lineage import (
    WARM_DIR,
    WARM_TAG,
    Scratch,
    Source,
    download,
    find_source,
    unrelated,
)

log = logging.getLogger("tasks.distill")
HEAD = "logits"  # name of the student's classifier layer (edge_pipeline/student/model.py)


def remap_columns(
    old: list[np.ndarray], fresh: list[np.ndarray], old_classes: list[str], classes: list[str]
) -> list[np.ndarray]:
    """[kernel (D, K), bias (K,)] of the head for `classes`: old columns by class name, the
    fresh initial ones for new classes."""
    out = [f.copy() for f in fresh]
    for i, c in enumerate(classes):
        if c in old_classes:
            j = old_classes.index(c)
            out[0][:, i], out[1][i] = old[0][:, j], old[1][j]
    return out


def initial_weights(
    model: Any, source_model: Any, *, old_classes: list[str], classes: list[str]
) -> list[np.ndarray]:
    """`model.get_weights()` with every layer of `source_model` of the same name and shapes
    copied in, and the head remapped by class (`remap_columns`)."""
    theirs = {layer.name: layer for layer in source_model.layers}
    for layer in model.layers:
        src = theirs.get(layer.name)
        if src is None or not layer.weights:
            continue
        if layer.name == HEAD:
            layer.set_weights(remap_columns(src.get_weights(), layer.get_weights(),
                                            old_classes, classes))  # fmt: skip
        elif [w.shape for w in src.get_weights()] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(src.get_weights())
    return model.get_weights()


def load_start(
    p: Distill, config: dict[str, Any], classes: list[str], *, model_name: str
) -> tuple[list[np.ndarray] | None, Source | Scratch]:
    """(initial weights for `build_student(**config)`, source) of `p.init`; (None, Scratch(why)) =
    scratch (no source yet, a refresh, or another architecture; logged)."""
    import tf_keras

    from edge_pipeline.student.model import build_student, same_architecture

    source = find_source(
        "distill", p.init, model_name=model_name, refresh_every=p.warm.refresh_every
    )
    if not source:
        return None, source
    with tempfile.TemporaryDirectory() as tmp:
        folder = download(source, Path(tmp))
        meta = read_json(folder / META)
        same = same_architecture(meta["student_config"], config)
        why = "it has another architecture" if not same else unrelated(meta["classes"], classes)
        if why:
            log.warning("distill.init=%s: %s (run %s) cannot be loaded (%s): scratch",
                        p.init, source.how, source.run_id, why)  # fmt: skip
            return None, Scratch(f"{source.how} does not fit: {why}")
        old = tf_keras.models.load_model(folder / STUDENT, compile=False)
    old_classes = [str(c) for c in meta["classes"]]
    weights = initial_weights(build_student(**config), old, old_classes=old_classes,
                              classes=classes)  # fmt: skip
    added = [c for c in classes if c not in old_classes]
    removed = [c for c in old_classes if c not in classes]
    if added or removed:
        log.warning("classes changed since %s: added %s, removed %s (columns dropped)",
                    source.how, added, removed)  # fmt: skip
    log.info("distill.init=%s: starting from %s (run %s); fine-tuning for distill.warm (%d epochs "
             "at lr %g; distill.epochs and distill.lr are for scratch nights)", p.init, source.how,
             source.run_id, p.warm.epochs, p.warm.lr)  # fmt: skip
    return weights, source


def log_start_model(mlflow: Any, data_dir: Path) -> None:
    """Log data/distill's student.keras and meta.json as `WARM_DIR` of the active run, tagged."""
    for name in (STUDENT, META):
        mlflow.log_artifact(str(data_dir / name), WARM_DIR)
    mlflow.set_tag(WARM_TAG, "true")
