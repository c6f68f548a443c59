"""SensorThings as a user may read it: the public view rounded and without home-presence readings.

Staff (``sensors.private``) see exact sensor places, the building and parking lot a sensor
belongs to, and every reading; the audit log records each such read as ``personal.read``. The
public and residents see locations rounded to the public grid (as on the public page), no
building or lot, and no Datastreams of the properties in :data:`PRIVATE_PROPERTIES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import pandas as pd

from twin import layercache, sensorthings
from twin.errors import LayerNotFoundError
from twin.trust.permissions import User, can
from twin.trust.privacy import protect, round_location
from twin.trust.users import resolve

#: Readings that tell when someone is at home; only roles with ``sensors.private`` see them.
PRIVATE_PROPERTIES = frozenset({"door", "flow"})
#: Observations are read from this many days back unless ``$filter`` asks for earlier times.
OBSERVATION_DAYS = 30


def _sensors(store) -> gpd.GeoDataFrame:
    try:
        return layercache.layer(store, "sensors")
    except LayerNotFoundError:
        from twin.layers import get_layer

        spec = get_layer("sensors")
        return gpd.GeoDataFrame({c: [] for c in spec.column_names}, geometry=[], crs=4326)


def catalog(store, user: User | None, query: Mapping[str, Any] | None = None, *,
            origin: str = "", now: Any = None) -> sensorthings.Catalog:
    """Return the SensorThings entities *user* may see (Observations read only when asked for).

    Observations cover the last :data:`OBSERVATION_DAYS` days, or from the earliest
    ``phenomenonTime`` an and-joined ``$filter`` allows.
    """
    user = resolve(store, user)
    private = can(user, "sensors.private")
    sensors = protect(store, user, _sensors(store), ["sensors"], what="sensorthings",
                      origin=origin)
    if not private and len(sensors):
        lon, lat = round_location(sensors.geometry.x.to_numpy(), sensors.geometry.y.to_numpy())
        sensors = sensors.set_geometry(gpd.points_from_xy(lon, lat, crs=sensors.crs))
    thing, location = sensorthings.things(sensors, private=private)
    hidden = set() if private else set(PRIVATE_PROPERTIES)
    streams = sensorthings.datastreams(thing, sensors["kind"], hidden)
    props = sensorthings.observed_properties()
    if not private:
        props = props.loc[~props["@iot.id"].isin(PRIVATE_PROPERTIES)]
    filter_text = (query or {}).get("$filter")

    def observations() -> pd.DataFrame:
        end = pd.Timestamp(now, tz="UTC") if now is not None else pd.Timestamp.now("UTC")
        start = sensorthings.time_floor(filter_text) or end - pd.Timedelta(days=OBSERVATION_DAYS)
        events = store.read_events(start=start.to_pydatetime(), kind="obs")
        return sensorthings.observations(events, streams)

    return sensorthings.Catalog({
        "Things": lambda: thing.drop(columns="_declared"), "Locations": lambda: location,
        "Datastreams": lambda: streams, "ObservedProperties": lambda: props,
        "Observations": observations,
    }, sensorthings.fiware_aliases("sensors"))


def read(store, user: User | None, path: str, query: Mapping[str, Any], *, base: str,
         origin: str = "", now: Any = None) -> dict[str, Any]:
    """Answer a SensorThings GET as *user* (see :func:`twin.sensorthings.answer`); audited.

    A read with the private view by a named user is written to the audit log as
    ``personal.read`` (what was read and how many entities, never the values).
    """
    user = resolve(store, user)
    result = sensorthings.answer(catalog(store, user, query, origin=origin, now=now), path,
                                 query, base)
    if can(user, "sensors.private"):
        rows = len(result["value"]) if "value" in result else 1
        store.append_audit(user.username, "personal.read", f"sensorthings:{path.strip('/')}",
                           {"role": user.role, "rows": rows}, origin or "sensorthings")
    return result


def service_root(base: str) -> dict[str, Any]:
    """Return the service root document: the entity sets and the conformance classes."""
    return {
        "value": [{"name": n, "url": f"{base}/{n}"} for n in sensorthings.ENTITY_SETS],
        "serverSettings": {"conformance": [
            "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
            "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
            "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
        ]},
    }
