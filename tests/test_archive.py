"""Events retention on both stores: old months archived (GeoParquet, read back), then dropped."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest

from tests.test_eventparts import _events
from twin import archive
from twin.errors import ValidationError
from twin.retention import apply_event_retention

NOW = pd.Timestamp("2026-12-06T12:00Z")
#: Two old months (archived with one month kept), and this month and the last (kept).
TIMES = ["2026-08-31T23:59:59Z", "2026-09-01T00:00:00Z", "2026-09-15T06:30:00Z",
         "2026-10-31T23:00:00Z", "2026-11-01T00:00:00Z", "2026-12-05T10:00:00Z"]


def test_old_months_are_archived_read_back_and_dropped_and_readers_keep_the_rest(store,
                                                                                tmp_path):
    events = _events("e", TIMES)
    events.loc[2, ["lon", "lat"]] = None  # an event without a place is archived too
    store.append_events(events)
    kept = store.read_events("2026-11-01", None)
    folder = tmp_path / "archive"

    dry = apply_event_retention(store, months=1, now=NOW, folder=folder, dry_run=True)
    assert [(f"{a.month:%Y-%m}", a.rows) for a in dry.archived] == [
        ("2026-08", 1), ("2026-09", 2), ("2026-10", 1)]
    assert not folder.exists() and len(store.read_events()) == 6

    done = apply_event_retention(store, months=1, now=NOW, folder=folder)
    assert done.cutoff == pd.Timestamp("2026-11-01", tz="UTC")
    assert [(f"{a.month:%Y-%m}", a.rows, a.path.name) for a in done.archived] == [
        ("2026-08", 1, "twin_events_2026-08.parquet"),
        ("2026-09", 2, "twin_events_2026-09.parquet"),
        ("2026-10", 1, "twin_events_2026-10.parquet")]
    september = gpd.read_parquet(folder / "twin_events_2026-09.parquet")
    assert september["id"].tolist() == ["e1", "e2"] and september.crs.to_epsg() == 4326
    assert september.geometry.iloc[1] is None and september.geometry.iloc[0].x == 110.29
    assert september["payload"].tolist() == ['{"values": {"pm25": 31.0}}',
                                              '{"values": {"pm25": 32.0}}']
    # the months are gone; readers answer as before for what was kept
    assert store.event_months(NOW) == {pd.Timestamp("2026-11-01", tz="UTC"): 1,
                                       pd.Timestamp("2026-12-01", tz="UTC"): 1}
    pd.testing.assert_frame_equal(store.read_events(), kept)
    assert store.events_last_seen("2026-01-01").to_dict() == {"S1": pd.Timestamp(TIMES[-1])}
    assert store.read_events("2026-08-01", "2026-11-01").empty
    # a second run finds nothing more to drop; the audit log has the three runs
    assert apply_event_retention(store, months=1, now=NOW, folder=folder).archived == []
    audit = store.read_audit()
    runs = audit[audit["action"] == "retention.events"]
    archived = runs.astype(str).apply(lambda row: '"2026-09"' in " ".join(row), axis=1)
    assert len(runs) == 3 and archived.tolist() == [True, True, False]  # dry run, run, again


def test_an_archive_that_does_not_read_back_whole_stops_the_drop(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValidationError, match="cannot be read back"):
        archive.check_archive(path, 1)
    assert archive.archive_path(tmp_path, "2026-09-10") == tmp_path / "twin_events_2026-09.parquet"
    (tmp_path / "twin_events_2026-09.parquet").touch()
    assert archive.archive_path(tmp_path, "2026-09-10").name == "twin_events_2026-09.2.parquet"


def test_gridtwin_retention_archives_the_months_past_keep_months(tmp_path, capsys):
    import json

    from twin.cli import main
    from twin.store import open_store

    path = tmp_path / "twin.gpkg"
    with open_store(path) as s:
        s.append_events(_events("e", ["2020-01-05T00:00:00Z", "2020-02-05T00:00:00Z"]))
    folder = tmp_path / "archive"
    assert main(["retention", "--keep-months", "12", "--archive-dir", str(folder), "--json",
                 "--store", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)["events"]
    assert [(a["month"], a["rows"]) for a in report["archived"]] == [("2020-01", 1),
                                                                     ("2020-02", 1)]
    assert sorted(p.name for p in folder.iterdir()) == ["twin_events_2020-01.parquet",
                                                        "twin_events_2020-02.parquet"]
    assert main(["retention", "--keep-months", "-1", "--store", str(path)]) == 2
