"""Colour ramps, class breaks, rounded values with units, and a legend as escaped HTML.

A map result is only an answer when its reader can decode it: which colour means how much, in
which unit. Everything here is pure (numbers and strings in, numbers and strings out): the page
passes the words of the chosen language, the library never looks them up itself.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from twin.errors import ValidationError

#: Colour ramps, low → high, as RGB stops (ColorBrewer, colour-blind safe). ``sequential`` for
#: "more is worse" (cases, blind spots, lacking facilities), ``good`` for "more is better"
#: (coverage), ``diverging`` for signed values around 0 (balance, change), blue below, red above.
RAMPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "sequential": ((255, 255, 178), (254, 204, 92), (253, 141, 60), (240, 59, 32), (189, 0, 38)),
    "good": ((237, 248, 233), (186, 228, 179), (116, 196, 118), (49, 163, 84), (0, 109, 44)),
    "diverging": ((33, 102, 172), (103, 169, 207), (247, 247, 247), (239, 138, 98), (178, 24, 43)),
}
#: The same, red below 0 and blue above (a balance: short is bad).
RAMPS["diverging_r"] = RAMPS["diverging"][::-1]
#: Colour of features whose value is missing.
NO_DATA = (120, 120, 130)
METHODS = ("quantile", "equal")
#: Most and fewest classes a legend may have (more cannot be told apart by eye).
MIN_CLASSES, MAX_CLASSES = 2, 7


@dataclass(frozen=True)
class Legend:
    """What a map's colours mean: a title, a unit and one (colour, label) row per class."""

    title: str
    unit: str
    entries: tuple[tuple[tuple[int, ...], str], ...]
    note: str = ""


# -- numbers ----------------------------------------------------------------------------------


def decimals_for(values: np.ndarray | Sequence[float]) -> int:
    """Decimals that show *values* without false precision: 0 from 100 up, 1 from 10, else 2.

    Decided once for a whole column (by its largest magnitude) so that a column reads alike.
    """
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    top = float(v.max()) if len(v) else 0.0
    return 0 if top >= 100 else 1 if top >= 10 else 2


def format_values(values, unit: str = "", *, decimals: int | None = None,
                  scale: float = 1.0, missing: str = "—", sign: bool = False) -> pd.Series:
    """Values as rounded display text with thousands separators and a unit: ``12,345 m²``.

    Parameters
    ----------
    values
        Numbers (NaN and None are missing).
    unit
        Written after the number with a thin space (``%`` without one).
    decimals
        Digits after the point; by default 1 for per cent, else :func:`decimals_for` of the
        scaled values.
    scale
        Factor applied first (100 turns a share into per cent).
    missing
        Text of a missing value.
    sign
        Write ``+`` before positive values (a change).

    Returns
    -------
    pandas.Series
        One string per value, in the order given.
    """
    v = pd.to_numeric(pd.Series(values).reset_index(drop=True), errors="coerce")
    v = v.astype("float64") * float(scale)
    if decimals is not None:
        places = int(decimals)
    else:
        places = 1 if unit == "%" else decimals_for(v.to_numpy())
    factor = 10.0**places
    rounded = np.sign(v) * np.floor(np.abs(v) * factor + 0.5) / factor  # half away from 0
    text = rounded.map(lambda x: f"{x:,.{places}f}" if math.isfinite(x) else missing)
    text = text.str.replace(r"^-(0(\.0+)?)$", r"\1", regex=True)  # no "-0.0"
    if sign:
        text = text.where(~(rounded > 0), "+" + text)
    if unit:
        sep = "" if unit == "%" else " "
        text = text.where(text == missing, text + sep + unit)
    return text.astype(object)


def format_value(value, unit: str = "", *, decimals: int | None = None, scale: float = 1.0,
                 sign: bool = False) -> str:
    """One value as :func:`format_values` writes it."""
    return str(format_values([value], unit, decimals=decimals, scale=scale, sign=sign).iloc[0])


# -- classes ----------------------------------------------------------------------------------


def breaks(values, k: int = 5, method: str = "quantile", *, diverging: bool = False,
           decimals: int | None = None) -> np.ndarray:
    """Class edges of *values*: ``k + 1`` ascending edges from the minimum to the maximum.

    Parameters
    ----------
    values
        Numbers; missing values are ignored.
    k
        Number of classes, 2–7 (fewer come back when there are fewer distinct values).
    method
        ``"quantile"`` (about as many features per class) or ``"equal"`` (equal intervals).
    diverging
        Centre the classes on 0 (symmetric equal intervals from −max|v| to +max|v|).
    decimals
        Edges are rounded to this many decimals (by default :func:`decimals_for`); the first is
        rounded down and the last up so that every value falls inside.

    Returns
    -------
    numpy.ndarray
        Unique ascending edges; a single value gives ``[v, v]``, no values ``[]``.

    Raises
    ------
    ValidationError
        *k* out of range or an unknown method.
    """
    if not (isinstance(k, (int, np.integer)) and MIN_CLASSES <= k <= MAX_CLASSES):
        raise ValidationError(f"classes must be a whole number {MIN_CLASSES}–{MAX_CLASSES}, "
                              f"got {k!r}")
    if method not in METHODS:
        raise ValidationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.array([])
    places = decimals_for(v) if decimals is None else decimals
    step = 10.0 ** -places
    lo = math.floor(v.min() / step) * step
    hi = math.ceil(v.max() / step) * step
    if hi <= lo:
        return np.array([lo, lo])
    if diverging:
        top = max(abs(lo), abs(hi))
        edges = np.linspace(-top, top, k + 1)
    elif method == "equal":
        edges = np.linspace(lo, hi, k + 1)
    else:
        edges = np.quantile(v, np.linspace(0, 1, k + 1))
    edges = np.round(edges, places)
    edges[0], edges[-1] = min(edges[0], lo), max(edges[-1], hi)
    return np.unique(edges)


def classify(values, edges: np.ndarray) -> np.ndarray:
    """Class index of each value under *edges* (0 … len(edges) − 2); −1 where missing.

    A value on an inner edge belongs to the class above it; the maximum to the last class.
    """
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    edges = np.asarray(edges, dtype=float)
    classes = max(len(edges) - 1, 1)
    idx = np.searchsorted(edges[1:-1], v, side="right") if len(edges) > 2 else np.zeros(len(v))
    idx = np.clip(idx, 0, classes - 1).astype(int)
    return np.where(np.isfinite(v), idx, -1)


def ramp(name: str, n: int) -> list[tuple[int, int, int]]:
    """*n* colours evenly spread along the ramp *name* (see :data:`RAMPS`).

    Raises
    ------
    ValidationError
        Unknown ramp.
    """
    if name not in RAMPS:
        raise ValidationError(f"ramp must be one of {', '.join(RAMPS)}, got {name!r}")
    stops = np.array(RAMPS[name], dtype=float)
    if n <= 1:
        return [tuple(int(c) for c in stops[len(stops) // 2])]
    at = np.linspace(0, len(stops) - 1, n)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, len(stops) - 1)
    frac = (at - lo)[:, None]
    out = np.rint(stops[lo] + (stops[hi] - stops[lo]) * frac).astype(int)
    return [tuple(int(c) for c in row) for row in out]


def class_labels(edges: np.ndarray, unit: str = "", *, decimals: int | None = None,
                 scale: float = 1.0) -> list[str]:
    """Labels of the classes under *edges*: ``0 – 12 %``; one value alone reads ``5 %``."""
    if len(edges) == 0:
        return []
    text = format_values(edges, unit, decimals=decimals, scale=scale).tolist()
    bare = format_values(edges, "", decimals=decimals, scale=scale).tolist()
    if len(edges) == 2 and edges[0] == edges[1]:
        return [text[0]]
    return [f"{bare[i]} – {text[i + 1]}" for i in range(len(edges) - 1)]


def numeric(values, title: str, unit: str = "", *, ramp_name: str = "sequential", k: int = 5,
            method: str = "quantile", scale: float = 1.0, alpha: int = 200,
            missing_label: str = "—") -> tuple[Legend, list[list[int]]]:
    """Colour *values* as a choropleth: return its legend and one RGBA colour per value.

    Parameters
    ----------
    values
        The numbers drawn (before *scale*).
    title, unit
        The legend's heading and the unit written on its labels, in the reader's language.
    ramp_name
        A key of :data:`RAMPS`; the ``diverging`` ramps centre the classes on 0.
    k, method
        Classes and how they are cut, see :func:`breaks`.
    scale
        Factor for display only (100: shares as per cent).
    alpha
        Opacity of the fills, 0–255.
    missing_label
        Legend label of missing values (shown only when some are missing).

    Returns
    -------
    tuple
        The :class:`Legend` and the colours, in the order of *values*.
    """
    scaled = pd.to_numeric(pd.Series(values), errors="coerce").astype("float64") * scale
    finite = scaled.to_numpy()[np.isfinite(scaled.to_numpy())]
    if len(finite) and np.all(finite == np.round(finite)):
        places = 0  # counts: classes of whole numbers
    else:
        places = 1 if unit == "%" else decimals_for(finite)
    edges = breaks(scaled, k, method, diverging=ramp_name.startswith("diverging"),
                   decimals=places)
    n = max(len(edges) - 1, 1)
    palette = ramp(ramp_name, n) if n > 1 else [ramp(ramp_name, 5)[-1]]
    idx = classify(scaled, edges)
    colours = np.array([(*c, alpha) for c in palette] + [(*NO_DATA, alpha // 2)], dtype=int)
    picked = colours[np.where(idx >= 0, idx, len(palette))].tolist()
    entries = list(zip([(*c, alpha) for c in palette],
                       class_labels(edges, unit, decimals=places), strict=False))
    if (idx < 0).any():
        entries.append(((*NO_DATA, alpha // 2), missing_label))
    return Legend(title, unit, tuple(entries)), picked


def categorical(values, title: str, categories: Mapping[str, tuple[str, tuple[int, ...]]], *,
                alpha: int = 200) -> tuple[Legend, list[list[int]]]:
    """Colours of category *values* (``hot``, ``cold`` …) and their legend.

    *categories* maps each value to its (label, RGB colour), in legend order; values not in it
    are drawn in :data:`NO_DATA`. Only categories that occur are listed, with their counts.
    """
    v = pd.Series(values).astype(object).reset_index(drop=True)
    colour_of = {k: (*rgb[:3], alpha) for k, (_label, rgb) in categories.items()}
    picked = [list(c) for c in v.map(colour_of).where(v.isin(list(colour_of)),
                                                      other=(*NO_DATA, alpha)).tolist()]
    counts = v.value_counts()
    entries = tuple((colour_of[k], f"{label} ({int(counts[k])})")
                    for k, (label, _rgb) in categories.items() if k in counts.index)
    return Legend(title, "", entries), picked


# -- tooltips and HTML ------------------------------------------------------------------------


def tooltip_lines(title, columns: Sequence[tuple[str, object]]) -> list[str]:
    r"""Hover texts: a title line, then ``label: value`` per column where the value is known.

    Parameters
    ----------
    title
        One string for every feature, or one per feature.
    columns
        ``(label, texts)`` pairs, texts already formatted (:func:`format_values`); ``"—"``,
        None and empty strings are left out.

    Returns
    -------
    list of str
        Plain text joined by newlines: the map shows it as text, never as HTML.
    """
    lead = pd.Series(title).astype(str).reset_index(drop=True)
    n = max((len(pd.Series(t)) for _, t in columns), default=len(lead))
    out = (lead if len(lead) == n else pd.Series([lead.iloc[0]] * n)).to_numpy(dtype=object)
    for label, texts in columns:
        t = pd.Series(texts).reset_index(drop=True).astype(object)
        known = (t.notna() & (t.astype(str) != "") & (t.astype(str) != "—")).to_numpy()
        out[known] = out[known] + "\n" + str(label) + ": " + t[known].astype(str).to_numpy()
    return out.tolist()


def legend_html(legend: Legend) -> str:
    """Return the legend as a small HTML block, a swatch and label per class, texts escaped.

    The markup is fixed here; the title, unit, labels and note are escaped with
    :func:`html.escape`, so a layer or category named ``<img onerror=…>`` is shown, not run.
    """
    rows = "".join(
        '<div class="gt-legend-row" style="display:flex;align-items:center;gap:6px;'
        'margin:2px 0">'
        f'<span class="gt-legend-swatch" style="display:inline-block;width:18px;height:12px;'
        f'border:1px solid #555;background:rgba({int(c[0])},{int(c[1])},{int(c[2])},'
        f'{(int(c[3]) if len(c) > 3 else 255) / 255:.2f})"></span>'
        f'<span>{html.escape(label)}</span></div>'
        for c, label in legend.entries
    )
    unit = f' <span class="gt-legend-unit">({html.escape(legend.unit)})</span>' \
        if legend.unit else ""
    note = f'<div class="gt-legend-note" style="opacity:.75;font-size:.8em">' \
        f'{html.escape(legend.note)}</div>' if legend.note else ""
    return ('<div class="gt-legend" data-testid="planner-legend" style="font-size:.9em;'
            'line-height:1.3">'
            f'<div class="gt-legend-title" style="font-weight:600">{html.escape(legend.title)}'
            f'{unit}</div>{rows}{note}</div>')
