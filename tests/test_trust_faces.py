"""The faces decide nothing: no page under ui/ nor app.py filters by role or grid on its own.

docs/trust.md promises that access is enforced in the library (twin.trust). These tests read
the source of every page and hold it to that: who may see or do what is asked of twin.trust,
and data about people and cases reach a page only through its scoped readers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FACES = sorted((ROOT / "ui").glob("*.py")) + [ROOT / "app.py"]

#: store reads that return people or cases; a page gets them from twin.trust instead
SCOPED = {"read_cases", "get_case", "case_history", "read_rows", "read_audit",
          "append_audit", "put_rows", "create_case", "update_case"}
#: the tables of rights; a page asks twin.trust.can instead of reading them
TABLES = {"PERMISSIONS", "PERSONAL_ACCESS", "STAFF", "EVERYONE", "ROLES"}


#: names under which pages call the library's scoped functions
LIBRARY = {"trust", "participation"}


def _of_user(node: ast.AST) -> bool:
    """True for ``<x>.role`` / ``<x>.disabled``, and ``<user>.grids`` (not a frame of grids)."""
    if not isinstance(node, ast.Attribute):
        return False
    if node.attr in {"role", "disabled"}:
        return True
    return node.attr == "grids" and "user" in ast.unparse(node.value).lower()


def decisions(source: str) -> list[str]:
    """Every spot in *source* that decides access itself, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            names = sorted({n.attr for side in [node.left, *node.comparators]
                            for n in ast.walk(side) if _of_user(n)})
            if names:
                found.append(f"{line}: compares {'/'.join(names)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            library = isinstance(node.func.value, ast.Name) and node.func.value.id in LIBRARY
            if node.func.attr in SCOPED and not library:
                found.append(f"{line}: calls store.{node.func.attr}")
            if node.func.attr == "isin" and any(
                    isinstance(a, ast.Attribute) and a.attr == "grids" for a in node.args):
                found.append(f"{line}: filters by the user's grids")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "User":
            found.append(f"{line}: makes a User (only authentication does)")
        elif isinstance(node, ast.ImportFrom):
            found += [f"{line}: imports the rights table {a.name}" for a in node.names
                      if a.name in TABLES]
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in TABLES:
                found.append(f"{line}: reads the rights table {name}")
    return found


@pytest.mark.parametrize("face", FACES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_decides_access_itself(face):
    assert decisions(face.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source, what", [
    ("if user.role == 'grid_worker': pass", "compares role"),
    ("ok = 'admin' in (u.role,)", "compares role"),
    ("t = t.loc[t['grid_code'].isin(user.grids)]", "filters by the user's grids"),
    ("cases = store.read_cases()", "calls store.read_cases"),
    ("h = store.case_history(cid)", "calls store.case_history"),
    ("if 'R1' in current_user().grids: pass", "compares grids"),
    ("from twin.trust import PERMISSIONS", "imports the rights table PERMISSIONS"),
    ("x = trust.PERMISSIONS['page.cockpit']", "reads the rights table PERMISSIONS"),
    ("u = User('x', 'admin')", "makes a User"),
])
def test_the_checker_sees_each_kind_of_decision(source, what):
    assert what in " ".join(decisions(source))
