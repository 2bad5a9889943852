"""The stores' layout rules: plain I/O behind the protocol (no telemetry, no policy), no store
reaching into another, private by default, the public surface pinned, modules a reader can
hold in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import resilience.stores

ROOT = Path(__file__).resolve().parent.parent
STORES = ROOT / "resilience" / "stores"

#: The modules of ``resilience/stores`` without a leading underscore: the protocol, the
#: packages' public faces, and two deprecated re-exports kept until the policies move.
PUBLIC_MODULES = {
    "__init__.py",
    "base.py",
    "memory/__init__.py",
    "redis/__init__.py",
    "keys.py",  # deprecated alias (0.1's module path), warns; nothing imports it
    "fallback.py",  # deprecated alias (0.1's module path), warns; nothing imports it
}

PUBLIC_SURFACE = {
    "FALLBACK_MODES",
    "MAX_AUDIT_ENTRIES",
    "MAX_REGISTRY_KEYS",
    "MAX_TOKEN_LENGTH",
    "MAX_WEIGHT",
    "BreakerAction",
    "BreakerEventCallback",
    "BreakerOps",
    "BreakerOutcomeName",
    "BreakerReply",
    "BreakerSpec",
    "BreakerStateName",
    "BudgetOps",
    "BudgetResult",
    "ConcurrencyEventCallback",
    "ConcurrencyOps",
    "ConcurrencyReply",
    "ConcurrencySpec",
    "FallbackMode",
    "FallbackStore",
    "MemoryStore",
    "Presence",
    "PresenceOps",
    "RedisStore",
    "RegistryEntry",
    "RegistryEventCallback",
    "RegistryKind",
    "RegistryOps",
    "Store",
    "StoreEvents",
    "StoreObservers",
    "WindowLimit",
    "WindowEvents",
    "WindowOps",
    "WindowResult",
    "check_fallback",
    "check_text",
    "fair_share",
    "with_fallback",
}


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; the stores use no relative imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            out.add(node.module or "")
    return out


def test_stores_import_no_telemetry_and_no_policy() -> None:
    banned = ("resilience.telemetry", "resilience.policies", "resilience.pipeline")
    for path in _modules(STORES):
        bad = {m for m in _imports(path) if m.startswith(banned) or m.startswith("opentelemetry")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_store_reaches_into_another() -> None:
    for path in _modules(STORES / "memory"):
        assert not {m for m in _imports(path) if m.startswith(("resilience.stores.redis", "redis"))}
    for path in _modules(STORES / "redis"):
        assert not {m for m in _imports(path) if m.startswith("resilience.stores.memory")}
    for path in _modules(STORES):
        assert not {m for m in _imports(path) if m.startswith("fakeredis")}, path


def test_private_by_default() -> None:
    public = {
        str(p.relative_to(STORES))
        for p in _modules(STORES)
        if not any(part.startswith("_") and part != "__init__.py" for part in p.parts)
    }
    assert public == PUBLIC_MODULES


def test_the_public_surface_is_pinned() -> None:
    assert set(resilience.stores.__all__) == PUBLIC_SURFACE
    for name in PUBLIC_SURFACE:
        assert getattr(resilience.stores, name) is not None


def test_lua_scripts_live_with_the_redis_store() -> None:
    scripts = sorted(p.name for p in (STORES / "redis" / "lua").glob("*.lua"))
    assert "window_acquire.lua" in scripts
    assert not list(STORES.glob("*.lua"))
    assert not (STORES / "lua").exists()
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    assert '"stores/redis/lua/*.lua"' in pyproject


def test_modules_stay_small_or_say_why() -> None:
    """~400 lines at most, unless the module's docstring gives the reason."""
    for root in (STORES, ROOT / "resilience" / "testing"):
        for path in _modules(root):
            text = path.read_text("utf-8")
            lines = text.count("\n")
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert lines <= 400 or "400 lines" in doc, f"{path.relative_to(ROOT)}: {lines} lines"


def test_the_old_module_paths_still_import_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    for name in ("resilience.stores.fallback", "resilience.stores.keys"):
        sys.modules.pop(name, None)
        with pytest.warns(DeprecationWarning, match="import from resilience.stores"):
            mod = importlib.import_module(name)
        assert mod.__all__
    from resilience.stores.fallback import FallbackStore

    assert FallbackStore is __import__("resilience").FallbackStore
