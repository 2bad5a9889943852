"""``resilience.__version__`` has one source: the distribution's metadata (``pyproject.toml``)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest

import resilience

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"$', text, re.M)
    assert match is not None
    return match[1]


def test_version_is_the_installed_metadata() -> None:
    assert resilience.__version__ == importlib.metadata.version("resilience")
    assert resilience.__version__ == _pyproject_version()


def test_no_module_spells_the_version_out() -> None:
    """The only place a version number is written is pyproject.toml."""
    offenders = []
    for path in (ROOT / "resilience").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                named = any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets)
                if named and isinstance(node.value, ast.Constant):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_version_follows_the_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: f"9.8.7+{name}")
    assert resilience._package_version() == "9.8.7+resilience"


def _not_installed(name: str) -> str:
    raise importlib.metadata.PackageNotFoundError(name)


def test_an_uninstalled_source_tree_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", _not_installed)
    assert resilience._package_version() == _pyproject_version()


@pytest.mark.parametrize(
    "pyproject",
    [
        None,  # no pyproject.toml beside the package
        '[project]\nname = "other"\nversion = "1.2.3"\n',  # another project's
        '[project]\nname = "resilience"\ndynamic = ["version"]\n',  # no static version
    ],
)
def test_unknown_version_without_metadata_or_pyproject(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pyproject: str | None
) -> None:
    (tmp_path / "resilience").mkdir()
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject + '\n[tool.x]\nversion = "4.5.6"\n')
    monkeypatch.setattr(importlib.metadata, "version", _not_installed)
    monkeypatch.setattr(resilience, "__file__", str(tmp_path / "resilience" / "__init__.py"))
    assert resilience._package_version() == "0+unknown"
