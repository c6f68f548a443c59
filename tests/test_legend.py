"""Legends of planner results: class breaks, colours, rounded values with units, escaped HTML."""

from __future__ import annotations

import numpy as np
import pytest

from twin import legend as L
from twin.errors import ValidationError


@pytest.mark.parametrize(
    ("values", "unit", "kwargs", "expected"),
    [
        ([0.093713612298358, 1.0], "%", {"scale": 100}, ["9.4%", "100.0%"]),
        ([12345.678901234567, 2.5], "m²", {}, ["12,346 m²", "3 m²"]),
        ([1.23456, 0.5], "m", {}, ["1.23 m", "0.50 m"]),
        ([float("nan"), None, 3.0], "件", {}, ["—", "—", "3.00 件"]),
        ([-0.0001, 2.0], "", {"decimals": 1}, ["0.0", "2.0"]),
        ([-374.0, 12.0], "个", {"decimals": 0}, ["-374 个", "12 个"]),
    ],
)
def test_values_are_rounded_with_their_unit(values, unit, kwargs, expected):
    assert L.format_values(values, unit, **kwargs).tolist() == expected


def test_changes_carry_their_sign():
    assert L.format_values([0.0033, -0.01, 0.0], "pp", scale=100, decimals=2, sign=True
                           ).tolist() == ["+0.33 pp", "-1.00 pp", "0.00 pp"]


def test_no_sixteen_digit_floats_survive():
    text = L.format_values(np.random.default_rng(0).random(50) * 1e5, "m²")
    assert text.str.len().max() <= len("100,000 m²")
    assert not text.str.contains(r"\d{7}").any()


def test_quantile_breaks_cover_every_value_and_classes_are_ordered():
    v = np.r_[np.zeros(10), np.arange(1, 41)]
    edges = L.breaks(v, 5, "quantile")
    assert edges[0] <= v.min() and edges[-1] >= v.max() and np.all(np.diff(edges) > 0)
    idx = L.classify(v, edges)
    assert idx.min() == 0 and idx.max() == len(edges) - 2
    assert np.all(np.diff(idx[np.argsort(v, kind="stable")]) >= 0)  # more never lower class
    assert L.classify([np.nan], edges).tolist() == [-1]


def test_equal_and_diverging_breaks():
    assert L.breaks([0, 10], 5, "equal", decimals=0).tolist() == [0, 2, 4, 6, 8, 10]
    d = L.breaks([-30, 10], 4, diverging=True, decimals=0)
    assert d.tolist() == [-30, -15, 0, 15, 30]  # symmetric: 0 sits on an edge
    assert L.breaks([5, 5, 5], 5).tolist() == [5, 5]
    assert len(L.breaks([], 5)) == 0


@pytest.mark.parametrize(("k", "method"), [(1, "quantile"), (9, "quantile"), (5, "jenks"),
                                           (2.5, "equal")])
def test_bad_classes_are_refused(k, method):
    with pytest.raises(ValidationError, match="classes must be|method must be"):
        L.breaks([1, 2, 3], k, method)


def test_numeric_legend_lists_ranges_with_units_and_colours_follow_the_values():
    shares = [0.0, 0.051, 0.1, 0.2, 0.4, np.nan]
    legend, colours = L.numeric(shares, "Coverage", "%", ramp_name="good", k=4, scale=100,
                                missing_label="no data")
    labels = [label for _c, label in legend.entries]
    assert labels[0].startswith("0.0 – ") and labels[0].endswith("%")
    assert labels[-1] == "no data" and len(colours) == len(shares)
    assert colours[0] != colours[4]  # low and high differ
    assert colours[0] == list(legend.entries[0][0]) and colours[4] == list(legend.entries[-2][0])


def test_categorical_legend_counts_and_keeps_order():
    cats = {"hot": ("Hot spot", (215, 48, 39)), "cold": ("Cold spot", (69, 117, 180)),
            "not significant": ("Not significant", (200, 200, 200))}
    legend, colours = L.categorical(["hot", "not significant", "hot", "odd"], "Spots", cats)
    assert [label for _c, label in legend.entries] == ["Hot spot (2)", "Not significant (1)"]
    assert colours[0][:3] == [215, 48, 39] and colours[3][:3] == list(L.NO_DATA)


def test_legend_html_escapes_every_text():
    evil = '<img src=x onerror="window.__xss=1">'
    legend = L.Legend(evil, evil, (((1, 2, 3, 255), evil),), note=evil)
    out = L.legend_html(legend)
    assert "<img" not in out and out.count("&lt;img") == 4
    assert 'data-testid="planner-legend"' in out and "rgba(1,2,3,1.00)" in out


def test_tooltips_leave_out_missing_values():
    lines = L.tooltip_lines(["A", "B"], [("Area", L.format_values([1234.5, None], "m²"))])
    assert lines == ["A\nArea: 1,235 m²", "B"]


def test_counts_get_whole_number_classes():
    legend, _ = L.numeric([0, 1, 1, 2, 3, 7, 9], "Kinds lacking", "kinds", k=4)
    labels = [label for _c, label in legend.entries]
    assert all("." not in label for label in labels), labels
    assert labels[0].startswith("0 – ") and labels[-1].endswith("9 kinds")
