"""The cockpit app headless (streamlit AppTest): pages run in both languages, the map is drawn."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.browser import CENTRE_BUILDING, ROOT, XSS_NAME, write_small_twin
from twin import i18n

TIMEOUT = 60


@pytest.fixture(scope="module")
def twin_gpkg(tmp_path_factory):
    return write_small_twin(tmp_path_factory.mktemp("twin") / "t.gpkg")


@pytest.fixture
def app(twin_gpkg, monkeypatch):
    monkeypatch.setenv("TWIN_DATABASE_URL", str(twin_gpkg))
    monkeypatch.chdir(ROOT)
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


def chart_spec(at: AppTest) -> dict:
    (chart,) = at.get("deck_gl_json_chart")
    return json.loads(chart.proto.json)


def deck_ids(at: AppTest) -> list[str]:
    return [layer["id"] for layer in chart_spec(at)["layers"]]


def texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.title, *at.subheader, *at.caption, *at.markdown)]
    parts += [m.label for m in at.metric]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_map_page_runs_in_both_languages(app, lang):
    app.session_state["lang"] = lang
    app.run()
    assert not app.exception, app.exception
    assert app.title[0].value == i18n.t("map.title", lang)
    assert [m.label for m in app.metric] == [
        i18n.t(k, lang) for k in ("kpi.buildings", "kpi.households", "kpi.cameras",
                                  "kpi.sensors", "kpi.grid_cells")]
    assert [m.value for m in app.metric] == ["5", "234", "2", "3", "2"]
    spec = chart_spec(app)
    assert "mapProvider" not in spec and spec["mapStyle"] == "__MAP_STYLE__"
    tooltips = [row["tooltip"] for layer in spec["layers"] if layer["id"] == "buildings"
                for row in layer["data"]]
    title = "楼栋" if lang == "zh-CN" else "Buildings"
    assert all(tip.startswith(title) for tip in tooltips)
    assert any(XSS_NAME in tip for tip in tooltips)  # verbatim text; shown with innerText
    assert i18n.t("live.empty", lang) in texts(app)


def test_language_switch_changes_the_labels(app):
    app.run()
    assert app.title[0].value == "社区数字孪生地图"
    app.selectbox(key="lang").set_value("en").run()
    assert not app.exception
    assert app.title[0].value == "Community digital twin map"
    assert app.multiselect(key="map_layers").label == "Layers shown"


def test_layer_toggle_changes_the_chart(app):
    app.run()
    toggle = app.multiselect(key="map_layers")
    assert set(toggle.value) == {"community", "grid_cells", "roads", "buildings", "cameras",
                                 "sensors"}
    ids = deck_ids(app)
    assert ids[0] == "basemap-land" and "buildings" in ids and "cameras-cones" in ids
    toggle.unselect("buildings").unselect("cameras").run()
    assert not app.exception
    ids = deck_ids(app)
    assert "buildings" not in ids and "cameras" not in ids and "cameras-cones" not in ids
    assert "roads" in ids and "sensors" in ids
    app.multiselect(key="map_layers").set_value(["buildings"]).run()
    assert deck_ids(app) == ["basemap-land", "buildings"]


def test_selected_feature_shows_its_labelled_attributes(app):
    app.run()
    selection = {"selection": {"indices": {"buildings": [0]},
                               "objects": {"buildings": [{"id": CENTRE_BUILDING}]}}}
    app.session_state["map"] = selection
    app.run()
    assert not app.exception
    frames = [df.value for df in app.dataframe]
    table = next(f for f in frames if "属性" in f.columns)
    rows = dict(zip(table["属性"], table["值"], strict=True))
    assert rows["楼栋编码"] == CENTRE_BUILDING and rows["名称"] == "桂花苑中心楼"


@pytest.mark.parametrize(("url", "key"), [
    ("missing", "store.missing"),
    ("empty", "store.empty"),
    ("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing", "store.error"),
])
def test_missing_or_empty_store_tells_what_to_run(url, key, tmp_path, monkeypatch):
    if url == "missing":
        url = str(tmp_path / "nothing_here.gpkg")
    elif url == "empty":
        from twin.store import open_store

        url = str(tmp_path / "empty.gpkg")
        open_store(url).close()
    monkeypatch.setenv("TWIN_DATABASE_URL", url)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    messages = "\n".join(m.value for m in (*at.warning, *at.info, *at.error))
    if key == "store.error":  # the reason comes from the driver; the address without password
        assert messages.startswith("无法打开孪生数据库 127.0.0.1:1/nothing：")
    else:
        assert messages == i18n.t(key, "zh-CN", url=url)
    assert "make demo" in at.code[0].value and "scripts/make_demo.py" in at.code[0].value
    assert "secret" not in messages
    assert not at.get("deck_gl_json_chart")
    if url.endswith("nothing_here.gpkg"):
        assert not (tmp_path / "nothing_here.gpkg").exists()  # looking must not create it


def test_demo_community_runs_when_generated(monkeypatch):
    from twin.settings import default_store_path

    demo = default_store_path()
    if not demo.exists():
        pytest.skip(f"{demo} not generated yet: run `make demo` or python scripts/make_demo.py")
    monkeypatch.setenv("TWIN_DATABASE_URL", str(demo))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    ids = [layer["id"] for layer in chart_spec(at)["layers"]]
    assert ids[0] == "basemap-land" and "buildings" in ids
    assert int(at.metric[0].value.replace(",", "")) > 0
