"""Anomaly scoring in the warehouse: what to score, reading it, and writing the marts.

The detectors themselves — their definitions and their polars computation — live in
:mod:`engine.detectors`; this module runs them over the lake bucket by bucket and keeps the
result current:

* **incremental by default** — the catalog table ``score_files`` lists the lake files already
  scored. A bucket with new (or vanished) files is rescored per sensor from the first hour the
  change can touch (the hour of its earliest new reading less the scores' look-ahead,
  :attr:`engine.detectors.Windows.ahead`). Every score depends only on readings within a
  bounded look-back and on hourly statistics over a bounded history; the hourly statistics of
  earlier hours are stored (``score_hourly``), so a rescored sensor reads hours, not minutes,
  of its history, and the result equals a full recomputation;
* **sites first** — a sensor's contextual profile and drift are taken against how its site
  moved (``site_hourly``, :func:`site_stage`): a change of one sensor rescores the site's other
  sensors from the same hour (:func:`with_site_peers`);
* ``anomaly_scores`` is written as blocks of ``file_days`` days of a month per
  ``bucket=NN/month=YYYY-MM`` (a day per file in the bucket's open block), each file replaced
  atomically; ``anomaly_events`` as one file per bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import polars as pl

from engine import OxyError, detectors
from engine.config import Config
from engine.detectors import DETECTORS, SCORE_COLUMNS, Windows
from engine.progress import bar as progress_bar
from engine.warehouse import (
    FileOp,
    StagedWarehouse,
    Warehouse,
    apply_file_ops,
    bind,
    query_frame,
    quote_literal,
    sql_rows,
    sql_text,
)

if TYPE_CHECKING:
    from engine.cluster import Executor

Q = "score/queries#"  # the named bookkeeping queries of this stage
FULL_FROM = datetime(1900, 1, 1)  # "from the first reading on" (before any plausible reading)

EVENT_COLUMNS: dict[str, str] = {
    "sensor_id": "varchar",
    "start_ts": "timestamp",
    "end_ts": "timestamp",
    "minutes": "bigint",
    "readings": "bigint",
    "anomaly_type": "varchar",
    "peak_severity": "double",
    "mean_severity": "double",
}

_DUCK_TYPES = {
    pl.String(): "varchar",
    pl.Datetime("us"): "timestamp",
    pl.Float64(): "double",
    pl.Boolean(): "boolean",
    pl.Int32(): "integer",
}
SCORE_SQL_TYPES: dict[str, str] = {c: _DUCK_TYPES[t] for c, t in SCORE_COLUMNS.items()}

# anomaly_scores files hold a week of a bucket (~60 k readings for 6 sensors): row groups of
# 32 k keep a reader's pruning useful without many tiny groups
FILE_ROW_GROUP = 32_768

T = TypeVar("T")


@dataclass(frozen=True)
class ScoreSummary:
    """What one ``oxy score`` run did."""

    full: bool
    buckets_scored: int
    sensors_rescored: int
    rows_scored: int
    anomalies: int
    events: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- configuration ------------------------------------------------------------------------------


def settings(config: Config) -> tuple[dict[str, Any], Windows]:
    """The ``[anomaly]`` configuration, checked, and its :class:`~engine.detectors.Windows`."""
    a = config["anomaly"]
    w = detectors.windows(a)
    for d in DETECTORS:
        for key, value in a.get(d.name, {}).items():
            if key in ("z", "ratio") and not (
                isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            ):
                raise OxyError(f"[anomaly.{d.name}] {key} must be a number > 0, not {value!r}")
    r = a["range"]
    if not float(r["fail_sat"]) > float(r["suspect_sat"]) > 0:
        raise OxyError("[anomaly.range] needs fail_sat > suspect_sat > 0")
    if not 0 < float(a["severity_threshold"]) <= float(a["qartod_fail_severity"]) <= 1:
        raise OxyError("[anomaly] needs 0 < severity_threshold <= qartod_fail_severity <= 1")
    for key in ("site_levels",):
        if isinstance(a[key], bool) or not isinstance(a[key], int) or a[key] < 0:
            raise OxyError(f"[anomaly] {key} must be a whole number >= 0, not {a[key]!r}")
    return a, w


def event_params(a: dict[str, Any], w: Windows) -> dict[str, Any]:
    """The bound parameters of the events queries."""
    merge = detectors.duration(a["events"]["merge_gap"], "events.merge_gap")
    return {"event_merge_gap": merge, "prev_horizon": 2 * w.max_cadence}


def file_days(config: Config) -> int:
    """``[anomaly.run] file_days``, checked: whole days, 1 to 31."""
    days = config["anomaly"]["run"]["file_days"]
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 31:
        raise OxyError(f"[anomaly.run] file_days must be a whole number of days, 1 to 31: {days!r}")
    return days


# -- reading the lake ---------------------------------------------------------------------------

HOUR_US = 60 * 60 * 1_000_000
QUARTER_US = 15 * 60 * 1_000_000  # every zone's offset and switch is whole quarter hours


def zone_local_hours(
    con: duckdb.DuckDBPyConnection,
    ts: pl.Series,
    zone: pl.Series,
    zones: list[str],
    step_us: int = QUARTER_US,
) -> pl.Series:
    """The local hour of day of each naive-UTC ``ts`` in the time zone ``zones[zone]`` (null
    where ``zone`` is null): one conversion per zone and step (``int_zone_local_hours``), then
    a gather per reading. A quarter-hour step gives each reading's own local hour; an hour
    step, that of the start of its UTC hour.

    The steps are every step of the span in every zone, a small grid for minute data; when the
    span is long for the readings (a logger clock reset to 2000 among this year's readings),
    only the (zone, step) pairs that occur."""
    us = ts.dt.epoch("us")
    first, last = us.min(), us.max()
    if first is None or last is None:
        return pl.Series("local_hour", [], dtype=pl.Int64)
    first_step, last_step = int(first) // step_us, int(last) // step_us
    span = last_step - first_step + 1
    if span * len(zones) <= max(2 * len(ts), 100_000):
        steps = pl.DataFrame({"zone": range(len(zones))}, schema={"zone": pl.Int64}).join(
            pl.DataFrame({"step": range(first_step, last_step + 1)}), how="cross"
        )
        index = zone.cast(pl.Int64) * span + (us // step_us - first_step)
    else:
        pairs = pl.DataFrame({"zone": zone.cast(pl.Int64), "step": us // step_us})
        steps = pairs.unique().with_row_index("row")
        index = pairs.join(steps, on=["zone", "step"], how="left", maintain_order="left")["row"]
        steps = steps.drop("row")
    named = pl.Series("timezone", zones, dtype=pl.String)
    local_steps = steps.select(
        step_index=pl.int_range(pl.len()),
        timezone=named.gather(steps["zone"]) if zones else pl.lit(None, pl.String),
        step_start=pl.from_epoch(pl.col("step") * step_us, time_unit="us"),
    )
    con.register("local_steps", local_steps)
    try:
        hours = query_frame(con, sql_text("intermediate/int_zone_local_hours"))["local_hour"]
    finally:
        con.unregister("local_steps")
    return hours.gather(index).alias("local_hour")


def sensor_dtype(sensor_ids: pl.Series | list[str]) -> pl.Enum:
    """The dtype sensor ids travel in through a run: an Enum of every id (integer keys for the
    joins, sorts and windows; sorted like the strings)."""
    return pl.Enum(sorted(set(pl.Series(sensor_ids, dtype=pl.String).drop_nulls().to_list())))


def first_ingested(raw: pl.DataFrame) -> pl.DataFrame:
    """One row per (sensor_id, ts) of ``raw`` (sensor_id, ts, value, ingested_at, ...), sorted by
    sensor and time: the first ingested non-null value wins, a null only when every copy is
    null (the ingest rule)."""
    raw = raw.sort("sensor_id", "ts")
    repeated = (pl.col("sensor_id") == pl.col("sensor_id").shift(1)) & (
        pl.col("ts") == pl.col("ts").shift(1)
    )
    if raw.select(repeated.any()).item():
        raw = raw.sort("sensor_id", "ts", pl.col("value").is_null(), "ingested_at")
        raw = raw.filter(~repeated.fill_null(False))
    return raw.drop("ingested_at")


READ_COLUMNS = ("sensor_id", "ts", "value", "ingested_at")
OPTIONAL_COLUMNS = ("temperature_c", "salinity")


def read_readings(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    buckets: list[int],
    read_from: dict[str, datetime],
    ids: pl.Enum,
    extra: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The readings of the sensors of ``read_from`` (each from its time on) in the lake files of
    ``buckets``, plus ``extra`` readings not in the lake (batch inference; ingested after
    every stored copy): one row per (sensor_id, ts), sorted, ``sensor_id`` of dtype ``ids``,
    with the optional columns (water temperature, salinity) where the lake has them."""
    if not read_from:
        return read_lake([], read_from, ids, extra)
    return read_lake(lake_paths(wh, con, buckets, min(read_from.values())), read_from, ids, extra)


def lake_paths(
    wh: Warehouse, con: duckdb.DuckDBPyConnection, buckets: list[int], read_from: datetime
) -> list[str]:
    """The readings lake files of ``buckets`` that hold a reading at or after ``read_from``."""
    return [
        str(wh.root / p)
        for (p,) in sql_rows(
            con, Q + "readings_files_in_scope", {"buckets": buckets, "read_from": read_from}
        )
    ]


def read_lake(
    paths: list[str],
    read_from: dict[str, datetime],
    ids: pl.Enum,
    extra: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """:func:`read_readings` from the lake files ``paths`` (no catalog: a cluster worker's)."""
    schema = {
        "sensor_id": ids,
        "ts": pl.Datetime("us"),
        "value": pl.Float64,
        **dict.fromkeys(OPTIONAL_COLUMNS, pl.Float64),
    }
    if not read_from:
        return pl.DataFrame(schema=schema)
    first = min(read_from.values())
    scope = pl.DataFrame(
        {"sensor_id": list(read_from), "read_from": list(read_from.values())},
        schema={"sensor_id": ids, "read_from": pl.Datetime("us")},
    )
    parts = []
    if paths:
        lake = pl.scan_parquet(paths, hive_partitioning=False, missing_columns="insert")
        present = set(lake.collect_schema().names())
        optional = [
            pl.col(c).cast(pl.Float64) if c in present else pl.lit(None, pl.Float64).alias(c)
            for c in OPTIONAL_COLUMNS
        ]
        part = (
            lake.filter(pl.col("ts") >= first)
            .select(
                pl.col("sensor_id").cast(ids, strict=False),
                pl.col("ts").cast(pl.Datetime("us")),
                pl.col("value").cast(pl.Float64),
                pl.col("ingested_at").cast(pl.Datetime("us")),
                *optional,
            )
            .join(scope.lazy(), on="sensor_id")
            .filter(pl.col("ts") >= pl.col("read_from"))
            .drop("read_from")
            .collect()
        )
        parts.append(part)
    if extra is not None and not extra.is_empty():
        parts.append(
            extra.select(
                pl.col("sensor_id").cast(ids),
                pl.col("ts").cast(pl.Datetime("us")),
                pl.col("value").cast(pl.Float64),
                pl.lit(datetime(9999, 12, 31), pl.Datetime("us")).alias("ingested_at"),
                *[
                    (pl.col(c) if c in extra.columns else pl.lit(None)).cast(pl.Float64).alias(c)
                    for c in OPTIONAL_COLUMNS
                ],
            )
        )
    if not parts:
        return pl.DataFrame(schema=schema)
    return first_ingested(pl.concat(parts, how="diagonal"))


def with_sensor_info(
    con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, sensors: pl.DataFrame
) -> pl.DataFrame:
    """``frame`` (sensor_id, ts, ...) with each reading's unit and the local hour of its UTC
    hour's start at its site; ``sensors``: sensor_id, timezone, unit."""
    info = sensors.select("sensor_id", "timezone", "unit")
    frame = frame.join(info, on="sensor_id", how="left", maintain_order="left")
    zones = info["timezone"].drop_nulls().unique().sort().to_list()
    zone_index = {z: i for i, z in enumerate(zones)}
    zone = frame["timezone"].replace_strict(zone_index, default=None, return_dtype=pl.Int64)
    local = zone_local_hours(con, frame["ts"], zone, zones, HOUR_US)
    return frame.with_columns(local_hour=local.cast(pl.Int8).fill_null(0)).drop("timezone")


# -- the core over a set of sensors ------------------------------------------------------------


def _stored_hourly(
    con: duckdb.DuckDBPyConnection,
    since: dict[str, datetime],
    until: dict[str, datetime],
    ids: pl.Enum,
) -> pl.DataFrame:
    """The stored ``score_hourly`` rows of each sensor in [since, until), ids of dtype ``ids``."""
    wanted = pl.DataFrame(
        {
            "sensor_id": list(since),
            "since": [since[s] for s in since],
            "until": [until[s] for s in since],
        },
        schema={"sensor_id": pl.String, "since": pl.Datetime("us"), "until": pl.Datetime("us")},
    )
    con.register("hourly_wanted", wanted)
    try:
        stored = query_frame(con, sql_text(Q + "score_hourly_stored"))
    finally:
        con.unregister("hourly_wanted")
    return (
        stored.select(list(detectors.HOURLY_COLUMNS))
        .cast(detectors.HOURLY_COLUMNS)
        .with_columns(pl.col("sensor_id").cast(ids))
    )


def _site_moves(
    con: duckdb.DuckDBPyConnection, sites: pl.DataFrame, since: datetime
) -> pl.DataFrame | None:
    """The stored movement of the sites of ``sites`` (sensor_id, site) from ``since`` on."""
    names = sites["site"].drop_nulls().unique()
    if names.is_empty():
        return None
    wanted = pl.DataFrame({"site": names, "since": [since] * len(names)})
    wanted = wanted.with_columns(pl.col("since").cast(pl.Datetime("us")))
    con.register("site_wanted", wanted)
    try:
        return query_frame(con, sql_text(Q + "site_hourly_stored"))
    finally:
        con.unregister("site_wanted")


class CatalogHistory:
    """What scoring reads of earlier runs — the stored hourly statistics (``score_hourly``) and
    the sites' movement (``site_hourly``) — read from the catalog through ``con``."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def hourly(
        self, since: dict[str, datetime], until: dict[str, datetime], ids: pl.Enum
    ) -> pl.DataFrame:
        """The stored hourly statistics of each sensor in [since, until)."""
        return _stored_hourly(self.con, since, until, ids)

    def site_moves(self, sites: pl.DataFrame, since: datetime) -> pl.DataFrame | None:
        """The stored movement of the sites of ``sites`` from ``since`` on (None: no site)."""
        return _site_moves(self.con, sites, since)


SITE_MOVES_SCHEMA = {
    "site": pl.String,
    "hour": pl.Datetime("us"),
    "ctx_move": pl.Float64,
    "drift_move": pl.Float64,
}


@dataclass(frozen=True)
class FrameHistory:
    """:class:`CatalogHistory` from frames the client read for a cluster worker (which never
    opens the catalog): ``hourly_rows`` as :func:`_stored_hourly` returns them and ``moves``
    as ``site_hourly`` holds them (``site, hour, ctx_move, drift_move``), each for at least the
    sensors, sites and hours asked, in the catalog's order."""

    hourly_rows: pl.DataFrame
    moves: pl.DataFrame

    def hourly(
        self, since: dict[str, datetime], until: dict[str, datetime], ids: pl.Enum
    ) -> pl.DataFrame:
        wanted = pl.DataFrame(
            {
                "sensor_id": list(since),
                "since": [since[s] for s in since],
                "until": [until[s] for s in since],
            },
            schema={"sensor_id": ids, "since": pl.Datetime("us"), "until": pl.Datetime("us")},
        )
        rows = self.hourly_rows.with_columns(pl.col("sensor_id").cast(ids))
        return (
            rows.join(wanted, on="sensor_id", maintain_order="left")
            .filter((pl.col("hour") >= pl.col("since")) & (pl.col("hour") < pl.col("until")))
            .select(list(detectors.HOURLY_COLUMNS))
        )

    def site_moves(self, sites: pl.DataFrame, since: datetime) -> pl.DataFrame | None:
        names = sites["site"].drop_nulls().unique()
        if names.is_empty():
            return None
        return self.moves.filter(pl.col("site").is_in(names.implode()) & (pl.col("hour") >= since))


def score_sensors(
    con: duckdb.DuckDBPyConnection,
    readings: pl.DataFrame,
    sensors: pl.DataFrame,
    rescore_from: dict[str, datetime],
    a: dict[str, Any],
    w: Windows,
    *,
    history: CatalogHistory | FrameHistory | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score the readings of each sensor from its ``rescore_from`` on (sensor ids of the
    Enum dtype of ``readings`` and ``sensors``, :func:`sensor_dtype`).

    ``readings``: one row per (sensor_id, ts) from at least ``w.minutes`` before each sensor's
    rescore_from (:func:`read_readings`); ``sensors``: sensor_id, timezone, unit, site. The
    hourly statistics before rescore_from come from ``score_hourly``, the sites' movement from
    ``site_hourly`` (through ``history``: the catalog through ``con`` by default). ``con`` is
    also used for time-zone conversions (an in-memory DuckDB will do). Returns the
    ``anomaly_scores`` rows from rescore_from on and the new hourly statistics (to store)."""
    empty = pl.DataFrame(schema=SCORE_COLUMNS), pl.DataFrame(schema=detectors.HOURLY_COLUMNS)
    if readings.is_empty() or not rescore_from:
        return empty
    # hours from `context` on get baselines: the minute windows of the first rescored
    # readings read the features (and the noise clip) of readings that far back
    ids = readings.schema["sensor_id"]
    assert isinstance(ids, pl.Enum)
    history = history if history is not None else CatalogHistory(con)
    context = {s: t - w.minutes for s, t in rescore_from.items()}
    frame = with_sensor_info(con, readings, sensors)
    frame = detectors.prepare(frame)
    scope = pl.DataFrame(
        {"sensor_id": list(rescore_from), "rescore_from": list(rescore_from.values())},
        schema={"sensor_id": ids, "rescore_from": pl.Datetime("us")},
    )
    stored = history.hourly({s: t - w.hours for s, t in context.items()}, rescore_from, ids)
    # the cadence: each hour's median step, stored before rescore_from, recomputed after
    steps = (
        detectors.raw_hourly_steps(frame)
        .join(scope, on="sensor_id")
        .filter(pl.col("hour") >= pl.col("rescore_from"))
        .drop("rescore_from")
    )
    steps = pl.concat([stored.select("sensor_id", "hour", "dt_med"), steps])
    cadence = detectors.cadence_by_hour(steps)
    frame = frame.join(cadence, on=["sensor_id", "hour"], how="left").sort("sensor_id", "ts")
    features = detectors.minute_features(frame, w)
    new_hourly = (
        detectors.hourly_statistics(features)
        .join(scope, on="sensor_id")
        .filter(pl.col("hour") >= pl.col("rescore_from"))
        .drop("rescore_from")
    )
    meta = sensors.select("sensor_id", "unit", "site")
    hourly = (
        pl.concat([stored, new_hourly])
        .sort("sensor_id", "hour")
        .join(meta, on="sensor_id", how="left")
    )
    first = min(context.values())
    moves = history.site_moves(sensors, first - w.hours)
    base = detectors.baselines(hourly, moves, a, w)
    inputs = detectors.score_inputs(features, base, w)
    scored = (
        detectors.detector_scores(inputs, a)
        .join(scope, on="sensor_id")
        .filter(pl.col("ts") >= pl.col("rescore_from"))
    )
    prev_ok = pl.col("dt_s") <= 2 * pl.col("cadence_s")
    scored = scored.with_columns(
        prev_ts=pl.when(prev_ok).then(pl.col("ts") - pl.duration(seconds=pl.col("dt_s")))
    )
    return (
        scored.select(list(SCORE_COLUMNS)).cast(SCORE_COLUMNS),
        new_hourly.with_columns(pl.col("sensor_id").cast(pl.String)),
    )


# -- sites --------------------------------------------------------------------------------------


def site_sensors(con: duckdb.DuckDBPyConnection, a: dict[str, Any]) -> pl.DataFrame:
    """Every sensor with its bucket, time zone, unit and site (null: no site)."""
    return query_frame(con, sql_text(Q + "site_sensors"), {"site_levels": int(a["site_levels"])})


def with_site_peers(sites: pl.DataFrame, changes: dict[str, datetime]) -> dict[str, datetime]:
    """``changes`` (sensor: first changed hour) with every sensor of a site that holds a change
    rescored from the site's first changed hour: the site's movement, which every sensor of it
    reads, moves with each of them."""
    if not changes:
        return {}
    changed = pl.DataFrame(
        {"sensor_id": list(changes), "changed": list(changes.values())},
        schema={"sensor_id": pl.String, "changed": pl.Datetime("us")},
    ).with_columns(pl.col("sensor_id").cast(sites.schema["sensor_id"]))
    firsts = (
        sites.filter(pl.col("site").is_not_null())
        .join(changed, on="sensor_id")
        .group_by("site")
        .agg(first=pl.col("changed").min())
    )
    peers = sites.join(firsts, on="site").select("sensor_id", "first")
    out = dict(changes)
    for sensor_id, first in peers.iter_rows():
        out[sensor_id] = min(out.get(sensor_id, first), first)
    return out


def site_stage(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    sites: pl.DataFrame,
    changes: dict[str, datetime],
    a: dict[str, Any],
    w: Windows,
) -> int:
    """Recompute ``site_hourly`` of every site with a change (each from its first changed hour,
    see :func:`with_site_peers`): the site's movement from its sensors' hourly medians — stored
    in ``score_hourly`` before the change, read from the lake after it (the same medians the
    bucket pass computes). Returns the rows written."""
    found = site_movement(wh, con, sites, changes, a, w)
    if found is None:
        return 0
    since, moves = found
    store_site_hourly(con, since, moves)
    return moves.height


# One group of buckets of the site stage: its lake files, the sensors read (each from its
# site's first changed hour) and the members of the changed sites (sensor_id, timezone, unit).
SiteGroup = tuple[list[str], dict[str, datetime], pl.DataFrame]


def site_movement(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    sites: pl.DataFrame,
    changes: dict[str, datetime],
    a: dict[str, Any],
    w: Windows,
    *,
    map_groups: Callable[[list[SiteGroup]], list[pl.DataFrame | None]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The movement of every site with a change from its first changed hour on: ``(since,
    moves)``, ``since`` per site (site, since) and ``moves`` the new ``site_hourly`` rows; None
    when no changed sensor has a site. The hourly medians of each group of buckets come from
    :func:`site_medians`, through ``map_groups`` (default: one group after another here; a
    cluster maps them over its workers)."""
    in_site = sites.filter(pl.col("site").is_not_null() & pl.col("sensor_id").is_in(list(changes)))
    if in_site.is_empty():
        return None
    since = (
        in_site.with_columns(first=pl.col("sensor_id").cast(pl.String).replace_strict(changes))
        .group_by("site")
        .agg(since=pl.col("first").min().cast(pl.Datetime("us")))
    )
    members = sites.join(since, on="site")
    first = dict(zip(members["sensor_id"], members["since"], strict=True))
    lake = sql_rows(
        con,
        Q + "site_lake_files",
        {"buckets": members["bucket"].unique().to_list(), "read_from": min(first.values())},
    )
    sizes: dict[int, int] = {}
    for bucket, _path, n in lake:
        sizes[bucket] = sizes.get(bucket, 0) + int(n or 0)
    buckets = sorted(sizes)
    # buckets read together while they hold about chunk_rows readings (bounded memory)
    groups: list[SiteGroup] = []
    for group in pack(buckets, [sizes[b] for b in buckets], int(a["run"]["chunk_rows"])):
        wanted = {
            s: first[s]
            for s, b in zip(members["sensor_id"], members["bucket"], strict=True)
            if b in group
        }
        if wanted:
            paths = lake_paths(wh, con, group, min(wanted.values()))
            groups.append((paths, wanted, members.select("sensor_id", "timezone", "unit")))
    if map_groups is None:
        parts = [site_medians(con, *group) for group in groups]
    else:
        parts = map_groups(groups)
    ids = sites.schema["sensor_id"]
    assert isinstance(ids, pl.Enum)
    stored = _stored_hourly(con, {s: t - w.hours for s, t in first.items()}, first, ids)
    columns = ["sensor_id", "hour", "local_hour", "n", "value_med", "temperature_med"]
    columns.append("salinity_med")
    kinds = {c: detectors.HOURLY_COLUMNS[c] for c in columns if c != "sensor_id"}
    fresh = [p.select(columns).cast(kinds) for p in parts if p is not None]
    hourly = (
        pl.concat([stored.select(columns), *fresh])
        .join(members.select("sensor_id", "unit", "site"), on="sensor_id")
        .sort("sensor_id", "hour")
    )
    moves = detectors.site_movement(
        detectors.levels(hourly, w), int(a["drift"]["site_min_sensors"])
    )
    moves = moves.join(since, on="site").filter(pl.col("hour") >= pl.col("since")).drop("since")
    return since, moves


def site_medians(
    con: duckdb.DuckDBPyConnection,
    paths: list[str],
    wanted: dict[str, datetime],
    members: pl.DataFrame,
) -> pl.DataFrame | None:
    """Per sensor of ``wanted`` (each from its time on) and hour: the medians the site stage
    needs, from the lake files ``paths`` (no catalog; ``con`` converts time zones). None when
    the files hold no such reading."""
    ids = members.schema["sensor_id"]
    assert isinstance(ids, pl.Enum)
    raw = read_lake(paths, wanted, ids)
    if raw.is_empty():
        return None
    frame = detectors.prepare(with_sensor_info(con, raw, members))
    return frame.group_by("sensor_id", "hour").agg(
        local_hour=pl.col("local_hour").first().cast(pl.Int8),
        n=pl.len().cast(pl.UInt32),
        value_med=pl.col("value").median(),
        temperature_med=pl.col("temperature_c").median(),
        salinity_med=pl.col("salinity").median(),
    )


def store_site_hourly(
    con: duckdb.DuckDBPyConnection, since: pl.DataFrame, moves: pl.DataFrame
) -> None:
    """Replace the stored movement of the sites of ``since`` from their since on by ``moves``."""
    con.register("site_wanted", since)
    con.register("new_site_hourly", moves)
    try:
        sql_rows(con, Q + "site_hourly_forget")
        sql_rows(con, Q + "site_hourly_store")
    finally:
        con.unregister("new_site_hourly")
        con.unregister("site_wanted")


# -- the files of the marts ---------------------------------------------------------------------


def file_start(ts: datetime, days: int) -> datetime:
    """The first day of the ``anomaly_scores`` file holding ``ts``: a month's files hold
    ``days`` days each from the 1st; the last one holds the rest of the month (7 to 10 days for
    ``days`` = 7), so no file holds a day or two."""
    blocks = max(28 // days, 1)
    return datetime(ts.year, ts.month, 1 + min((ts.day - 1) // days, blocks - 1) * days)


def file_end(start: datetime, days: int) -> datetime:
    """The end (exclusive) of the file that begins at ``start``."""
    next_month = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    end = start + timedelta(days=days)
    return end if end < next_month and file_start(end, days) == end else next_month


def file_span(ts: datetime, days: int, open_block: datetime | None) -> tuple[datetime, datetime]:
    """The ``anomaly_scores`` file that holds ``ts``: its block of ``days`` days, or, in the
    bucket's open block (the one holding its latest reading, which starts at ``open_block``),
    its own day: the block is written once it is complete, and until then a new day writes
    its day's file instead of rewriting the block."""
    block = file_start(ts, days)
    if open_block is not None and block >= open_block:
        day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        return day, day + timedelta(days=1)
    return block, file_end(block, days)


def file_path(folder: Path, start: datetime, end: datetime) -> Path:
    """``<bucket folder>/month=YYYY-MM/days-DD-DD.parquet``: the file's first and last day
    (a file of another layout has another name)."""
    last = end - timedelta(days=1)
    return folder / f"month={start:%Y-%m}" / f"days-{start:%d}-{last:%d}.parquet"


@dataclass(frozen=True)
class ScoreFile:
    """A stored ``anomaly_scores`` file: the readings of [start, end) of its bucket."""

    start: datetime
    end: datetime
    path: Path


def _stored_files(folder: Path, days: int) -> tuple[list[ScoreFile], list[Path]]:
    """The bucket's ``anomaly_scores`` files in order (blocks of ``days`` days, and days within
    a block), and the files that do not fit the layout of ``days`` (an older oxy's
    ``data.parquet`` per month, another ``file_days``, files that overlap: a run that crashed
    between writing a block and removing its day files)."""
    files: list[ScoreFile] = []
    strays: list[Path] = []
    for path in sorted(folder.glob("month=*/*.parquet")):
        try:
            month = datetime.strptime(path.parent.name.removeprefix("month="), "%Y-%m")
            first, last = path.stem.removeprefix("days-").split("-")
            start = month.replace(day=int(first))
            end = month.replace(day=int(last)) + timedelta(days=1)
        except ValueError:
            strays.append(path)
            continue
        block = file_start(start, days)
        whole = start == block and end == file_end(block, days)
        if (whole or end == start + timedelta(days=1)) and path == file_path(folder, start, end):
            files.append(ScoreFile(start, end, path))
        else:
            strays.append(path)
    files.sort(key=lambda f: f.start)
    overlapping = {
        f.path
        for before, after in zip(files, files[1:], strict=False)
        if after.start < before.end
        for f in (before, after)
    }
    return [f for f in files if f.path not in overlapping], strays + sorted(overlapping)


def stored_layout(warehouse: Warehouse) -> dict[int, tuple[list[ScoreFile], list[Path]]]:
    """Per bucket folder of ``anomaly_scores``: its files and its strays (see
    :func:`_stored_files`), listed once per run. A stray means the layout changed: every bucket
    is rescored."""
    days = file_days(warehouse.config)
    root = warehouse.marts_dir / "anomaly_scores"
    return {
        int(folder.name.removeprefix("bucket=")): _stored_files(folder, days)
        for folder in root.glob("bucket=*")
    }


def _file_targets(
    stored: list[ScoreFile],
    days: int,
    open_block: datetime | None,
    span: tuple[datetime | None, datetime | None, datetime | None],
    full: bool,
) -> list[tuple[datetime, datetime]]:
    """The files of one bucket to (re)write: every stored file from the one holding the first
    rescored reading on, every stored file whose span no longer fits the layout (a block that
    is complete now, whose day files become one; a block open again), and the files the
    rescored readings [first_ts, last_ts] fall in. ``span`` = (first_rescore, first_ts,
    last_ts)."""
    first_rescore, first_ts, last_ts = span

    def cover(start: datetime, end: datetime) -> set[tuple[datetime, datetime]]:
        found = set()
        while start < end:
            target = file_span(start, days, open_block)
            found.add(target)
            start = target[1]
        return found

    targets: set[tuple[datetime, datetime]] = set()
    for f in stored:
        fits = file_span(f.start, days, open_block) == (f.start, f.end)
        if full or not fits or first_rescore is None or f.end > first_rescore:
            targets |= cover(f.start, f.end)
    if first_ts is not None and last_ts is not None:
        targets |= cover(first_ts, last_ts + timedelta(microseconds=1))
    return sorted(targets)


def _scores_folder(wh: Warehouse, bucket: int) -> Path:
    return wh.marts_dir / "anomaly_scores" / f"bucket={bucket:02d}"


def _events_path(wh: Warehouse, bucket: int) -> Path:
    return wh.marts_dir / "anomaly_events" / f"bucket={bucket:02d}" / "data.parquet"


def write_parquet_atomic(wh: Warehouse, frame: pl.DataFrame, dest: Path) -> int:
    """Write ``frame`` as zstd Parquet to a staging name, check it, and replace ``dest``."""
    staged = wh.staging_path()
    frame.write_parquet(staged, compression="zstd", row_group_size=FILE_ROW_GROUP, statistics=True)
    return wh.replace_file(staged, dest, expected_rows=frame.height)


def _write_scores(
    wh: Warehouse,
    items: list[_BucketWork],
    scores: pl.DataFrame,
    rescore_from: dict[str, datetime],
    bucket_of: dict[str, int],
    full: bool,
    layout: dict[int, tuple[list[ScoreFile], list[Path]]],
) -> dict[int, list[ScoreFile]]:
    """Merge the rescored rows into their buckets' files: each target file (:func:`_file_targets`)
    gets the stored rows of its span that were not rescored and the rescored rows of its span,
    and replaces its predecessor atomically. Returns each bucket's files as they are now.

    Only the files from the one holding a bucket's first rescored reading on are rewritten;
    the bucket's open block is stored a day per file, so a day of new readings writes its day
    (and the day before, when the look-ahead reaches back), not the block. A file that no
    longer holds any reading is removed, and so are the files a new one replaces and files of
    another layout (after the new ones are in place)."""
    days = file_days(wh.config)
    kept: dict[int, list[ScoreFile]] = {}
    scores = scores.with_columns(
        bucket=pl.col("sensor_id").replace_strict(bucket_of, return_dtype=pl.Int32)
    )
    rescored = pl.DataFrame(
        {"sensor_id": list(rescore_from), "rescore_from": list(rescore_from.values())},
        schema={"sensor_id": pl.String, "rescore_from": pl.Datetime("us")},
    )
    for item in items:
        folder = _scores_folder(wh, item.bucket)
        stored, strays = layout.get(item.bucket, ([], []))
        open_block = file_start(item.last_reading, days) if item.last_reading else None
        mine = scores.filter(pl.col("bucket") == item.bucket).drop("bucket")
        firsts = [rescore_from[s] for s, _ in item.changes]
        span = (
            min(firsts) if firsts else None,
            mine["ts"].min() if mine.height else None,
            mine["ts"].max() if mine.height else None,
        )
        targets = _file_targets(stored, days, open_block, span, full)  # type: ignore[arg-type]
        replaced = [f for f in stored if any(s < f.end and e > f.start for s, e in targets)]
        kept[item.bucket] = [f for f in stored if f not in replaced]
        previous = [f.path for f in replaced] if not full else []
        old = (
            pl.read_parquet(previous, hive_partitioning=False)
            .join(rescored, on="sensor_id", how="left")
            .filter(pl.col("rescore_from").is_null() | (pl.col("ts") < pl.col("rescore_from")))
            .drop("rescore_from")
            if previous
            else None
        )
        rows = mine if old is None else pl.concat([old.cast(SCORE_COLUMNS), mine])
        starts = pl.Series([s for s, _ in targets], dtype=pl.Datetime("us"))
        rows = rows.with_columns(
            target=starts.search_sorted(rows["ts"], side="right").cast(pl.Int64) - 1
        )
        parts = rows.partition_by("target", as_dict=True, include_key=False) if rows.height else {}
        for i, (start, end) in enumerate(targets):
            part = parts.get((i,))
            if part is None or part.is_empty():
                continue
            f = ScoreFile(start, end, file_path(folder, start, end))
            write_parquet_atomic(wh, part.sort("sensor_id", "ts"), f.path)
            kept[item.bucket].append(f)
        now = {f.path for f in kept[item.bucket]}
        for path in sorted({f.path for f in replaced} | set(strays)):
            if path not in now:
                wh.remove_file(path)
        _prune_months(folder)
        kept[item.bucket].sort(key=lambda f: f.start)
    return kept


def _prune_months(folder: Path) -> None:
    """Remove the empty month folders of a bucket's ``anomaly_scores`` folder."""
    if folder.is_dir():
        for month in folder.glob("month=*"):
            if not any(month.iterdir()):
                month.rmdir()


def _files_view(con: duckdb.DuckDBPyConnection, name: str, paths: list[Path], empty: str) -> None:
    """The temp view ``name`` over the stored files ``paths`` (read while their replacements
    are written: a view, not a copy), or over the empty table ``empty`` when there is none.
    View DDL takes no parameters; the paths are oxy's own."""
    if paths:
        listing = ", ".join(quote_literal(str(p)) for p in paths)
        body = f"select * from read_parquet([{listing}], hive_partitioning = false)"
    else:
        body = f"from {empty}"
    con.execute(f"create or replace temp view {name} as {body}")


def _write_events(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    scored: dict[int, list[ScoreFile]],
    params: dict[str, Any],
    full: bool,
) -> None:
    """Rebuild the events of the sensors in ``score_scope`` from the first stored event their
    rescored readings may reach (``events_cut``), reading only the score files from there on,
    in one query over the buckets of ``scored``; every other stored event stays as it is.
    Under ``full``, every event. Each bucket's file is replaced on its own, atomically."""
    for bucket, stored in scored.items():
        if not stored:  # no reading left
            wh.remove_tree(_events_path(wh, bucket).parent)
    files = {b: stored for b, stored in scored.items() if stored}
    if not files:
        return
    buckets = sorted(files)
    previous = [p for b in buckets if (p := _events_path(wh, b)).exists() and not full]
    _files_view(con, "previous_events", previous, "empty_events")
    con.execute(
        sql_text("score/events_cut_create"), bind(sql_text("score/events_cut_create"), params)
    )
    first = dict(sql_rows(con, Q + "events_first_rebuilt"))
    reach = [
        str(wh.current(f.path)) for b in buckets if b in first for f in files[b] if f.end > first[b]
    ]
    # read_parquet needs a file: with none reaching the cut, any one yields no row past it
    reach = reach or [str(wh.current(files[buckets[0]][0].path))]
    query = sql_text("marts/anomaly_events")
    try:
        written = wh.write_mart_files(
            con,
            query,
            bind(query, {**params, "files": reach}),
            "bucket",
            [_events_path(wh, b) for b in buckets],
            keys=buckets,
        )
        for bucket, rows in zip(buckets, written, strict=True):
            if rows == 0:  # a bucket without events keeps an empty file (the mart's view)
                wh.write_mart(
                    con, "anomaly_events", "from empty_events", partition=f"bucket={bucket:02d}"
                )
    finally:
        con.execute("drop view previous_events")


# -- what to score ------------------------------------------------------------------------------


def _changes(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    bucket_of: dict[str, int],
    full: bool,
    w: Windows,
) -> dict[int, tuple[list[tuple[str, datetime]], list[str], list[str]]]:
    """Per bucket: per sensor the first hour to rescore; the new and the vanished files.

    Scores look ahead (:meth:`~engine.detectors.Windows.ahead_at` the sensor's sparsest recent
    cadence), so the first changed hour is the hour of the earliest new reading less that
    look-ahead. A vanished file rescores every sensor of its bucket from its first reading on
    (``score_files.min_ts``)."""
    ahead = w.ahead
    buckets = [b for (b,) in sql_rows(con, Q + "buckets")]
    lake: dict[int, dict[str, datetime | None]] = {b: {} for b in buckets}
    for bucket, path, min_ts in sql_rows(con, Q + "readings_files"):
        lake[bucket][path] = min_ts
    scored: dict[int, dict[str, datetime | None]] = {b: {} for b in buckets}
    for bucket, path, min_ts in [] if full else sql_rows(con, Q + "scored_files"):
        scored[bucket][path] = min_ts
    new = {b: sorted(set(lake[b]) - set(scored[b])) for b in buckets}
    gone = {b: sorted(set(scored[b]) - set(lake[b])) for b in buckets}
    changed: dict[int, dict[str, datetime]] = {b: {} for b in buckets}
    new_files = [str(wh.root / p) for b in buckets for p in new[b]]
    if new_files:
        for sensor_id, first_ts, sparsest in sql_rows(
            con, Q + "first_new_readings", {"files": new_files}
        ):
            if sensor_id not in bucket_of:
                continue
            cadence = w.max_cadence if sparsest is None else timedelta(seconds=float(sparsest))
            first = (first_ts - w.ahead_at(cadence)).replace(minute=0, second=0, microsecond=0)
            changed[bucket_of[sensor_id]][sensor_id] = first
    for b in buckets:
        gone_from = [scored[b][p] for p in gone[b] if scored[b][p] is not None]
        if gone_from:
            first = (min(gone_from) - ahead).replace(minute=0, second=0, microsecond=0)
            for sensor_id in (s for s, bucket in bucket_of.items() if bucket == b):
                changed[b][sensor_id] = min(changed[b].get(sensor_id, first), first)
    return {b: (sorted(changed[b].items()), new[b], gone[b]) for b in buckets}


@dataclass
class _BucketWork:
    """What one bucket needs: per sensor the first changed hour (with the readings its scope
    is expected to hold), and the lake files new since, or gone since, the last run."""

    bucket: int
    changes: list[tuple[str, datetime]]
    estimates: list[int]
    new: list[str]
    gone: list[str]
    last_reading: datetime | None


def _bucket_work(
    con: duckdb.DuckDBPyConnection,
    found: dict[int, tuple[list[str], list[str]]],
    changes: dict[int, list[tuple[str, datetime]]],
    w: Windows,
) -> list[_BucketWork]:
    """The work of each bucket with changed sensors or new or vanished files (``found``:
    bucket -> (new, gone)), with the readings each changed sensor's scope is expected to hold."""
    wanted = [b for b, (new, gone) in found.items() if changes.get(b) or new or gone]
    work = []
    for bucket, rows, sensors, last_ts in sql_rows(con, Q + "bucket_sizes", {"buckets": wanted}):
        per_sensor = max(int(rows / max(sensors, 1)), 1)
        estimates = []
        for _sensor, changed in changes.get(bucket, []):  # at most a minute cadence, never
            read_from = changed - w.minutes  # more than the whole history
            span = (last_ts - read_from) // timedelta(minutes=1) + 1 if last_ts else per_sensor
            estimates.append(max(min(per_sensor, span), 1))
        new, gone = found[bucket]
        work.append(_BucketWork(bucket, changes.get(bucket, []), estimates, new, gone, last_ts))
    return sorted(work, key=lambda item: item.bucket)


def pack(items: list[T], sizes: list[int], limit: int) -> list[list[T]]:
    """``items`` in order, in groups whose ``sizes`` add up to at most ``limit`` (an item larger
    than ``limit`` is a group of its own)."""
    groups: list[list[T]] = []
    total = limit + 1
    for item, size in zip(items, sizes, strict=True):
        if groups and total + size <= limit:
            groups[-1].append(item)
            total += size
        else:
            groups.append([item])
            total = size
    return groups


def _chunks(batch: list[_BucketWork], limit: int) -> list[list[tuple[str, datetime]]]:
    """The changed sensors of a batch in groups of about ``limit`` readings (memory stays
    flat)."""
    chunks: list[list[tuple[str, datetime]]] = [[]]
    size = 0
    for item in batch:
        for change, rows in zip(item.changes, item.estimates, strict=True):
            if chunks[-1] and size + rows > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(change)
            size += rows
    return [c for c in chunks if c]


# -- oxy score ----------------------------------------------------------------------------------


def _create_support_tables(con: duckdb.DuckDBPyConnection) -> None:
    for name, table in (("empty_scores", SCORE_SQL_TYPES), ("empty_events", EVENT_COLUMNS)):
        columns = ", ".join(f"{column} {kind}" for column, kind in table.items())
        con.execute(f"create or replace temp table {name} ({columns})")


def _scope_table(con: duckdb.DuckDBPyConnection, rescore_from: dict[str, datetime]) -> None:
    """``score_scope``: per sensor in scope its first rescored hour."""
    sql_rows(con, Q + "score_scope_create")
    if not rescore_from:
        return
    frame = pl.DataFrame(
        {"sensor_id": list(rescore_from), "rescore_from": list(rescore_from.values())},
        schema={"sensor_id": pl.String, "rescore_from": pl.Datetime("us")},
    )
    con.register("scope_changes", frame)
    try:
        sql_rows(con, Q + "score_scope_insert")
    finally:
        con.unregister("scope_changes")


def _store_hourly(con: duckdb.DuckDBPyConnection, hourly: pl.DataFrame) -> None:
    """Replace the stored hours of the sensors of ``score_scope`` from their rescore_from on."""
    sql_rows(con, Q + "score_hourly_forget_changed")
    if hourly.is_empty():
        return
    con.register("new_hourly", hourly)
    try:
        sql_rows(con, Q + "score_hourly_store")
    finally:
        con.unregister("new_hourly")


def score(
    warehouse: Warehouse,
    *,
    full: bool = False,
    progress: bool = False,
    executor: Executor | None = None,
) -> ScoreSummary:
    """Score new readings (or, with ``full``, all readings) into the anomaly marts.

    Parameters
    ----------
    warehouse
        The warehouse whose ``readings`` are scored.
    full
        Forget what was scored and recompute every bucket from its first reading.
    progress
        Show a progress bar over the buckets (stderr).
    executor
        Run the site stage's groups and the batches on a cluster's workers
        (:class:`engine.cluster.DaskExecutor`); the workers write under ``.staging/`` and this
        process, the one writer, commits everything in one transaction at the end. Default:
        here, a transaction per batch.

    Returns
    -------
    ScoreSummary
        Buckets and sensors rescored, rows written, anomalous rows and events.

    Examples
    --------
    >>> summary = score(Warehouse("warehouse"))          # doctest: +SKIP
    >>> summary.rows_scored                               # doctest: +SKIP
    """
    started = time.perf_counter()
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` first)")
    a, w = settings(warehouse.config)
    events = event_params(a, w)
    chunk_rows = int(a["run"]["chunk_rows"])
    buckets_scored = sensors_rescored = rows = 0
    with warehouse.writer() as con:
        warehouse.forget_damaged_scores(con)  # missing/damaged score files: rescore their spans
        con.execute("set memory_limit = $m", {"m": a["run"]["memory_limit"]})
        _create_support_tables(con)
        layout = stored_layout(warehouse)
        full = _upgrade_state(con) or any(strays for _, strays in layout.values()) or full
        sites = site_sensors(con, a)
        bucket_of = dict(zip(sites["sensor_id"], sites["bucket"], strict=True))
        ids = sensor_dtype(sites["sensor_id"])
        sites = sites.with_columns(pl.col("sensor_id").cast(ids))
        found = _changes(warehouse, con, bucket_of, full, w)
        if full and executor is None:
            _drop_orphan_partitions(warehouse, set(found))
            con.execute("begin")
            _forget_all(con)
            con.execute("commit")
        changed = with_site_peers(sites, {s: t for c, _, _ in found.values() for s, t in c})
        if full:  # every sensor from its first reading on
            changed = {s: FULL_FROM for s in changed}
        by_bucket: dict[int, list[tuple[str, datetime]]] = {}
        for sensor_id, hour in sorted(changed.items()):
            by_bucket.setdefault(bucket_of[sensor_id], []).append((sensor_id, hour))
        files = {b: (new, gone) for b, (_, new, gone) in found.items()}
        work = _bucket_work(con, files, by_bucket, w)
        batches = pack(work, [sum(item.estimates) for item in work], chunk_rows)
        if executor is not None:
            rows = _score_on_cluster(
                warehouse, con, executor, batches, sites, bucket_of, changed, full, layout, a, w
            )
            if full:
                _drop_orphan_partitions(warehouse, set(found))
            buckets_scored = len(work)
            sensors_rescored = sum(len(item.changes) for item in work)
        else:
            con.execute("begin")
            site_stage(warehouse, con, sites, changed, a, w)
            con.execute("commit")
        bar = progress_bar(
            total=len(work), desc="score", unit="bucket", enabled=progress and executor is None
        )
        for batch in batches if executor is None else []:
            con.execute("begin")
            try:
                _scope_table(con, {s: t for item in batch for s, t in item.changes})
                chunks = _batch_chunks(warehouse, con, batch, bucket_of, w, chunk_rows)
                scored, hourly = _score_batch(
                    warehouse, con, batch, chunks, sites, bucket_of, full, layout, a, w, events
                )
                rows += scored
                _store_hourly(con, hourly)
                _record_files(con, batch)
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
            buckets_scored += len(batch)
            sensors_rescored += sum(len(item.changes) for item in batch)
            bar.update(len(batch))
        bar.close()
        warehouse.refresh_mart_views(con)
        anomalies, n_events = _totals(warehouse, con)
    return ScoreSummary(
        full=full,
        buckets_scored=buckets_scored,
        sensors_rescored=sensors_rescored,
        rows_scored=rows,
        anomalies=anomalies,
        events=n_events,
        seconds=round(time.perf_counter() - started, 3),
    )


def _forget_all(con: duckdb.DuckDBPyConnection) -> None:
    """Under ``--full``: forget every stored hour, site hour and scored file."""
    sql_rows(con, Q + "score_hourly_forget_all")
    sql_rows(con, Q + "site_hourly_forget_all")
    sql_rows(con, Q + "score_files_forget_all")


def _record_files(con: duckdb.DuckDBPyConnection, batch: list[_BucketWork]) -> None:
    """Record the batch's new lake files as scored and forget its vanished ones."""
    sql_rows(
        con,
        Q + "score_files_forget_gone",
        {
            "buckets": [item.bucket for item in batch],
            "gone": [p for item in batch for p in item.gone],
        },
    )
    sql_rows(con, Q + "score_files_record_new", {"new": [p for item in batch for p in item.new]})


# One chunk of a batch: its sensors (each with its first rescored hour) and the lake files
# their readings are read from.
Chunk = tuple[dict[str, datetime], list[str]]


def _batch_chunks(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    batch: list[_BucketWork],
    bucket_of: dict[str, int],
    w: Windows,
    chunk_rows: int,
) -> list[Chunk]:
    """The batch's changed sensors in chunks of about ``chunk_rows`` readings (:func:`_chunks`),
    each with the lake files to read."""
    out = []
    for chunk in _chunks(batch, chunk_rows):
        mine = dict(chunk)
        read_from = min(mine.values()) - w.minutes
        out.append((mine, lake_paths(wh, con, sorted({bucket_of[s] for s in mine}), read_from)))
    return out


def _score_batch(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    batch: list[_BucketWork],
    chunks: list[Chunk],
    sites: pl.DataFrame,
    bucket_of: dict[str, int],
    full: bool,
    layout: dict[int, tuple[list[ScoreFile], list[Path]]],
    a: dict[str, Any],
    w: Windows,
    events: dict[str, Any],
    history: CatalogHistory | FrameHistory | None = None,
) -> tuple[int, pl.DataFrame]:
    """Score one batch chunk by chunk and write its buckets' score and event files through
    ``wh`` (in place; a :class:`~engine.warehouse.StagedWarehouse` stages them). ``con`` holds
    ``score_scope`` of the batch and the support tables. Returns the rows scored and the new
    hourly statistics (to store)."""
    ids = sites.schema["sensor_id"]
    assert isinstance(ids, pl.Enum)
    scored_parts, hourly_parts = [], []
    for mine, paths in chunks:
        readings = read_lake(paths, {s: t - w.minutes for s, t in mine.items()}, ids)
        scores, hourly = score_sensors(con, readings, sites, mine, a, w, history=history)
        scored_parts.append(scores)
        hourly_parts.append(hourly)
        del readings
    scores = pl.concat(scored_parts) if scored_parts else pl.DataFrame(schema=SCORE_COLUMNS)
    rows = scores.height
    hourly = (
        pl.concat(hourly_parts) if hourly_parts else pl.DataFrame(schema=detectors.HOURLY_COLUMNS)
    )
    rescored = [item for item in batch if item.changes]
    if rescored:
        rescore_from = {s: t for item in batch for s, t in item.changes}
        kept = _write_scores(wh, rescored, scores, rescore_from, bucket_of, full, layout)
        del scores
        _write_events(wh, con, kept, events, full)
    return rows, hourly


# -- oxy score on a cluster ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreJob:
    """One batch for a cluster worker: everything it needs as plain values (no catalog)."""

    warehouse: Warehouse
    batch: list[_BucketWork]
    chunks: list[Chunk]
    sites: pl.DataFrame
    bucket_of: dict[str, int]
    full: bool
    layout: dict[int, tuple[list[ScoreFile], list[Path]]]
    history: FrameHistory


@dataclass(frozen=True)
class ScoreJobResult:
    """What a worker made of a :class:`ScoreJob`: rows scored, its hourly statistics (a staged
    Parquet file, or None) and the file operations to apply (:func:`apply_file_ops`)."""

    rows: int
    hourly: str | None
    ops: list[FileOp]


def score_job(job: ScoreJob) -> ScoreJobResult:
    """Score one batch on a cluster worker: read the lake, score, stage the batch's score and
    event files and its hourly statistics under ``.staging/`` (published files untouched)."""
    wh = StagedWarehouse(job.warehouse.root, job.warehouse.config)
    a, w = settings(wh.config)
    con = wh.connect_memory()
    try:
        con.execute("set memory_limit = $m", {"m": a["run"]["memory_limit"]})
        _create_support_tables(con)
        sensors = job.sites.select(pl.col("sensor_id").cast(pl.String), "bucket")
        con.register("sensors", sensors)
        _scope_table(con, {s: t for item in job.batch for s, t in item.changes})
        rows, hourly = _score_batch(
            wh,
            con,
            job.batch,
            job.chunks,
            job.sites,
            job.bucket_of,
            job.full,
            job.layout,
            a,
            w,
            event_params(a, w),
            job.history,
        )
        staged = None
        if hourly.height:
            wh.unit_dir.mkdir(parents=True, exist_ok=True)
            staged = wh.unit_dir / "score_hourly.parquet"
            hourly.write_parquet(staged, compression="zstd")
        return ScoreJobResult(rows, str(staged) if staged else None, wh.ops)
    finally:
        con.close()


def site_group_job(wh: Warehouse, group: SiteGroup) -> pl.DataFrame | None:
    """:func:`site_medians` of one group of buckets on a cluster worker (in-memory DuckDB)."""
    con = wh.connect_memory()
    try:
        return site_medians(con, *group)
    finally:
        con.close()


def _score_on_cluster(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    executor: Executor,
    batches: list[list[_BucketWork]],
    sites: pl.DataFrame,
    bucket_of: dict[str, int],
    changed: dict[str, datetime],
    full: bool,
    layout: dict[int, tuple[list[ScoreFile], list[Path]]],
    a: dict[str, Any],
    w: Windows,
) -> int:
    """The site stage and every batch on the cluster, then one transaction here: the sites'
    movement, each batch's hourly statistics, files and bookkeeping. Nothing is committed
    before every batch is back (a lost scheduler leaves the warehouse as it was). Returns the
    rows scored."""
    ids = sites.schema["sensor_id"]
    assert isinstance(ids, pl.Enum)
    found = site_movement(
        wh,
        con,
        sites,
        changed,
        a,
        w,
        map_groups=lambda groups: executor.map(
            site_group_job, [(wh, g) for g in groups], label="score: sites"
        ),
    )
    since, moves = found if found is not None else (None, None)
    chunk_rows = int(a["run"]["chunk_rows"])
    jobs = []
    for batch in batches:
        rescore_from = {s: t for item in batch for s, t in item.changes}
        context = {s: t - w.minutes for s, t in rescore_from.items()}
        hourly_rows = _stored_hourly(
            con, {s: t - w.hours for s, t in context.items()}, rescore_from, ids
        )
        in_batch = sites.filter(pl.col("sensor_id").is_in(list(rescore_from)))
        first = min(context.values(), default=FULL_FROM) - w.hours
        moves_now = _moves_after_stage(con, in_batch, first, since, moves, full)
        jobs.append(
            ScoreJob(
                warehouse=wh,
                batch=batch,
                chunks=_batch_chunks(wh, con, batch, bucket_of, w, chunk_rows),
                sites=sites,
                bucket_of=bucket_of,
                full=full,
                layout={b.bucket: layout[b.bucket] for b in batch if b.bucket in layout},
                history=FrameHistory(hourly_rows, moves_now),
            )
        )
    try:
        results = executor.map(score_job, [(job,) for job in jobs], label="score")
    except BaseException:
        wh.sweep_units()
        raise
    rows = 0
    con.execute("begin")
    try:
        if full:
            _forget_all(con)
        if since is not None and moves is not None:
            store_site_hourly(con, since, moves)
        for batch, result in zip(batches, results, strict=True):
            _scope_table(con, {s: t for item in batch for s, t in item.changes})
            sql_rows(con, Q + "score_hourly_forget_changed")
            if result.hourly is not None:
                sql_rows(con, Q + "score_hourly_store_files", {"files": [result.hourly]})
            apply_file_ops(wh, con, result.ops)
            for item in batch:
                _prune_months(_scores_folder(wh, item.bucket))
            _record_files(con, batch)
            rows += result.rows
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        wh.sweep_units()
    return rows


def _moves_after_stage(
    con: duckdb.DuckDBPyConnection,
    sensors: pl.DataFrame,
    since_hour: datetime,
    since: pl.DataFrame | None,
    moves: pl.DataFrame | None,
    full: bool,
) -> pl.DataFrame:
    """The ``site_hourly`` rows of the sites of ``sensors`` from ``since_hour`` on as they are
    once the site stage's ``moves`` are stored (what a worker reads as the catalog's): the
    stored rows before each changed site's ``since`` (none under ``full``), then ``moves``."""
    empty = pl.DataFrame(schema=SITE_MOVES_SCHEMA)
    stored = None if full else _site_moves(con, sensors, since_hour)
    stored = empty if stored is None else stored.cast(SITE_MOVES_SCHEMA)
    names = sensors["site"].drop_nulls().unique().implode()
    if since is not None and moves is not None:
        stored = (
            stored.join(since, on="site", how="left")
            .filter(pl.col("since").is_null() | (pl.col("hour") < pl.col("since")))
            .drop("since")
        )
        fresh = moves.filter(pl.col("site").is_in(names) & (pl.col("hour") >= since_hour))
        stored = pl.concat([stored, fresh.select(list(SITE_MOVES_SCHEMA)).cast(SITE_MOVES_SCHEMA)])
    return stored.sort("site", "hour")


def _upgrade_state(con: duckdb.DuckDBPyConnection) -> bool:
    """Recreate ``score_hourly`` when its columns changed with a new oxy; True = rescore all."""
    expected = sql_text("catalog/score_hourly")
    stored = [r[0] for r in sql_rows(con, Q + "score_hourly_columns")]
    wanted = list(detectors.HOURLY_COLUMNS)
    if stored == wanted:
        return False
    con.execute("drop table if exists score_hourly")
    con.execute(expected)
    sql_rows(con, Q + "score_files_forget_all")
    return True


def _drop_orphan_partitions(warehouse: Warehouse, buckets: set[int]) -> None:
    """Under ``--full``: remove mart partitions of buckets that no longer hold readings."""
    for name in ("anomaly_scores", "anomaly_events"):
        folder = warehouse.marts_dir / name
        if not folder.is_dir():
            continue
        for part in folder.glob("bucket=*"):
            if int(part.name.removeprefix("bucket=")) not in buckets:
                warehouse.remove_tree(part)  # journalled and forgotten in the writer's catalog


def _totals(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    if "anomaly_events" not in set(warehouse.mart_names()):
        return 0, 0
    anomalies, n_events = sql_rows(con, Q + "anomaly_totals")[0]
    return int(anomalies), int(n_events)


# -- batch inference ----------------------------------------------------------------------------


def score_readings(warehouse: Warehouse, readings: pl.DataFrame) -> pl.DataFrame:
    """Score new canonical readings against the warehouse's history, without writing.

    The minute windows read the history the lake holds before the new readings; the hourly
    statistics of scored hours come from ``score_hourly``, those of the new readings' hours are
    computed from them; the sites' movement is known for scored hours only (past them a
    reading's profile does not move with its site).

    Parameters
    ----------
    warehouse
        A scored warehouse (``oxy score`` ran); its sensors must include every sensor_id.
    readings
        Canonical readings: at least ``sensor_id``, ``ts`` (naive UTC) and ``value``.

    Returns
    -------
    pl.DataFrame
        One row per input reading with the ``anomaly_scores`` columns.

    Examples
    --------
    >>> new = pl.DataFrame({"sensor_id": ["a"], "ts": [datetime(2024, 5, 1)], "value": [7.9]})
    >>> score_readings(Warehouse("warehouse"), new)      # doctest: +SKIP
    """
    missing = {"sensor_id", "ts", "value"} - set(readings.columns)
    if missing:
        raise OxyError(f"readings lack column(s) {sorted(missing)}")
    frame = readings.select(
        pl.col("sensor_id").cast(pl.String),
        pl.col("ts").cast(pl.Datetime("us")),
        pl.col("value").cast(pl.Float64),
    )
    if frame.is_empty():
        return pl.DataFrame(schema=SCORE_COLUMNS)
    a, w = settings(warehouse.config)
    with warehouse.reader() as con:
        con.register("new_readings", frame)
        try:
            unknown = sql_rows(con, Q + "new_readings_unregistered")[0][0]
        finally:
            con.unregister("new_readings")
        if unknown:
            raise OxyError(f"{unknown} sensor(s) of the readings are not registered")
        sites = site_sensors(con, a)
        bucket_of = dict(zip(sites["sensor_id"], sites["bucket"], strict=True))
        ids = sensor_dtype(sites["sensor_id"])
        sites = sites.with_columns(pl.col("sensor_id").cast(ids))
        firsts = frame.group_by("sensor_id").agg(pl.col("ts").min().dt.truncate("1h"))
        rescore_from = dict(firsts.iter_rows())
        history = read_readings(
            warehouse,
            con,
            sorted({bucket_of[s] for s in rescore_from}),
            {s: t - w.minutes for s, t in rescore_from.items()},
            ids,
            extra=frame,
        )
        scored, _ = score_sensors(con, history, sites, rescore_from, a, w)
    keys = frame.select("sensor_id", "ts").unique()
    return scored.join(keys, on=["sensor_id", "ts"], how="semi").sort("sensor_id", "ts")
