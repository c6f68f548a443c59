"""twin.i18n: both catalogs complete and in step, and every key the UI uses is in them."""

from __future__ import annotations

import ast
import json
import string
from pathlib import Path

import pytest

from twin import i18n
from twin.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
UI_SOURCES = [ROOT / "app.py", *sorted((ROOT / "ui").glob("**/*.py"))]


def keys_used() -> dict[str, list[str]]:
    """Literal keys of every ``t("…")`` call in app.py and ui/ (and the API's problem kinds)."""
    used: dict[str, list[str]] = {}
    for path in UI_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "t":
                continue
            first = node.args[0]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                f"{where}: t() needs a literal key so this test can check it"
            )
            used.setdefault(first.value, []).append(where)
    # the HTTP service's problem details: a title and a detail per declared kind
    from twin.api.problems import KINDS

    for kind in KINDS:
        for part in ("title", "detail"):
            used.setdefault(f"api.problem.{kind}.{part}", []).append("twin/api/problems.py")
    return used


def test_the_ui_sources_are_scanned():
    used = keys_used()
    assert {"app.title", "nav.map", "map.layers", "live.empty", "store.missing"} <= set(used)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_key_used_in_the_ui_is_in_the_catalog(lang):
    missing = {k: v for k, v in keys_used().items() if k not in i18n.catalog(lang)}
    assert not missing, f"missing from data/i18n/{lang}.json: {missing}"


def test_both_catalogs_have_the_same_keys():
    zh, en = set(i18n.catalog("zh-CN")), set(i18n.catalog("en"))
    assert zh - en == set(), "only in zh-CN"
    assert en - zh == set(), "only in en"


def test_no_unused_keys():
    unused = set(i18n.catalog("zh-CN")) - set(keys_used())
    assert not unused, f"keys no page uses: {sorted(unused)}"


def fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


@pytest.mark.parametrize("key", sorted(i18n.catalog("zh-CN")))
def test_placeholders_agree_between_languages(key):
    assert fields(i18n.catalog("zh-CN")[key]) == fields(i18n.catalog("en")[key])


def test_catalog_files_are_plain_json_objects():
    for lang in i18n.LANGUAGES:
        data = json.loads((ROOT / "data" / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
        assert data and all(isinstance(v, str) and v.strip() for v in data.values())


@pytest.mark.parametrize(("lang", "want"), [
    ("zh-CN", "智慧社区数字孪生治理驾驶舱"),
    ("zh", "智慧社区数字孪生治理驾驶舱"),
    (None, "智慧社区数字孪生治理驾驶舱"),
    ("en", "Smart Community Digital Twin Governance Cockpit"),
    ("en-US", "Smart Community Digital Twin Governance Cockpit"),
])
def test_t_defaults_to_chinese(lang, want):
    assert i18n.t("app.title", lang) == want


def test_t_formats_and_falls_back():
    assert i18n.t("live.count", "en", count=3) == "3 events in the last 24 hours"
    assert i18n.t("live.count", "zh-CN", count=3) == "近24小时共 3 条事件"
    assert i18n.t("no.such.key", "en") == "no.such.key"


def test_unknown_language_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="zh-CN, en"):
        i18n.t("app.title", "fr")


def write_catalog(directory, lang, base, **fragments):
    (directory / f"{lang}.json").write_text(json.dumps(base), encoding="utf-8")
    (directory / lang).mkdir(exist_ok=True)
    for name, words in fragments.items():
        (directory / lang / f"{name}.json").write_text(json.dumps(words), encoding="utf-8")


def test_page_fragments_merge_into_their_language(tmp_path):
    write_catalog(tmp_path, "en", {"a": "A"}, wall={"wall.title": "Wall"}, cases={"c": "C"})
    assert i18n.catalog("en", tmp_path) == {"a": "A", "wall.title": "Wall", "c": "C"}


def test_a_key_in_two_files_is_refused_naming_both(tmp_path):
    write_catalog(tmp_path, "en", {"a": "A"}, wall={"a": "again"})
    with pytest.raises(ConfigError, match=r"'a' stands in both .*en\.json and .*wall\.json"):
        i18n.catalog("en", tmp_path)


def test_every_fragment_has_its_twin_in_the_other_language():
    names = {lang: {p.name for p in (ROOT / "data" / "i18n" / lang).glob("*.json")}
             for lang in i18n.LANGUAGES}
    assert names["zh-CN"] == names["en"]
