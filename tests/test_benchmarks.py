"""The benchmark harness at community scale: answers compared, figures and report (no timing)."""

from __future__ import annotations

import json

import pytest

from benchmarks import MEASUREMENTS, common, compare, enrich, kpi, report, scenarios
from benchmarks.__main__ import parse, plan


@pytest.fixture(scope="module")
def scen():
    return scenarios.scenario("community")


def test_measure_keeps_repeats_answer_and_peak():
    calls = []
    t = common.measure(lambda: calls.append(1) or len(calls), repeats=5, warmup=1)
    assert len(calls) == 6 and len(t.times) == 5 and t.answer == 6
    assert t.median >= 0 and t.pct(0.95) == max(t.times) and t.peak_mb > 0


def test_interleaved_sides_take_turns_and_keep_their_own_times():
    calls = []

    def side(name, seconds):
        def run():
            calls.append(name)
            return seconds, f"{name} answer"
        return run

    (a_times, a_answer), (b_times, b_answer) = common.interleaved(
        [side("a", 1.0), side("b", 2.0)], rounds=4, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert (a_times, b_times) == ([1.0] * 4, [2.0] * 4)
    assert (a_answer, b_answer) == ("a answer", "b answer")


def test_figure_speedup_for_times_and_throughputs():
    slow, fast = common.Timing([2.0], None, 1.0), common.Timing([1.0], None, 1.0)
    assert common.figure("x", "c", "community", {}, "o", "a", fast, slow, True).speedup == 2.0
    f = common.figure("x", "c", "community", {}, "o", "a", fast, slow, True, unit="per_s")
    assert f.speedup == 0.5
    assert common.figure("x", "c", "community", {}, "o", "a", None, slow, None).speedup is None


def test_enrichment_and_sjoin_agree_and_a_wrong_answer_is_caught(scen):
    pts = scenarios.points(scen, 2_000)
    layers = {k: scen[k] for k in ("grid_cells", "buildings", "parking", "cameras")}
    ours = enrich.ours(pts, layers)
    anchor = enrich.anchor(pts, layers)
    assert enrich.same(ours, anchor)
    grid, _, building, lot, cams = ours
    # every kind of assignment is exercised: in a building, in a lot, seen by two cameras
    assert sum(v is not None for v in building) > 0 and sum(v is not None for v in lot) > 0
    assert max(len(c) for c in cams) >= 2
    for column in range(len(enrich.COLUMNS)):
        wrong = list(ours)
        wrong[column] = ours[column].copy()
        i = next(i for i, v in enumerate(ours[column]) if v not in (None, ()))
        wrong[column][i] = () if column == 4 else None
        assert not enrich.same(tuple(wrong), anchor), enrich.COLUMNS[column]


def test_indicators_equal_the_sql_group_by(scen, postgis_url, monkeypatch):
    import pandas as pd

    from twin import scenario as tscen

    monkeypatch.setattr(common, "PG_URL", postgis_url)
    cases = tscen.make_cases(scen, 500, start=kpi.START, end=kpi.END)
    with common.pg_store() as store:
        kpi._fill(store, cases)
        rows = pd.DataFrame(common.sql_rows(store, kpi.SQL),
                            columns=["grid_code", "period", *kpi.COUNTS])
        assert kpi._same(kpi._store_path(store), rows)
        assert kpi._same(kpi._in_memory(store), rows)
        assert not kpi._same(kpi._store_path(store).iloc[1:], rows)


def test_plan_picks_measurements_and_scales():
    assert plan(parse(["--only", "kpi", "--scale", "city"])) == [("kpi", "city")]
    quick = plan(parse(["--quick"]))
    assert {n for n, _ in quick} == set(MEASUREMENTS)
    assert ("enrich", "community") in quick and ("enrich", "city") not in quick


def test_report_names_every_target_and_draws_plots(tmp_path):
    figs = [
        common.figure("enrich", "points → unit grid + building", s, {"points": 10}, "o", "a",
                      common.Timing([1.0], None, 100.0), common.Timing([2.0], None, 90.0), True
                      ).as_dict() for s in ("community", "city")
    ]
    figs.append({"measurement": "load", "scale": "city", "error": "boom"})
    results = {"started": "now", "quick": False, "total_s": 1.0, "figures": figs,
               "machine": {"cores": 2, "versions": {"shapely": "2"}, "load_avg": (1.0,)}}
    doc = tmp_path / "docs" / "benchmarks.md"
    report.write(results, doc)
    text = doc.read_text()
    assert (tmp_path / "docs" / "img" / "bench_enrich.png").stat().st_size > 1000
    assert "img/bench_enrich.png" in text and "**failed**" in text and "boom" in text
    rows = report.targets(figs)
    assert [r for r in rows if "1,000,000 points" in r[1]][0][3] == "met"
    assert sum("not measured" in r[3] for r in rows) == len(rows) - 1
    json.dumps(results)  # the figures stay JSON-ready


def test_query_anchors_and_ours_agree_on_both_stores(scen, postgis_url, monkeypatch, tmp_path):
    import shapely

    from benchmarks import queries
    from twin.store import open_store

    monkeypatch.setattr(common, "PG_URL", postgis_url)
    pts = shapely.point_on_surface(scen["buildings"].geometry.values[:3])
    xy = [(float(p.x), float(p.y)) for p in pts]
    with common.pg_store() as pg, open_store(tmp_path / "q.gpkg") as emb:
        queries._fill(pg, scen)
        queries._fill(emb, scen)
        for name, (_, ids_only, rows, frame, ours, args) in queries.sides(pg, xy).items():
            for a in args:
                want = ids_only(*a)
                assert want and frame(*a) == want, name  # a real answer, the same from all
                assert rows(*a) == want, name
                assert ours(pg, *a) == want and ours(emb, *a) == want, name
        within = queries.sides(pg, xy)["within"]
        assert within[1](*xy[0]) != within[1](*xy[1])  # different points, different answers


def test_browser_steps_are_judged_against_their_limits():
    from benchmarks import browser

    def fig(step, seconds):
        return common.Figure("browser", step, "community", {}, "o", "floor", seconds, 0.5, 3,
                             None, extra={"limit_s": browser.LIMITS[step]}).as_dict()

    rows = report.targets([fig("login → first map", 2.5), fig("back to the cockpit", 1.6)])
    verdicts = {r[1].split(", ")[1].split(" ≤")[0]: r[3] for r in rows if r[0] == "17 cockpit"}
    assert verdicts == {"login → first map": "met", "back to the cockpit": "**NOT met**",
                        "language switch": "**not measured**"}


def _pass(**rows):
    """A quick pass's results: {case: (ratio or None, our seconds or an error text)}."""
    figures = []
    for case, (ratio, ours) in rows.items():
        if isinstance(ours, str):
            figures.append({"measurement": "m", "case": case, "scale": "street", "error": ours})
            continue
        figures.append({"measurement": "m", "case": case, "scale": "street", "ours_s": ours,
                        "speedup": ratio, "unit": "per_s" if case == "rate" else "s"})
    return {"figures": figures}


def test_compare_judges_each_row_by_the_median_of_its_passes():
    before = [_pass(kpi=(6.0, 0.019), near=(8.0, 0.4), cover=(None, 1.0), rate=(0.8, 1000.0)),
              _pass(kpi=(6.6, 0.017), near=(8.4, 0.4), cover=(None, 1.2), rate=(0.7, 900.0)),
              _pass(kpi=(1.0, 0.100), near=(8.2, 0.4), cover=(None, 1.1), rate=(0.9, 1100.0))]
    after = [_pass(kpi=(9.0, 0.012), near=(7.0, 0.5), cover=(None, 1.0), rate=(0.8, 1000.0),
                   gone=(None, "boom")),
             _pass(kpi=(8.0, 0.013), near=(7.8, 0.4), cover=(None, 1.0), rate=(0.8, 1000.0)),
             _pass(kpi=(8.5, 0.013), near=(7.2, 0.5), cover=(None, 1.0), rate=(0.8, 1000.0))]
    rows = {r["case"]: r for r in compare.summarise(before, after)}
    assert list(rows) == ["kpi", "near", "cover", "rate", "gone"]
    kpi_row = rows["kpi"]  # one slow pass on a side does not move its median
    assert kpi_row["ratio_before"] == 6.0 and kpi_row["ratio_after"] == 8.5
    assert kpi_row["change"] == pytest.approx(8.5 / 6.0) and kpi_row["worse"] is False
    assert kpi_row["ours_before_s"] == 0.019 and kpi_row["passes"] == [3, 3]
    assert rows["near"]["change"] == pytest.approx(7.2 / 8.2) and rows["near"]["worse"] is True
    cover = rows["cover"]  # no anchor: our own times, before ÷ after
    assert cover["by"] == "time" and cover["change"] == pytest.approx(1.1) and not cover["worse"]
    assert rows["rate"]["ours_after_s"] == pytest.approx(1 / 1000)  # throughput: its inverse
    gone = rows["gone"]
    assert gone["change"] is None and gone["worse"] is None and gone["errors"] == ["boom"]
    text = compare.table(list(rows.values()), base="a" * 40, head="b", rounds=3, started="now")
    assert "**Ratios: 2 of 3 rows within 5% or better; worse by more than 5%: near at street " \
        "(0.88).**" in text
    assert "(our own time only, for information): 1 of 1 within 5% or better." in text
    assert "| m | near | street | 3 / 3 | 8.2 | 7.2 | **0.88** | 400 ms → 500 ms |" in text
    assert "Failed in some pass: boom" in text


def test_a_full_report_keeps_the_last_comparison(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nold text\n")
    compare.put_block(doc, "first comparison\n")
    compare.put_block(doc, "second comparison\n")
    text = doc.read_text()
    assert text.count(compare.BEGIN) == 1 and "second comparison" in text
    assert "first comparison" not in text and text.startswith("# Benchmarks\n\nold text")
    results = {"started": "now", "quick": True, "total_s": 1.0, "figures": [],
               "machine": {"cores": 2, "versions": {}, "load_avg": (1.0,)}}
    report.write(results, doc)
    text = doc.read_text()
    assert "old text" not in text and "second comparison" in text
    assert compare.kept_block(doc).endswith(compare.END)
