"""Packaging: pyproject.toml is the source of truth, environment.yml lists the same packages, only
`twin` is installed, and every console script runs a subcommand of ``gridtwin``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# PyPI name → conda-forge name where they differ
CONDA_NAMES = {"psycopg[binary]": "psycopg", "h3": "h3-py", "psycopg2-binary": "psycopg2"}


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
        "from twin import layers; layers.registry()\n"
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


def test_one_console_script_per_subcommand_and_gridtwin_itself():
    from twin.cli import COMMANDS

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.pop("gridtwin") == "twin.cli:main"
    assert scripts == {f"gridtwin-{name}": f"{module}:main" for name, module in COMMANDS.items()}


def test_every_console_script_shows_its_help(capsys):
    import importlib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert getattr(importlib.import_module(module), func)(["--help"]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith("usage: ") and "--version" in out, name


def test_only_twin_is_installed_and_every_package_under_it_is():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "twin").rglob("__init__.py")} | {"twin.layers"}
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert {p.split(".")[0] for p in listed} == {"twin"}  # no generic top-level names
    assert tool["package-dir"] == {"twin.layers": "layers"}
    assert (ROOT / "twin" / "layers").resolve() == (ROOT / "layers").resolve()


def test_nothing_imports_the_top_level_layers_or_scripts_folder_as_a_package():
    bad = re.compile(r"^\s*(import layers\b|from layers\b|import scripts\b|from scripts\b)")
    library = re.compile(r"^\s*(import layers\b|from layers\b)")
    offenders = []
    for folder in ("twin", "ui", "tests", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if folder == "twin" and "layers" in path.relative_to(ROOT / "twin").parts:
                continue  # the symlink back to layers/
            # tests may drive the documented scripts in-process (from a checkout)
            pattern = library if folder == "tests" else bad
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "use `from twin import layers` (the installed name)"
