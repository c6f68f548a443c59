"""Packaging: pyproject.toml is the source of truth, environment.yml must list the same packages."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# PyPI name → conda-forge name where they differ
CONDA_NAMES = {"psycopg[binary]": "psycopg", "h3": "h3-py"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*(.*)$", requirement)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [
        r for extra in project.get("optional-dependencies", {}).values() for r in extra
    ]
    out = {}
    for r in reqs:
        name, spec = _name_and_spec(r)
        out[CONDA_NAMES.get(name, name)] = spec
    return out


def _environment() -> dict[str, str]:
    out = {}
    text = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    for line in text.splitlines():
        m = re.match(r"^\s*-\s*([A-Za-z0-9_.\-]+)\s*(\S*)\s*$", line)
        if m and m.group(1) not in {"python", "pip"}:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_lists_exactly_the_pyproject_dependencies():
    assert _environment() == _pyproject()


def test_importing_every_twin_module_never_imports_streamlit():
    code = (
        "import pkgutil, importlib, sys, twin\n"
        "for m in pkgutil.walk_packages(twin.__path__, 'twin.'):\n"
        "    importlib.import_module(m.name)\n"
        "import layers; layers.registry()\n"
        "assert 'streamlit' not in sys.modules, 'twin imported streamlit'\n"
        "print(len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_console_script_names_a_main_that_exists():
    import importlib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name
