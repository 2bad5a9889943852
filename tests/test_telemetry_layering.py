"""Telemetry is a leaf of the library: one-way imports between the pipeline and telemetry.

Parses the imports of ``resilience/telemetry/**``, ``resilience/pipeline.py`` and the shared leaf
``resilience/_context.py`` with :mod:`ast` (every import statement, ``TYPE_CHECKING`` blocks
and function bodies included) and checks:

- telemetry imports nothing from ``resilience`` but itself and the leaf modules
  (``resilience._context``, ``resilience.errors``): no pipeline, policy, store or package root;
- the leaf ``resilience._context`` imports nothing from ``resilience``;
- the modules checked form no import cycle (``pipeline -> telemetry`` is the only direction).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "resilience"

#: What telemetry may import from the library besides its own package.
TELEMETRY_MAY_IMPORT = ("resilience._context", "resilience.errors")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The ``resilience`` modules ``path`` imports (``from pkg import sub``: the submodule)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")]
            if subs and len(subs) == len(node.names):
                found.update(subs)  # only submodules named: the package's own code is not read
            else:
                found.add(base)
                found.update(subs)
    return {m for m in found if m == "resilience" or m.startswith("resilience.")}


def _checked_files() -> list[Path]:
    return [
        *sorted((PKG / "telemetry").rglob("*.py")),
        PKG / "pipeline.py",
        PKG / "_context.py",
    ]


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in _checked_files()}


def test_the_checked_modules_exist() -> None:
    graph = _graph()
    assert "resilience.telemetry" in graph
    assert "resilience.telemetry._spans" in graph
    assert "resilience.pipeline" in graph
    # the parser sees through `from resilience import telemetry` and TYPE_CHECKING blocks
    assert "resilience.telemetry" in graph["resilience.pipeline"]
    assert "resilience._context" in graph["resilience.pipeline"]


def test_telemetry_imports_only_itself_and_the_leaf_modules() -> None:
    offenders = []
    for mod, deps in _graph().items():
        if mod != "resilience.telemetry" and not mod.startswith("resilience.telemetry."):
            continue
        for dep in sorted(deps):
            own = dep == "resilience.telemetry" or dep.startswith("resilience.telemetry.")
            if not (own or dep in TELEMETRY_MAY_IMPORT):
                offenders.append(f"{mod} imports {dep}")
    assert not offenders, "telemetry must stay a leaf:\n" + "\n".join(offenders)


def test_the_context_module_is_a_leaf() -> None:
    deps = _graph()["resilience._context"]
    assert deps <= {"resilience.errors"}, deps


def test_no_import_cycle_between_pipeline_and_telemetry() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
