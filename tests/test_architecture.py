"""The layer rules of docs/architecture.md, enforced over resilience/'s import graph.

Module-level imports (including those in ``try`` blocks, excluding ``if TYPE_CHECKING:``) are
what a module needs to be imported; imports inside functions are lazy and allowed for optional
integrations only where listed below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "resilience"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    is_pkg = MODULES[module].name == "__init__.py"
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, *, lazy: bool) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` of ``module``: module-level ones, or (``lazy``) all."""
    tree = ast.parse(MODULES[module].read_text("utf-8"))

    def visit(nodes: list[ast.stmt], top: bool) -> Iterator[tuple[str, int]]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                if top or lazy:
                    for a in node.names:
                        yield a.name, node.lineno
            elif isinstance(node, ast.ImportFrom) and (top or lazy):
                target = _resolve(module, node)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    yield (sub if sub in MODULES else target), node.lineno
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                    still_top = top and not isinstance(
                        node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                    )
                    stmts = [
                        s
                        for h in inner
                        for s in (h.body if isinstance(h, ast.ExceptHandler) else [h])
                    ]
                    yield from visit(stmts, still_top)

    yield from visit(tree.body, True)


def _internal(name: str) -> str | None:
    """The resilience module ``name`` refers to (a package's ``__init__`` included)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# Optional dependencies and where each may be imported (module-level or lazily).
OPTIONAL = {
    "aiohttp": ("resilience.aiohttp", "resilience.telemetry.aiohttp", "resilience.demo"),
    "httpx": ("resilience.httpx",),
    "httpx2": ("resilience.httpx", "resilience.httpx2", "resilience.demo"),
    "openai": ("resilience.demo",),
    "anthropic": ("resilience.demo",),
    "pybreaker": ("resilience.policies.breaker._interop",),
    "fakeredis": ("resilience.testing",),
    "lupa": ("resilience.testing",),
    "opentelemetry.sdk": ("resilience.telemetry.setup", "resilience.demo"),
    "opentelemetry.exporter": ("resilience.telemetry.setup", "resilience.demo"),
    "opentelemetry.instrumentation": (
        "resilience.telemetry.aiohttp",
        "resilience.telemetry.setup",
        "resilience.demo",
    ),
    "valkey": ("resilience.stores.redis",),
}


def test_optional_dependencies_stay_in_their_integration() -> None:
    bad = []
    for module in MODULES:
        for name, line in _imports(module, lazy=True):
            for dep, allowed in OPTIONAL.items():
                if _under(name, dep) and not _under(module, *allowed):
                    bad.append(f"{module}:{line} imports {name}")
    assert bad == []


def test_redis_is_imported_only_by_the_redis_store() -> None:
    allowed = ("resilience.stores.redis", "resilience.testing", "resilience.demo")
    bad = [
        f"{m}:{line} imports {name}"
        for m in MODULES
        for name, line in _imports(m, lazy=True)
        if _under(name, "redis") and not _under(m, *allowed)
    ]
    assert bad == []


def _edges(lazy: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for name, _ in _imports(m, lazy=lazy):
            target = _internal(name) if _under(name, "resilience") else None
            if target is not None and target != m:
                graph[m].add(target)
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for n in graph[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # A store is plain I/O behind a protocol.
        (
            "resilience.stores",
            ("resilience.telemetry", "resilience.policies", "resilience.pipeline"),
        ),
        # HTTP knowledge with no client and no policy in it.
        (
            "resilience.http",
            (
                "resilience.policies",
                "resilience.stores",
                "resilience.telemetry",
                "resilience.pipeline",
                "resilience.aiohttp",
                "resilience.httpx",
            ),
        ),
        # Telemetry is a leaf: the one place that talks to OpenTelemetry.
        (
            "resilience.telemetry",
            ("resilience.policies", "resilience.stores", "resilience.pipeline"),
        ),
        # The operator tools read what policies registered through the store, never them.
        (
            "resilience.admin",
            ("resilience.policies", "resilience.pipeline", "resilience.telemetry"),
        ),
        # Policies never reach into a concrete store's internals.
        ("resilience.policies", ("resilience.stores.redis", "resilience.stores.memory")),
    ],
)
def test_layers_import_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    graph = _edges()
    bad = [
        f"{m} -> {t}"
        for m in MODULES
        if _under(m, layer)
        for t in graph[m]
        if _under(t, *forbidden)
        and not (
            # a policy may name the process-wide default store, a public class
            layer == "resilience.policies"
            and t == "resilience.stores.memory"
            and m == "resilience.policies._validate"
        )
    ]
    assert bad == []


def test_no_import_cycles() -> None:
    graph = _edges()
    # Packages import their submodules to re-export them: an edge from a package to its own
    # submodule is not part of a cycle a reader cares about.
    for m, targets in graph.items():
        graph[m] = {t for t in targets if not (MODULES[m].name == "__init__.py" and _under(t, m))}
    cycles = [m for m in MODULES if m in _reaches(graph, m)]
    assert cycles == []


def test_importing_resilience_imports_no_optional_dependency() -> None:
    code = (
        "import sys, resilience, resilience.http, resilience.testing\n"
        # (not opentelemetry.sdk: redis-py 8 imports it by itself when it is installed)
        "deps = ['aiohttp', 'httpx', 'httpx2', 'openai', 'anthropic', 'pybreaker', 'fakeredis',"
        " 'valkey']\n"
        "print([d for d in deps if d in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_modules_stay_small_or_say_why() -> None:
    """No module over ~400 lines without a reason written in its docstring (issue 13)."""
    long = []
    for module, path in MODULES.items():
        lines = len(path.read_text("utf-8").splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text("utf-8"))) or ""
        if lines > 400 and "400 lines" not in doc:
            long.append(f"{module}: {lines} lines")
    assert long == []
