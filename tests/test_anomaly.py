"""Anomaly scoring: each detector on hand-built series, time windows, incremental == full."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import anomaly
from engine.anomaly import bind, detector_params, run_sql, score, score_readings
from engine.warehouse import Warehouse, sql_text

T0 = datetime(2024, 3, 1)


def diel(days: float, *, sensor: str = "s1", step_min: int = 1, seed: int = 0) -> pl.DataFrame:
    """A clean diel DO series (mg/L) in UTC with white noise."""
    rng = np.random.default_rng(seed)
    n = int(days * 1440 / step_min)
    minutes = np.arange(n) * step_min
    value = 8 + 1.5 * np.sin(2 * np.pi * (minutes / 1440 - 0.3)) + rng.normal(0, 0.03, n)
    return pl.DataFrame(
        {
            "sensor_id": sensor,
            "ts": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "value": np.round(value, 3),
        }
    )


def scores_of(warehouse: Warehouse) -> pl.DataFrame:
    with warehouse.reader() as con:
        table = con.sql(
            "select * exclude (bucket, month) from anomaly_scores order by sensor_id, ts"
        ).to_arrow_table()
    return pl.from_arrow(table)


def hourly_of(warehouse: Warehouse) -> pl.DataFrame:
    """The stored hourly statistics and baselines (``score_hourly``)."""
    with warehouse.reader() as con:
        table = con.sql("select * from score_hourly order by sensor_id, hour").to_arrow_table()
    return pl.from_arrow(table)


def events_of(warehouse: Warehouse) -> pl.DataFrame:
    with warehouse.reader() as con:
        table = con.sql(
            "select * exclude (bucket) from anomaly_events order by sensor_id, start_ts"
        ).to_arrow_table()
    return pl.from_arrow(table)


def at(frame: pl.DataFrame, ts: datetime, sensor: str = "s1") -> dict:
    return frame.filter((pl.col("sensor_id") == sensor) & (pl.col("ts") == ts)).to_dicts()[0]


def assert_same(mine: pl.DataFrame, theirs: pl.DataFrame) -> None:
    """Every column equal: floats to 1e-9 (nulls in the same places), the rest exactly."""
    assert mine.columns == theirs.columns and mine.height == theirs.height
    for column in mine.columns:
        if mine[column].dtype == pl.Float64:
            assert mine[column].is_null().equals(theirs[column].is_null()), column
            diff = (mine[column] - theirs[column]).abs().max()
            assert diff is None or diff <= 1e-9, column
        else:
            assert mine[column].equals(theirs[column]), column


def set_value(frame: pl.DataFrame, start: datetime, end: datetime, value: object) -> pl.DataFrame:
    inside = pl.col("ts").is_between(start, end)
    expr = value if isinstance(value, pl.Expr) else pl.lit(value)
    return frame.with_columns(pl.when(inside).then(expr).otherwise(pl.col("value")).alias("value"))


# -- detectors on hand-built series --------------------------------------------------------


def test_clean_series_is_quiet_and_schema_is_the_contract(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    readings_loader(warehouse, diel(6))
    summary = score(warehouse)
    scores = scores_of(warehouse)
    assert summary.rows_scored == scores.height == 6 * 1440
    assert list(scores.columns) == list(anomaly.SCORE_COLUMNS)
    assert scores["is_anomaly"].mean() < 0.005
    assert not scores.select("sensor_id", "ts").is_duplicated().any()
    assert set(scores["qartod_flag"].unique()) <= {1, 3, 4}
    severity = scores.select(pl.max_horizontal(pl.col("^score_.*$"))).to_series()
    assert (severity - scores["severity"]).abs().max() == 0


def test_single_spike_is_flagged_at_its_minute(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    spike_ts = T0 + timedelta(days=4, hours=3, minutes=17)
    readings = set_value(diel(5), spike_ts, spike_ts, pl.col("value") + 1.0)
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse)
    row = at(scores, spike_ts)
    assert row["is_anomaly"] and row["score_spike"] == 1.0 and row["score_point"] == 1.0
    assert row["qartod_flag"] == 4
    neighbours = scores.filter(
        pl.col("ts").is_between(spike_ts - timedelta(minutes=30), spike_ts - timedelta(minutes=1))
    )
    assert not neighbours["is_anomaly"].any()
    events = events_of(warehouse)
    assert events.filter(pl.col("start_ts") == spike_ts).height == 1


def test_flat_line_is_stuck_and_zeros_are_dropouts(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    stuck_from, stuck_to = T0 + timedelta(days=4, hours=2), T0 + timedelta(days=4, hours=5)
    zero_from, zero_to = (
        T0 + timedelta(days=4, hours=9),
        T0 + timedelta(days=4, hours=9, minutes=20),
    )
    readings = set_value(diel(5), stuck_from, stuck_to, 7.77)
    readings = set_value(readings, zero_from, zero_to, 0.0)
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse)
    stuck = scores.filter(pl.col("ts").is_between(stuck_from + timedelta(minutes=59), stuck_to))
    assert stuck["score_stuck"].min() == 1.0 and stuck["is_anomaly"].all()
    zeros = scores.filter(pl.col("ts").is_between(zero_from, zero_to))
    assert zeros["score_dropout"].min() == 1.0
    assert set(zeros["qartod_flag"]) == {4}
    assert set(zeros["anomaly_type"]) == {"range", "dropout"} or set(zeros["anomaly_type"]) == {
        "dropout"
    }


def test_level_shift_scores_point_then_collective(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    shift_ts = T0 + timedelta(days=8, hours=12)
    readings = set_value(diel(9), shift_ts, shift_ts + timedelta(hours=2), pl.col("value") - 2.5)
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse)
    assert at(scores, shift_ts)["score_point"] == 1.0
    shifted = scores.filter(pl.col("ts").is_between(shift_ts, shift_ts + timedelta(hours=2)))
    assert shifted["is_anomaly"].all()  # the hour-of-day baseline keeps seeing it
    assert shifted["score_contextual"].min() == 1.0


def test_night_value_at_a_daytime_level_is_contextual(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    # a gentle ramp from the night level to the daytime level: no jump, only the hour is wrong
    night = T0 + timedelta(days=8, hours=1)
    readings = diel(9)
    ramp = (pl.col("ts") - night).dt.total_minutes().cast(pl.Float64) / 60.0
    readings = set_value(
        readings,
        night,
        night + timedelta(hours=3),
        pl.col("value") + pl.min_horizontal(ramp, pl.lit(1.0)) * 2.6,
    )
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse).filter(pl.col("ts").is_between(night, night + timedelta(hours=3)))
    assert scores["score_point"].max() < 0.5  # a slow change is no point anomaly
    assert scores["score_contextual"].max() == 1.0
    assert scores.filter(pl.col("ts") >= night + timedelta(hours=1))["is_anomaly"].mean() > 0.9


def test_setpoint_shift_under_a_limit_cycle_is_contextual(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    # a RAS tank: setpoint 10 mg/L, a controller limit cycle of +-0.3 mg/L (10-min period) and
    # noise; on day 8 the controller runs a setpoint 0.6 mg/L lower for an hour. Each reading
    # swings as far as the shift, the mean level around it does not.
    rng = np.random.default_rng(5)
    n = 9 * 1440
    minutes = np.arange(n)
    cycle = 0.3 * (2 / np.pi) * np.arcsin(np.sin(2 * np.pi * minutes / 10.0))
    value = 10 + cycle + rng.normal(0, 0.03, n)
    shift = T0 + timedelta(days=8, hours=10)
    inside = (minutes >= 8 * 1440 + 600) & (minutes < 8 * 1440 + 660)
    value[inside] -= 0.6
    readings = pl.DataFrame(
        {
            "sensor_id": "s1",
            "ts": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "value": np.round(value, 3),
        }
    )
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse)
    episode = scores.filter(
        pl.col("ts").is_between(shift + timedelta(minutes=10), shift + timedelta(minutes=49))
    )
    assert episode["score_contextual"].min() >= 0.5
    # the limit cycle alone is no change of context (days 2-8 outside the episode)
    quiet = scores.filter(
        (pl.col("ts") >= T0 + timedelta(days=2))
        & ~pl.col("ts").is_between(shift - timedelta(minutes=15), shift + timedelta(minutes=75))
    )
    assert quiet["score_contextual"].max() < 0.5


def test_slow_drift_scores_drift_not_point(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    start = T0 + timedelta(days=8)
    readings = diel(12)
    days_in = (pl.col("ts") - start).dt.total_minutes().cast(pl.Float64) / 1440.0
    readings = set_value(readings, start, T0 + timedelta(days=12), pl.col("value") - 0.6 * days_in)
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse)
    before = scores.filter(pl.col("ts") < start)
    late = scores.filter(pl.col("ts") >= T0 + timedelta(days=10))
    assert before["score_drift"].max() == 0.0
    assert late["score_drift"].mean() > 0.8
    assert late["score_point"].mean() < 0.01


def test_gross_range_uses_saturation(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    high = T0 + timedelta(days=4, hours=6)
    readings = set_value(diel(5), high, high, 109.8)  # the LRO's sensor fault value
    readings_loader(warehouse, readings)
    score(warehouse)
    row = at(scores_of(warehouse), high)
    assert row["score_range"] == 1.0 and row["qartod_flag"] == 4


# -- time-based windows ---------------------------------------------------------------------


def test_a_three_hour_gap_starts_fresh_windows(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    readings = diel(5).filter(
        ~pl.col("ts").is_between(
            T0 + timedelta(days=4, hours=3), T0 + timedelta(days=4, hours=6), closed="left"
        )
    )
    # before the gap the sensor read 2 mg/L lower: rows windows would pull that in
    readings = set_value(
        readings, T0 + timedelta(days=4), T0 + timedelta(days=4, hours=3), pl.col("value") - 2.0
    )
    readings_loader(warehouse, readings)
    score(warehouse)
    after = scores_of(warehouse).filter(
        pl.col("ts").is_between(T0 + timedelta(days=4, hours=6), T0 + timedelta(days=4, hours=7))
    )
    assert after["prev_ts"][0] is None  # a new series after the gap
    assert after["score_point"].max() == 0.0
    assert after["score_collective"].max() == 0.0


def test_fifteen_minute_cadence(warehouse: Warehouse, readings_loader: Callable[..., None]) -> None:
    readings = diel(6, step_min=15)
    stuck_from = T0 + timedelta(days=5, hours=2)
    readings = set_value(readings, stuck_from, stuck_from + timedelta(hours=3), 8.88)
    readings_loader(warehouse, readings)
    score(warehouse)
    scores = scores_of(warehouse)
    stuck = scores.filter(pl.col("ts").is_between(stuck_from, stuck_from + timedelta(hours=3)))
    # a 60-min window holds 4 readings at 15-min cadence, fewer than stuck_min_readings (6):
    # the 120-min sparse window decides, flat from the 8th flat reading on
    assert stuck["score_stuck"].to_list() == [0.0] * 7 + [1.0] * 6
    assert scores.filter(pl.col("ts") < stuck_from)["is_anomaly"].mean() < 0.01


ZONES = ["UTC", "Europe/Oslo", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", None]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    readings=st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1968, 1, 1), max_value=datetime(1970, 12, 31))
            | st.datetimes(min_value=datetime(2024, 3, 30), max_value=datetime(2024, 11, 1)),
            st.integers(min_value=0, max_value=len(ZONES) - 1),
        ),
        min_size=1,
        max_size=40,
    ),
    hourly=st.booleans(),
)
def test_zone_local_hours_equal_a_conversion_per_reading(
    warehouse: Warehouse, readings: list[tuple[datetime, int]], hourly: bool
) -> None:
    from zoneinfo import ZoneInfo

    zones = sorted(z for z in ZONES if z)  # a null zone stands for a sensor without one
    con = _con(warehouse)
    ts = pl.Series([t for t, _ in readings], dtype=pl.Datetime("us"))
    zone = pl.Series([zones.index(ZONES[z]) if ZONES[z] else None for _, z in readings])
    step = anomaly.HOUR_US if hourly else anomaly.QUARTER_US
    got = anomaly.zone_local_hours(con, ts, zone, zones, step).to_list()
    expected = []
    for t, z in readings:
        start = t.replace(minute=0, second=0, microsecond=0) if hourly else t
        utc = start.replace(tzinfo=ZoneInfo("UTC"))
        expected.append(utc.astimezone(ZoneInfo(ZONES[z])).hour if ZONES[z] else None)
    assert got == expected


def test_local_hour_of_day_across_dst(warehouse: Warehouse) -> None:
    con = warehouse.connect_memory()
    con.execute(
        "create table sensors as select 'oslo' as sensor_id, 'Europe/Oslo' as timezone, "
        "'mg/L' as unit"
    )
    con.execute(
        "create table score_scope as select 'oslo' as sensor_id, timestamp '2024-01-01' as "
        "read_from"
    )
    con.execute(
        "create table extra_readings as select 'oslo' as sensor_id, ts, 8.0 as value, "
        "timestamp '2024-01-01' as ingested_at from (values (timestamp '2024-03-30 23:30'), "
        "(timestamp '2024-03-31 00:30'), (timestamp '2024-03-31 01:30'), "
        "(timestamp '2024-10-27 00:30'), (timestamp '2024-10-27 01:30')) as t(ts)"
    )
    query = sql_text("intermediate/int_readings_scope").replace(
        "read_parquet($files)", "(from extra_readings where false)"
    )
    mw = anomaly.minute_windows(con, warehouse.config)
    params = {**detector_params(warehouse.config), "first_read": datetime(2024, 1, 1)}
    rows = anomaly.local_readings(con, query, params, mw)
    # 23:30Z = 00:30 CET; 00:30Z = 01:30 CET; 01:30Z = 03:30 CEST (02:xx does not exist);
    # autumn: 00:30Z = 02:30 CEST, 01:30Z = 02:30 CET (the repeated hour)
    assert rows["local_hour"].to_list() == [0, 1, 3, 2, 2]


# -- incremental == full, inference ---------------------------------------------------------


def test_incremental_equals_full_with_overlapping_and_late_batches(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    data = pl.concat([diel(7, sensor="s1"), diel(7, sensor="s2", seed=1)])
    spike = T0 + timedelta(days=5, hours=4)
    data = set_value(data, spike, spike, pl.col("value") + 2.0)
    late = pl.col("ts").is_between(T0 + timedelta(days=3), T0 + timedelta(days=3, hours=5))
    day = pl.col("ts").dt.epoch("s") // 86400 - int(T0.timestamp()) // 86400
    batch1 = data.filter((day < 4) & ~late)
    batch2 = data.filter((pl.col("ts") >= T0 + timedelta(days=3, hours=22)) & (day < 6))
    batch3 = data.filter(late | (day >= 6))  # late rows in the past + the newest day
    readings_loader(warehouse, batch1, batch_id="b1")
    score(warehouse)
    readings_loader(warehouse, batch2, batch_id="b2")  # overlaps b1 by 2 h (identical values)
    second = score(warehouse)
    assert 0 < second.rows_scored < data.height
    readings_loader(warehouse, batch3, batch_id="b3")
    score(warehouse)
    assert score(warehouse).rows_scored == 0  # nothing new
    incremental, inc_events = scores_of(warehouse), events_of(warehouse)
    summary = score(warehouse, full=True)
    full, full_events = scores_of(warehouse), events_of(warehouse)
    assert summary.anomalies == full["is_anomaly"].sum() > 0  # from the events' readings
    assert summary.events == full_events.height
    assert incremental.height == full.height == data.height
    assert_same(incremental, full)
    assert inc_events.select("sensor_id", "start_ts", "end_ts").equals(
        full_events.select("sensor_id", "start_ts", "end_ts")
    )
    assert at(full, spike)["is_anomaly"]


def test_a_warehouse_scored_before_level_std_is_rescored_in_full(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A ``score_hourly`` without ``level_std`` (an oxy before the contextual level) is
    recreated by the next score, which rescores every reading: incremental == full holds."""
    readings_loader(warehouse, diel(3))
    score(warehouse)
    expected = scores_of(warehouse)
    with warehouse.writer() as con:
        con.execute("alter table score_hourly drop column level_std")
        con.execute("update score_hourly set context_spread = 99")  # an old meaning
    summary = score(warehouse)
    assert summary.full and summary.rows_scored == expected.height
    assert "level_std" in hourly_of(warehouse).columns
    assert hourly_of(warehouse)["context_spread"].max() < 99
    assert scores_of(warehouse).equals(expected)


def test_score_readings_reuses_stored_baselines(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    data = diel(6)
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=5)))
    score(warehouse)
    new = data.filter(pl.col("ts") >= T0 + timedelta(days=5, hours=2)).head(120)
    spike = new["ts"][60]
    new = set_value(new, spike, spike, pl.col("value") + 1.5)
    scored = score_readings(warehouse, new)
    assert scored.height == 120 and list(scored.columns) == list(anomaly.SCORE_COLUMNS)
    assert scored.filter(pl.col("is_anomaly"))["ts"].to_list() == [spike]
    # readings already scored get the stored scores back
    old = data.filter(
        pl.col("ts").is_between(T0 + timedelta(days=4), T0 + timedelta(days=4, hours=1))
    )
    again = score_readings(warehouse, old)
    stored = scores_of(warehouse).join(old.select("ts"), on="ts", how="semi")
    assert (again["severity"] - stored["severity"]).abs().max() <= 1e-9


def test_unknown_sensor_is_a_clear_error(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    readings_loader(warehouse, diel(1))
    score(warehouse)
    with pytest.raises(Exception, match="not registered"):
        score_readings(warehouse, diel(1, sensor="nobody").head(3))


# -- fixed-answer SQL tests and a slow reference --------------------------------------------


def _con(warehouse: Warehouse) -> duckdb.DuckDBPyConnection:
    return warehouse.connect_memory()


def test_hourly_stats_fixed_answer(warehouse: Warehouse) -> None:
    con = _con(warehouse)
    con.execute(
        "create table int_readings_local as select * from (values "
        "('a', timestamp '2024-01-01 00:00', 1.0, timestamp '2024-01-01 00:00', 0, null::double,"
        " null::double, 1.5),"
        "('a', timestamp '2024-01-01 00:01', 3.0, timestamp '2024-01-01 00:00', 0, 2.0, 1.5, 2.0),"
        "('a', timestamp '2024-01-01 00:02', 2.0, timestamp '2024-01-01 00:00', 0, -1.0, 0.0, 2.5),"
        "('a', timestamp '2024-01-01 01:00', 5.0, timestamp '2024-01-01 01:00', 1, null, null,"
        " 5.0)) as t(sensor_id, ts, value, hour, local_hour, step, spike_residual, context_level)"
    )
    con.execute(
        "create table score_scope as select 'a' as sensor_id, "
        "timestamp '2024-01-01 00:00' as changed_from"
    )
    query = sql_text("intermediate/int_hourly_stats")
    rows = con.execute(query + " order by hour", bind(query, {})).fetchall()
    assert rows[0][:5] == ("a", datetime(2024, 1, 1), 0, 3, 2.0)
    assert rows[0][5] == pytest.approx(1.0) and rows[0][6] == pytest.approx(math.sqrt(5 / 4))
    assert rows[0][7] == pytest.approx(math.sqrt(2.25 / 2))
    assert rows[1][:6] == ("a", datetime(2024, 1, 1, 1), 1, 1, 5.0, 0.0) and rows[1][6] is None
    # level_std: the std of the mean level around each reading (one reading: 0)
    assert rows[0][-1] == pytest.approx(0.5) and rows[1][-1] == 0.0


def test_hourly_baselines_fixed_answer(warehouse: Warehouse) -> None:
    con = _con(warehouse)
    # the same local hour on 9 days: medians 8, 9, 10, 11, 30, 10, 10, 10, 12
    # -> baseline of day 8 = median(8, 9, 10, 11, 30, 10, 10) = 10
    con.execute(
        "create table hourly_history as select 'a' as sensor_id, "
        "timestamp '2024-01-01 12:00' + to_days(d) as hour, 12 as local_hour, 60 as n, "
        "[8.0, 9.0, 10.0, 11.0, 30.0, 10.0, 10.0, 10.0, 12.0][d + 1] as median, "
        "0.1::double as std, 0.05::double as noise, 0.04::double as spike_rms, "
        "0.01::double as quantum, 0.2::double as max_step, 0.05::double as level_std, "
        "false as stored, "
        "null::double as stored_median, null::double as stored_spread from range(9) t(d)"
    )
    con.execute(
        "create table score_scope as select 'a' as sensor_id, "
        "timestamp '2024-01-01' as changed_from"
    )
    # drift residuals from 7 days of the same local hour on (a short series)
    params = {**detector_params(warehouse.config), "baseline_min_days": 7}
    anomaly.hourly_baselines(con, params, into="b")
    rows = con.execute(
        "select baseline_median, baseline_days, typical_std, drift_level, typical_spike "
        "from b order by hour"
    ).fetchall()
    assert [r[1] for r in rows] == list(range(9))
    assert rows[4][0] == 9.5 and rows[7][0] == 10.0
    assert rows[0][0] is None and rows[6][3] is None  # < baseline_min_days: no residual
    assert rows[4][2] == pytest.approx(0.1) and rows[8][4] == pytest.approx(0.04)
    # day 7: residual 10 - 10 = 0; day 8: 12 - 10 = 2; the 24 h window holds one hour each
    assert rows[7][3] == pytest.approx(0.0) and rows[8][3] == pytest.approx(2.0)


def test_events_fixed_answer(warehouse: Warehouse, tmp_path) -> None:
    con = _con(warehouse)
    path = tmp_path / "scores.parquet"
    con.execute(
        "copy (select * from (values "
        "('a', timestamp '2024-01-01 00:00', null::timestamp, 0.0, 'none', false),"
        "('a', timestamp '2024-01-01 00:01', timestamp '2024-01-01 00:00', 0.6, 'spike', true),"
        "('a', timestamp '2024-01-01 00:02', timestamp '2024-01-01 00:01', 0.9, 'point', true),"
        "('a', timestamp '2024-01-01 00:03', timestamp '2024-01-01 00:02', 0.0, 'none', false),"
        "('a', timestamp '2024-01-01 00:04', timestamp '2024-01-01 00:03', 0.7, 'noise', true),"
        "('a', timestamp '2024-01-01 00:30', null, 0.8, 'stuck', true),"
        "('b', timestamp '2024-01-01 00:31', null, 0.5, 'drift', true)"
        f") as t(sensor_id, ts, prev_ts, severity, anomaly_type, is_anomaly)) to '{path}'"
    )
    anomaly.create_support_tables(con)
    con.execute("create view previous_events as from empty_events")
    con.execute(
        "create table sensors as select * from (values ('a', 3), ('b', 5), ('c', 3)) "
        "as t(sensor_id, bucket)"
    )
    con.execute(
        "create table events_cut as select * from (values ('a', timestamp '2024-01-01'), "
        "('b', timestamp '2024-01-01')) as t(sensor_id, rebuild_from)"
    )
    query = sql_text("marts/anomaly_events")
    params = {**detector_params(warehouse.config), "files": [str(path)]}
    rows = con.execute(query, bind(query, params)).fetchall()
    assert [(r[0], r[1].minute, r[2].minute, r[3], r[4], r[5]) for r in rows] == [
        ("a", 1, 4, 4, 3, "point"),  # 00:03 unflagged but within the 3-min merge gap
        ("a", 30, 30, 1, 1, "stuck"),
        ("b", 31, 31, 1, 1, "drift"),
    ]
    assert float(rows[0][6]) == 0.9 and float(rows[0][7]) == pytest.approx(0.7333333333)
    assert [r[8] for r in rows] == [3, 3, 5]  # each event with its bucket (the file it goes to)

    # incremental: sensor a rescored from 00:04. Its stored events ending within the reach
    # (120 min, the previous reading's horizon) before that are rebuilt; the earlier ones and
    # every event of a sensor out of scope (c) stay as stored
    con.execute(
        "create or replace view previous_events as select * from (values "
        "('a', timestamp '2023-12-31 20:00', timestamp '2023-12-31 20:05', 6, 6, 'noise', .8, .7),"
        "('a', timestamp '2024-01-01 00:01', timestamp '2024-01-01 00:02', 2, 2, 'point', .9, .75),"
        "('c', timestamp '2024-01-01 00:10', timestamp '2024-01-01 00:10', 1, 1, 'spike', .6, .6)"
        ") as t(sensor_id, start_ts, end_ts, minutes, readings, anomaly_type, peak_severity,"
        " mean_severity)"
    )
    con.execute(
        "create or replace table score_scope as "
        "select 'a' as sensor_id, timestamp '2024-01-01 00:04' as rescore_from"
    )
    anomaly.sql_rows(con, "score/events_cut_create", params)
    assert con.execute("from events_cut").fetchall() == [("a", datetime(2023, 12, 31, 22, 4))]
    rows = con.execute(query, bind(query, params)).fetchall()
    assert [(r[0], r[1], r[2].minute, r[4], r[5]) for r in rows] == [
        ("a", datetime(2023, 12, 31, 20, 0), 5, 6, "noise"),  # kept
        ("a", datetime(2024, 1, 1, 0, 1), 4, 3, "point"),  # rebuilt: it grew to 00:04
        ("a", datetime(2024, 1, 1, 0, 30), 30, 1, "stuck"),
        ("c", datetime(2024, 1, 1, 0, 10), 10, 1, "spike"),  # out of scope: as stored
    ]


def _reference_seed_point(ts: list[datetime], values: list[float]) -> list[float]:
    """The seed's point score from first principles: 60-min time window incl. the reading."""
    out = []
    for i, t in enumerate(ts):
        window = [v for s, v in zip(ts, values, strict=True) if t - timedelta(minutes=60) < s <= t]
        if len(window) < 2:
            out.append(0.0)
            continue
        mean = sum(window) / len(window)
        std = math.sqrt(sum((v - mean) ** 2 for v in window) / (len(window) - 1))
        z = abs(values[i] - mean) / std if std > 0 else None
        out.append(0.0 if z is None else min(max((z - 2.0) / 3.0, 0.0), 1.0))
    return out


def test_seed_point_score_matches_a_slow_reference_across_gaps(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    minutes = sorted(rng.choice(np.arange(400), size=150, replace=False).tolist())
    minutes += [600, 601, 602, 700]  # a gap longer than every window
    ts = [T0 + timedelta(minutes=m) for m in minutes]
    values = (8 + rng.normal(0, 0.3, len(ts))).round(3).tolist()
    values[40] += 3
    con = _con(warehouse)
    con.execute(
        "create table sensors as select 'a' as sensor_id, 'UTC' as timezone, 'mg/L' as unit"
    )
    lake = tmp_path / "lake.parquet"
    pl.DataFrame(
        {"sensor_id": "a", "ts": ts, "value": values, "ingested_at": datetime(2024, 1, 1)}
    ).write_parquet(lake)
    params = detector_params(warehouse.config)
    con.register("seed_windows", anomaly.seed_windows(con, [str(lake)], warehouse.config))
    seed = (
        sql_text("intermediate/int_seed_scores")
        .replace("select sensor_id, ts, severity,", "select sensor_id, ts, score_point, severity,")
        .replace(
            "select\n        sensor_id,\n        ts,\n        greatest(",
            "select\n        sensor_id,\n        ts,\n        score_point,\n        greatest(",
        )
    )
    got = con.execute(seed + " order by ts", bind(seed, params)).fetchall()
    expected = _reference_seed_point(ts, values)
    assert [r[2] for r in got] == pytest.approx(expected, abs=1e-9)
    assert max(expected) > 0.5


def _seed_windows_row_by_row(rows: list[tuple[str, datetime, float]], zones: dict) -> list:
    """The seed's windows of each reading from first principles (sorted by sensor, ts): local
    hour, steps within 30 min, stds over (ts - 60, ts] (a flat window: 0) and (ts - 15, ts],
    point z, and the mean point z over (ts - 120, ts]."""
    from zoneinfo import ZoneInfo

    def std(values: list[float]) -> float | None:
        if len(values) < 2:
            return None
        if len(set(values)) == 1:
            return 0.0
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def within(sensor: str, t: datetime, minutes: int) -> list[tuple[datetime, float]]:
        reach = timedelta(minutes=minutes)
        return [(s, v) for k, s, v in rows if k == sensor and t - reach < s <= t]

    out, z_of = [], {}
    for i, (sensor, t, value) in enumerate(rows):
        point = [v for _, v in within(sensor, t, 60)]
        point_std = std(point)
        z = abs(value - sum(point) / len(point)) / point_std if point_std else None
        z_of[(sensor, t)] = z
        zs = [z_of[(sensor, s)] for s, _ in within(sensor, t, 120)]
        zs = [x for x in zs if x is not None]
        before = rows[i - 1] if i > 0 else None
        after = rows[i + 1] if i + 1 < len(rows) else None
        gap = timedelta(minutes=30)
        local = t.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(zones[sensor]))
        out.append(
            {
                "local_hour": local.hour,
                "step": value - before[2]
                if before and before[0] == sensor and before[1] >= t - gap
                else None,
                "next_step": after[2] - value
                if after and after[0] == sensor and after[1] <= t + gap
                else None,
                "point_std": point_std,
                "stuck_std": point_std,
                "noise_std": std([v for _, v in within(sensor, t, 15)]),
                "point_z": z,
                "collective_z": sum(zs) / len(zs) if zs else None,
            }
        )
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minutes=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=0, max_value=600)),
        min_size=1,
        max_size=120,
        unique=True,
    ),
    levels=st.lists(st.sampled_from([8.0, 8.0, 8.0, 8.1, 8.4, 11.0]), min_size=120, max_size=120),
)
# a flat hour after a step, a 3-hour gap, a lone reading; sensor b's zone switches to summer
# time at 01:00 UTC on 31 March 2024; c's local hours start at half past UTC hours
@example(
    minutes=[("a", m) for m in (0, 1, 2, *range(3, 70), 250, 251, 252)]
    + [("b", 30), ("c", 29), ("c", 30)],
    levels=[9.0] * 3 + [8.0] * 117,
)
def test_seed_windows_match_their_windows_row_by_row(
    warehouse: Warehouse, tmp_path: Path, minutes: list[tuple[str, int]], levels: list[float]
) -> None:
    start = datetime(2024, 3, 30, 22, 0)
    zones = {"a": "UTC", "b": "Europe/Oslo", "c": "Asia/Kolkata"}  # c: half-hour offset
    rows = sorted(
        (sensor, start + timedelta(minutes=m), levels[i]) for i, (sensor, m) in enumerate(minutes)
    )
    con = _con(warehouse)
    con.execute(
        "create table sensors as select * from (values ('a', 'UTC', 'mg/L'), "
        "('b', 'Europe/Oslo', 'mg/L'), ('c', 'Asia/Kolkata', 'mg/L')) "
        "as t(sensor_id, timezone, unit)"
    )
    lake = tmp_path / "lake.parquet"
    shuffled = list(reversed(rows))  # the lake's order is not the windows' order
    pl.DataFrame(
        {
            "sensor_id": [r[0] for r in shuffled],
            "ts": [r[1] for r in shuffled],
            "value": [r[2] for r in shuffled],
            "ingested_at": datetime(2024, 4, 1),
        }
    ).write_parquet(lake)
    got = anomaly.seed_windows(con, [str(lake)], warehouse.config)
    assert got.select("sensor_id", "ts").rows() == [(r[0], r[1]) for r in rows]
    expected = _seed_windows_row_by_row(rows, zones)
    for column in expected[0]:
        want = [e[column] for e in expected]
        have = got[column].to_list()
        assert [w is None for w in want] == [h is None for h in have], column
        pairs = [(h, w) for h, w in zip(have, want, strict=True) if w is not None]
        assert [h for h, _ in pairs] == pytest.approx([w for _, w in pairs], abs=1e-9), column


def test_detector_scores_respect_the_configured_ranges(warehouse: Warehouse) -> None:
    params = detector_params(warehouse.config)
    assert params["oxy_point_z_lo"] < params["oxy_point_z_hi"]
    query = sql_text("intermediate/int_detector_scores")
    assert set(bind(query, params)) <= set(params)
    assert params["kelvin"] == pytest.approx(273.15)


def _detector_scores_of_sensor_a(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, *, into: str
) -> dict:
    """``int_detector_scores`` (as ``into``) of sensor a's readings in ``int_readings_local``
    (12:00-13:00 on 1 June 2024) against fixed baselines: median 8.0, contextual spread 0.15
    from 10 days, typical std, noise and spike level 0.1; the detector parameters."""
    con.execute(
        "create table hourly_baselines as select 'a' as sensor_id, "
        "timestamp '2024-06-01 12:00' as hour, 8.0::double as baseline_median, "
        "0.15::double as context_spread, 10 as baseline_days, 48 as typical_hours, "
        "0.1::double as typical_std, 0.1::double as typical_noise, 0.1::double as typical_spike, "
        "0.01::double as typical_quantum, 0.0::double as typical_jump, 0.0::double as drift_z, "
        "0.0::double as drift_relative, 0.0::double as site_rel"
    )
    con.execute(
        "create table score_scope as select 'a' as sensor_id, "
        "timestamp '2024-06-01 12:00' as rescore_from"
    )
    params = detector_params(warehouse.config)
    readings = pl.from_arrow(con.sql("from int_readings_local order by ts").to_arrow_table())
    mw = anomaly.minute_windows(con, warehouse.config)
    con.execute("drop table int_readings_local")
    con.register("int_readings_local", anomaly.detector_windows(con, readings, mw))
    run_sql(con, "intermediate/int_detector_scores", params, into=into)
    return params


def test_detector_scores_and_mart_fixed_answer(warehouse: Warehouse) -> None:
    con = _con(warehouse)
    # ten 1-min readings at 8.0 with one 9.0 at minute 5; a quiet, well-known sensor
    con.execute(
        "create table int_readings_local as select 'a' as sensor_id, "
        "timestamp '2024-06-01 12:00' + to_minutes(m) as ts, "
        "case when m = 5 then 9.0 else 8.0 end::double as value, 'mg/L' as unit, "
        "timestamp '2024-06-01 12:00' as hour, 14 as local_hour, "
        "case when m > 0 then timestamp '2024-06-01 12:00' + to_minutes(m - 1) end as prev_ts, "
        "case when m = 0 then null when m = 5 then 1.0 when m = 6 then -1.0 else 0.0 end::double "
        "as step, "
        "case when m = 9 then null when m = 4 then 1.0 when m = 5 then -1.0 else 0.0 end::double "
        "as next_step, "
        "case when m = 5 then 1.0 else 0.0 end::double as spike_residual, true as has_level, "
        "null::double as context_level "
        "from range(10) t(m)"
    )
    params = _detector_scores_of_sensor_a(con, warehouse, into="int_detector_scores")
    con.execute("create table previous_scores as select * from int_detector_scores where false")
    con.execute("create table sensors as select 'a' as sensor_id, 7 as bucket")
    con.execute(  # the day goes to file (target) 4 of the run
        "create table score_targets as select 4 as target, 7 as bucket, "
        "timestamp '2024-06-01' as day"
    )
    query = sql_text("marts/anomaly_scores")
    table = con.sql(query, params=bind(query, params)).to_arrow_table()
    scores = pl.from_arrow(table).sort("ts")
    assert scores.height == 10 and not scores.select("ts").is_duplicated().any()
    assert set(scores["target"]) == {4}
    spike = scores.row(5, named=True)
    assert (spike["score_spike"], spike["score_point"], spike["severity"]) == (1.0, 1.0, 1.0)
    # contextual z = |9 - 8| / 0.15 (stored spread) / (1 + 3 / 10 days) = 5.128 -> (z - 3.75) / 2.5
    assert spike["score_contextual"] == pytest.approx((1 / 0.15 / 1.3 - 3.75) / 2.5)
    assert (spike["anomaly_type"], spike["is_anomaly"], spike["qartod_flag"]) == ("spike", True, 4)
    assert spike["score_collective"] == 0.0 and spike["score_stuck"] == 0.0
    assert spike["score_noise"] == 0.0  # 9 steps < noise_min_readings
    rest = scores.filter(pl.col("ts") != spike["ts"])
    assert rest["severity"].max() == 0.0
    assert set(rest["anomaly_type"]) == {"none"} and set(rest["qartod_flag"]) == {1}


def test_contextual_reads_the_smaller_departure_of_reading_and_level(
    warehouse: Warehouse,
) -> None:
    con = _con(warehouse)
    # baseline 8.0, spread 0.15, 10 days; (reading, mean level around it):
    # m=0 (9, 8.05) a limit cycle's peak; m=1 (9, 9) a shifted level; m=2 (8.05, 9) the first
    # reading back after an episode (the level still lags); m=3 (9, null) no level: the reading
    con.execute(
        "create table int_readings_local as select 'a' as sensor_id, "
        "timestamp '2024-06-01 12:00' + to_minutes(m) as ts, "
        "[9.0, 9.0, 8.05, 9.0][m + 1]::double as value, 'mg/L' as unit, "
        "timestamp '2024-06-01 12:00' as hour, 14 as local_hour, null::timestamp as prev_ts, "
        "null::double as step, null::double as next_step, 0.0::double as spike_residual, "
        "true as has_level, [8.05, 9.0, 9.0, null][m + 1]::double as context_level "
        "from range(4) t(m)"
    )
    _detector_scores_of_sensor_a(con, warehouse, into="d")
    got = [r[0] for r in con.execute("select score_contextual from d order by ts").fetchall()]
    shifted = (1 / 0.15 / 1.3 - 3.75) / 2.5  # z = |9 - 8| / 0.15 / (1 + 3 / 10 days)
    assert got == pytest.approx([0.0, shifted, 0.0, shifted])


def test_context_level_is_the_mean_of_the_readings_either_side(warehouse: Warehouse) -> None:
    """``local_readings``' contextual level: the mean of the sensor's non-null readings within
    ``context_level_window`` (10 min) either side, the reading included; gaps, a second
    sensor right after the first, null readings."""
    rng = np.random.default_rng(8)
    minutes = sorted(set(rng.integers(0, 240, 150).tolist()) | {400, 405, 430})
    rows = []
    for sensor in ("a", "b"):
        for m in minutes:
            value = round(float(rng.normal(8, 1)), 3) if rng.random() > 0.1 else None
            rows.append((sensor, T0 + timedelta(minutes=m), value))
    con = _con(warehouse)
    con.execute(
        "create table sensors as select * from (values ('a', 'UTC', 'mg/L'), "
        "('b', 'UTC', 'mg/L')) t(sensor_id, timezone, unit)"
    )
    con.execute(
        "create table score_scope as select sensor_id, timestamp '2024-01-01' as read_from "
        "from sensors"
    )
    raw = pl.DataFrame(
        rows,
        schema={"sensor_id": pl.String, "ts": pl.Datetime("us"), "value": pl.Float64},
        orient="row",
    ).select(
        sensor_rank=(pl.col("sensor_id") == "b").cast(pl.Int64) + 1,  # int_scope_sensors'
        ts="ts",
        value="value",
        ingested_at=pl.lit(datetime(2024, 1, 1)),
    )
    con.register("raw", raw.to_arrow())
    mw = anomaly.minute_windows(con, warehouse.config)
    got = anomaly.local_readings(con, "from raw", {}, mw)
    window = timedelta(minutes=10)
    columns = ("sensor_id", "ts", "value", "context_level")
    for sensor_id, ts, value, level in got.select(columns).rows():
        near = [v for s, t, v in rows if s == sensor_id and abs(t - ts) <= window and v is not None]
        if value is None:
            assert level is None
        else:
            assert level == pytest.approx(sum(near) / len(near), rel=1e-9)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(min_value=60, max_value=4 * 1440 - 60), min_size=1, max_size=3),
    late_start=st.integers(min_value=0, max_value=3 * 1440),
)
# cuts inside the dip and between spikes; late rows after both (an early late batch rescores all)
@example(cuts=[3 * 1440 + 480, 3 * 1440 + 601], late_start=3 * 1440 + 700)
def test_incremental_equals_full_for_any_batching(
    tmp_path_factory: pytest.TempPathFactory, cuts: list[int], late_start: int
) -> None:
    from conftest import load_readings
    from engine.config import Config

    warehouse = Warehouse(tmp_path_factory.mktemp("wh") / "warehouse", Config.load())
    data = diel(4, seed=5)
    # episodes a batch boundary may cut: a supply failure (longer than the reach of the events'
    # rebuild), spikes a few minutes apart
    dip = (T0 + timedelta(days=3, hours=2), T0 + timedelta(days=3, hours=9))
    data = set_value(data, *dip, pl.col("value") - 2.5)
    for minute in (0, 2, 70):
        spike = T0 + timedelta(days=3, hours=10, minutes=minute)
        data = set_value(data, spike, spike, pl.col("value") + 3.0)
    late = pl.col("ts").is_between(
        T0 + timedelta(minutes=late_start), T0 + timedelta(minutes=late_start + 90)
    )
    bounds = [0, *sorted(set(cuts)), 4 * 1440]
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        window = pl.col("ts").is_between(
            T0 + timedelta(minutes=lo), T0 + timedelta(minutes=hi), closed="left"
        )
        batch = data.filter(window & ~late)
        if batch.height:
            load_readings(warehouse, batch, batch_id=f"b{i}")
            score(warehouse)
    load_readings(warehouse, data.filter(late), batch_id="late")
    score(warehouse)
    incremental, inc_events = scores_of(warehouse), events_of(warehouse)
    score(warehouse, full=True)
    full, full_events = scores_of(warehouse), events_of(warehouse)
    assert incremental.height == full.height == data.height
    diff = (incremental["severity"] - full["severity"]).abs().max()
    assert diff is not None and diff <= 1e-9
    assert incremental["is_anomaly"].equals(full["is_anomaly"])
    keys = ["sensor_id", "start_ts", "end_ts", "minutes", "readings", "anomaly_type"]
    assert inc_events.select(keys).equals(full_events.select(keys))
    assert full_events.filter(pl.col("start_ts") <= dip[1], pl.col("end_ts") >= dip[0]).height


def test_incremental_equals_full_beyond_the_baseline_window(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    # 70 days at 15-min cadence: the second batch arrives after more than two baseline windows,
    # so its look-back (one baseline window + the drift window) starts well after the first
    # reading and the spread floors read stored hour spreads from before it
    data = diel(70, step_min=15, seed=9)
    # weather: day-to-day offsets by day only, so the spread floor binds at night
    offsets = np.random.default_rng(4).normal(0, 0.6, 70)
    afternoon = pl.col("ts").dt.hour().is_between(5, 19)  # most hours: the median spread
    day = (pl.col("ts") - T0).dt.total_days()
    data = data.with_columns(
        pl.when(afternoon)
        .then(pl.col("value") + day.map_elements(lambda d: offsets[d], return_dtype=pl.Float64))
        .otherwise("value")
    )
    dip = pl.col("ts").is_between(T0 + timedelta(days=60), T0 + timedelta(days=63))
    data = data.with_columns(pl.when(dip).then(pl.col("value") * 0.7).otherwise("value"))
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=61)), batch_id="a")
    score(warehouse)
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=61)), batch_id="b")
    score(warehouse)
    incremental, inc_hourly = scores_of(warehouse), hourly_of(warehouse)
    score(warehouse, full=True)
    full, full_hourly = scores_of(warehouse), hourly_of(warehouse)
    for column in ("severity", "score_contextual", "score_drift"):
        diff = (incremental[column] - full[column]).abs().max()
        assert diff is not None and diff <= 1e-9, column
    assert inc_hourly.height == full_hourly.height == 70 * 24
    for column in ("baseline_median", "context_spread", "typical_std", "drift_z"):
        diff = (inc_hourly[column] - full_hourly[column]).abs().max()
        assert diff is not None and diff <= 1e-9, column
    assert full.filter(dip)["score_drift"].max() > 0.5


def test_scoring_in_sensor_chunks_equals_one_pass(
    warehouse: Warehouse, readings_loader: Callable[..., None], tmp_path: Path
) -> None:
    from engine.config import Config
    from engine.warehouse import bucket_of

    buckets = int(warehouse.config["warehouse"]["buckets"])
    same = [f"s{i}" for i in range(500) if bucket_of(f"s{i}", buckets) == bucket_of("s0", buckets)]
    data = pl.concat([diel(3, sensor=name, seed=i) for i, name in enumerate(same[:4])])
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=2)), batch_id="a")
    small = tmp_path / "small.toml"
    small.write_text("[anomaly]\nchunk_rows = 5000\n")  # about one sensor-day per chunk
    chunked = Warehouse(warehouse.root, Config.load(small))
    score(chunked)
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=2)), batch_id="b")
    score(chunked)
    incremental = scores_of(warehouse)
    score(chunked, full=True)
    chunked_full = scores_of(warehouse)
    score(warehouse, full=True)
    one_pass = scores_of(warehouse)
    assert one_pass.height == data.height
    for other in (incremental, chunked_full):
        diff = (other["severity"] - one_pass["severity"]).abs().max()
        assert diff is not None and diff <= 1e-9
        assert other.select("sensor_id", "ts").equals(one_pass.select("sensor_id", "ts"))


def _reference_point_and_collective(
    rows: list[tuple[str, datetime, float | None]],
    sigma: dict[str, float | None],
    jump_floor: dict[str, float],
) -> list[tuple[float | None, float | None]]:
    """point_z and collective_z by their definition, row by row (60-min and 120-min windows
    that end at the reading, same sensor only; nulls count nowhere)."""
    point: list[float | None] = []
    for sensor, ts, value in rows:
        window = [
            v
            for s, t, v in rows
            if s == sensor and ts - timedelta(minutes=60) < t <= ts and v is not None
        ]
        z = None
        if value is not None and sigma[sensor] is not None and len(window) >= 2:
            before = list(window)
            before.remove(value)
            mean = sum(before) / len(before)
            std = 0.0
            if len(before) >= 2:
                std = math.sqrt(sum((v - mean) ** 2 for v in before) / (len(before) - 1))
            z = abs(value - mean) / max(std, sigma[sensor], jump_floor[sensor])
        point.append(z)
    out = []
    for (sensor, ts, _value), z in zip(rows, point, strict=True):
        inside = [
            p
            for (s, t, _v), p in zip(rows, point, strict=True)
            if s == sensor and ts - timedelta(minutes=120) < t <= ts and p is not None
        ]
        out.append((z, sum(inside) / len(inside) if inside else None))
    return out


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minutes=st.lists(st.integers(0, 480), min_size=3, max_size=80, unique=True),
    seed=st.integers(0, 10_000),
)
@example(minutes=[*range(0, 200, 5), 60, 61, 121, 180, 181, 241, 242, 300, 420], seed=1)
def test_point_z_and_collective_window_match_their_definition(
    warehouse: Warehouse, minutes: list[int], seed: int
) -> None:
    """``detector_windows``' point z and collective mean (polars, over one integer axis for all
    sensors) equal a row-by-row evaluation of their time windows: gaps, a second sensor right
    after the first, null readings, a sensor without typical std (no z), the jump floor."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, datetime, float | None]] = []
    for sensor in ("a", "b", "c"):
        for m in sorted(minutes):
            value = round(8 + float(rng.normal(0, 0.4)), 3) if rng.random() > 0.1 else None
            rows.append((sensor, T0 + timedelta(minutes=m), value))
    frame = pl.DataFrame(
        rows,
        schema={"sensor_id": pl.String, "ts": pl.Datetime("us"), "value": pl.Float64},
        orient="row",
    ).with_columns(
        hour=pl.col("ts").dt.truncate("1h"),
        step=(pl.col("value") - pl.col("value").shift(1)).over("sensor_id"),
    )
    con = _con(warehouse)
    # a: typical std 0.2; b: typical std 0.05 but a daily 0.9 mg/L jump (floor 0.3); c: too new
    con.execute(
        "create table hourly_baselines as select s.sensor_id, h.hour, "
        "case when s.sensor_id = 'c' then 5 else 48 end as typical_hours, "
        "case when s.sensor_id = 'a' then 0.2 else 0.05 end::double as typical_std, "
        "0.1::double as typical_noise, "
        "case when s.sensor_id = 'b' then 0.9 end::double as typical_jump, "
        "0.1::double as typical_spike, 0.01::double as typical_quantum, "
        "8.0::double as baseline_median, 0.5::double as context_spread, "
        "3::bigint as baseline_days, 0.0::double as drift_z, 0.0::double as drift_relative, "
        "0.0::double as site_rel "
        "from (values ('a'), ('b'), ('c')) s(sensor_id), "
        "(select distinct hour from frame) h"
    )
    mw = anomaly.minute_windows(con, warehouse.config)
    got = anomaly.detector_windows(con, frame, mw)
    expected = _reference_point_and_collective(
        rows, {"a": 0.2, "b": 0.05, "c": None}, {"a": 0.0, "b": 0.3, "c": 0.0}
    )
    for (z, collective), (got_z, got_collective) in zip(
        expected, got.select("point_z", "collective_z").rows(), strict=True
    ):
        assert (z is None) == (got_z is None)
        assert (collective is None) == (got_collective is None)
        if z is not None:
            assert got_z == pytest.approx(z, rel=1e-9, abs=1e-9)
        if collective is not None:
            assert got_collective == pytest.approx(collective, rel=1e-9, abs=1e-9)


def test_buckets_scored_in_one_batch_equal_one_at_a_time(
    warehouse: Warehouse, readings_loader: Callable[..., None], tmp_path: Path
) -> None:
    """Small runs score several buckets in one pass; every bucket's partition still holds its
    own sensors only, and the scores and events equal scoring each sensor on its own."""
    from engine.config import Config
    from engine.warehouse import bucket_of

    buckets = int(warehouse.config["warehouse"]["buckets"])
    names = [f"s{i}" for i in range(6)]
    assert len({bucket_of(n, buckets) for n in names}) >= 3
    data = pl.concat([diel(3, sensor=n, seed=i) for i, n in enumerate(names)])
    data = set_value(data, T0 + timedelta(days=2, hours=5), T0 + timedelta(days=2, hours=6), 2.0)
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=2)), batch_id="a")
    score(warehouse)  # every bucket in one batch (default chunk_rows)
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=2)), batch_id="b")
    summary = score(warehouse)
    assert summary.buckets_scored == len({bucket_of(n, buckets) for n in names})
    batched, batched_events = scores_of(warehouse), events_of(warehouse)
    with warehouse.reader() as con:
        placed = con.execute(
            "select distinct bucket::integer, sensor_id from anomaly_scores order by all"
        ).fetchall()
    assert sorted(placed) == sorted({(bucket_of(n, buckets), n) for n in names})
    tiny = tmp_path / "tiny.toml"
    tiny.write_text("[anomaly]\nchunk_rows = 1\n")  # each bucket, each sensor on its own
    score(Warehouse(warehouse.root, Config.load(tiny)), full=True)
    alone, alone_events = scores_of(warehouse), events_of(warehouse)
    assert batched.select("sensor_id", "ts").equals(alone.select("sensor_id", "ts"))
    diff = (batched["severity"] - alone["severity"]).abs().max()
    assert diff is not None and diff <= 1e-9
    assert batched_events.select("sensor_id", "start_ts", "end_ts", "anomaly_type").equals(
        alone_events.select("sensor_id", "start_ts", "end_ts", "anomaly_type")
    )
    assert batched_events.height > 0


def test_a_run_that_fails_midway_is_redone_by_the_next(
    warehouse: Warehouse, readings_loader: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after some of a batch's files were replaced rolls the catalog back: the next
    run scores the same buckets again and ends where an undisturbed run ends."""
    from engine.warehouse import bucket_of

    names = [f"s{i}" for i in range(6)]
    data = pl.concat([diel(3, sensor=n, seed=i) for i, n in enumerate(names)])
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=2)), batch_id="a")
    score(warehouse)
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=2)), batch_id="b")
    buckets = int(warehouse.config["warehouse"]["buckets"])
    summary_buckets = len({bucket_of(n, buckets) for n in names})
    replaced: list[Path] = []
    replace_file = Warehouse.replace_file

    def fail_on_second(wh: Warehouse, staged: Path, dest: Path, *args: Any) -> int:
        replaced.append(dest)
        if len(replaced) == 2:
            raise RuntimeError("disk full")
        return replace_file(wh, staged, dest, *args)

    monkeypatch.setattr(Warehouse, "replace_file", fail_on_second)
    with pytest.raises(RuntimeError, match="disk full"):
        score(warehouse)
    monkeypatch.setattr(Warehouse, "replace_file", replace_file)
    assert len(replaced) == 2 and replaced[0].parent.parent.parent.name == "anomaly_scores"
    redo = score(warehouse)  # the failed batch's buckets again (nothing of it was recorded)
    assert redo.buckets_scored == summary_buckets and redo.rows_scored > 0
    again, again_events = scores_of(warehouse), events_of(warehouse)
    score(warehouse, full=True)
    full, full_events = scores_of(warehouse), events_of(warehouse)
    assert again.height == data.height
    assert again.select("sensor_id", "ts").equals(full.select("sensor_id", "ts"))
    diff = (again["severity"] - full["severity"]).abs().max()
    assert diff is not None and diff <= 1e-9
    keys = ["sensor_id", "start_ts", "end_ts", "minutes", "anomaly_type"]
    assert again_events.select(keys).equals(full_events.select(keys))
    np.testing.assert_allclose(
        again_events["peak_severity"], full_events["peak_severity"], atol=1e-9
    )


def test_stored_median_and_spread_stand_in_for_history_beyond_the_look_back(
    warehouse: Warehouse,
) -> None:
    """The changed hours' baselines from the look-back alone, with the older hours' stored
    hour-of-day median and spread, equal a fit over the whole history; without those stored
    values they do not (spread floor and pooled spread binding: their ratios raised)."""
    con = _con(warehouse)
    rng = np.random.default_rng(11)
    hours = np.arange(70 * 24)
    weather = np.repeat(rng.normal(0, 0.5, 70), 24) * (hours % 24 >= 8)  # daytime weather
    stats = pl.DataFrame(
        {
            "sensor_id": "a",
            "hour": [T0 + timedelta(hours=int(h)) for h in hours],
            "local_hour": (hours % 24).astype(np.int32),
            "n": 60,
            "median": 8
            + np.sin(2 * np.pi * hours / 24)
            + weather
            + rng.normal(0, 0.05, hours.size),
            "std": 0.1 + rng.uniform(0, 0.05, hours.size),
            "noise": 0.05,
            "spike_rms": 0.04,
            "quantum": 0.01,
            "max_step": 0.2,
            "level_std": 0.05 + rng.uniform(0, 0.02, hours.size),
        }
    )
    params = {
        **detector_params(warehouse.config),
        "pooled_spread_ratio": 3.0,
        "spread_floor_ratio": 2.0,
    }
    lookback = anomaly.lookbacks(con, warehouse.config).hours
    changed = T0 + timedelta(days=60)
    con.register("stats", stats.to_arrow())
    con.execute(
        "create table hourly_history as select *, false as stored, "
        "null::double as stored_median, null::double as stored_spread from stats"
    )
    con.execute(
        "create table score_scope as select 'a' as sensor_id, $t as changed_from", {"t": T0}
    )
    anomaly.hourly_baselines(con, params, into="whole")
    con.execute(
        "create or replace table score_scope as select 'a' as sensor_id, $c as changed_from",
        {"c": changed},
    )

    def from_look_back(stored: bool) -> pl.DataFrame:
        con.execute(
            "create or replace table hourly_history as select s.*, "
            "$stored and s.hour < $c as stored, "
            "case when $stored and s.hour < $c then w.baseline_median end as stored_median, "
            "case when $stored and s.hour < $c then w.hour_spread end as stored_spread "
            "from stats as s join whole as w using (sensor_id, hour) "
            "where s.hour >= $c - $lookback",
            {"c": changed, "lookback": lookback, "stored": stored},
        )
        anomaly.hourly_baselines(con, params, into="part")
        return pl.from_arrow(con.sql("from part order by hour").to_arrow_table())

    whole = pl.from_arrow(
        con.sql("from whole where hour >= $c order by hour", params={"c": changed}).to_arrow_table()
    )
    assert lookback < timedelta(days=40) and whole.height == 10 * 24
    columns = ["baseline_median", "context_spread", "typical_std", "drift_z", "drift_relative"]
    with_stored, without = from_look_back(True), from_look_back(False)
    for column in columns:
        diff = (with_stored[column] - whole[column]).abs().max()
        assert diff is not None and diff <= 1e-9, column
    assert (without["context_spread"] - whole["context_spread"]).abs().max() > 1e-3


# -- anomaly_scores files: blocks of days of a month --------------------------------------------


@given(
    day=st.dates(min_value=datetime(2020, 1, 1).date(), max_value=datetime(2030, 12, 31).date()),
    days=st.integers(min_value=1, max_value=31),
)
def test_files_tile_each_month_in_blocks_of_file_days(day, days: int) -> None:
    ts = datetime(day.year, day.month, day.day, 13, 45)
    start = anomaly.file_start(ts, days)
    end = anomaly.file_end(start, days)
    assert start <= ts < end  # the file holding ts
    assert (start.year, start.month) == (ts.year, ts.month)
    assert anomaly.file_start(end - timedelta(microseconds=1), days) == start
    next_month = (start.replace(day=1) + timedelta(days=32)).replace(day=1)
    assert end == next_month or anomaly.file_start(end, days) == end  # the next file begins
    length = (end - start).days
    if end == next_month and start.day > 1:  # the last file of a month: the rest of it
        assert days <= length < 2 * days + 4
    else:
        assert length == days or (start.day == 1 and end == next_month)


@given(
    day=st.dates(min_value=datetime(2020, 1, 1).date(), max_value=datetime(2030, 12, 31).date()),
    days=st.integers(min_value=1, max_value=31),
    last_ahead=st.integers(min_value=-40, max_value=40),
)
def test_the_open_block_is_a_file_per_day_and_every_other_a_block(
    day, days: int, last_ahead: int
) -> None:
    ts = datetime(day.year, day.month, day.day, 13, 45)
    last = ts + timedelta(days=last_ahead)  # the bucket's latest reading
    open_block = anomaly.file_start(last, days)
    start, end = anomaly.file_span(ts, days, open_block)
    assert start <= ts < end
    block = anomaly.file_start(ts, days)
    if block >= open_block:  # ts lies in the open block (or past it: a reading after "last")
        assert (start, end) == (datetime(day.year, day.month, day.day), start + timedelta(days=1))
    else:
        assert (start, end) == (block, anomaly.file_end(block, days))
    path = anomaly.file_path(Path("b"), start, end)
    assert path.name == f"days-{start:%d}-{end - timedelta(days=1):%d}.parquet"


def test_a_new_day_writes_its_day_and_a_complete_block_becomes_one_file(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """Files are blocks of ``file_days`` days, except the bucket's open block (the one with its
    latest reading), which is a file per day: an incremental day writes its day (and the day
    before, where its look-ahead reaches back), never a whole block; once readings arrive past
    the block, its days become one file. The earlier files stay as they are; every layout
    equals a full run's, file for file."""
    data = pl.concat([diel(23, sensor="s1"), diel(23, sensor="s2", seed=1)])  # 1-23 March

    def names() -> set[str]:
        return {p.name for p in warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")}

    def mtimes() -> dict[str, int]:
        files = warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")
        return {p.name: p.stat().st_mtime_ns for p in files}

    def same_as_full() -> None:
        incremental, files = scores_of(warehouse), names()
        score(warehouse, full=True)
        full = scores_of(warehouse)
        assert names() == files
        assert incremental.select("sensor_id", "ts").equals(full.select("sensor_id", "ts"))
        diff = (incremental["severity"] - full["severity"]).abs().max()
        assert diff is not None and diff <= 1e-9

    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=17)), batch_id="a")
    score(warehouse)
    assert names() == {
        "days-01-07.parquet",
        "days-08-14.parquet",
        "days-15-15.parquet",  # the open block 15-21, a day per file
        "days-16-16.parquet",
        "days-17-17.parquet",
    }
    before = mtimes()
    late = (pl.col("ts") >= T0 + timedelta(days=17)) & (pl.col("ts") < T0 + timedelta(days=20))
    readings_loader(warehouse, data.filter(late), batch_id="b")  # 18-20 March
    score(warehouse)
    after = mtimes()
    written = {name for name in after if before.get(name) != after[name]}
    assert written == {
        "days-17-17.parquet",  # the look-ahead of the first new reading reaches back
        "days-18-18.parquet",
        "days-19-19.parquet",
        "days-20-20.parquet",
    }
    assert scores_of(warehouse).height == data.filter(pl.col("ts") < T0 + timedelta(days=20)).height
    same_as_full()
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=20)), batch_id="c")
    score(warehouse)  # 21-23 March: block 15-21 is complete, 22-31 is open
    assert names() == {
        "days-01-07.parquet",
        "days-08-14.parquet",
        "days-15-21.parquet",
        "days-22-22.parquet",
        "days-23-23.parquet",
    }
    assert scores_of(warehouse).height == data.height
    same_as_full()


def test_readings_that_leave_the_lake_leave_the_scores(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """When lake files vanish from the catalog (an operator removed a bad batch), the next
    run rescores from their first reading: the day files they alone filled are removed, the
    day before is rewritten, and scores and events equal a full run's on what is left."""
    data = pl.concat([diel(20, sensor="s1"), diel(20, sensor="s2", seed=1)])  # 1-20 March
    cut = T0 + timedelta(days=17)
    readings_loader(warehouse, data.filter(pl.col("ts") < cut), batch_id="a")
    score(warehouse)
    readings_loader(warehouse, data.filter(pl.col("ts") >= cut), batch_id="b")  # 18-20 March
    score(warehouse)
    days = {p.name for p in warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")}
    assert {"days-18-18.parquet", "days-19-19.parquet", "days-20-20.parquet"} <= days
    with warehouse.writer() as con:
        late = con.execute(
            "select path from lake_files where kind = 'readings' and min_ts >= ?", [cut]
        ).fetchall()
        assert late
        for (path,) in late:
            (warehouse.root / path).unlink()
        con.execute("delete from lake_files where kind = 'readings' and min_ts >= ?", [cut])
    summary = score(warehouse)
    assert not summary.full and summary.sensors_rescored == 2
    names = {p.name for p in warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")}
    assert names == days - {"days-18-18.parquet", "days-19-19.parquet", "days-20-20.parquet"}
    incremental, incremental_events = scores_of(warehouse), events_of(warehouse)
    assert incremental.height == data.filter(pl.col("ts") < cut).height
    assert incremental["ts"].max() < cut
    score(warehouse, full=True)
    assert {p.name for p in warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")} == names
    assert_same(incremental, scores_of(warehouse))
    assert_same(incremental_events, events_of(warehouse))


def test_files_of_another_layout_are_rescored_and_replaced(
    warehouse: Warehouse, readings_loader: Callable[..., None], tmp_path: Path
) -> None:
    """A warehouse written with another ``file_days`` (or an older oxy's one file per month,
    or left with a block beside its day files by a crash) is rescored in full on the next run;
    its files are replaced, no reading twice."""
    from engine.config import Config

    data = diel(12)
    readings_loader(warehouse, data, batch_id="a")
    fives = tmp_path / "fives.toml"
    fives.write_text("[anomaly]\nfile_days = 5\n")
    score(Warehouse(warehouse.root, Config.load(fives)))
    names = {p.name for p in warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")}
    assert names == {  # blocks 1-5, 6-10; the open block 11-15 a day per file
        "days-01-05.parquet",
        "days-06-10.parquet",
        "days-11-11.parquet",
        "days-12-12.parquet",
    }
    again = score(warehouse)  # file_days = 7: a full rescore, though nothing is new
    assert again.full and again.rows_scored == data.height
    names = {p.name for p in warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet")}
    assert names == {"days-01-07.parquet"} | {f"days-{d:02d}-{d:02d}.parquet" for d in range(8, 13)}
    assert scores_of(warehouse).height == data.height
    assert score(warehouse).rows_scored == 0
    # a run that crashed between writing a block and removing its day files
    block = next(warehouse.marts_dir.glob("anomaly_scores/*/*/days-01-07.parquet"))
    (block.parent / "days-03-03.parquet").write_bytes(block.read_bytes())
    assert score(warehouse).full and not (block.parent / "days-03-03.parquet").exists()
    assert scores_of(warehouse).height == data.height
    # an older oxy's one data.parquet per month
    first = min(warehouse.marts_dir.glob("anomaly_scores/*/*/*.parquet"))
    legacy = first.parent / "data.parquet"
    legacy.write_bytes(first.read_bytes())
    assert score(warehouse).full and not legacy.exists()
    assert scores_of(warehouse).height == data.height


@pytest.mark.parametrize("days", [0, 32, 7.5, "7", True])
def test_file_days_outside_a_month_is_a_clear_error(warehouse: Warehouse, days: object) -> None:
    from engine import OxyError

    with pytest.raises(OxyError, match="file_days.* a whole number"):
        anomaly.file_days(warehouse.config.with_overrides({"anomaly": {"file_days": days}}))


def _frame_stat(values: list[float | None], how: str) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if how == "median":
        return float(np.median(present))
    if how == "min":
        return min(present)
    return float(np.quantile(present, {"q25": 0.25, "q75": 0.75}[how]))  # linear, as SQL


@settings(max_examples=15, deadline=None)
@given(
    hours=st.lists(st.integers(min_value=0, max_value=10 * 24), min_size=1, max_size=80),
    nulls=st.lists(st.booleans(), min_size=80, max_size=80),
    stored_before=st.integers(min_value=0, max_value=10 * 24),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_hourly_windows_match_their_frames(
    hours: list[int], nulls: list[bool], stored_before: int, seed: int
) -> None:
    """Each window of ``hourly_windows`` against its frame computed row by row: the same local
    hour over [t - W, t - 1 h], all hours over [t - W, t]; nulls skipped; gaps; two sensors;
    stored hours keep their stored median and spread."""
    rng = np.random.default_rng(seed)
    window, drift, ratio = timedelta(days=3), timedelta(days=2), 0.5
    rows = []
    for sensor in ("a", "b"):
        for i, h in enumerate(sorted(set(hours))):
            ts = T0 + timedelta(hours=h)
            stored = h < stored_before
            rows.append(
                {
                    "sensor_id": sensor,
                    "hour": ts,
                    "local_hour": (ts.hour + 2) % 24,
                    "median": None if nulls[i] else float(rng.normal(8, 1)),
                    "std": float(rng.gamma(2, 0.05)),
                    "noise": float(rng.gamma(2, 0.02)),
                    "spike_rms": None if nulls[-i - 1] else float(rng.gamma(2, 0.02)),
                    "quantum": float(rng.choice([0.01, 0.02])),
                    "max_step": float(rng.gamma(2, 0.1)),
                    "level_std": float(rng.gamma(2, 0.03)),
                    "stored": stored,
                    "stored_median": float(rng.normal(8, 1)) if stored else None,
                    "stored_spread": float(rng.gamma(2, 0.1)) if stored else None,
                }
            )
    history = pl.DataFrame(rows, infer_schema_length=None)
    got = anomaly.hourly_windows(history, window, drift, ratio).sort("sensor_id", "hour")
    first = {}
    for r in rows:  # hour-of-day median and spread first: the recent windows read them
        same = [
            o
            for o in rows
            if o["sensor_id"] == r["sensor_id"]
            and o["local_hour"] == r["local_hour"]
            and r["hour"] - window <= o["hour"] < r["hour"]
        ]
        lo, hi = (_frame_stat([o["median"] for o in same], q) for q in ("q25", "q75"))
        first[(r["sensor_id"], r["hour"])] = (
            r["stored_median"]
            if r["stored"]
            else _frame_stat([o["median"] for o in same], "median"),
            r["stored_spread"] if r["stored"] else (None if lo is None else (hi - lo) / 1.349),
            same,
        )
    for r, g in zip(
        sorted(rows, key=lambda r: (r["sensor_id"], r["hour"])),
        got.iter_rows(named=True),
        strict=True,
    ):
        median, spread, same = first[(r["sensor_id"], r["hour"])]
        recent = [
            o
            for o in rows
            if o["sensor_id"] == r["sensor_id"] and r["hour"] - window <= o["hour"] <= r["hour"]
        ]
        drift_frame = [o for o in same if o["hour"] >= r["hour"] - drift]
        spreads = [first[(o["sensor_id"], o["hour"])][1] for o in recent]
        floor = _frame_stat(spreads, "median")
        mads = [
            None if o["median"] is None or m is None else abs(o["median"] - m)
            for o in recent
            for m in [first[(o["sensor_id"], o["hour"])][0]]
        ]
        spike = _frame_stat([o["spike_rms"] for o in recent], "median")
        same_spike = _frame_stat([o["spike_rms"] for o in same], "median") or 0.0
        expected = {
            "baseline_median": median,
            "hour_spread": spread,
            "baseline_spread": None
            if spread is None and floor is None
            else max(
                x for x in (spread, None if floor is None else ratio * floor) if x is not None
            ),
            "baseline_days": sum(o["median"] is not None for o in same),
            "hour_level_std": _frame_stat([o["level_std"] for o in same], "median"),
            "drift_baseline": _frame_stat([o["median"] for o in drift_frame], "median"),
            "typical_jump": _frame_stat([o["max_step"] for o in same], "median"),
            "typical_hours": len(recent),
            "typical_std": _frame_stat([o["std"] for o in recent], "median"),
            "typical_noise": _frame_stat([o["noise"] for o in recent], "median"),
            "typical_spike": max(x for x in (spike, same_spike) if x is not None),
            "typical_quantum": _frame_stat([o["quantum"] for o in recent], "min"),
            "pooled_mad": _frame_stat(mads, "median"),
        }
        for column, want in expected.items():
            assert g[column] == (None if want is None else pytest.approx(want, abs=1e-12)), column


def test_a_week_offline_reads_no_drift_on_return(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """After 8 days without readings the drift baseline (7 days of the same local hour) is
    missing until a day of readings is back: those hours hold no residual, and none is read as
    a clipped one (a clean series stays without drift level or drift score)."""
    data = diel(24, seed=3)
    offline = pl.col("ts").is_between(T0 + timedelta(days=14), T0 + timedelta(days=22), "left")
    readings_loader(warehouse, data.filter(~offline))
    score(warehouse)
    back = hourly_of(warehouse).filter(pl.col("hour") >= T0 + timedelta(days=22))
    assert back.height == 48
    assert back["drift_relative"].abs().max() is None or back["drift_relative"].abs().max() < 0.02
    assert back["drift_z"].abs().max() < 1.0
    scores = scores_of(warehouse).filter(pl.col("ts") >= T0 + timedelta(days=22))
    assert scores["score_drift"].max() == 0.0


def test_drift_waits_for_a_day_of_started_baselines(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A level 10 % down from the first day the hour-of-day baselines exist (a weather day, or
    a probe fouled before its history began) is not drift while the last day still holds hours
    whose baseline has not started: the first residuals of a baseline compare against its
    shortest history. Once every hour of the day has its baseline, the same level is drift."""
    started = T0 + timedelta(days=9)  # baseline_min_days: the 10th day of each local hour
    readings_loader(
        warehouse, set_value(diel(12), started, T0 + timedelta(days=12), 0.9 * pl.col("value"))
    )
    score(warehouse)
    hourly = hourly_of(warehouse)
    day_started = started + timedelta(hours=23)  # the first hour whose last day is all started
    early = hourly.filter(pl.col("hour").is_between(started, day_started, "left"))
    assert early.height == 23 and early["drift_z"].abs().max() == 0.0
    scores = scores_of(warehouse)
    assert scores.filter(pl.col("ts") < day_started)["score_drift"].max() == 0.0
    late = scores.filter(pl.col("ts") >= T0 + timedelta(days=10, hours=6))
    assert late["score_drift"].mean() > 0.8


# -- drift against the site's shared movement ---------------------------------------------


def _site(names: list[str], days: float, *, seed: int = 0) -> pl.DataFrame:
    return pl.concat([diel(days, sensor=name, seed=seed + k) for k, name in enumerate(names)])


def test_a_site_wide_dip_is_no_drift_one_fouled_probe_is(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """Four probes of one site read 10 % low together for two days (weather): no drift. At a
    second site one probe of four reads 10 % low (fouling): drift, its peers none. Without
    sites (``drift_site_levels = 0``) the weather reads as drift on every probe."""
    weather = ["lake|w1", "lake|w2", "lake|w3", "lake|w4"]
    farm = ["farm|f1", "farm|f2", "farm|f3", "farm|f4"]
    low_from, low_to = T0 + timedelta(days=11), T0 + timedelta(days=13)
    data = pl.concat([_site(weather, 14), _site(farm, 14, seed=10)])
    dipped = pl.col("sensor_id").is_in([*weather, "farm|f1"])
    data = data.with_columns(
        value=pl.when(dipped & pl.col("ts").is_between(low_from, low_to))
        .then(0.9 * pl.col("value"))
        .otherwise(pl.col("value"))
    )
    readings_loader(warehouse, data)
    score(warehouse)
    late = pl.col("ts") >= low_from + timedelta(hours=18)
    drift = (
        scores_of(warehouse).filter(late).group_by("sensor_id").agg(pl.col("score_drift").mean())
    )
    drift = dict(drift.iter_rows())
    assert drift["farm|f1"] > 0.5
    assert max(drift[s] for s in [*weather, "farm|f2", "farm|f3", "farm|f4"]) == 0.0
    alone = Warehouse(
        warehouse.root, warehouse.config.with_overrides({"anomaly": {"drift_site_levels": 0}})
    )
    score(alone, full=True)
    drift = scores_of(alone).filter(late).group_by("sensor_id").agg(pl.col("score_drift").mean())
    assert min(v for s, v in drift.iter_rows() if s in weather) > 0.5


def test_site_peers_are_rescored_and_incremental_equals_full(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A batch of one probe rescores its site's peers from its first changed hour (their drift
    reads the site's shared movement, which it moved); late rows of another probe too; the
    result equals a full run to 1e-9, drift columns and site movement included."""
    config = warehouse.config.with_overrides(
        {"anomaly": {"baseline_min_days": 2, "drift_site_min_days": 1}}
    )
    wh = Warehouse(warehouse.root, config)
    names = ["pond|a", "pond|b", "pond|c"]
    data = _site(names, 7, seed=3)
    day = (pl.col("ts") - T0).dt.total_days()
    data = data.with_columns(  # the site dips on day 4, probe a fouls from day 5
        value=pl.when(day == 4)
        .then(0.93 * pl.col("value"))
        .when((day >= 5) & (pl.col("sensor_id") == "pond|a"))
        .then(0.9 * pl.col("value"))
        .otherwise(pl.col("value"))
    )
    late = (pl.col("sensor_id") == "pond|b") & (day == 2) & (pl.col("ts").dt.hour() < 6)
    batch1 = data.filter((day < 4) & ~late)
    batch2 = data.filter((pl.col("sensor_id") == "pond|a") & (day >= 4))
    batch3 = data.filter(late | ((pl.col("sensor_id") != "pond|a") & (day >= 4)))
    readings_loader(wh, batch1, batch_id="b1")
    score(wh)
    readings_loader(wh, batch2, batch_id="b2")
    second = score(wh)
    assert second.sensors_rescored == 3  # a's batch rescores b and c from a's first new hour
    readings_loader(wh, batch3, batch_id="b3")
    score(wh)
    incremental, inc_hourly = scores_of(wh), hourly_of(wh)
    score(wh, full=True)
    full, full_hourly = scores_of(wh), hourly_of(wh)
    assert incremental.height == full.height == data.height
    assert_same(incremental, full)
    assert_same(inc_hourly, full_hourly)
    assert full.filter(pl.col("sensor_id") == "pond|a")["score_drift"].max() > 0.5


def test_a_site_wide_morning_low_is_no_contextual_anomaly_one_pond_is(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A cloudy morning holds the oxygen of every pond of a farm 1 mg/L below its usual ramp
    for four hours: the contextual baseline moves with the site, so none is contextual. The
    same low in one pond of another farm, its neighbours as usual, is."""
    cloudy = ["sun|p1", "sun|p2", "sun|p3", "sun|p4"]
    farm = ["farm|q1", "farm|q2", "farm|q3", "farm|q4"]
    start = T0 + timedelta(days=10, hours=5)
    data = pl.concat([_site(cloudy, 12), _site(farm, 12, seed=10)])
    hours_in = (pl.col("ts") - start).dt.total_minutes().cast(pl.Float64) / 60.0
    low = pl.col("sensor_id").is_in([*cloudy, "farm|q1"]) & hours_in.is_between(0.0, 4.0)
    data = data.with_columns(
        value=pl.when(low)
        .then(pl.col("value") - (np.pi * hours_in / 4.0).sin())
        .otherwise(pl.col("value"))
    )
    readings_loader(warehouse, data)
    score(warehouse)
    scores = scores_of(warehouse).filter(
        pl.col("ts").is_between(start + timedelta(hours=1), start + timedelta(hours=3))
    )
    flagged = dict(
        scores.group_by("sensor_id").agg((pl.col("score_contextual") >= 0.5).mean()).iter_rows()
    )
    assert flagged["farm|q1"] > 0.5
    assert max(flagged[s] for s in [*cloudy, "farm|q2", "farm|q3", "farm|q4"]) == 0.0


@pytest.mark.parametrize(
    "key", ["drift_site_levels", "drift_site_min_sensors", "drift_site_min_days"]
)
@pytest.mark.parametrize("value", [-1, 1.5, "1", True])
def test_site_settings_outside_whole_numbers_are_a_clear_error(
    warehouse: Warehouse, key: str, value: object
) -> None:
    from engine import OxyError

    with pytest.raises(OxyError, match=f"{key}.* a whole number >= 0"):
        detector_params(warehouse.config.with_overrides({"anomaly": {key: value}}))
