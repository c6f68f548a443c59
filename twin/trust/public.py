"""What the public transparency page shows: reports and fixes, anonymised and rounded."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from twin import kpi
from twin.cases import case_table
from twin.timeutil import local_zone
from twin.trust.privacy import round_location

#: How many recently fixed cases the public page lists.
RECENT = 20


@dataclass(frozen=True)
class PublicSummary:
    """Everything the public may see of the case loop; no person, text or exact place in it.

    ``monthly``: reported and fixed per local month (index ``YYYY-MM``); ``per_grid``: reported
    and fixed per unit grid; ``recent``: the latest fixes (category, grid, local close date and
    a location rounded to the public grid); ``staff``: per ``assignee`` and ``department``, the
    cases handled and the on-time close rate.
    """

    monthly: pd.DataFrame
    per_grid: pd.DataFrame
    recent: pd.DataFrame
    staff: dict[str, pd.DataFrame]

    @property
    def empty(self) -> bool:
        return self.per_grid.empty


def public_summary(store, *, recent: int = RECENT) -> PublicSummary:
    """Return what anyone, logged in or not, may see of the cases (see docs/trust.md).

    No description, reporter, photo or exact place is returned: they could identify people.
    Locations are rounded with :func:`twin.trust.privacy.round_location`.
    """
    cases = store.read_cases()
    zone = local_zone()
    requested = pd.to_datetime(cases["requested_at"], utc=True).dt.tz_convert(zone)
    closed = pd.to_datetime(cases["closed_at"], utc=True).dt.tz_convert(zone)
    monthly = pd.DataFrame({
        "reported": requested.dt.strftime("%Y-%m").value_counts(),
        "fixed": closed.dropna().dt.strftime("%Y-%m").value_counts(),
    }).fillna(0).astype(int).sort_index()
    per_grid = pd.DataFrame({
        "grid": cases["grid_code"].fillna("—"),
        "reported": 1,
        "fixed": closed.notna().astype(int),
    }).groupby("grid").sum()
    done = cases.loc[closed.notna()].assign(_closed=closed[closed.notna()])
    done = done.sort_values("_closed", ascending=False).head(recent)
    lon, lat = round_location(done["lon"], done["lat"])
    latest = pd.DataFrame({
        "category": done["service_code"].to_numpy(),
        "grid": done["grid_code"].to_numpy(),
        "closed_on": done["_closed"].dt.strftime("%Y-%m-%d").to_numpy(),
        "lon": lon,
        "lat": lat,
    })
    staff: dict[str, pd.DataFrame] = {}
    table = case_table(cases)
    for by in ("assignee", "department"):
        if len(table) and table[by].notna().any():
            work = kpi.indicators(table.loc[table[by].notna()], by=by)
            staff[by] = pd.DataFrame({
                by: work[by],
                "handled": work["closed"],
                "ontime_close_rate": work["ontime_close_rate"].round(1),
            })
    return PublicSummary(monthly, per_grid, latest, staff)
