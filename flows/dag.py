"""The stage graph of `dvc.yaml`, read through DVC's own index (templating and `foreach` resolved).

The flow never keeps a second list of stages: `load_dag` asks DVC for the pipeline stages and the
edges between them, and `stale_stages` asks DVC which of them are out of date. Stage names are DVC
addresses (`train`, `bench@onnx`, `sub/dvc.yaml:stage`), which `dvc repro --single-item` accepts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Stage:
    """One pipeline stage as DVC resolved it. Paths are relative to the repository root."""

    name: str
    upstream: tuple[str, ...]  # stages whose outputs this stage depends on
    deps: tuple[str, ...]  # file/dir dependencies (params.yaml excluded)
    outs: tuple[str, ...]  # every output, metrics and plots included
    metrics: tuple[str, ...]
    uncached: tuple[str, ...]  # outputs with `cache: false` (git-tracked: metrics, plots)
    params: tuple[str, ...]  # params.yaml keys the stage reads (`agreement`, `train.epochs`)

    @property
    def section(self) -> str:
        """The stage's params.yaml section: stage name = section name (`bench@x` -> `bench`)."""
        return self.name.rsplit(":", 1)[-1].split("@", 1)[0]


@dataclass(frozen=True)
class Dag:
    """Pipeline stages in a topological order that keeps `dvc.yaml`'s order among equals."""

    stages: dict[str, Stage]
    _children: dict[str, tuple[str, ...]] = field(repr=False)

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self._children.get(name, ()))
        while todo:
            child = todo.pop()
            if child not in seen:
                seen.add(child)
                todo.extend(self._children.get(child, ()))
        return seen

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages.values())


def stage_metrics(root: Path, stage: Stage) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, mapping) of each of the stage's metrics files that exists and holds a JSON object."""
    for rel in stage.metrics:
        try:
            metrics = json.loads((root / rel).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(metrics, Mapping):
            yield rel, metrics


def _rel(path: str, root: Path) -> str:
    return os.path.relpath(path, root)


def stage_name(stage: Any, root: Path) -> str:
    """DVC's address of a stage relative to `root` (DVC's `addressing` is relative to the cwd)."""
    dvcfile = _rel(stage.dvcfile.path, root)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def load_dag(root: Path) -> Dag:
    """Read the pipeline stages of every `dvc.yaml` under `root` and the edges between them.

    `.dvc` files (data sources without a command) are not stages to run and are left out.
    Raises DVC's own error (naming the file and line) when a `dvc.yaml` is invalid.
    """
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        index = repo.index
        names = {s: stage_name(s, root) for s in index.stages}
        position = {names[s]: i for i, s in enumerate(index.stages)}
        # DVC's graph points from a stage to the stages it depends on; reverse it to run order.
        graph = index.graph.reverse(copy=True)
        keep = [s for s in graph.nodes if isinstance(s, PipelineStage)]
        graph = graph.subgraph(keep)
        order = nx.lexicographical_topological_sort(graph, key=lambda s: position[names[s]])
        stages: dict[str, Stage] = {}
        children: dict[str, tuple[str, ...]] = {}
        for s in order:
            params, deps = [], []
            for dep in s.deps:
                if isinstance(dep, ParamsDependency):
                    params.extend(dep.params or [Path(dep.def_path).stem])
                else:
                    deps.append(_rel(dep.fs_path, root))
            outs = [_rel(o.fs_path, root) for o in s.outs]
            name = names[s]
            stages[name] = Stage(
                name=name,
                upstream=tuple(sorted((names[u] for u in graph.predecessors(s)), key=position.get)),
                deps=tuple(deps),
                outs=tuple(outs),
                metrics=tuple(_rel(o.fs_path, root) for o in s.outs if o.metric),
                uncached=tuple(_rel(o.fs_path, root) for o in s.outs if not o.use_cache),
                params=tuple(params),
            )
            children[name] = tuple(names[c] for c in graph.successors(s))
    return Dag(stages=stages, _children=children)


def stale_stages(root: Path) -> dict[str, Any]:
    """DVC's verdict on which stages are out of date: {stage: reasons}, `dvc status` as data."""
    from dvc.repo import Repo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        names = {s.addressing: stage_name(s, root) for s in repo.index.stages}
        return {names.get(k, k): v for k, v in repo.status().items()}


def lock_hashes(root: Path, *, attempts: int = 3) -> dict[str, str]:
    """{path: md5} of every dep and out recorded in `dvc.lock` (paths relative to `root`).

    A stage process of another branch may be rewriting dvc.lock right now, so a file that does not
    parse is read again a moment later; after `attempts` failures hashes are reported as unknown.
    """
    lock = Path(root) / "dvc.lock"
    for attempt in range(attempts):
        try:
            data = yaml.safe_load(lock.read_text()) if lock.exists() else {}
            break
        except (yaml.YAMLError, OSError):
            time.sleep(0.2 * (attempt + 1))
    else:
        return {}
    hashes: dict[str, str] = {}
    for entry in ((data or {}).get("stages") or {}).values():
        for item in (entry.get("deps") or []) + (entry.get("outs") or []):
            digest = item.get("md5") or item.get("etag") or item.get("checksum")
            if item.get("path") and digest:
                hashes[os.path.normpath(item["path"])] = str(digest)
    return hashes
