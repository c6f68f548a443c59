"""Planner queries over both stores, every answer a :class:`QueryResult`.

Within distance, nearest, camera coverage, parking, life circles, hot spots, counts per grid and
what-if.
"""

from __future__ import annotations

from twin.query._common import QueryResult
from twin.query.counts import counts_per_grid
from twin.query.hotspots import getis_ord_gi_star, hot_spots
from twin.query.lifecircle import CIRCLES_M, life_circles
from twin.query.parking import parking_balance
from twin.query.proximity import nearest, within_distance
from twin.query.viewshed import cameras_seeing, coverage
from twin.query.whatif import what_if

__all__ = [
    "CIRCLES_M",
    "QUERIES",
    "QueryResult",
    "cameras_seeing",
    "counts_per_grid",
    "coverage",
    "getis_ord_gi_star",
    "hot_spots",
    "life_circles",
    "nearest",
    "parking_balance",
    "what_if",
    "within_distance",
]

# name → function, for the command line and the Analysis page
QUERIES = {
    "within": within_distance,
    "nearest": nearest,
    "coverage": coverage,
    "cameras_seeing": cameras_seeing,
    "parking": parking_balance,
    "life_circles": life_circles,
    "hot_spots": hot_spots,
    "counts": counts_per_grid,
    "what_if": what_if,
}
