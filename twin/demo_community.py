"""The lived-in demo's volunteers, tasks, sign-ups, points and residents' proposals.

Called once by :func:`twin.demo.populate`: a year of volunteer tasks in every grid (patrols,
visits to elderly people living alone, event help) with sign-ups, check-ins on site and hours;
the points ledger those hours, valid resident reports and adopted proposals earned; residents'
proposals (微心愿, 民生微实事) with supports, some adopted (as tasks, two as cases), some
declined with a reason; and a few open tasks ahead for the demo volunteer (docs/trust.md).
Deterministic: the same seed and *now* give the same rows. Written in bulk.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import shapely

from twin import cases, points
from twin.crs import local_metric_crs
from twin.schema import (
    PROPOSAL_SUPPORTS,
    PROPOSALS,
    USERS,
    VOLUNTEER_SIGNUPS,
    VOLUNTEER_TASKS,
    coerce_table,
)
from twin.timeutil import local_zone

LOGGER = logging.getLogger(__name__)

#: Volunteers of the demo besides the ``volunteer`` login: (username, display name); they
#: have no password (their sign-ups are recorded for them), so they cannot log in.
VOLUNTEERS = (
    ("vol-chen", "陈志愿"), ("vol-li", "李志愿"), ("vol-wang", "王志愿"), ("vol-zhao", "赵志愿"),
    ("vol-liu", "刘志愿"), ("vol-huang", "黄志愿"), ("vol-zhou", "周志愿"), ("vol-wu", "吴志愿"),
    ("vol-xu", "徐志愿"), ("vol-sun", "孙志愿"), ("vol-ma", "马志愿"),
)
#: Residents who propose and support besides the ``resident`` login (no password either).
NEIGHBOURS = 8
TASK_TEXTS = {
    "patrol": ("夜间平安巡逻", "沿网格主要道路巡查，留意消防通道与路灯"),
    "elderly_visit": ("探访独居老人", "上门问候，检查燃气与用电安全，了解需要"),
    "event_help": ("社区活动协助", "协助签到、引导与场地整理"),
    "other": ("环境清洁行动", "清理楼道杂物与绿地垃圾"),
}
PROPOSAL_TEXTS = (
    ("wish", "楼下加装休息长椅", "老人散步走累了没处坐"),
    ("micro_project", "修补小区主路坑洼", "雨后积水，老人小孩易滑倒"),
    ("wish", "给独居老人送菜上门", "行动不便的老人买菜难"),
    ("micro_project", "增设电动车充电桩", "楼道充电有火灾隐患"),
    ("wish", "周末开放活动室", "孩子们放学后没有去处"),
    ("micro_project", "更换损坏的路灯", "晚上回家路太黑"),
    ("wish", "组织邻里读书会", "想和邻居多交流"),
    ("micro_project", "加装楼道扶手", "上下楼不方便"),
    ("wish", "开展防诈骗讲座", "老人常接到可疑电话"),
    ("micro_project", "绿地补种花草", "草坪被踩秃了"),
    ("wish", "义务理发进社区", "老人出门理发不方便"),
    ("micro_project", "规范非机动车停放点", "门口车辆乱停堵路"),
)
DECLINE_REASONS = ("位置在消防通道内，无法设置", "已列入明年街道计划，届时统一实施",
                   "与物业维修范围重复，已转物业处理")
ADOPT_REASONS = ("居民支持度高，安排志愿者落实", "纳入本季度民生微实事", "网格员核实后立项")


def populate_community(store, counts: dict[str, int], *, seed: int, now: pd.Timestamp,
                       days: int, grid_cells, residents) -> dict[str, int]:
    """Write the demo's volunteers, tasks, sign-ups, proposals and points.

    Adds to *counts* (populate's) how many rows of each were written, and the cases two
    adopted proposals became to its ``cases``; returns *counts*.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 21]))
    cells = grid_cells.sort_values("grid_code").reset_index(drop=True)
    people = _people(store, residents)
    tasks, signups = _tasks(cells, people["volunteers"], rng, now, days, seed)
    proposals, supports, adopted_tasks, made = _proposals(
        store, cells, people["residents"], rng, now, days, seed)
    tasks = pd.concat([tasks, adopted_tasks], ignore_index=True)
    counts["cases"] = counts.get("cases", 0) + made
    counts["history"] = counts.get("history", 0) + made  # each case's first step
    counts |= {
        "volunteer_tasks": store.put_rows(VOLUNTEER_TASKS, tasks),
        "volunteer_signups": store.put_rows(VOLUNTEER_SIGNUPS, signups),
        "proposals": store.put_rows(PROPOSALS, proposals),
        "proposal_supports": store.put_rows(PROPOSAL_SUPPORTS, supports),
    }
    counts["points"] = len(points.award(store, _ledger(store, signups, proposals)))
    return counts


def _people(store, residents) -> dict[str, list[str]]:
    """Return the demo's volunteer and resident usernames (extra ones without a password)."""
    users = store.read_rows(USERS)
    by_role = users.groupby("role")["username"].apply(list).to_dict()
    now = pd.Timestamp.now(tz="UTC").floor("s")
    ids = residents["resident_id"].astype(str).tolist() if len(residents) else []
    extra = [{"username": name, "display_name": shown, "role": "volunteer"}
             for name, shown in VOLUNTEERS]
    extra += [{"username": f"res-{i:02d}", "display_name": f"居民{i:02d}", "role": "resident",
               "resident_id": ids[(7 * i + 3) % len(ids)] if ids else f"demo-{i}"}
              for i in range(1, NEIGHBOURS + 1)]
    rows = pd.DataFrame(extra).assign(grids="[]", password_hash=None, disabled=True,
                                      failed_logins=0, created_at=now, updated_at=now)
    store.put_rows(USERS, rows)  # kept when they exist: a second populate changes nobody
    return {"volunteers": sorted(by_role.get("volunteer", [])) + [v for v, _ in VOLUNTEERS],
            "residents": sorted(by_role.get("resident", []))
            + [f"res-{i:02d}" for i in range(1, NEIGHBOURS + 1)]}


def _square(lon: float, lat: float, side_m: float, metric) -> dict[str, Any]:
    """Return a GeoJSON square of *side_m* metres centred on (lon, lat), built in *metric*."""
    import geopandas as gpd

    centre = gpd.GeoSeries([shapely.Point(lon, lat)], crs=4326).to_crs(metric)
    area = centre.buffer(side_m / 2, cap_style="square").to_crs(4326).iloc[0]
    return shapely.geometry.mapping(area)


def _tasks(cells, volunteers: list[str], rng, now: pd.Timestamp, days: int, seed: int
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tasks about twice a week over *days* (a few ahead), with sign-ups, check-ins, hours."""
    metric = local_metric_crs(cells.geometry)
    inside = cells.geometry.representative_point()
    n = max(4, int(days * 2 / 7))
    kinds = np.array(list(TASK_TEXTS))
    tasks, signups = [], []
    day0 = (now - pd.Timedelta(days=days)).tz_convert(local_zone()).normalize()
    for i in range(n + 4):
        ahead = i >= n  # the last four lie ahead: open for sign-up in the demo
        if i == n:  # going on now: the demo volunteer has a place and can check in on site
            start = now.floor("h")
        elif ahead:
            start = (now + pd.Timedelta(days=3 * (i - n))).floor("h") + pd.Timedelta(hours=1)
        else:
            start = (day0 + pd.Timedelta(days=float(rng.uniform(0, days - 1)))).floor("D") \
                + pd.Timedelta(hours=int(rng.choice([8, 9, 14, 15, 19])))
            start = start.tz_convert("UTC")
        g = int(rng.integers(0, len(cells)))
        kind = str(kinds[rng.integers(0, len(kinds))])
        lon, lat = float(inside.x.iloc[g]), float(inside.y.iloc[g])
        hours = float(rng.choice([1.5, 2.0, 2.5, 3.0]))
        capacity = int(rng.integers(2, 7))
        tid = f"VT-demo{seed}-{i:04d}"
        area = _square(lon, lat, 60.0, metric) if kind == "patrol" else None
        title, text = TASK_TEXTS[kind]
        tasks.append({
            "id": tid, "kind": kind, "title": title, "description": text, "lon": lon,
            "lat": lat, "grid_code": cells["grid_code"].iloc[g],
            "resp_grid_id": cells["resp_grid_id"].iloc[g],
            "community_code": cells["community_code"].iloc[g],
            "street_code": cells["street_code"].iloc[g], "area": json.dumps(area) if area else None,
            "tolerance_m": 50.0, "starts_at": start,
            "ends_at": start + pd.Timedelta(hours=hours), "capacity": capacity,
            "status": "open" if ahead or start + pd.Timedelta(hours=hours) > now else "done",
            "created_by": "official" if i % 3 else "gridworker",
            "created_at": start - pd.Timedelta(days=int(rng.integers(2, 10))),
        })
        pool = volunteers if not ahead else [v for v in volunteers if v != "volunteer"]
        taken = int(rng.integers(1, capacity + 1)) if not ahead else int(rng.integers(0, capacity))
        chosen = [str(v) for v in rng.choice(pool, size=min(taken, len(pool)), replace=False)]
        if i == n and "volunteer" in volunteers:
            chosen = ["volunteer", *chosen[:capacity - 2]]
        for who in chosen:
            row = {"task_id": tid, "volunteer": str(who), "status": "signed_up",
                   "signed_up_at": start - pd.Timedelta(hours=float(rng.uniform(12, 120)))}
            if not ahead and rng.random() < 0.9:  # most come; a few do not show up
                late = pd.Timedelta(minutes=float(rng.uniform(-10, 15)))
                stay = pd.Timedelta(hours=hours) + pd.Timedelta(minutes=float(rng.uniform(-20,
                                                                                          10)))
                jitter = rng.normal(0, 0.00008, 4)
                row.update(checkin_at=(start + late).floor("s"),
                           checkin_lon=lon + jitter[0], checkin_lat=lat + jitter[1],
                           checkin_m=0.0, checkout_at=(start + late + stay).floor("s"),
                           checkout_lon=lon + jitter[2], checkout_lat=lat + jitter[3],
                           checkout_m=0.0)
                row["hours"] = round(max(0.0, (min(start + late + stay, start + pd.Timedelta(
                    hours=hours)) - max(start + late, start)).total_seconds() / 3600), 2)
            signups.append(row)
    return (coerce_table(VOLUNTEER_TASKS, pd.DataFrame(tasks)),
            coerce_table(VOLUNTEER_SIGNUPS, pd.DataFrame(signups)))


def _proposals(store, cells, residents: list[str], rng, now: pd.Timestamp, days: int,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Residents' proposals over the year: supports; adopted (tasks, two cases) or declined."""
    inside = cells.geometry.representative_point()
    rows, supports, tasks, made = [], [], [], 0
    for i, (kind, title, body) in enumerate(PROPOSAL_TEXTS * 2):
        created = now - pd.Timedelta(days=float(days * (1 - (i + 0.5) / 24)))
        created = created.floor("s")
        g = int(rng.integers(0, len(cells)))
        lon = float(inside.x.iloc[g]) + float(rng.normal(0, 0.0002))
        lat = float(inside.y.iloc[g]) + float(rng.normal(0, 0.0002))
        proposer = residents[(i * 5 + seed) % len(residents)]
        pid = f"PR-demo{seed}-{i:03d}"
        row = {"id": pid, "kind": kind, "title": title, "body": body, "lon": lon, "lat": lat,
               "grid_code": cells["grid_code"].iloc[g],
               "resp_grid_id": cells["resp_grid_id"].iloc[g],
               "community_code": cells["community_code"].iloc[g],
               "street_code": cells["street_code"].iloc[g], "proposer": proposer,
               "created_at": created, "status": "open"}
        backers = [r for r in residents if r != proposer]
        for who in rng.choice(backers, size=int(rng.integers(0, len(backers) + 1)),
                              replace=False):
            supports.append({"proposal_id": pid, "supporter": str(who),
                             "at": created + pd.Timedelta(hours=float(rng.uniform(1, 200)))})
        decided = created + pd.Timedelta(days=int(rng.integers(5, 20)))
        if i >= 20 or decided > now:  # the latest stay open, gathering support
            rows.append(row)
            continue
        if i % 3 == 2:
            row.update(status="declined", reason=DECLINE_REASONS[i % len(DECLINE_REASONS)])
        else:
            row.update(status="adopted", reason=ADOPT_REASONS[i % len(ADOPT_REASONS)])
            if i in (1, 5):  # two small projects became cases for the departments
                case_id = f"{pid}-case"
                if not _has_case(store, case_id):  # populated twice: made once
                    cases.report(store, category="E0401" if i == 1 else "P0105", lon=lon,
                                 lat=lat, description=f"{title}\n{body}", source="instruction",
                                 actor="official", role="official", grid_cells=cells,
                                 at=decided, case_id=case_id)
                    made += 1
                row.update(outcome_kind="case", outcome_id=case_id)
            else:
                start = (decided + pd.Timedelta(days=7)).floor("D") + pd.Timedelta(hours=1)
                tid = f"{pid}-task"
                tasks.append({
                    "id": tid, "kind": "other", "title": title, "description": body,
                    "lon": lon, "lat": lat, **{k: row[k] for k in (
                        "grid_code", "resp_grid_id", "community_code", "street_code")},
                    "tolerance_m": 50.0, "starts_at": start,
                    "ends_at": start + pd.Timedelta(hours=2), "capacity": 4,
                    "status": "open" if start + pd.Timedelta(hours=2) > now else "done",
                    "created_by": "official", "created_at": decided, "proposal_id": pid})
                row.update(outcome_kind="task", outcome_id=tid)
        row.update(decided_by="official", decided_at=decided)
        rows.append(row)
    return (coerce_table(PROPOSALS, pd.DataFrame(rows)),
            coerce_table(PROPOSAL_SUPPORTS, pd.DataFrame(supports)),
            coerce_table(VOLUNTEER_TASKS, pd.DataFrame(tasks, columns=[
                c.name for c in VOLUNTEER_TASKS.columns])), made)


def _has_case(store, case_id: str) -> bool:
    from twin.errors import NotFoundError

    try:
        store.get_case(case_id)
    except NotFoundError:
        return False
    return True


def _ledger(store, signups: pd.DataFrame, proposals: pd.DataFrame) -> pd.DataFrame:
    """Points for the year: service hours, valid resident reports, adopted proposals."""
    served = signups.loc[signups["hours"].notna()]
    entries = [pd.DataFrame({
        "at": served["checkout_at"], "account": served["volunteer"],
        "delta": [points.service_points(h) for h in served["hours"]], "reason": "service_hours",
        "ref": "task:" + served["task_id"] + ":" + served["volunteer"], "actor": "volunteers"})]
    adopted = proposals.loc[proposals["status"] == "adopted"]
    entries.append(pd.DataFrame({
        "at": adopted["decided_at"], "account": adopted["proposer"],
        "delta": points.RULES["proposal_adopted"], "reason": "proposal_adopted",
        "ref": "proposal:" + adopted["id"], "actor": "official"}))
    closed = store.read_cases(columns=["id", "source", "status", "closed_at", "data"])
    closed = closed.loc[(closed["source"] == "resident") & closed["closed_at"].notna()
                        & closed["status"].isin(("closed", "evaluated"))]
    who = [((json.loads(d) if isinstance(d, str) else d or {}).get("reporter") or {}).get(
        "username") for d in closed["data"]]
    closed = closed.assign(account=who).dropna(subset=["account"])
    entries.append(pd.DataFrame({
        "at": closed["closed_at"], "account": closed["account"],
        "delta": points.RULES["valid_report"], "reason": "valid_report",
        "ref": "case:" + closed["id"].astype(str), "actor": "cases"}))
    frame = pd.concat([e for e in entries if len(e)], ignore_index=True)
    return frame.sort_values(["at", "ref"], ignore_index=True)
