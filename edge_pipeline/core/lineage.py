"""Model lineage in MLflow: which train/distill/prune runs a registered version came from, and where
a warm-started run finds the model it starts from (`train.init`, `distill.init`, `prune.init`).

- A train, distill or prune run logs what a later run needs under the artifact folder `WARM_DIR`
  and tags itself `warm_start=true` (edge_pipeline/teacher/warm_start.py, edge_pipeline/student/
  warm_start.py, edge_pipeline/compression/warm_prune.py), and writes its own run id into its
  data/<stage>/meta.json (`RUN_ID_KEY`).
- register tags each new model version with `<stage>_run_id` for each of `LINEAGE_STAGES`, read
  from those meta.json files (`lineage_tags`): the version's lineage.
- `find_source(stage, "champion")` follows the `champion` alias to that tag;
  `find_source(stage, "previous")` takes the stage's latest finished run with `WARM_DIR`;
  `find_source(stage, "runs:/<id>")` takes that run (a pin: the same start model whenever the
  stage re-runs, so `dvc repro` can re-execute a recorded warm night). No file path is typed
  twice: the run id leads to the run's own artifacts.
- With `refresh_every` N, `champion` and `previous` give None (scratch) when the stage's last
  N - 1 finished runs all started from another run (`START_TAG`): at least one run in N trains
  from scratch, whether or not it is promoted. The run records a null start, so `make pin-starts`
  pins `scratch` for it.

No torch or TensorFlow here: both sides call it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_pipeline.core.errors import InputError

WARM_DIR = "warm_start"  # artifact folder of a run that a later run can start from
WARM_TAG = "warm_start"  # run tag "true" when WARM_DIR was logged
RUN_ID_KEY = "mlflow_run_id"  # key of data/<stage>/meta.json holding the run that wrote it
LINEAGE_STAGES = ("train", "distill", "prune")  # version tags <stage>_run_id
PIN_PREFIX = "runs:/"  # `init: runs:/<run id>` pins the start run (MLflow's URI scheme)
RUN_PIN = r"^runs:/[0-9a-f]{32}$"  # the pattern params.yaml's schema checks
SCRATCH = "scratch"  # the init that starts from random weights (no source run)
START_TAG = "init_from_run_id"  # run tag: the run a warm-started run started from
FLOATING = ("champion", "previous")  # inits whose start run changes from night to night
# A start model knowing fewer than this share of tonight's classes learnt another task (another
# data set registered under the same model name): a warm budget would not train its mostly new head.
MIN_KNOWN_CLASSES = 0.5
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """The run a warm start loads: `how` says why (e.g. "champion v3", "previous run")."""

    stage: str
    run_id: str
    how: str
    version: str | None = None

    def tags(self) -> dict[str, str]:
        """MLflow tags of the run that starts from this source."""
        tags = {"init_from": self.how, START_TAG: self.run_id}
        return tags | ({"init_from_version": self.version} if self.version else {})


@dataclass(frozen=True)
class Scratch:
    """No start model tonight, and why ("init: scratch", "no champion yet", "refresh due", "the
    start model does not fit: ..."). False in a boolean test, like the None it stands for."""

    why: str

    def __bool__(self) -> bool:
        return False


def start_tags(source: Source | Scratch | None) -> dict[str, str]:
    """MLflow tags of a run that starts from `source` (Scratch or None: from scratch)."""
    if source:
        return source.tags()
    return {"init_from": SCRATCH} | (
        {"scratch_why": source.why} if isinstance(source, Scratch) else {}
    )


def start_record(source: Source | Scratch | None, run_id: str) -> dict[str, str | None]:
    """meta.json fields of run `run_id` that started from `source`: `init_from` (how), `scratch_why`
    (why not warm; None when warm or not known), `START_TAG` (the source run; None: scratch, which
    `make pin-starts` pins) and `RUN_ID_KEY`."""
    return {
        "init_from": source.how if source else SCRATCH,
        "scratch_why": source.why if isinstance(source, Scratch) else None,
        START_TAG: source.run_id if source else None,
        RUN_ID_KEY: run_id,
    }


def unrelated(old: list[str], new: list[str]) -> str:
    """Why a start model trained on the classes `old` must not be fine-tuned on `new` ("" = it may):
    it knows fewer than `MIN_KNOWN_CLASSES` of them."""
    known = len(set(map(str, old)) & set(map(str, new)))
    if known < MIN_KNOWN_CLASSES * len(new):
        return f"it knows {known} of tonight's {len(new)} classes (another data set?)"
    return ""


def lineage_tags(meta_paths: dict[str, Path]) -> dict[str, str]:
    """{"<stage>_run_id": run id} from each stage's meta.json (stage -> path); a missing file or
    one without the key (written before lineage existed) is skipped with a warning: that version
    cannot be a warm start's source."""
    tags = {}
    for stage, path in meta_paths.items():
        try:
            run_id = json.loads(path.read_text()).get(RUN_ID_KEY)
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            log.warning("%s unreadable (%s): the version's %s lineage is unknown", path, e, stage)
            continue
        if run_id:
            tags[f"{stage}_run_id"] = str(run_id)
        else:
            log.warning(
                "%s has no %s: the version's %s lineage is unknown", path, RUN_ID_KEY, stage
            )
    return tags


def _champion(client: Any, stage: str, model_name: str) -> Source | Scratch:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        log.warning("no champion of %r in the registry yet (first night): %s starts from scratch",
                    model_name, stage)  # fmt: skip
        return Scratch(f"no champion of {model_name!r} yet")
    run_id = mv.tags.get(f"{stage}_run_id")
    if not run_id:
        log.warning("champion v%s of %r has no %s_run_id tag (registered before lineage): %s "
                    "starts from scratch", mv.version, model_name, stage, stage)  # fmt: skip
        return Scratch(f"champion v{mv.version} has no lineage tag")
    return Source(stage, run_id, f"champion v{mv.version}", str(mv.version))


def _latest_runs(client: Any, stage: str, *, n: int, where: str = "") -> list[Any]:
    """The `n` latest finished runs of `stage` (newest first) matching MLflow filter `where`."""
    from edge_pipeline.core.tracking import EXPERIMENT

    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    query = f"tags.stage = '{stage}' and attributes.status = 'FINISHED'"
    return client.search_runs([experiment.experiment_id], filter_string=query + where,
                              order_by=["attributes.start_time DESC"], max_results=n)  # fmt: skip


def _previous(client: Any, stage: str) -> Source | Scratch:
    runs = _latest_runs(client, stage, n=1, where=f" and tags.{WARM_TAG} = 'true'")
    if not runs:
        log.warning("no finished %s run to start from yet (first night): scratch", stage)
        return Scratch("no finished run yet")
    return Source(stage, runs[0].info.run_id, "previous run")


def _pinned(client: Any, stage: str, run_id: str) -> Source:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise InputError(
            f"{stage}.init: {PIN_PREFIX}{run_id} is not a run of this MLflow store ({e}); pin a "
            f"run it holds (`make pin-starts` reads the ids a night recorded in "
            f"data/{stage}/meta.json), or set {stage}.init to champion or scratch"
        ) from e
    if run.data.tags.get("stage") != stage or run.data.tags.get(WARM_TAG) != "true":
        raise InputError(
            f"{stage}.init: run {run_id} is a {run.data.tags.get('stage', 'untagged')} run "
            f"without {WARM_DIR}/ artifacts of a {stage} run (tags stage={stage}, "
            f"{WARM_TAG}=true); pin the {stage} run a night recorded as its mlflow_run_id or "
            "init_from_run_id"
        )
    return Source(stage, run_id, f"pinned run {run_id[:8]}")


def find_source(
    stage: str, init: str, *, model_name: str, refresh_every: int | None = None
) -> Source | Scratch:
    """The run `init` (`champion` | `previous` | `runs:/<id>`) points at for `stage`; a Scratch
    saying why when `init` is `scratch`, or, with a logged warning, when there is no such run yet
    or a refresh is due (the last `refresh_every` - 1 finished runs of `stage` were all warm). A
    pin that names no usable run raises InputError: the night asked for that start model, scratch
    would be another night."""
    if init == SCRATCH:
        return Scratch("init: scratch")
    from edge_pipeline.core.tracking import configure

    client = configure().MlflowClient()
    if init.startswith(PIN_PREFIX):
        return _pinned(client, stage, init.removeprefix(PIN_PREFIX))
    if refresh_every and _warm_streak(client, stage, limit=refresh_every - 1) == refresh_every - 1:
        log.warning("%s.init=%s: the last %d finished %s runs all fine-tuned another run; "
                    "%s.warm.refresh_every=%d: tonight trains from scratch", stage, init,
                    refresh_every - 1, stage, stage, refresh_every)  # fmt: skip
        return Scratch(f"refresh due: warm.refresh_every={refresh_every}")
    return _champion(client, stage, model_name) if init == "champion" else _previous(client, stage)


def _warm_streak(client: Any, stage: str, *, limit: int) -> int:
    """How many of the latest finished `stage` runs (at most `limit`) started from another run,
    counted back to the newest one that did not."""
    runs = _latest_runs(client, stage, n=limit)
    return next((i for i, r in enumerate(runs) if not r.data.tags.get(START_TAG)), len(runs))


def download(source: Source, dest: Path) -> Path:
    """Download the source run's `WARM_DIR` into dest; returns the local folder."""
    from mlflow.artifacts import download_artifacts

    from edge_pipeline.core.tracking import configure

    configure()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return Path(download_artifacts(run_id=source.run_id, artifact_path=WARM_DIR,
                                       dst_path=str(dest)))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
        raise InputError(
            f"MLflow run {source.run_id} ({source.how}) has no usable {WARM_DIR}/ artifacts "
            f"({e}); set {source.stage}.init to scratch, or register a model trained with lineage"
        ) from e
