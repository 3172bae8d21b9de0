"""The package layout: ``import uniscale`` loads the runtime only, the lab imports the runtime
and never the reverse, and names that moved to `uniscale.lab` still resolve from `uniscale`."""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import uniscale
import uniscale.lab
from uniscale.lab import collect, datasets

PKG = Path(uniscale.__file__).resolve().parent

#: Exactly what ``import uniscale`` may load: what a gateway or proxy needs per request.
RUNTIME_MODULES = [
    "uniscale",
    "uniscale._core",
    "uniscale.decision_log",
    "uniscale.engine",
    "uniscale.exec_types",
    "uniscale.execute",
    "uniscale.extract",
    "uniscale.featurize",
    "uniscale.feedback_sources",
    "uniscale.outcomes",
    "uniscale.planner",
    "uniscale.policy",
    "uniscale.records",
    "uniscale.responses",
    "uniscale.reward",
    "uniscale.router",
    "uniscale.scorers",
    "uniscale.space",
    "uniscale.strategies",
    "uniscale.transport",
    "uniscale.vote",
]


def test_import_uniscale_loads_only_the_runtime() -> None:
    code = (
        "import json, sys, uniscale\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('uniscale'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == RUNTIME_MODULES


def test_runtime_never_imports_the_lab() -> None:
    # Lazy imports inside functions count too: the runtime must work without the lab extra.
    # cli.py is the one exception, an entry point whose subcommands load lab modules lazily.
    offenders = []
    for path in sorted(PKG.glob("*.py")):
        if path.name in ("cli.py", "__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uniscale.lab"):
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Import) and any(
                a.name.startswith("uniscale.lab") for a in node.names
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_old_names_still_resolve_lazily() -> None:
    assert uniscale.evaluate is uniscale.lab.evaluate
    assert uniscale.records_from_log is uniscale.lab.records_from_log
    assert uniscale.OPEError is uniscale.lab.OPEError
    from uniscale import datasets  # a module that moved: still importable by its old name

    assert datasets is sys.modules["uniscale.lab.datasets"]
    with pytest.raises(AttributeError, match="no_such_name"):
        uniscale.no_such_name  # noqa: B018


def test_llm_servers_is_not_in_the_package() -> None:
    assert not (PKG / "llm_servers.py").exists()
    assert not (PKG / "lab" / "llm_servers.py").exists()


def _public_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in the package (runtime and lab modules), by name."""
    found: dict[str, type[BaseException]] = {}
    names = ["uniscale", "uniscale.lab"]
    names += [f"uniscale.{p.stem}" for p in PKG.glob("*.py") if not p.stem.startswith("_")]
    names += [f"uniscale.lab.{p.stem}" for p in (PKG / "lab").glob("*.py")]
    for name in names:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if (
                not attr.startswith("_")
                and isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("uniscale")
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_one_exception_tree() -> None:
    found = _public_exceptions()
    # the known roots of each area are among them: a rename would make this check vacuous
    for name in (
        "uniscale._core.ConfigError",
        "uniscale.exec_types.ExecutionError",
        "uniscale.exec_types.AllSamplesFailed",
        "uniscale.lab.collect.CollectError",
        "uniscale.lab.datasets.DataError",
        "uniscale.lab.ope.OPEError",
    ):
        assert name in found
    outside = sorted(n for n, cls in found.items() if not issubclass(cls, uniscale.UniScaleError))
    assert outside == []
    # The builtin base they had stays: `except ValueError` code keeps working.
    assert issubclass(collect.CollectError, ValueError)
    assert issubclass(datasets.DataError, ValueError)
    with pytest.raises(uniscale.UniScaleError, match="no models"):
        asyncio.run(collect.collect([], [], PKG / "never-written.jsonl"))
    with pytest.raises(uniscale.UniScaleError, match="no such file"):
        datasets.collected_source(PKG / "no-such-table.jsonl.gz")


REPO = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 6 * 1024
    assert "```\nmake demo\n```" in text and "```\nmake test\n```" in text
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_doc_links_resolve() -> None:
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []
