"""The cockpit app headless (streamlit AppTest): every page for every role and what each sees."""

from __future__ import annotations

import json
import re
from time import monotonic

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.browser import ROOT, XSS_NAME, write_small_twin
from tests.sessions import sign_in_as
from twin import i18n, trust
from twin.store import open_store
from ui.common import NOTICE_S

TIMEOUT = 60
G1, G2 = "45031100100101", "45031100100102"
PHONES = ("13812345678", "13987654321")
PAGES = {
    "admin": ["cockpit", "cases", "analysis", "layers"],
    "official": ["cockpit", "cases", "analysis", "volunteer_admin"],
    "dispatcher": ["cockpit", "cases"],
    "grid_worker": ["my_grid", "cases"],
    "planner": ["cockpit", "analysis"],
    "data_staff": ["cockpit", "analysis", "layers"],
    "resident": ["proposals"],
    "volunteer": ["volunteer"],
}
TITLES = {"cockpit": "cockpit.title", "my_grid": "mygrid.title", "cases": "cases.title",
          "analysis": "analysis.title", "layers": "layers.title", "volunteer": "vol.title",
          "proposals": "prop.title", "volunteer_admin": "vola.title"}


@pytest.fixture(scope="module")
def twin_gpkg(tmp_path_factory):
    path = write_small_twin(tmp_path_factory.mktemp("twin") / "t.gpkg")
    now = pd.Timestamp.now(tz="UTC")
    with open_store(path) as store:
        for i, (grid, lon) in enumerate([(G1, 110.291), (G1, 110.2915), (G2, 110.293)]):
            at = now - pd.Timedelta(hours=3 + i)
            store.create_case({
                "id": f"C{i}", "status": "dispatched", "service_code": "E0101",
                "family": "event", "source": "patrol", "description": f"case in {grid}",
                "lon": lon, "lat": 25.0813, "grid_code": grid, "requested_at": at,
                "updated_at": at, "deadline_at": at + pd.Timedelta(hours=2 if i else 30),
                "data": json.dumps({"reporter": {"phone": PHONES[0]}})})
    return path


def login(at: AppTest, role: str | None) -> AppTest:
    if role is None:
        return at
    return sign_in_as(at, trust.User(
        "张三" if role == "grid_worker" else f"u_{role}", role,
        grids=("R01",) if role == "grid_worker" else (),
        resident_id="P1" if role == "resident" else None))


@pytest.fixture
def make_app(twin_gpkg, monkeypatch):
    monkeypatch.setenv("TWIN_DATABASE_URL", str(twin_gpkg))
    monkeypatch.chdir(ROOT)

    def make(role: str | None = "official", lang: str = "zh-CN") -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
        at.session_state["lang"] = lang
        return login(at, role)

    return make


def chart_spec(at: AppTest) -> dict:
    (chart,) = at.get("deck_gl_json_chart")
    return json.loads(chart.proto.json)


def everything(at: AppTest) -> str:
    """All text an AppTest run shows, tables and the map's JSON included."""
    parts = [e.value for e in (*at.title, *at.subheader, *at.caption, *at.markdown, *at.text)]
    parts += [m.label for m in at.metric] + [str(m.value) for m in at.metric]
    parts += [df.value.to_csv() for df in at.dataframe]
    parts += [c.proto.json for c in at.get("deck_gl_json_chart")]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("role", sorted(PAGES))
def test_every_page_of_every_role_runs(make_app, role):
    at = make_app(role).run()
    assert not at.exception, at.exception
    for page in PAGES[role]:
        at.switch_page(f"ui/{page}_page.py").run()
        assert not at.exception, (page, at.exception)
        assert at.title[0].value == i18n.t(TITLES[page], "zh-CN")
        shown = everything(at)
        assert not any(p in shown for p in PHONES), f"{role} sees a phone number on {page}"
        for chart in at.get("deck_gl_json_chart"):  # no basemap: Streamlit would fetch CARTO's
            assert json.loads(chart.proto.json).get("mapStyle") == "__MAP_STYLE__", page


def test_anonymous_sees_the_login_form_and_no_data(make_app):
    at = make_app(None).run()
    assert not at.exception
    assert at.text_input(key="login_username") is not None
    # the public page may show aggregates; never the cockpit, nor anyone's phone
    assert i18n.t("cockpit.title", "zh-CN") not in [x.value for x in at.title]
    assert not any(p in everything(at) for p in PHONES)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_cockpit_tiles_and_map(make_app, lang):
    at = make_app("official", lang).run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric][:8]
    assert labels == [i18n.t(k, lang) for k in (
        "kpi.reports_today", "kpi.open", "kpi.overdue", "kpi.close_rate",
        "kpi.ontime_close_rate", "kpi.sensors_online", "kpi.parking_available",
        "kpi.air_quality")]
    values = dict(zip(labels, [m.value for m in at.metric][:8], strict=True))
    assert values[i18n.t("kpi.open", lang)] == "3" and values[i18n.t("kpi.overdue", lang)] == "2"
    spec = chart_spec(at)
    assert "mapProvider" not in spec and spec["mapStyle"] == "__MAP_STYLE__"
    ids = [layer["id"] for layer in spec["layers"]]
    assert ids[0] == "basemap-land"
    assert {"grid_cells", "buildings", "cameras", "sensors", "cases", "density"} <= set(ids)
    layer = {x["id"]: x for x in spec["layers"]}
    title = "楼栋" if lang == "zh-CN" else "Buildings"  # the buildings LayerSpec's title
    tips = [row["tooltip"] for row in layer["buildings"]["data"]]
    assert all(tip.startswith(title) for tip in tips)
    assert any(XSS_NAME in tip for tip in tips)  # verbatim text; shown with innerText
    assert {row["id"] for row in layer["cases"]["data"]} == {"C0", "C1", "C2"}
    overdue = [row for row in layer["cases"]["data"] if row["id"] in ("C1", "C2")]
    assert all(row["color"][:3] == [255, 23, 68] for row in overdue)  # overdue: red


def test_language_switch_and_layer_toggle(make_app):
    at = make_app("official").run()
    assert at.title[0].value == "智慧社区治理驾驶舱"
    at.selectbox(key="lang").set_value("en").run()
    assert not at.exception
    assert at.title[0].value == "Community governance cockpit"
    at.multiselect(key="map_layers@en").set_value(["buildings"]).run()
    ids = [layer["id"] for layer in chart_spec(at)["layers"]]
    assert "buildings" in ids and "cases" not in ids and "grid_cells" not in ids


def test_drill_down_to_a_grid(make_app):
    at = make_app("official").run()
    at.selectbox(key="drill_street@zh-CN").set_value("450311001").run()
    at.selectbox(key="drill_community@zh-CN").set_value("450311001001").run()
    at.selectbox(key="drill_grid@zh-CN").set_value(G2).run()
    assert not at.exception
    layer = {x["id"]: x for x in chart_spec(at)["layers"]}
    assert [row["id"] for row in layer["grid_cells"]["data"]] == [G2]
    assert {row["id"] for row in layer["cases"]["data"]} == {"C2"}


def test_selected_grid_cell_shows_its_detail(make_app):
    at = make_app("official").run()
    at.session_state["map"] = {"selection": {"indices": {"grid_cells": [0]},
                                             "objects": {"grid_cells": [{"id": G1}]}}}
    at.run()
    assert not at.exception
    table = next(df.value for df in at.dataframe if "属性" in df.value.columns)
    rows = dict(zip(table["属性"], table["值"], strict=True))
    assert G1 in rows.values() and "一网格" in rows.values()
    assert not any(p in everything(at) for p in PHONES)  # the grid worker's phone is personal


def test_grid_worker_sees_only_their_grids(make_app):
    at = make_app("grid_worker").run()
    assert not at.exception, at.exception
    assert at.title[0].value == i18n.t("mygrid.title", "zh-CN")
    layer = {x["id"]: x for x in chart_spec(at)["layers"]}  # the tap-to-report map
    assert [row["id"] for row in layer["picker-grids"]["data"]] == [G1]
    assert {row["id"] for row in layer["picker-cases"]["data"]} == {"C0", "C1"}
    at.switch_page("ui/cases_page.py").run()
    shown = set(at.dataframe[0].value.iloc[:, 0])
    assert shown == {"C0", "C1"}


@pytest.mark.parametrize(("url", "key"), [
    ("missing", "store.missing"),
    ("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing", "store.error"),
])
def test_missing_store_tells_what_to_run(url, key, tmp_path, monkeypatch):
    if url == "missing":
        url = str(tmp_path / "nothing_here.gpkg")
    monkeypatch.setenv("TWIN_DATABASE_URL", url)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    # a session from before the store went away: its user cannot be read now, so the visitor
    # is out until the store is back, and the public page says what is wrong
    at.session_state["auth.user"] = "u_official"
    at.session_state["auth.last_activity"] = pd.Timestamp.now(tz="UTC").isoformat()
    at.run()
    assert not at.exception, at.exception
    messages = unescaped(_messages(at))
    if key == "store.error":
        assert "postgresql://127.0.0.1:1/nothing" in messages
    else:  # the file's name, never the server's path to it
        assert i18n.t(key, "zh-CN", url="nothing_here.gpkg") in messages
        assert str(tmp_path) not in messages
    assert "secret" not in messages and "nobody" not in messages
    assert not at.get("deck_gl_json_chart")
    if url.endswith("nothing_here.gpkg"):
        assert not (tmp_path / "nothing_here.gpkg").exists()  # looking must not create it


def test_demo_community_runs(tmp_path, monkeypatch):
    import shutil

    from twin.settings import default_store_path

    demo = default_store_path()
    assert demo.exists(), f"{demo} is missing: run `make test` (it runs scripts/make_demo.py)"
    copy = tmp_path / "demo.gpkg"
    shutil.copyfile(demo, copy)  # never touch the committed file
    monkeypatch.setenv("TWIN_DATABASE_URL", str(copy))
    monkeypatch.chdir(ROOT)
    at = login(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT), "official")
    at.run()
    assert not at.exception, at.exception
    ids = [layer["id"] for layer in chart_spec(at)["layers"]]
    assert ids[0] == "basemap-land" and "buildings" in ids and "grid_cells" in ids


def _messages(at: AppTest) -> str:
    return "\n".join(m.value for m in (*at.warning, *at.info, *at.error))


def internal_error_shown(messages: str) -> bool:
    """True when *messages* hold the bilingual 'internal error, reference …' sentence."""
    ref = re.search(r"[0-9a-f]{8}", messages)
    return bool(ref) and i18n.t("error.internal", "zh-CN", ref=ref.group()) in messages


def unescaped(markdown: str) -> str:
    """Markdown source as it reads: backslash escapes taken off (what the browser shows)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_no_grid_layer_and_no_cases_give_a_message(tmp_path, monkeypatch):
    from tests.browser import small_twin_layers
    from twin.twin import put_layer

    path = tmp_path / "no_grids.gpkg"
    with open_store(path) as store:  # buildings only: no grid_cells, no case at all
        put_layer(store, "buildings", small_twin_layers()["buildings"], actor="t", source="t")
    monkeypatch.setenv("TWIN_DATABASE_URL", str(path))
    monkeypatch.chdir(ROOT)
    at = login(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT), "official").run()
    assert not at.exception, at.exception
    assert i18n.t("cockpit.no_grids", "zh-CN") in _messages(at)
    for page in PAGES["official"][1:]:  # cases and analysis with an empty case table
        at.switch_page(f"ui/{page}_page.py").run()
        assert not at.exception, (page, at.exception)


def test_a_failing_data_step_is_a_message_not_a_traceback(make_app, monkeypatch):
    from twin import cockpit

    def broken(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(cockpit, "cockpit_data", broken)
    at = make_app("official").run()
    assert not at.exception, at.exception
    messages = unescaped(_messages(at))
    assert "database went away" not in messages  # internals stay in the log
    assert internal_error_shown(messages)
    assert not at.get("deck_gl_json_chart")


def test_tile_url_draws_tiles_under_gcj02_shifted_layers(make_app, monkeypatch):
    from twin.crs import wgs84_to_gcj02

    plain = chart_spec(make_app("official").run())
    monkeypatch.setenv("TWIN_TILE_URL", "http://tiles.example/{z}/{x}/{y}.png")
    monkeypatch.setenv("TWIN_TILE_CRS", "gcj02")
    at = make_app("official").run()
    assert not at.exception, at.exception
    spec = chart_spec(at)
    tiles = [x for x in spec["layers"] if x["@@type"] == "BitmapLayer"]
    assert tiles and all(x["image"].startswith("http://tiles.example/") for x in tiles)
    assert spec["layers"][0]["@@type"] == "BitmapLayer"  # under everything
    before = {x["id"]: x for x in plain["layers"]}["cases"]["data"][0]
    after = {x["id"]: x for x in spec["layers"]}["cases"]["data"][0]
    lon, lat = wgs84_to_gcj02([before["lon"]], [before["lat"]])  # a few hundred metres off
    assert after["lon"] == pytest.approx(lon[0], abs=2e-6)
    assert after["lat"] == pytest.approx(lat[0], abs=2e-6)
    assert abs(after["lon"] - before["lon"]) > 0.002


# -- user text is inert in Markdown; errors show no internals -------------------------------

MARKUP = [
    "![同意](http://evil.example/x.png)", "[点击此处验证身份](http://evil.example/login)",
    "B-`x`", "``", "**粗** _斜_ ~~删~~", "<img src=x onerror=alert(1)>", "# 标题", "1. 一",
    "- 项", "> 引", "| a | b |", ":red[红] :material/home: :smile:", "$x^2$", "a\\*b",
    "https://evil.example www.evil.example a@evil.example", "&lt;b&gt;", "---", "",
]


@pytest.mark.parametrize("text", MARKUP)
def test_md_escapes_every_markdown_character_and_keeps_the_text(text):
    from twin.trust.escaping import WORD_JOINER
    from ui.common import md

    escaped = md(text)
    assert unescaped(escaped).replace(WORD_JOINER, "") == text
    if "evil.example" in text:  # a bare URL or address is broken up, so GFM links nothing
        plain = escaped.replace("\\", "")
        assert not re.search(r"https?://|www\.|\w@\w", plain), escaped
    # every ASCII punctuation character is escaped: none can open or close anything
    bare = re.sub(r"\\.", "", escaped)
    assert not re.search(r"[!-/:-@\[-`{-~]", bare), bare


def test_md_keeps_lines_and_never_starts_a_code_block():
    from ui.common import md

    assert md("一\n二") == "一  \n二"
    assert md("    缩进").startswith("\u00a0" * 4)
    assert md(None) == "" and md(float("nan")) == ""


def test_an_unexpected_error_in_a_page_is_a_bilingual_message_without_internals(make_app,
                                                                                monkeypatch):
    from ui import mapview

    def broken(*args, **kwargs):
        raise IndexError("single positional indexer is out-of-bounds /srv/secret/ui/x.py")

    monkeypatch.setattr(mapview, "kpi_tiles", broken)
    for lang in ("zh-CN", "en"):
        at = make_app("official", lang).run()
        assert not at.exception, at.exception
        messages = unescaped(_messages(at))
        assert "IndexError" not in messages and "/srv/secret" not in messages
        ref = re.search(r"[0-9a-f]{8}", messages).group()
        internal = i18n.t("error.internal", lang, ref=ref)
        assert i18n.t("error.page", lang, error=internal) in messages


STEP = "已执行：派遣"


def _notice_page():
    import streamlit as st

    from ui.common import notify, show_notice

    show_notice("cases")
    if st.button("step"):
        notify("已执行：派遣", "cases", toast=True)
        st.rerun()


def test_a_notice_stays_over_the_runs_that_follow_then_goes_and_toasts_once():
    at = AppTest.from_function(_notice_page, default_timeout=TIMEOUT).run()
    assert not at.success and not at.toast
    at.button[0].click().run()
    assert [s.value for s in at.success] == [STEP]
    assert [x.value for x in at.toast] == [STEP]
    # the next run (a fragment's timed run, another tap) may cut the first one short before the
    # browser drew it: the message is there again, the toast not a second time
    at.run()
    assert [s.value for s in at.success] == [STEP]
    assert not at.toast
    notice = {"text": STEP, "at": monotonic(), "toast": False, "lang": "zh-CN"}
    at.session_state["lang"] = "en"  # the user switched language: a Chinese notice goes
    at.session_state["notice.cases"] = notice
    at.run()
    assert not at.success
    assert "notice.cases" not in at.session_state
    at.session_state["lang"] = "zh-CN"
    at.session_state["notice.cases"] = {**notice, "at": monotonic() - NOTICE_S - 1}
    at.run()  # and after NOTICE_S seconds it goes too
    assert not at.success
    assert "notice.cases" not in at.session_state
