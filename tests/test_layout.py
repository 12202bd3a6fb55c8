"""The torch/TensorFlow line is a package line, checked from the import graph.

Every import statement of every module (top level and inside functions) counts: a deferred
import still puts both frameworks in one process the moment it runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH = {"torch", "torchvision", "triton"}
TENSORFLOW = {"tensorflow", "tf_keras", "tensorflow_model_optimization", "tf2onnx"}
TORCH_SIDE = ("edge_pipeline.teacher",)
TF_SIDE = ("edge_pipeline.student", "edge_pipeline.compression")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Dotted names this file imports (`from a.b import c` gives a.b and a.b.c)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = [*REPO.glob("edge_pipeline/**/*.py"), *REPO.glob("tasks/*.py")]
    return {_module_name(f): _imports(f) for f in files}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Project modules and third-party top-level packages imported from `start`, transitively."""
    seen, todo, external = {start}, [start], set()
    while todo:
        for name in graph.get(todo.pop(), ()):
            if name in graph:
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
            elif not name.startswith(("edge_pipeline", "tasks")):
                external.add(name.split(".")[0])
    return seen | external


GRAPH = _graph()


def _side_modules(prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in GRAPH if m.startswith(prefixes))


@pytest.mark.parametrize("module", _side_modules(TORCH_SIDE) + ["tasks.train"])
def test_torch_side_never_reaches_tensorflow(module: str) -> None:
    reached = _reachable(GRAPH, module)
    assert not reached & TENSORFLOW, f"{module} reaches {sorted(reached & TENSORFLOW)}"
    assert not {m for m in reached if m.startswith(TF_SIDE)}, module


@pytest.mark.parametrize(
    "module", _side_modules(TF_SIDE) + ["tasks.distill", "tasks.prune", "tasks.qat", "tasks.export"]
)
def test_tensorflow_side_never_reaches_torch(module: str) -> None:
    reached = _reachable(GRAPH, module)
    assert not reached & TORCH, f"{module} reaches {sorted(reached & TORCH)}"
    assert not {m for m in reached if m.startswith(TORCH_SIDE)}, module


@pytest.mark.parametrize(
    "module",
    _side_modules(("edge_pipeline.core", "edge_pipeline.config", "edge_pipeline.artifacts")),
)
def test_shared_packages_import_neither_framework(module: str) -> None:
    reached = _reachable(GRAPH, module)
    assert not reached & (TORCH | TENSORFLOW), f"{module} reaches {sorted(reached)}"


def test_the_graph_sees_both_sides() -> None:
    """The check is not vacuous: each side reaches its own framework."""
    assert _reachable(GRAPH, "tasks.train") & TORCH
    assert _reachable(GRAPH, "tasks.distill") & TENSORFLOW


def test_tasks_holds_only_the_dvc_stages() -> None:
    import yaml

    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    modules = {p.stem for p in (REPO / "tasks").glob("*.py")} - {"__init__"}
    assert modules == stages


def _packages_reached(stage: str) -> set[str]:
    """edge_pipeline sub-packages (folders) that `tasks.<stage>` imports, transitively."""
    return {
        "edge_pipeline/" + m.split(".")[1]
        for m in _reachable(GRAPH, f"tasks.{stage}")
        if m.startswith("edge_pipeline.") and m.count(".") >= 1 and m.split(".")[1] in _PACKAGES
    }


_PACKAGES = {p.name for p in (REPO / "edge_pipeline").iterdir() if (p / "__init__.py").exists()}


def test_dvc_deps_follow_the_packages() -> None:
    """A change to shared code re-runs exactly the stages that import it: each stage's deps list
    its own module and every library folder it reaches, and nothing else of the code."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        code = {d for d in stage["deps"] if d.startswith(("tasks/", "edge_pipeline"))}
        expected = {f"tasks/{name}.py"} | _packages_reached(name)
        assert code == expected, f"dvc.yaml {name}: deps {sorted(code)} != {sorted(expected)}"
