"""The ``gridtwin`` command line: help everywhere, one store option, exit codes 0 / 2 / 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import sqlalchemy as sa
from shapely.geometry import box

from tests.conftest import LAT, LON
from tests.services import POSTGIS_URL
from twin import __version__
from twin.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
# the scripts the staff documentation names, and the subcommand each one runs
SCRIPTS = {
    "load_layer.py": "load", "query.py": "query", "export.py": "export", "run_feeds.py": "feeds",
    "simulate.py": "simulate", "users.py": "users", "retention.py": "retention",
    "make_demo.py": "make-demo", "seed.py": "seed",
}
DOCUMENTED = ["load", "query", "feeds", "simulate", "export", "users", "retention", "make-demo"]
# each command that reads a store, with the arguments it needs besides --store
READERS = {
    "load --history": ["load", "--history", "buildings"],
    "load LAYER PATH": ["load", "community", "{tmp}/c.geojson"],
    "query": ["query", "within", "-p", "layer=buildings", "-p", "distance_m=5",
              "-p", "point=110.29,25.08", "--out", "{tmp}/q.csv"],
    "export kpi": ["export", "kpi", "--out", "{tmp}/r.csv"],
    "export open311 requests": ["export", "open311", "requests", "--out", "{tmp}/r.json"],
    "users list": ["users", "list"],
    "users --demo": ["users", "--demo"],
    "retention": ["retention", "--dry-run"],
    "supervise": ["supervise", "--dry-run"],
    "feeds": ["feeds", "--simulate"],
    "simulate": ["simulate", "--mqtt", "mqtt://127.0.0.1:1", "--rate", "1"],
}



def run_process(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # PYTHONPATH: this checkout's twin, as pytest's pythonpath gives the tests (the venv's
    # editable install may point at another checkout of the same project)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def url_of(store) -> str:
    schema = getattr(store, "schema", None)
    return f"{POSTGIS_URL}?schema={schema}" if schema else str(store.url)


# -- help, version ------------------------------------------------------------------------------


def test_gridtwin_help_lists_every_subcommand():
    result = run_process("-m", "twin.cli", "--help")
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^ {4}(\S+)", result.stdout, re.M)
    assert listed == list(COMMANDS)
    assert set(DOCUMENTED) <= set(listed)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_subcommand_has_help(command):
    result = run_process("-m", "twin.cli", command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: gridtwin {command} ")
    assert "examples:" in result.stdout and "exit codes:" in result.stdout
    assert ("--store" in result.stdout) == (command != "seed")
    assert "--db" not in result.stdout and "--out URL" not in result.stdout  # aliases stay hidden


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_script_help_works_from_a_checkout(script):
    result = run_process(f"scripts/{script}", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script} ")
    assert f"gridtwin {SCRIPTS[script]}" in result.stdout  # the examples name the new command


def test_version():
    for args in (["-m", "twin.cli", "--version"], ["scripts/load_layer.py", "--version"]):
        result = run_process(*args)
        assert (result.returncode, result.stdout.strip()) == (0, f"gridtwin {__version__}")


def test_no_sys_path_edits_anywhere_in_the_repository():
    edits = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*(\+?=|\[)")
    offenders = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"node_modules", "var"}]
        for name in files:
            path = Path(folder) / name
            if name.endswith(".py") and path != Path(__file__):
                text = path.read_text(encoding="utf-8")
                offenders += [f"{path.relative_to(ROOT)}:{n}"
                              for n, line in enumerate(text.splitlines(), 1)
                              if edits.search(line)]
    assert offenders == [], "import through the installed package (pip install -e .) instead"


# -- exit codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    ([], None),  # no command: the help, on stderr
    (["teleport"], "invalid choice"),
    (["load", "--no-such-option"], "unrecognized arguments"),
    (["make-demo", "--scale", "planet"], "invalid choice"),
    (["export", "kpi"], "--out"),
    (["query", "within"], "--out"),
])
def test_usage_errors_exit_2(args, message, capsys):
    code, out, err = cli(*args, capsys=capsys)
    assert code == 2 and out == ""
    assert "usage:" in err and "Traceback" not in err
    if message:
        assert message in err


@pytest.mark.parametrize(("args", "message"), [
    (["load", "--store", "{store}"], "give LAYER PATH"),
    (["load", "houses", "{tmp}/x.csv", "--store", "{store}"], "unknown layer 'houses'"),
    (["load", "--rollback", "buildings", "x", "--store", "{store}"], "VERSION must be a number"),
    (["load", "buildings", "{tmp}/x.csv", "--map", "floors", "--store", "{store}"],
     "write it as FIELD=SOURCE"),
    (["query", "teleport", "--out", "{tmp}/x.csv", "--store", "{store}"], "unknown query"),
    (["query", "within", "-p", "nonsense", "--out", "{tmp}/x.csv", "--store", "{store}"],
     "must read KEY=VALUE"),
    (["export", "kpi", "--out", "{tmp}/r.pdf", "--store", "{store}"], "must end in .csv or .xlsx"),
    (["users", "--store", "{store}"], "nothing to do"),
    (["users", "set-role", "nobody", "admin", "--store", "{store}"], "no user"),
    (["feeds", "--store", "{store}"], "give --source"),
    (["simulate", "--mqtt", "localhost:1883", "--store", "{store}"], "mqtt://host:port"),
    (["seed", "--seed-dir", "{tmp}/no-such-folder"], "no such folder"),
    (["make-demo", "--store", "{store}"], "pass --force"),
    (["export", "kpi", "--out", "{tmp}/r.csv", "--store", "mysql://u:pw@host/db"],
     "unknown store URL scheme 'mysql'"),
])
def test_bad_input_is_one_line_with_a_hint_and_exit_2(store, tmp_path, capsys, args, message):
    if args[0] == "make-demo":
        store.write_layer("community", gpd.GeoDataFrame(
            {"community_code": ["C1"], "name": ["c"]}, geometry=[box(110.29, 25.08, 110.3, 25.09)],
            crs=4326), actor="t", source="t")
    args = [a.format(store=url_of(store), tmp=tmp_path) for a in args]
    code, _, err = cli(*args, capsys=capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err and "(hint: " in err and "Traceback" not in err
    assert "pw@" not in err


def test_a_database_that_cannot_be_reached_is_a_failure_and_its_password_never_shown(capsys):
    url = "postgresql+psycopg://twin:s3cret-pw@127.0.0.1:1/twin"
    for args in (["users", "list", "--store", url], ["make-demo", "--store", url]):
        code, out, err = cli(*args, capsys=capsys)
        assert code == 1, err
        assert len(err.strip().splitlines()) == 1 and "hint: check --store" in err
        assert "s3cret-pw" not in out + err and "127.0.0.1:1" in err


def test_an_internal_error_is_exit_1_without_traceback_unless_debug(store, capsys, monkeypatch):
    from twin import trust

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trust, "list_users", broken)
    code, _, err = cli("users", "list", "--store", url_of(store), capsys=capsys)
    assert code == 1 and "internal error: RuntimeError: disk on fire" in err
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", "users", "list", "--store", url_of(store)])


# -- the store option ---------------------------------------------------------------------------


@pytest.fixture(params=["embedded", "postgis"])
def missing_store(request, tmp_path):
    """A store URL that names nothing yet; yields (url, exists) and removes whatever was made."""
    if request.param == "embedded":
        path = tmp_path / "typo.gpkg"
        yield str(path), path.exists
        return
    request.getfixturevalue("postgis_url")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(POSTGIS_URL)

    def exists() -> bool:
        with engine.connect() as conn:
            return sa.inspect(conn).has_schema(schema)

    yield f"{POSTGIS_URL}?schema={schema}", exists
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema}_history CASCADE"))  # versions
    engine.dispose()


@pytest.mark.parametrize("command", list(READERS))
def test_a_store_that_does_not_exist_is_refused_not_created(missing_store, tmp_path, capsys,
                                                            command):
    url, exists = missing_store
    args = [a.format(tmp=tmp_path) for a in READERS[command]]
    code, out, err = cli(*args, "--store", url, capsys=capsys)
    assert code == 2, err
    assert re.match(r"error: no (store at|twin in) ", err), err
    assert "make-demo" in err and len(err.strip().splitlines()) == 1
    assert "twin:twin@" not in err  # the password is masked
    assert not exists()
    assert not any(tmp_path.iterdir())  # nothing written either


def test_load_create_makes_a_new_store(missing_store, tmp_path, capsys):
    url, exists = missing_store
    community = tmp_path / "c.geojson"
    gpd.GeoDataFrame({"community_code": ["C1"], "name": ["社区"]},
                     geometry=[box(110.29, 25.08, 110.30, 25.09)], crs=4326).to_file(community)
    code, _, err = cli("load", "community", community, "--store", url, capsys=capsys)
    assert code == 2 and "no " in err and not exists()
    code, out, err = cli("load", "community", community, "--store", url, "--create",
                         capsys=capsys)
    assert code == 0, err
    assert "community version 1" in out and exists()
    code, out, _ = cli("load", "--history", "community", "--json", "--store", url, capsys=capsys)
    assert code == 0
    assert [(v["version"], v["rows"], v["current"]) for v in json.loads(out)] == [(1, 1, True)]


def test_the_store_option_at_either_level_and_the_old_spelling(store, tmp_path, capsys):
    url = url_of(store)
    for args in (["export", "--store", url, "kpi", "--out", tmp_path / "a.csv"],
                 ["export", "kpi", "--out", tmp_path / "b.csv", "--store", url],
                 ["export", "--db", url, "kpi", "--out", tmp_path / "c.csv", "--json"]):
        code, out, err = cli(*args, capsys=capsys)
        assert code == 0, err
    import pandas as pd

    written = pd.read_csv(tmp_path / "c.csv", encoding="utf-8-sig")
    assert json.loads(out) == {"out": str(tmp_path / "c.csv"), "rows": len(written)}
    assert {p.name for p in tmp_path.glob("*.csv")} == {"a.csv", "b.csv", "c.csv"}


def test_the_default_store_is_twin_database_url(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TWIN_DATABASE_URL", url_of(store))
    code, out, err = cli("users", "--demo", "--json", capsys=capsys)
    assert code == 0, err
    assert {u["role"] for u in json.loads(out)} >= {"admin", "grid_worker", "resident"}
    monkeypatch.setenv("TWIN_DATABASE_URL", str(tmp_path / "nowhere.gpkg"))
    code, _, err = cli("users", "list", capsys=capsys)
    assert code == 2 and "nowhere.gpkg" in err


# -- data as JSON -------------------------------------------------------------------------------


def test_json_output_is_data(store, capsys):
    url = url_of(store)
    assert cli("users", "--demo", "--store", url, capsys=capsys)[0] == 0
    code, out, _ = cli("users", "list", "--json", "--store", url, capsys=capsys)
    users = json.loads(out)
    assert code == 0 and "admin" in {u["username"] for u in users}
    assert all("password" not in u and "password_hash" not in u for u in users)
    code, out, _ = cli("retention", "--dry-run", "--json", "--store", url, capsys=capsys)
    report = json.loads(out)
    assert code == 0 and report["dry_run"] is True and report["cases_anonymised"] == 0
    code, out, _ = cli("seed", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["categories"] > 0


def test_supervise_lists_then_supervises_an_overdue_case_once(store, grid_cells, capsys):
    from twin import cases

    url = url_of(store)
    store.write_layer("grid_cells", grid_cells, actor="tests", source="tests")
    at = pd.Timestamp("2026-03-02 10:00", tz="Asia/Shanghai")
    case = cases.report(store, category="E0101", lon=LON + 0.0005, lat=LAT + 0.0005,
                        description="路边垃圾堆放", source="patrol", actor="w1",
                        role="grid_worker", grid_cells=grid_cells, at=at)
    for action, minutes in (("file", 30), ("dispatch", 40)):
        cases.transition(store, case["id"], action, actor="d1", role="dispatcher",
                         at=at + pd.Timedelta(minutes=minutes), grid_cells=grid_cells)
    later = ["--now", "2026-03-10T09:00+08:00", "--store", url]
    code, out, _ = cli("supervise", "--dry-run", "--json", *later, capsys=capsys)
    assert code == 0 and json.loads(out) == {"dry_run": True, "organisations": [],
                                              "timeouts": [case["id"]]}
    assert store.get_case(case["id"])["supervised"] == 0  # a dry run changes nothing
    code, out, _ = cli("supervise", *later, capsys=capsys)
    assert code == 0 and f"1 overdue cases were put under timeout supervision: {case['id']}" \
        in out
    step = store.case_history(case["id"]).iloc[-1]
    assert (step["action"], step["actor"]) == ("supervise", "system")
    assert json.loads(cli("supervise", "--json", *later, capsys=capsys)[1])["timeouts"] == []
    code, _, err = cli("supervise", "--now", "next tuesday", "--store", url, capsys=capsys)
    assert code == 2 and "ISO 8601" in err


# -- a command runs as a named user: personal columns follow their role --------------------------


@pytest.fixture
def cells_with_phones(store, grid_cells):
    from twin import trust

    store.write_layer("grid_cells", grid_cells.assign(
        grid_worker=["gw1", "gw2"], grid_worker_phone=["13900001111", "13900002222"]),
        actor="t", source="t")
    for name, role in (("adm", "admin"), ("pla", "planner")):
        trust.create_user(store, name, "long enough", role)
    return store


@pytest.mark.parametrize("user, phones", [
    ("adm", ["13900001111", "13900002222"]),
    ("pla", ["139****1111", "139****2222"]),
    (None, None),
])
def test_query_and_export_show_personal_columns_as_the_named_user_may(
        cells_with_phones, tmp_path, capsys, user, phones):
    import pandas as pd

    from tests.conftest import LAT, LON

    store, url = cells_with_phones, url_of(cells_with_phones)
    named = ["--user", user] if user else []
    query = ["query", "within", "-p", "layer=grid_cells", "-p", "distance_m=500",
             "-p", f"point={LON},{LAT}", "--out", tmp_path / "q.csv", "--store", url, *named]
    export = ["export", "layer", "grid_cells", "--out", tmp_path / "e.csv", "--store", url,
              *named]
    for args, out in ((query, "q.csv"), (export, "e.csv")):
        code, _, err = cli(*args, capsys=capsys)
        assert code == 0, err
        table = pd.read_csv(tmp_path / out, dtype=str)
        if phones is None:
            assert "grid_worker_phone" not in table
        else:
            assert sorted(table["grid_worker_phone"]) == phones
    reads = store.read_audit().query("action == 'personal.read'")
    assert len(reads) == (2 if user == "adm" else 0)
    assert set(reads["actor"]) <= {"adm"}


def test_an_unknown_or_disabled_user_is_refused(cells_with_phones, tmp_path, capsys):
    from twin import trust

    url = url_of(cells_with_phones)
    trust.update_user(cells_with_phones, "pla", disabled=True)
    for name in ("ghost", "pla"):
        code, _, err = cli("export", "layer", "grid_cells", "--out", tmp_path / "x.csv",
                           "--store", url, "--user", name, capsys=capsys)
        assert code == 2 and f"no enabled user {name!r}" in err
    assert not (tmp_path / "x.csv").exists()
