"""Warm start of the pruned model (`prune.init`) and what a prune run stores for the next night.

`champion` takes the pruned model of the run the registry's champion came from (version tag
`prune_run_id`, edge_pipeline/core/lineage.py), `previous` the last finished prune run. Its
`warm_start/student_pruned.keras` is tonight's starting point instead of a freshly channel-pruned
copy of tonight's student: it keeps its removed channels and its zeros, so the stage skips channel
pruning and the sparsity ramp (nothing is left to remove: the masks are held at the target from
the first step); at most `prune.warm.epochs` of recovery at `prune.warm.lr` fine-tune it on
tonight's data, distilled from tonight's teacher.

It starts from scratch instead (with a warning) when there is no source yet, when the source was
pruned from another student architecture (any `student_config` key but `channels` and
`n_classes`) or with another recipe (`Prune.recipe`), or, in `prune_student`, when the source
agrees with tonight's student on fewer test images than `prune.min_agreement`. A class added or
removed since the source keeps the old head columns by class name (student/warm_start.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from edge_pipeline.artifacts.catalog import META, STUDENT_PRUNED
from edge_pipeline.config.compression import Prune
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

log = logging.getLogger("tasks.prune")


def _same(a: Any, b: Any) -> bool:
    """Equal once both are JSON (tuples and lists alike)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def start_problem(meta: dict[str, Any], p: Prune, student_config: dict[str, Any] | None) -> str:
    """Why the source run's meta.json cannot start tonight's pruning ("" when it can)."""
    theirs = meta.get("student_config")
    if not isinstance(theirs, dict) or "classes" not in meta or "recipe" not in meta:
        return "its meta.json predates warm starts (no student_config, classes or recipe)"
    if student_config is None:
        return "tonight's data/distill/meta.json has no student_config"
    from edge_pipeline.student.model import same_architecture

    if not same_architecture(theirs, student_config, ignore=("channels",)):  # pruning thins them
        return "it was pruned from another student architecture"
    if not _same(meta["recipe"], p.recipe()):
        return f"it was pruned with another recipe ({meta['recipe']} vs {p.recipe()})"
    return ""


def load_start(
    p: Prune, student_config: dict[str, Any] | None, classes: list[str], *, model_name: str
) -> tuple[Any | None, dict[str, Any] | None, Source | Scratch]:
    """(pruned tf_keras model to fine-tune, its meta.json, source) of `p.init`; (None, None,
    Scratch(why)) = prune tonight's student from scratch (no source yet, a refresh, or it does not
    fit; logged)."""
    from edge_pipeline.compression.model_facts import load_keras
    from edge_pipeline.student.model import build_student
    from edge_pipeline.student.warm_start import initial_weights

    source = find_source("prune", p.init, model_name=model_name, refresh_every=p.warm.refresh_every)
    if not source:
        return None, None, source
    with tempfile.TemporaryDirectory() as tmp:
        folder = download(source, Path(tmp))
        meta = read_json(folder / META)
        problem = start_problem(meta, p, student_config) or unrelated(meta["classes"], classes)
        if problem:
            log.warning("prune.init=%s: %s (run %s): %s; pruning tonight's student instead",
                        p.init, source.how, source.run_id, problem)  # fmt: skip
            return None, None, Scratch(f"{source.how} does not fit: {problem}")
        old = load_keras(folder / STUDENT_PRUNED)
    config = {**meta["student_config"], "n_classes": len(classes)}
    model = build_student(**config)
    old_classes = [str(c) for c in meta["classes"]]
    model.set_weights(initial_weights(model, old, old_classes=old_classes, classes=classes))
    log.info("prune.init=%s: fine-tuning the pruned model of %s (run %s) for prune.warm (at most "
             "%d epochs at lr %g)", p.init, source.how, source.run_id, p.warm.epochs,
             p.warm.lr)  # fmt: skip
    return model, meta, source


def log_start_model(mlflow: Any, data_dir: Path) -> None:
    """Log data/prune's student_pruned.keras and meta.json as `WARM_DIR` of the active run."""
    for name in (STUDENT_PRUNED, META):
        mlflow.log_artifact(str(data_dir / name), WARM_DIR)
    mlflow.set_tag(WARM_TAG, "true")
