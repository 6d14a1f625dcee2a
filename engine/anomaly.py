"""Anomaly scoring: every reading scored by DuckDB window functions, one lake bucket at a time.

The SQL lives in ``sql/intermediate`` (readings in scope -> hourly statistics -> hourly
baselines -> detector scores) and ``sql/marts`` (``anomaly_scores``, ``anomaly_events``).
The minute windows between them (neighbouring readings, spike levels, the point window and its
z, the collective mean of that z, noise and stuck windows) are polars ``rolling_*_by``
expressions over all sensors of a chunk at once (:func:`local_readings`,
:func:`detector_windows`): DuckDB's RANGE frames over the wide rows cost several times more.
This module decides *what* to score and moves relations between those steps:

* **incremental by default** — the catalog table ``score_files`` lists the lake files already
  scored. A bucket with new (or vanished) files is rescored per sensor from the first hour the
  change touches; every score depends only on readings and hourly baselines within a bounded
  look-back (``lookbacks``; older hours bring their stored hour-of-day median and spread), so
  the rows before that point keep their stored values and the result equals a full
  recomputation. Buckets with small scopes are scored together, in one pass;
* baselines (hour-of-day median and spread in the site's local time, typical std and noise,
  drift level) are fitted from the previous days only and stored per sensor and hour in
  ``score_hourly``; :func:`score_readings` reuses them for new readings without re-fitting;
* ``anomaly_scores`` is written per ``bucket=NN/month=YYYY-MM`` partition, ``anomaly_events``
  per ``bucket=NN``, each file atomically (``Warehouse.write_mart``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb
import polars as pl

from engine import OxyError
from engine.config import Config
from engine.progress import bar as progress_bar
from engine.warehouse import (
    Warehouse,
    bind,
    query_frame,
    quote_literal,
    run_sql,
    sql_rows,
    sql_text,
)

SCORE_COLUMNS: dict[str, str] = {
    "sensor_id": "varchar",
    "ts": "timestamp",
    "value": "double",
    "score_point": "double",
    "score_collective": "double",
    "score_contextual": "double",
    "score_stuck": "double",
    "score_spike": "double",
    "score_noise": "double",
    "score_sensor_fault": "double",
    "score_drift": "double",
    "score_dropout": "double",
    "score_range": "double",
    "severity": "double",
    "anomaly_type": "varchar",
    "is_anomaly": "boolean",
    "qartod_flag": "integer",
    "prev_ts": "timestamp",
}

# anomaly_scores files hold a week of a bucket (~60 k readings for 6 sensors): row groups of
# 32 k let both threads write one (DuckDB writes a file of one row group on one thread;
# 12 files of a bucket took 38 % longer than 3 month files, with 32 k groups 13 %)
FILE_ROW_GROUP = 32_768

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

Closed = Literal["right", "both"]
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


@dataclass(frozen=True)
class Lookbacks:
    """How far back each stage must read so that rescored values equal a full run."""

    minutes: timedelta  # readings before rescore_from the minute windows need
    hours: timedelta  # stored hourly rows before changed_from the baselines need
    ahead: timedelta  # a reading's score may depend on readings this far ahead


def detector_params(config: Config) -> dict[str, Any]:
    """Every bound parameter of the scoring SQL, from the ``[anomaly]`` configuration."""
    a = config["anomaly"]
    params: dict[str, Any] = {
        key: a[key]
        for key in (
            "point_window",
            "point_jump_ratio",
            "point_z_lo",
            "point_z_hi",
            "collective_window",
            "collective_lo",
            "collective_hi",
            "contextual_z_lo",
            "contextual_z_hi",
            "stuck_window",
            "stuck_std_ratio",
            "noise_window",
            "spike_sigma",
            "noise_std_ratio",
            "severity_threshold",
            "min_std",
            "baseline_window",
            "baseline_min_days",
            "contextual_min_days",
            "contextual_few_days",
            "context_hour_std_ratio",
            "pooled_spread_ratio",
            "spread_floor_ratio",
            "typical_min_hours",
            "stuck_min_readings",
            "stuck_sparse_window",
            "spike_gap",
            "spike_ref_window",
            "spike_ref_gap",
            "noise_step_window",
            "noise_min_readings",
            "noise_step_clip",
            "drift_window",
            "drift_recent",
            "drift_z_clip",
            "drift_min_hours",
            "drift_max_spread",
            "drift_baseline_window",
            "drift_direction",
            "range_suspect_sat",
            "range_fail_sat",
            "qartod_fail_severity",
            "event_merge_gap",
            "prev_horizon",
        )
    }
    for name in (
        "point_z",
        "collective",
        "contextual_z",
        "spike_z",
        "sparse_spike_z",
        "noise_ratio",
        "drift_z",
        "drift_relative",
    ):
        lo, hi = (float(x) for x in a[f"{name}_range"])
        if not hi > lo:
            raise OxyError(f"[anomaly] {name}_range must be [lo, hi] with hi > lo")
        params[f"oxy_{name}_lo"], params[f"oxy_{name}_hi"] = lo, hi
    if a["drift_direction"] not in ("down", "up", "both"):
        raise OxyError("[anomaly] drift_direction must be 'down', 'up' or 'both'")
    for key in ("drift_site_levels", "drift_site_min_sensors", "drift_site_min_days"):
        if isinstance(a[key], bool) or not isinstance(a[key], int) or a[key] < 0:
            raise OxyError(f"[anomaly] {key} must be a whole number >= 0, not {a[key]!r}")
    params["kelvin"] = float(a["range_temperature_c"]) + 273.15
    params["salinity"] = float(a["range_salinity"])
    params["dropout_mgl"] = float(a["dropout_level"]["mg/L"])
    params["dropout_sat"] = float(a["dropout_level"]["%sat"])
    return params


def _interval(con: duckdb.DuckDBPyConnection, text: str) -> timedelta:
    try:
        value = sql_rows(con, "meta/interval", {"text": text})[0][0]
    except duckdb.Error:
        raise OxyError(f"[anomaly] {text!r} is not a duration such as '60 minutes'") from None
    return value


def lookbacks(con: duckdb.DuckDBPyConnection, config: Config) -> Lookbacks:
    a = config["anomaly"]
    point = _interval(con, a["point_window"])
    collective = _interval(con, a["collective_window"])
    noise = _interval(con, a["noise_step_window"])
    prev = _interval(con, a["prev_horizon"])
    gap = _interval(con, a["spike_gap"])
    if _interval(con, a["spike_ref_gap"]) + _interval(con, a["spike_ref_window"]) > gap:
        raise OxyError("[anomaly] spike_ref_gap + spike_ref_window must not exceed spike_gap")
    level = _interval(con, a["context_level_window"])
    # forward windows: spike levels, stuck, centred noise, the contextual level
    ahead = max(gap, point, noise / 2, level)
    minutes = max(point + collective, noise, prev) + ahead + timedelta(minutes=1)
    # the hours of the drift window before the first changed hour need their whole baseline
    # windows; hours further back bring their stored median and spread (int_hourly_baselines)
    window = max(_interval(con, a["baseline_window"]), _interval(con, a["drift_baseline_window"]))
    hours = window + _interval(con, a["drift_window"]) + timedelta(days=1)
    return Lookbacks(minutes=minutes, hours=hours, ahead=ahead)


def create_support_tables(con: duckdb.DuckDBPyConnection) -> None:
    sql_rows(con, "score/extra_readings_create")
    for name, table in (("empty_scores", SCORE_COLUMNS), ("empty_events", EVENT_COLUMNS)):
        columns = ", ".join(f"{column} {kind}" for column, kind in table.items())
        con.execute(f"create or replace temp table {name} ({columns})")


def scope_table(
    con: duckdb.DuckDBPyConnection, changes: list[tuple[str, datetime]], lb: Lookbacks
) -> None:
    """``score_scope``: per sensor the first changed hour, the first rescored reading and the
    first reading the windows need."""
    sql_rows(con, "score/score_scope_create")
    if not changes:
        return
    frame = pl.DataFrame(
        changes, schema={"sensor_id": pl.String, "changed": pl.Datetime("us")}, orient="row"
    )
    con.register("scope_changes", frame)
    try:
        sql_rows(con, "score/score_scope_insert", {"gap": lb.ahead, "minutes": lb.minutes})
    finally:
        con.unregister("scope_changes")


@dataclass(frozen=True)
class MinuteWindows:
    """The detectors' minute windows in microseconds (``rolling_*_by`` over an integer key)."""

    spike_ref_window: int
    spike_ref_gap: int
    context_level_window: int  # the contextual level: mean of the readings this far either side
    spike_gap: int
    prev_horizon: int
    point_window: int
    collective_window: int
    noise_half: int  # the noise window is centred: half before, half after
    stuck_sparse_window: int
    noise_step_clip: float
    point_jump_ratio: float
    min_std: float
    typical_min_hours: int

    @property
    def longest(self) -> int:
        return max(
            self.spike_ref_gap + self.spike_ref_window,
            self.context_level_window,
            self.spike_gap,
            self.prev_horizon,
            self.point_window,
            self.collective_window,
            self.noise_half,
            self.stuck_sparse_window,
        )


def minute_windows(con: duckdb.DuckDBPyConnection, config: Config) -> MinuteWindows:
    a = config["anomaly"]

    def us(key: str) -> int:
        return _interval(con, a[key]) // timedelta(microseconds=1)

    return MinuteWindows(
        spike_ref_window=us("spike_ref_window"),
        spike_ref_gap=us("spike_ref_gap"),
        context_level_window=us("context_level_window"),
        spike_gap=us("spike_gap"),
        prev_horizon=us("prev_horizon"),
        point_window=us("point_window"),
        collective_window=us("collective_window"),
        noise_half=us("noise_step_window") // 2,
        stuck_sparse_window=us("stuck_sparse_window"),
        noise_step_clip=float(a["noise_step_clip"]),
        point_jump_ratio=float(a["point_jump_ratio"]),
        min_std=float(a["min_std"]),
        typical_min_hours=int(a["typical_min_hours"]),
    )


# -- minute windows (polars) ------------------------------------------------------------------
# Every window is a time window over one sensor's readings. The readings of all sensors in
# scope are sorted by (sensor, ts) and get one integer key: microseconds since the first reading
# plus the sensor's rank times a stride longer than the span and every window, so that one
# ``rolling_*_by`` over the whole frame never reaches into a neighbouring sensor. SQL's
# ``range between W - 1 microsecond preceding and current row`` is ``closed="right"`` with W;
# ``W preceding`` is ``closed="both"``. Windows that reach forward run on the reversed frame.
# Sums and counts follow SQL: count(x) counts non-null x, sum(x) is null when it counts none.


def _same_sensor(shift: int, column: str = "sensor_id") -> pl.Expr:
    return pl.col(column) == pl.col(column).shift(shift)


def _count(x: pl.Expr, size: int, closed: Closed) -> pl.Expr:
    return x.is_not_null().cast(pl.Int64).rolling_sum_by("key", f"{size}i", closed=closed)


def _sum(x: pl.Expr, size: int, closed: Closed, count: str, *, squares: bool = False) -> pl.Expr:
    """SQL ``sum(x)`` over the window, null where the column ``count`` (the window's count of
    non-null x) is 0; ``squares``: x >= 0, so the sum is too (a sliding sum that adds and
    drops values may end a hair below zero after a flat stretch)."""
    total = x.fill_null(0.0).rolling_sum_by("key", f"{size}i", closed=closed)
    if squares:
        total = total.clip(lower_bound=0.0)
    return pl.when(pl.col(count) > 0).then(total)


def _divide(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """SQL ``numerator / nullif(denominator, 0)``."""
    return pl.when(denominator != 0).then(numerator / denominator)


def _with_key(frame: pl.DataFrame, longest: int) -> pl.DataFrame:
    """``key``: one integer time axis for the readings sorted by (sensor_id, ts); sensors lie
    more than ``longest`` (the longest window, microseconds) apart on it."""
    return frame.with_columns(key=_group_key(frame, ["sensor_id"], "ts", longest))


def _first_ingested(raw: pl.DataFrame, longest: int) -> pl.DataFrame:
    """One row per (sensor, ts) of ``raw`` (sensor_rank, ts, value, ingested_at, ...), sorted
    on ``key`` (see :func:`_with_key`): the first ingested non-null value wins, a null only when
    every copy is null (the ingest rule). One integer sort; copies, when there are any, sort by
    value presence and ingestion time within their key."""
    us = pl.col("ts").dt.epoch("us")
    first, last = raw.select(us.min().alias("first"), us.max().alias("last")).row(0)
    first, last = first or 0, last or 0
    stride = (last - first) + 2 * longest + 1
    rank = pl.col("sensor_rank").cast(pl.Int64)
    if (raw["sensor_rank"].max() or 0) * stride >= 2**62:  # ranks among many sensors: 0, 1, ...
        rank = rank.rank("dense").cast(pl.Int64)
    raw = raw.with_columns(key=(us - first) + rank * stride).sort("key")
    repeated = pl.col("key") == pl.col("key").shift(1)
    if raw.select(repeated.any()).item():
        raw = raw.sort("key", pl.col("value").is_null(), "ingested_at")
        raw = raw.filter(~repeated.fill_null(False))
    return raw.drop("ingested_at").with_columns(pl.col("key").set_sorted())


def _ahead(
    frame: pl.DataFrame, counts: dict[str, pl.Expr], columns: dict[str, pl.Expr]
) -> pl.DataFrame:
    """``columns`` (after the helper columns ``counts``) on the reversed frame: windows that
    reach forward in time. ``frame`` holds ``key`` and the columns they read."""
    reversed_frame = frame.reverse().with_columns(key=(-pl.col("key")).set_sorted())
    return reversed_frame.with_columns(**counts).select(**columns).reverse()


def local_readings(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any], mw: MinuteWindows
) -> pl.DataFrame:
    """``int_readings_local``: the readings in scope, one per (sensor_id, ts), with the site's
    local hour, the steps to the neighbouring readings, the spike residual and the contextual
    level (the mean of the readings within ``context_level_window`` either side).

    ``query`` is ``int_readings_scope`` (rows as stored, duplicates included, by the number
    ``int_scope_sensors`` gives each sensor in ``score_scope``; it may read ``scope_sensors``).
    """
    # sensors travel as their numbers (see seed_windows); ids come back as a categorical
    sensors = query_frame(con, sql_text("intermediate/int_scope_sensors"))
    con.register("scope_sensors", sensors)
    try:
        raw = query_frame(con, query, bind(query, params))
    finally:
        con.unregister("scope_sensors")
    # first ingested wins (the ingest rule; a null value only when every copy is null)
    frame = _first_ingested(raw, mw.longest)
    ids, zone, zones = _numbered_sensors(sensors, frame["sensor_rank"])
    frame = frame.with_columns(
        sensor_id=ids,
        unit=sensors["unit"].gather(frame["sensor_rank"] - 1),
        hour=pl.col("ts").dt.truncate("1h"),
        # the hourly statistics' hour of day: that of the start of the UTC hour
        local_hour=zone_local_hours(con, frame["ts"], zone, zones, HOUR_US),
    ).drop("sensor_rank")
    value, ts = pl.col("value"), pl.col("ts")
    frame = frame.with_columns(
        prev_ts=pl.when(_same_sensor(1)).then(ts.shift(1)),
        prev_value=pl.when(_same_sensor(1)).then(value.shift(1)),
        next_ts=pl.when(_same_sensor(-1)).then(ts.shift(-1)),
        next_value=pl.when(_same_sensor(-1)).then(value.shift(-1)),
        before_n=_count(value, mw.spike_ref_window, "both"),
    ).with_columns(before_sum=_sum(value, mw.spike_ref_window, "both", "before_n"))
    frame = frame.with_columns(
        before_level=_divide(pl.col("before_sum") - value, pl.col("before_n") - 1)
    )
    # the mean level just after the reading, skipping the spike's tail: [ts + gap, ts + gap + w);
    # and the readings within context_level_window ahead (the contextual level, below)
    reach = mw.spike_ref_gap + mw.spike_ref_window
    after = _ahead(
        frame.select("key", "value"),
        {
            "near_n": _count(value, mw.spike_ref_gap, "right"),
            "reach_n": _count(value, reach, "right"),
            "level_n": _count(value, mw.context_level_window, "both"),
        },
        {
            "after_level": _divide(
                _sum(value, reach, "right", "reach_n")
                - _sum(value, mw.spike_ref_gap, "right", "near_n"),
                pl.col("reach_n") - pl.col("near_n"),
            ),
            "ahead_n": pl.col("level_n"),
            "ahead_sum": _sum(value, mw.context_level_window, "both", "level_n"),
        },
    )
    # the contextual level: mean of the readings within context_level_window either side
    frame = frame.with_columns(after["after_level"], after["ahead_n"], after["ahead_sum"])
    if mw.context_level_window == mw.spike_ref_window:  # the same window: computed once
        frame = frame.with_columns(behind_n=pl.col("before_n"), behind_sum=pl.col("before_sum"))
    else:
        frame = frame.with_columns(
            behind_n=_count(value, mw.context_level_window, "both")
        ).with_columns(behind_sum=_sum(value, mw.context_level_window, "both", "behind_n"))
    frame = frame.with_columns(
        context_level=_divide(
            pl.col("behind_sum") + pl.col("ahead_sum").fill_null(0.0) - value,
            pl.col("behind_n") + pl.col("ahead_n") - 1,
        )
    )
    return (
        frame.with_columns(
            prev_ts=pl.when(pl.col("prev_ts") >= ts - timedelta(microseconds=mw.prev_horizon)).then(
                pl.col("prev_ts")
            ),
            step=pl.when(pl.col("prev_ts") >= ts - timedelta(microseconds=mw.spike_gap)).then(
                value - pl.col("prev_value")
            ),
            next_step=pl.when(pl.col("next_ts") <= ts + timedelta(microseconds=mw.spike_gap)).then(
                pl.col("next_value") - value
            ),
        )
        .with_columns(
            spike_residual=spike_residual(),
            # minute cadence: another reading in the level window before (sparse: none)
            has_level=pl.col("before_level").is_not_null(),
        )
        .select(
            "sensor_id",
            "ts",
            "value",
            "unit",
            "hour",
            "local_hour",
            "prev_ts",
            "step",
            "next_step",
            "spike_residual",
            "has_level",
            "context_level",
        )
    )


def spike_residual() -> pl.Expr:
    """Deviation from the levels before and after when it has the same sign against both (the
    smaller one: a trend or a nearby spike gives opposite signs); at sparse cadence, from the
    neighbours when the reading is a local extreme."""
    value, before, after = pl.col("value"), pl.col("before_level"), pl.col("after_level")
    step, next_step = pl.col("step"), pl.col("next_step")
    both = (
        pl.when((value - before).sign() == (value - after).sign())
        .then(
            (value - before).sign()
            * pl.min_horizontal((value - before).abs(), (value - after).abs())
        )
        .when(before.is_not_null() & after.is_not_null())
        .then(0.0)
    )
    extreme = pl.when(step * next_step < 0).then(
        step.sign()
        * pl.min_horizontal(
            (step - next_step).abs() / 2, 2 * pl.min_horizontal(step.abs(), next_step.abs())
        )
    )
    return pl.coalesce(both, value - before, extreme)


QUARTER_US = 15 * 60 * 1_000_000  # every zone's offset and switch is whole quarter hours
HOUR_US = 60 * 60 * 1_000_000


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


def _numbered_sensors(
    sensors: pl.DataFrame, rank: pl.Series
) -> tuple[pl.Series, pl.Series, list[str]]:
    """For readings of the sensors numbered ``rank`` (1, 2, ... rows of ``sensors``: sensor_id,
    timezone): their ids (categorical) and zone indexes into the returned zone list."""
    row = rank - 1
    ids = sensors["sensor_id"].cast(pl.Categorical).gather(row)
    zones = sensors["timezone"].drop_nulls().unique().sort()
    zone_of_row = sensors["timezone"].rank("dense") - 1  # sorted like ``zones``; null stays
    return ids, zone_of_row.gather(row), zones.to_list()


def seed_windows(con: duckdb.DuckDBPyConnection, files: list[str], config: Config) -> pl.DataFrame:
    """``seed_windows``: the readings of ``files`` with the windows of the seed's rules (the
    input of ``int_seed_scores``): the sensor's number and id, local hour, steps to the
    neighbours, the point, stuck and noise window stds, point z and the collective window's
    mean point z.

    Sensors travel as their numbers (``int_seed_sensors``), not their ids: reading, sorting,
    shifting and grouping integers is a good part cheaper than strings, and the ids come back
    as a categorical (integers with a dictionary)."""
    a = config["anomaly"]

    windows = {
        key: _interval(con, a[key]) // timedelta(microseconds=1)
        for key in ("point_window", "stuck_window", "noise_window", "collective_window")
    }

    def size(key: str) -> str:
        return f"{windows[key]}i"

    sensors = query_frame(con, sql_text("intermediate/int_seed_sensors"))
    con.register("seed_sensors", sensors)
    try:
        raw = query_frame(con, sql_text("intermediate/int_seed_readings"), {"files": files})
    finally:
        con.unregister("seed_sensors")
    frame = _first_ingested(raw, max(windows.values()))
    ids, zone, zones = _numbered_sensors(sensors, frame["sensor_rank"])
    frame = frame.with_columns(
        sensor_id=ids, local_hour=zone_local_hours(con, frame["ts"], zone, zones)
    )
    same = _same_sensor(1, "sensor_rank")
    value, ts, key = pl.col("value"), pl.col("ts"), pl.col("key")
    gap = timedelta(microseconds=_interval(con, a["spike_gap"]) // timedelta(microseconds=1))
    point = size("point_window")
    # a flat window has no spread at all (a sliding std may leave a hair above zero): flat
    # when the reading before the run of equal values that ends here lies outside the window
    # (``key`` puts the previous sensor's readings outside every window)
    run_start = ~(same & (value == value.shift(1))).fill_null(False)
    before_run = pl.when(run_start).then(key.shift(1).fill_null(key - 2 * windows["point_window"]))
    frame = frame.with_columns(
        step=pl.when(same & (ts.shift(1) >= ts - gap)).then(value - value.shift(1)),
        next_step=pl.when(_same_sensor(-1, "sensor_rank") & (ts.shift(-1) <= ts + gap)).then(
            value.shift(-1) - value
        ),
        point_mean=value.rolling_mean_by("key", point),
        point_std=value.rolling_std_by("key", point),
        point_flat=before_run.forward_fill() <= key - windows["point_window"],
        noise_std=value.rolling_std_by("key", size("noise_window")),
    ).with_columns(
        point_std=pl.when(pl.col("point_std").is_not_null() & pl.col("point_flat"))
        .then(0.0)
        .otherwise(pl.col("point_std"))
    )
    stuck = size("stuck_window")
    frame = frame.with_columns(
        stuck_std=value.rolling_std_by("key", stuck) if stuck != point else pl.col("point_std"),
        point_z=_divide((value - pl.col("point_mean")).abs(), pl.col("point_std")),
    )
    # the mean of the window's point z, over the readings that have one
    frame = frame.with_columns(
        collective_z=pl.col("point_z").rolling_mean_by("key", size("collective_window"))
    )
    return frame.select(
        "sensor_rank",
        "sensor_id",
        "ts",
        "value",
        "local_hour",
        "step",
        "next_step",
        "point_std",
        "stuck_std",
        "noise_std",
        "point_z",
        "collective_z",
    )


def detector_windows(
    con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, mw: MinuteWindows
) -> pl.DataFrame:
    """The windows ``int_detector_scores`` reads: the point detector's ``point_z`` and the
    collective window's mean of it, the point window's sums (stuck), the centred noise window
    (steps clipped at ``noise_step_clip`` typical noise levels of their hour), the point window
    ahead (stuck) and the sparse stuck window; ``sigma``, the hour's typical std.

    The collective window is here rather than in SQL: a DuckDB RANGE frame over the wide
    detector row cost about a third of a full ``oxy score``.
    """
    baselines = query_frame(con, sql_text("score/reading_hour_baselines"))
    baselines = baselines.with_columns(pl.col("sensor_id").cast(frame["sensor_id"].dtype))
    new_hour = (~(_same_sensor(1) & (pl.col("hour") == pl.col("hour").shift(1)))).fill_null(True)
    frame = _with_key(frame, mw.longest).with_columns(
        hour_index=new_hour.cast(pl.Int64).cum_sum() - 1
    )
    hours = frame.filter(new_hour).select("sensor_id", "hour")
    on, how = ["sensor_id", "hour"], "left"
    typical = hours.join(baselines, on=on, how=how, maintain_order="left")
    # the hour-of-day medians move as the site moved that hour (site_rel: weather moves every
    # probe of a site; int_hourly_baselines)
    site_median = pl.col("baseline_median") * (1 + pl.col("site_rel").fill_null(0.0))
    neighbour = baselines.select(*on, site_median, "context_spread")
    before, after = (
        hours.with_columns(pl.col("hour") + shift).join(
            neighbour, on=on, how=how, maintain_order="left"
        )
        for shift in (timedelta(hours=-1), timedelta(hours=1))
    )
    # typical scales need typical_min_hours of history; before that, no score uses them
    known = pl.col("typical_hours") >= mw.typical_min_hours
    per_hour = typical.select(
        clip_sq=pl.when(known)
        .then(mw.noise_step_clip * pl.max_horizontal(pl.col("typical_noise"), mw.min_std))
        .pow(2),
        sigma=pl.when(known).then(pl.max_horizontal(pl.col("typical_std"), mw.min_std)),
        # a step at this local hour every day (aerators, feeders switching) is no anomaly
        jump_floor=pl.col("typical_jump").fill_null(0.0) / mw.point_jump_ratio,
        # what int_detector_scores reads of the hour (a gather per reading, not SQL joins)
        baseline_median=site_median,
        baseline_spread=pl.col("context_spread"),
        baseline_days=pl.col("baseline_days"),
        hour_typical_hours=pl.col("typical_hours"),
        hour_typical_noise=pl.col("typical_noise"),
        hour_typical_spike=pl.col("typical_spike"),
        hour_typical_quantum=pl.col("typical_quantum"),
        drift_z=pl.col("drift_z"),
        drift_relative=pl.col("drift_relative"),
    ).with_columns(
        prev_median=before["baseline_median"],
        prev_spread=before["context_spread"],
        next_median=after["baseline_median"],
        next_spread=after["context_spread"],
    )
    index = frame["hour_index"]
    step, value = pl.col("step"), pl.col("value")
    frame = frame.with_columns(
        [per_hour[name].gather(index) for name in per_hour.columns]
    ).with_columns(
        # a reading without a step (first of a series, after a gap) adds nothing: min_horizontal
        # alone would take clip_sq for a null step
        clipped_ss=pl.when(step.is_not_null()).then(
            pl.min_horizontal(step * step, pl.col("clip_sq"))
        )
    )
    clipped = pl.col("clipped_ss")
    # a clipped square exists exactly where a step does: noise_n counts both
    counts = {
        "point_n": _count(value, mw.point_window, "right"),
        "noise_n": _count(step, mw.noise_half, "both"),
    }
    frame = frame.with_columns(
        **counts, sparse_n=_count(value, mw.stuck_sparse_window, "right")
    ).with_columns(
        point_sum=_sum(value, mw.point_window, "right", "point_n"),
        point_sumsq=_sum(value * value, mw.point_window, "right", "point_n", squares=True),
        noise_before_ss=_sum(clipped, mw.noise_half, "both", "noise_n", squares=True),
        noise_before_n=pl.col("noise_n"),
        sparse_std=value.rolling_std_by("key", f"{mw.stuck_sparse_window}i", closed="right"),
    )
    # the point window without the current reading: its mean and std; z against the larger of
    # that std, the sensor's typical std and the hour's typical largest step / point_jump_ratio
    point_n, point_sum, point_sumsq = pl.col("point_n"), pl.col("point_sum"), pl.col("point_sumsq")
    rest = point_sum - value
    before_mean = _divide(rest, point_n - 1)
    before_var = _divide(
        point_sumsq - value * value - _divide(rest * rest, point_n - 1), point_n - 2
    )
    before_std = pl.max_horizontal(before_var, 0.0).sqrt()
    frame = frame.with_columns(
        point_z=pl.when(pl.col("sigma").is_not_null()).then(
            (value - before_mean).abs()
            / pl.max_horizontal(before_std, pl.col("sigma"), pl.col("jump_floor"))
        )
    )
    point_z = pl.col("point_z")
    # the mean over the readings that have a point z (null when none has)
    frame = frame.with_columns(
        collective_z=point_z.rolling_mean_by("key", f"{mw.collective_window}i", closed="right")
    )
    ahead = _ahead(
        frame.select("key", "value", "step", "clipped_ss"),
        counts,
        {
            "noise_after_ss": _sum(clipped, mw.noise_half, "both", "noise_n", squares=True),
            "noise_after_n": pl.col("noise_n"),
            "ahead_n": pl.col("point_n"),
            "ahead_sum": _sum(value, mw.point_window, "right", "point_n"),
            "ahead_sumsq": _sum(value * value, mw.point_window, "right", "point_n", squares=True),
        },
    )
    helpers = [
        "hour_index",
        "key",
        "clip_sq",
        "jump_floor",
        "noise_n",
    ]
    return pl.concat([frame.drop(helpers), ahead], how="horizontal")


def readings_in_scope(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    buckets: list[int],
    params: dict[str, Any],
    mw: MinuteWindows,
) -> pl.DataFrame:
    """``int_readings_local`` from the lake files of ``buckets`` that reach the scope."""
    paths = [
        str(wh.root / p)
        for (p,) in sql_rows(con, "score/readings_files_in_scope", {"buckets": buckets})
    ]
    query = sql_text("intermediate/int_readings_scope")
    if not paths:  # no lake rows: only extra readings (or nothing) are in scope
        query = query.replace("read_parquet($files)", "(from extra_readings where false)")
    first_read = sql_rows(con, "score/first_read_from")[0][0]
    return local_readings(con, query, {**params, "files": paths, "first_read": first_read}, mw)


def _changes(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    bucket_of: dict[str, int],
    full: bool,
    lb: Lookbacks,
) -> dict[int, tuple[list[tuple[str, datetime]], list[str], list[str]]]:
    """Per bucket (``score/buckets``): per sensor the first hour to rescore; the new and the
    vanished files. ``bucket_of``: the bucket of every registered sensor.

    Scores look ``Lookbacks.ahead`` forward, so the first changed hour is the hour of the
    earliest new reading minus that look-ahead. One query per question for every bucket (an
    incremental run is mostly these small queries).
    """
    buckets = [b for (b,) in sql_rows(con, "score/buckets")]
    lake: dict[int, dict[str, datetime | None]] = {b: {} for b in buckets}
    for bucket, path, min_ts in sql_rows(con, "score/readings_files"):
        lake[bucket][path] = min_ts
    scored: dict[int, dict[str, datetime | None]] = {b: {} for b in buckets}
    for bucket, path, min_ts in [] if full else sql_rows(con, "score/scored_files"):
        scored[bucket][path] = min_ts
    new = {b: sorted(set(lake[b]) - set(scored[b])) for b in buckets}
    gone = {b: sorted(set(scored[b]) - set(lake[b])) for b in buckets}
    changed: dict[int, dict[str, datetime]] = {b: {} for b in buckets}
    new_files = [str(wh.root / p) for b in buckets for p in new[b]]
    if new_files:
        for sensor_id, first in sql_rows(
            con, "score/first_changed_hours", {"files": new_files, "gap": lb.ahead}
        ):
            changed[bucket_of[sensor_id]][sensor_id] = first
    for b in buckets:
        gone_from = [scored[b][p] for p in gone[b] if scored[b][p] is not None]
        if gone_from:
            first = (min(gone_from) - lb.ahead).replace(minute=0, second=0, microsecond=0)
            for sensor_id in (s for s, bucket in bucket_of.items() if bucket == b):
                changed[b][sensor_id] = min(changed[b].get(sensor_id, first), first)
    return {b: (sorted(changed[b].items()), new[b], gone[b]) for b in buckets}


def _group_key(frame: pl.DataFrame, by: list[str], time: str, longest: int) -> pl.Expr:
    """An integer axis for ``rolling_*_by`` over ``frame`` sorted by ``by`` then ``time``:
    microseconds of ``time`` plus the group's rank times a stride longer than the span and
    ``longest`` (microseconds), so that no window reaches into the next group."""
    us = pl.col(time).dt.epoch("us")
    first, last = frame.select(us.min().alias("first"), us.max().alias("last")).row(0)
    first, last = first or 0, last or 0
    stride = (last - first) + 2 * longest + 1
    new = pl.any_horizontal([pl.col(c) != pl.col(c).shift(1) for c in by]).fill_null(True)
    return ((us - first) + new.cum_sum().cast(pl.Int64) * stride).set_sorted()


def hourly_windows(
    history: pl.DataFrame, baseline_window: timedelta, drift_window: timedelta, ratio: float
) -> pl.DataFrame:
    """``int_hourly_windows``: the windows of ``int_hourly_baselines`` over the hourly rows
    (polars ``rolling_*_by``: DuckDB's windowed medians cost several times more).

    Per sensor and hour, from ``history`` (``hourly_history``):

    * the same local hour over the previous ``baseline_window``: hour-of-day median and spread
      (IQR / 1.349 of the daily medians; a stored hour keeps its stored median and spread, its
      own window would reach beyond the look-back), how many days, the median within-hour std
      of the mean level around each reading (``hour_level_std``), spike RMS and largest step;
      over the previous ``drift_window``: the drift baseline;
    * all hours of the ``baseline_window`` up to this one: typical std, noise, spike RMS,
      quantum and how many hours; the spread floor (an hour's spread from few days is
      unstable: at least ``ratio`` x the median spread of those hours; ``hour_spread`` keeps
      the spread before it) and ``pooled_mad``, the median |median - baseline_median| of those
      hours.

    Frames follow SQL's ``range between W preceding and 1 hour preceding`` (the hours are
    whole: ``closed="left"``) and ``... and current row`` (``closed="both"``); medians and
    counts skip nulls, as SQL's do.
    """
    base = f"{baseline_window // timedelta(microseconds=1)}i"
    drift = f"{drift_window // timedelta(microseconds=1)}i"
    longest = max(baseline_window, drift_window) // timedelta(microseconds=1)
    numeric = ["median", "std", "noise", "spike_rms", "quantum", "max_step", "level_std"]
    numeric += ["stored_median", "stored_spread"]
    frame = history.with_columns(pl.col(numeric).cast(pl.Float64))
    frame = frame.sort("sensor_id", "local_hour", "hour")
    frame = frame.with_columns(key=_group_key(frame, ["sensor_id", "local_hour"], "hour", longest))

    def same(x: str, how: str, **kw: Any) -> pl.Expr:
        return getattr(pl.col(x), f"rolling_{how}_by")("key", base, closed="left", **kw)

    same_count = pl.col("median").is_not_null().cast(pl.Int64)
    same_count = same_count.rolling_sum_by("key", base, closed="left")
    lo = same("median", "quantile", quantile=0.25, interpolation="linear")
    hi = same("median", "quantile", quantile=0.75, interpolation="linear")
    stored = pl.col("stored")
    frame = frame.with_columns(
        baseline_median=pl.when(stored)
        .then(pl.col("stored_median"))
        .otherwise(same("median", "median")),
        baseline_spread=pl.when(stored).then(pl.col("stored_spread")).otherwise((hi - lo) / 1.349),
        baseline_days=same_count.fill_null(0),
        # the within-hour std of the mean level around each reading (context_level: a limit
        # cycle and the measurement noise averaged out; a feeding dip or a ramp remains)
        hour_level_std=same("level_std", "median"),
        drift_baseline=pl.col("median").rolling_median_by("key", drift, closed="left"),
        same_spike=same("spike_rms", "median"),
        typical_jump=same("max_step", "median"),
    )
    frame = frame.sort("sensor_id", "hour")
    frame = frame.with_columns(key=_group_key(frame, ["sensor_id"], "hour", longest))

    def recent(x: pl.Expr, how: str) -> pl.Expr:
        return getattr(x, f"rolling_{how}_by")("key", base, closed="both")

    frame = frame.with_columns(
        typical_hours=recent(pl.col("hour").is_not_null().cast(pl.Int64), "sum"),
        typical_std=recent(pl.col("std"), "median"),
        typical_noise=recent(pl.col("noise"), "median"),
        # an hour with daily switching (aerators, feeders) needs more
        typical_spike=pl.max_horizontal(
            recent(pl.col("spike_rms"), "median"), pl.col("same_spike").fill_null(0.0)
        ),
        typical_quantum=recent(pl.col("quantum"), "min"),
        spread_floor=recent(pl.col("baseline_spread"), "median"),
        pooled_mad=recent((pl.col("median") - pl.col("baseline_median")).abs(), "median"),
    )
    return frame.with_columns(
        hour_spread=pl.col("baseline_spread"),
        baseline_spread=pl.max_horizontal("baseline_spread", ratio * pl.col("spread_floor")),
    ).drop("key", "same_spike", "spread_floor", "stored", "stored_median", "stored_spread")


def hourly_baselines(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    *,
    into: str,
    site_rel: pl.DataFrame | None = None,
) -> None:
    """``int_hourly_baselines`` of ``hourly_history`` (from each sensor's changed_from in
    ``score_scope``) as the temp table ``into``: :func:`hourly_windows`, then the SQL. With
    ``site_rel`` (:func:`site_drift`: sensor_id, hour, site_rel) the drift residuals are taken
    against the site's shared movement; without, against none."""
    history = pl.from_arrow(con.table("hourly_history").to_arrow_table())
    assert isinstance(history, pl.DataFrame)
    windows = hourly_windows(
        history,
        _interval(con, params["baseline_window"]),
        _interval(con, params["drift_baseline_window"]),
        float(params["spread_floor_ratio"]),
    )
    if site_rel is None or site_rel.is_empty():
        windows = windows.with_columns(site_rel=pl.lit(None, pl.Float64))
    else:
        windows = windows.join(site_rel, on=["sensor_id", "hour"], how="left")
    con.register("int_hourly_windows", windows)
    try:
        run_sql(con, "intermediate/int_hourly_baselines", params, into=into)
    finally:
        con.unregister("int_hourly_windows")


def _update_baselines(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    lb: Lookbacks,
    site_rel: pl.DataFrame | None,
) -> None:
    """Refit the hourly statistics and baselines from each sensor's changed_from on."""
    run_sql(con, "intermediate/int_hourly_stats", params, into="int_hourly_stats")
    run_sql(con, "score/hourly_history", {"lookback": lb.hours}, into="hourly_history")
    hourly_baselines(con, params, into="int_hourly_baselines", site_rel=site_rel)
    sql_rows(con, "score/score_hourly_forget_changed")
    sql_rows(con, "score/score_hourly_store")


def _stored_baselines(con: duckdb.DuckDBPyConnection) -> None:
    run_sql(con, "score/hourly_baselines", {}, into="hourly_baselines")


def site_sensors(con: duckdb.DuckDBPyConnection, config: Config) -> pl.DataFrame:
    """Every sensor with its bucket, time zone and site (``score/site_sensors``: the customer
    and the first ``drift_site_levels`` tag levels; null: no site)."""
    levels = int(config["anomaly"]["drift_site_levels"])
    return query_frame(con, sql_text("score/site_sensors"), {"site_levels": levels})


def with_site_peers(sites: pl.DataFrame, changes: dict[str, datetime]) -> dict[str, datetime]:
    """``changes`` (sensor: first changed hour) with every sensor of a site that holds a change
    rescored from the site's first changed hour: a sensor's drift reads its site's shared
    movement, which every sensor of the site moves."""
    if not changes:
        return {}
    changed = pl.DataFrame(
        {"sensor_id": list(changes), "changed": list(changes.values())},
        schema={"sensor_id": pl.String, "changed": pl.Datetime("us")},
    )
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


def site_drift(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    sites: pl.DataFrame,
    changes: dict[str, datetime],
) -> pl.DataFrame:
    """Per sensor of a site in ``changes`` (each at its site's first changed hour, see
    :func:`with_site_peers`) and hour from a drift window before it: ``site_rel``, the median
    over the site's sensors of their hourly median relative to their own drift baseline (the
    same local hour's median over the previous ``drift_baseline_window``, from at least
    ``drift_site_min_days`` days), where at least ``drift_site_min_sensors`` sensors hold one.
    The drift residuals of ``int_hourly_baselines`` are taken against it: what moves the whole
    site (weather, tide, a bloom) is no fouled probe. Read from the lake (bucket by bucket,
    hourly medians as stored): the same for any batching of runs."""
    a = wh.config["anomaly"]
    schema = {"sensor_id": pl.String, "hour": pl.Datetime("us"), "site_rel": pl.Float64}
    in_site = sites.filter(pl.col("site").is_not_null() & pl.col("sensor_id").is_in(list(changes)))
    if in_site.is_empty():
        return pl.DataFrame(schema=schema)
    baseline_window = _interval(con, a["drift_baseline_window"])
    reach = _interval(con, a["drift_window"]) + baseline_window + timedelta(hours=1)
    first = pl.Series([changes[s] for s in in_site["sensor_id"]], dtype=pl.Datetime("us"))
    in_site = in_site.with_columns(first=first).with_columns(
        first=pl.col("first").min().over("site")
    )
    members = sites.join(in_site.select("site", "first").unique(), on="site")
    members = members.with_columns(read_from=pl.col("first") - reach)
    query = sql_text("intermediate/int_site_hourly_medians")
    # the lake files that reach the earliest read_from, buckets read together while their
    # files hold about chunk_rows readings (one query's fixed costs, bounded memory)
    lake = sql_rows(
        con,
        "score/site_lake_files",
        {"buckets": members["bucket"].unique().to_list(), "read_from": members["read_from"].min()},
    )
    files: dict[int, list[str]] = {}
    rows: dict[int, int] = {}
    for bucket, path, n in lake:
        files.setdefault(bucket, []).append(str(wh.root / path))
        rows[bucket] = rows.get(bucket, 0) + int(n)
    parts = []
    for group in pack(sorted(files), [rows[b] for b in sorted(files)], int(a["chunk_rows"])):
        scope = members.filter(pl.col("bucket").is_in(group))
        con.register("site_scope", scope.select("sensor_id", "read_from"))
        try:
            params = {
                "files": [f for b in group for f in files[b]],
                "first_read": scope["read_from"].min(),
            }
            parts.append(query_frame(con, query, bind(query, params)))
        finally:
            con.unregister("site_scope")
    if not parts:
        return pl.DataFrame(schema=schema)
    medians = pl.concat(parts).join(members.select("sensor_id", "site", "timezone"), on="sensor_id")
    zones = medians["timezone"].drop_nulls().unique().sort().to_list()
    zone = medians["timezone"].rank("dense") - 1  # an index into the sorted zones; null stays
    medians = medians.with_columns(
        local_hour=zone_local_hours(con, medians["hour"], zone, zones, HOUR_US)
    )
    window = baseline_window // timedelta(microseconds=1)
    medians = medians.sort("sensor_id", "local_hour", "hour")
    medians = medians.with_columns(
        key=_group_key(medians, ["sensor_id", "local_hour"], "hour", window)
    )
    days = pl.col("median").is_not_null().cast(pl.Int64)
    medians = medians.with_columns(
        baseline=pl.col("median").rolling_median_by("key", f"{window}i", closed="left"),
        days=days.rolling_sum_by("key", f"{window}i", closed="left"),
    )
    relative = pl.when(
        (pl.col("days") >= int(a["drift_site_min_days"])) & (pl.col("baseline") > 0)
    ).then(pl.col("median") / pl.col("baseline") - 1)
    shared = (
        medians.with_columns(rel=relative)
        .group_by("site", "hour")
        .agg(site_rel=pl.col("rel").median(), n=pl.col("rel").count())
        .filter(pl.col("n") >= int(a["drift_site_min_sensors"]))
    )
    wanted = members.filter(pl.col("sensor_id").is_in(list(changes))).select(
        "sensor_id", "site", since=pl.col("first") - _interval(con, a["drift_window"])
    )
    return (
        wanted.join(shared, on="site")
        .filter(pl.col("hour") >= pl.col("since"))
        .select("sensor_id", "hour", "site_rel")
        .sort("sensor_id", "hour")
    )


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


def file_days(config: Config) -> int:
    """``[anomaly] file_days``, checked: whole days, 1 to 31."""
    days = config["anomaly"]["file_days"]
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 31:
        raise OxyError(f"[anomaly] file_days must be a whole number of days, 1 to 31: {days!r}")
    return days


def stored_layout(warehouse: Warehouse) -> dict[int, tuple[list[ScoreFile], list[Path]]]:
    """Per bucket folder of ``anomaly_scores``: its files and its strays (see
    :func:`_stored_files`), listed once per run (a bucket's files change only when its own
    batch writes them). A stray means the layout changed: every bucket is rescored."""
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


def _write_scores(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    items: list[_BucketWork],
    params: dict[str, Any],
    full: bool,
    layout: dict[int, tuple[list[ScoreFile], list[Path]]],
) -> dict[int, list[ScoreFile]]:
    """Merge the rescored rows of the sensors in ``score_scope`` into their buckets' files, in
    one query over every file to write (:func:`_file_targets`; each file is still replaced on
    its own, atomically). ``layout``: each bucket's stored files and strays as
    :func:`stored_layout` listed them at the start of the run. Returns each bucket's files as
    they are now.

    Only the files from the one holding a bucket's first rescored reading on are rewritten;
    the bucket's open block (the one holding its latest reading) is stored a day per file, so
    a day of new readings writes its day (and the day before, when the look-ahead reaches
    back), not the block. Under ``full`` every stored file is replaced, not merged. A file that
    no longer holds any reading is removed, and so are the files a new one replaces and files
    of another layout (after the new ones are in place: a crash in between leaves them, and the
    next run rescores in full again).
    """
    days = file_days(wh.config)
    spans = {row[0]: row[1:] for row in sql_rows(con, "score/rescored_spans")}
    outputs: list[tuple[int, ScoreFile]] = []  # (bucket, file) per target
    target_days: list[tuple[int, int, datetime]] = []  # (target, bucket, day)
    kept: dict[int, list[ScoreFile]] = {}
    previous: list[Path] = []
    obsolete: list[Path] = []
    for item in items:
        folder = _scores_folder(wh, item.bucket)
        stored, strays = layout.get(item.bucket, ([], []))
        open_block = file_start(item.last_reading, days) if item.last_reading else None
        span = spans.get(item.bucket, (None, None, None))
        targets = _file_targets(stored, days, open_block, span, full)
        for start, end in targets:
            day = start
            while day < end:
                target_days.append((len(outputs), item.bucket, day))
                day += timedelta(days=1)
            outputs.append((item.bucket, ScoreFile(start, end, file_path(folder, start, end))))
        kept[item.bucket] = []
        for f in stored:
            if any(s < f.end and e > f.start for s, e in targets):
                previous += [] if full else [f.path]
                obsolete.append(f.path)
            else:
                kept[item.bucket].append(f)
        obsolete += strays
    written = [0] * len(outputs)
    if outputs:
        con.register(
            "score_targets",
            pl.DataFrame(
                target_days,
                schema={"target": pl.Int32, "bucket": pl.Int32, "day": pl.Datetime("us")},
                orient="row",
            ),
        )
        _files_view(con, "previous_scores", previous, "empty_scores")
        query = sql_text("marts/anomaly_scores")
        try:
            written = wh.write_mart_files(
                con,
                query,
                bind(query, params),
                "target",
                [f.path for _, f in outputs],
                row_group_size=FILE_ROW_GROUP,
            )
        finally:
            con.execute("drop view if exists previous_scores")
            con.unregister("score_targets")
    for (bucket, f), rows in zip(outputs, written, strict=True):
        if rows:
            kept[bucket].append(f)
    now = {f.path for files in kept.values() for f in files}
    for path in set(obsolete) - now:  # replaced, emptied, or of another layout
        path.unlink(missing_ok=True)
    for item in items:
        for month in _scores_folder(wh, item.bucket).glob("month=*"):
            if not any(month.iterdir()):
                month.rmdir()
    return {b: sorted(files, key=lambda f: f.start) for b, files in kept.items()}


def _write_events(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    scored: dict[int, list[ScoreFile]],
    params: dict[str, Any],
    full: bool,
) -> None:
    """Rebuild the events of the sensors in ``score_scope`` from the first stored event their
    rescored readings may reach (``events_cut``), reading only the score files from there on,
    in one query over the buckets of ``scored`` (each bucket's score files, as
    :func:`_write_scores` left them); every other stored event stays as it is. Under ``full``,
    every event. Each bucket's file is replaced on its own, atomically."""
    for bucket, stored in scored.items():
        if not stored:  # no reading left
            shutil.rmtree(_events_path(wh, bucket).parent, ignore_errors=True)
    files = {b: stored for b, stored in scored.items() if stored}
    if not files:
        return
    buckets = sorted(files)
    previous = [p for b in buckets if (p := _events_path(wh, b)).exists() and not full]
    _files_view(con, "previous_events", previous, "empty_events")
    sql_rows(con, "score/events_cut_create", params)
    first = dict(sql_rows(con, "score/events_first_rebuilt"))
    reach = [str(f.path) for b in buckets if b in first for f in files[b] if f.end > first[b]]
    # read_parquet needs a file: with none reaching the cut, any one yields no row past it
    reach = reach or [str(files[buckets[0]][0].path)]
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


def _events_path(wh: Warehouse, bucket: int) -> Path:
    return wh.marts_dir / "anomaly_events" / f"bucket={bucket:02d}" / "data.parquet"


def _scores_folder(wh: Warehouse, bucket: int) -> Path:
    return wh.marts_dir / "anomaly_scores" / f"bucket={bucket:02d}"


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


def _score_chunks(
    wh: Warehouse,
    con: duckdb.DuckDBPyConnection,
    buckets: list[int],
    chunks: list[list[tuple[str, datetime]]],
    params: dict[str, Any],
    lb: Lookbacks,
    mw: MinuteWindows,
    site_rel: pl.DataFrame | None,
) -> list[Path]:
    """``int_detector_scores`` of the sensors of ``buckets`` in ``chunks``, chunk by chunk: a
    temp table for a single chunk; for more, each chunk's scores go to a staged Parquet file
    and the name is a view over them (the scores held in memory would grow with the bucket).
    Returns the staged files."""
    staged: list[Path] = []
    query = sql_text("intermediate/int_detector_scores")
    for chunk in chunks:
        scope_table(con, chunk, lb)
        local = readings_in_scope(wh, con, buckets, params, mw)
        con.register("int_readings_local", local)
        _update_baselines(con, params, lb, site_rel)
        _stored_baselines(con)
        windows = detector_windows(con, local, mw)
        del local
        con.unregister("int_readings_local")
        con.register("int_readings_local", windows)
        del windows
        if len(chunks) == 1:
            run_sql(con, "intermediate/int_detector_scores", params, into="int_detector_scores")
        else:
            staged.append(wh.staging_path())
            con.execute(
                f"copy ({query}) to {quote_literal(str(staged[-1]))} "
                "(format parquet, compression zstd)",
                bind(query, params),
            )
        con.unregister("int_readings_local")
        con.execute("drop table if exists hourly_baselines")
        if len(chunks) > 1:
            # a registered frame lives as long as the transaction that dropped it: commit each
            # chunk (its stored baselines) so that memory stays flat. Safe: until the buckets'
            # score_files rows commit, the next run recomputes the same chunks from scratch.
            con.execute("commit")
            con.execute("begin")
    if staged:
        listing = ", ".join(quote_literal(str(p)) for p in staged)
        con.execute(
            "create or replace temp view int_detector_scores as "
            f"select * from read_parquet([{listing}])"
        )
    return staged


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
    lb: Lookbacks,
) -> list[_BucketWork]:
    """The work of each bucket with changed sensors or new or vanished files (``found``:
    bucket -> (new, gone)), with the readings each changed sensor's scope is expected to hold."""
    wanted = [b for b, (new, gone) in found.items() if changes.get(b) or new or gone]
    work = []
    for bucket, rows, sensors, last_ts in sql_rows(con, "score/bucket_sizes", {"buckets": wanted}):
        per_sensor = max(int(rows / max(sensors, 1)), 1)
        estimates = []
        for _sensor, changed in changes.get(bucket, []):  # at most a minute cadence, never
            read_from = changed - lb.ahead - lb.minutes  # more than the whole history
            span = (last_ts - read_from) // timedelta(minutes=1) + 1 if last_ts else per_sensor
            estimates.append(max(min(per_sensor, span), 1))
        new, gone = found[bucket]
        work.append(_BucketWork(bucket, changes.get(bucket, []), estimates, new, gone, last_ts))
    return sorted(work, key=lambda w: w.bucket)


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


def _batches(work: list[_BucketWork], limit: int) -> list[list[_BucketWork]]:
    """Buckets scored together (one pass over their sensors, one transaction) while their
    scopes hold about ``limit`` readings: small incremental runs pay each step once, not per
    bucket; a bucket larger than ``limit`` is a batch of its own."""
    return pack(work, [sum(item.estimates) for item in work], limit)


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


def score(warehouse: Warehouse, *, full: bool = False, progress: bool = False) -> ScoreSummary:
    """Score new readings (or, with ``full``, all readings) into the anomaly marts.

    Parameters
    ----------
    warehouse
        The warehouse whose ``readings`` are scored.
    full
        Forget what was scored and recompute every bucket from its first reading.
    progress
        Show a progress bar over the buckets (stderr).

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
    params = detector_params(warehouse.config)
    chunk_rows = int(warehouse.config["anomaly"]["chunk_rows"])
    buckets_scored = sensors = rows = 0
    with warehouse.writer() as con:
        # below warehouse.memory_limit: DuckDB's own buffers plus Python stay under the budget
        con.execute("set memory_limit = $m", {"m": warehouse.config["anomaly"]["memory_limit"]})
        lb = lookbacks(con, warehouse.config)
        mw = minute_windows(con, warehouse.config)
        create_support_tables(con)
        layout = stored_layout(warehouse)
        full = _upgrade_state(con) or any(strays for _, strays in layout.values()) or full
        sites = site_sensors(con, warehouse.config)
        bucket_of = dict(zip(sites["sensor_id"], sites["bucket"], strict=True))
        found = _changes(warehouse, con, bucket_of, full, lb)
        if full:
            _drop_orphan_partitions(warehouse, set(found))
        # a sensor's drift reads its site's shared movement: a change rescores the site
        changed = with_site_peers(sites, {s: t for c, _, _ in found.values() for s, t in c})
        site_rel = site_drift(warehouse, con, sites, changed)
        by_bucket: dict[int, list[tuple[str, datetime]]] = {}
        for sensor_id, hour in sorted(changed.items()):
            by_bucket.setdefault(bucket_of[sensor_id], []).append((sensor_id, hour))
        files = {b: (new, gone) for b, (_, new, gone) in found.items()}
        work = _bucket_work(con, files, by_bucket, lb)
        bar = progress_bar(total=len(work), desc="score", unit="bucket", enabled=progress)
        for batch in _batches(work, chunk_rows):
            con.execute("begin")
            staged: list[Path] | None = None
            try:
                if full:
                    for item in batch:
                        sql_rows(con, "score/score_hourly_forget_bucket", {"bucket": item.bucket})
                        sql_rows(con, "score/score_files_forget_bucket", {"bucket": item.bucket})
                chunks = _chunks(batch, chunk_rows)
                if chunks:
                    scored = [item.bucket for item in batch]
                    staged = _score_chunks(warehouse, con, scored, chunks, params, lb, mw, site_rel)
                    rows += sql_rows(con, "score/rescored_count")[0][0]
                rescored = [item for item in batch if item.changes]
                if rescored:
                    # the batch's sensors in scope: each file is written once
                    scope_table(con, [c for item in rescored for c in item.changes], lb)
                    scored = _write_scores(warehouse, con, rescored, params, full, layout)
                    _write_events(warehouse, con, scored, params, full)
                sql_rows(
                    con,
                    "score/score_files_forget_gone",
                    {
                        "buckets": [item.bucket for item in batch],
                        "gone": [p for item in batch for p in item.gone],
                    },
                )
                sql_rows(
                    con,
                    "score/score_files_record_new",
                    {"new": [p for item in batch for p in item.new]},
                )
                if staged is not None:
                    con.execute(f"drop {'view' if staged else 'table'} int_detector_scores")
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
            finally:
                for path in staged or []:
                    path.unlink(missing_ok=True)
            buckets_scored += len(batch)
            sensors += sum(len(item.changes) for item in batch)
            bar.update(len(batch))
        bar.close()
        warehouse.refresh_mart_views(con)
        anomalies, events = _totals(warehouse, con)
    return ScoreSummary(
        full=full,
        buckets_scored=buckets_scored,
        sensors_rescored=sensors,
        rows_scored=rows,
        anomalies=anomalies,
        events=events,
        seconds=round(time.perf_counter() - started, 3),
    )


def _upgrade_state(con: duckdb.DuckDBPyConnection) -> bool:
    """Recreate ``score_hourly`` when its columns changed with a new oxy; True = rescore all."""
    expected = sql_text("catalog/score_hourly")
    stored = [r[0] for r in sql_rows(con, "score/score_hourly_columns")]
    wanted = [
        line.split()[0]
        for line in expected.splitlines()
        if line.startswith("    ") and not line.strip().startswith(("--", "primary"))
    ]
    if stored == wanted:
        return False
    con.execute("drop table if exists score_hourly")
    con.execute(expected)
    sql_rows(con, "score/score_files_forget_all")
    return True


def _drop_orphan_partitions(warehouse: Warehouse, buckets: set[int]) -> None:
    """Under ``--full``: remove mart partitions of buckets that no longer hold readings."""
    for name in ("anomaly_scores", "anomaly_events"):
        folder = warehouse.marts_dir / name
        if not folder.is_dir():
            continue
        for part in folder.glob("bucket=*"):
            if int(part.name.removeprefix("bucket=")) not in buckets:
                shutil.rmtree(part, ignore_errors=True)


def _totals(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    if "anomaly_events" not in set(warehouse.mart_names()):
        return 0, 0
    anomalies, events = sql_rows(con, "score/anomaly_totals")[0]
    return int(anomalies), int(events)


def score_readings(warehouse: Warehouse, readings: pl.DataFrame) -> pl.DataFrame:
    """Score new canonical readings against the warehouse's history and stored baselines.

    Nothing is re-fitted and nothing is written: the minute windows read the history the
    lake holds before the new readings, and each hour uses the baselines ``oxy score``
    stored for it, or, past the last scored hour, the latest stored baseline of the same
    local hour (typical std, noise and drift level from the sensor's latest scored hour).

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
        return pl.DataFrame(schema=_polars_schema())
    params = detector_params(warehouse.config)
    with warehouse.reader() as con:
        lb = lookbacks(con, warehouse.config)
        create_support_tables(con)
        con.register("new_readings", frame.to_arrow())
        unknown = sql_rows(con, "score/new_readings_unregistered")[0][0]
        if unknown:
            raise OxyError(f"{unknown} sensor(s) of the readings are not registered")
        sql_rows(con, "score/extra_readings_from_new")
        changes = [(s, t) for s, t in sql_rows(con, "score/new_readings_first")]
        buckets = [b for (b,) in sql_rows(con, "score/new_readings_buckets")]
        scope_table(con, changes, lb)
        sql_rows(con, "score/score_scope_from_changed")
        local = readings_in_scope(
            warehouse, con, buckets, params, minute_windows(con, warehouse.config)
        )
        con.register("int_readings_local", local)
        run_sql(con, "intermediate/int_inference_baselines", params, into="hourly_baselines")
        con.register(
            "int_readings_local",
            detector_windows(con, local, minute_windows(con, warehouse.config)),
        )
        run_sql(con, "intermediate/int_detector_scores", params, into="int_detector_scores")
        con.unregister("int_readings_local")
        con.execute("create or replace temp table previous_scores as from empty_scores")
        sql_rows(con, "score/score_targets_all")
        query = sql_text("marts/anomaly_scores")
        scored = pl.from_arrow(con.sql(query, params=bind(query, params)).to_arrow_table())
        con.unregister("new_readings")
    assert isinstance(scored, pl.DataFrame)
    keys = frame.select("sensor_id", "ts").unique()
    return (
        scored.drop("target").join(keys, on=["sensor_id", "ts"], how="semi").sort("sensor_id", "ts")
    )


def _polars_schema() -> dict[str, Any]:
    kinds = {
        "varchar": pl.String,
        "timestamp": pl.Datetime("us"),
        "double": pl.Float64,
        "boolean": pl.Boolean,
        "integer": pl.Int32,
    }
    return {name: kinds[kind] for name, kind in SCORE_COLUMNS.items()}
