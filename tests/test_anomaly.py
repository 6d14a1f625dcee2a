"""Anomaly scoring in the warehouse: incremental == full, files, events, sites, inference.

The detectors themselves are tested on built series in tests/test_detectors.py.
"""

from __future__ import annotations

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
from engine.anomaly import score, score_readings
from engine.warehouse import Warehouse, bind, sql_text

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
    assert set(scores["anomaly_type"].unique()) <= {"none", *anomaly.detectors.DETECTOR_NAMES}
    hourly = hourly_of(warehouse)
    assert list(hourly.columns) == list(anomaly.detectors.HOURLY_COLUMNS)
    assert hourly.height == 6 * 24


def test_the_stored_hourly_table_matches_the_detectors_columns() -> None:
    text = sql_text("catalog/score_hourly")
    columns = [
        line.split()[0]
        for line in text.splitlines()
        if line.startswith("    ") and not line.strip().startswith(("--", "primary"))
    ]
    assert columns == list(anomaly.detectors.HOURLY_COLUMNS)


def test_local_hour_of_day_across_dst(warehouse: Warehouse) -> None:
    con = warehouse.connect_memory()
    times = [
        datetime(2024, 3, 30, 23, 30),
        datetime(2024, 3, 31, 0, 30),
        datetime(2024, 3, 31, 1, 30),
        datetime(2024, 10, 27, 0, 30),
        datetime(2024, 10, 27, 1, 30),
    ]
    frame = pl.DataFrame({"sensor_id": "oslo", "ts": times, "value": 8.0})
    sensors = pl.DataFrame({"sensor_id": ["oslo"], "timezone": ["Europe/Oslo"], "unit": ["mg/L"]})
    rows = anomaly.with_sensor_info(con, frame, sensors)
    # the local hour of the start of each UTC hour: 23:00Z = 00:00 CET; 00:00Z = 01:00 CET;
    # 01:00Z = 03:00 CEST (02:xx does not exist); autumn: 00:00Z = 02:00 CEST, 01:00Z =
    # 02:00 CET (the repeated hour)
    assert rows["local_hour"].to_list() == [0, 1, 3, 2, 2]
    assert rows["unit"].to_list() == ["mg/L"] * 5


def test_an_older_score_hourly_is_recreated_and_everything_rescored(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A ``score_hourly`` of another shape (an older oxy) is recreated by the next score, which
    rescores every reading: incremental == full holds."""
    readings_loader(warehouse, diel(3))
    score(warehouse)
    expected = scores_of(warehouse)
    with warehouse.writer() as con:
        con.execute("alter table score_hourly drop column curve_mean")
        con.execute("alter table score_hourly add column context_spread double")
    summary = score(warehouse)
    assert summary.full and summary.rows_scored == expected.height
    assert list(hourly_of(warehouse).columns) == list(anomaly.detectors.HOURLY_COLUMNS)
    assert_same(scores_of(warehouse), expected)


def test_incremental_equals_full_beyond_the_history(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """70 days at 15-min cadence, the second batch after more than two baseline histories: its
    look-back reads stored hours only, and every score, event and stored hour equals a full
    run's; the dip of days 60-63 reads as an anomaly."""
    data = diel(70, step_min=15, seed=9)
    offsets = np.random.default_rng(4).normal(0, 0.4, 70)
    day = (pl.col("ts") - T0).dt.total_days()
    data = data.with_columns(
        value=pl.col("value") + day.map_elements(lambda d: offsets[d], return_dtype=pl.Float64)
    )
    dip = pl.col("ts").is_between(T0 + timedelta(days=60), T0 + timedelta(days=63))
    data = data.with_columns(pl.when(dip).then(pl.col("value") * 0.5).otherwise("value"))
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=61)), batch_id="a")
    score(warehouse)
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=61)), batch_id="b")
    score(warehouse)
    incremental, inc_hourly, inc_events = (
        scores_of(warehouse),
        hourly_of(warehouse),
        events_of(warehouse),
    )
    score(warehouse, full=True)
    full, full_hourly = scores_of(warehouse), hourly_of(warehouse)
    assert_same(incremental, full)
    assert_same(inc_hourly, full_hourly)
    assert_same(inc_events, events_of(warehouse))
    assert inc_hourly.height == 70 * 24
    assert full.filter(dip)["is_anomaly"].mean() > 0.3


def test_a_weather_day_at_a_site_is_no_anomaly_through_the_warehouse(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """Through the lake and the site stage (``site_hourly``): four probes of one site read
    15 % low together for a day (weather) — no anomaly; the same day at one probe of another
    site, its neighbours as usual, is."""
    weather = ["lake|w1", "lake|w2", "lake|w3", "lake|w4"]
    farm = ["farm|f1", "farm|f2", "farm|f3", "farm|f4"]
    low_from, low_to = T0 + timedelta(days=11), T0 + timedelta(days=12)
    data = pl.concat([_site(weather, 13), _site(farm, 13, seed=10)])
    dipped = pl.col("sensor_id").is_in([*weather, "farm|f1"])
    data = data.with_columns(
        value=pl.when(dipped & pl.col("ts").is_between(low_from, low_to))
        .then(0.85 * pl.col("value"))
        .otherwise(pl.col("value"))
    )
    readings_loader(warehouse, data)
    score(warehouse)
    day = scores_of(warehouse).filter(
        pl.col("ts").is_between(low_from + timedelta(hours=1), low_to)
    )
    flagged = dict(day.group_by("sensor_id").agg(pl.col("is_anomaly").mean()).iter_rows())
    assert flagged["farm|f1"] > 0.5
    assert max(flagged[s] for s in [*weather, "farm|f2", "farm|f3", "farm|f4"]) < 0.02
    with warehouse.reader() as con:
        sites = con.execute("select distinct site from site_hourly order by 1").fetchall()
    assert len(sites) == 2


@pytest.mark.parametrize("value", [-1, 1.5, "1", True])
def test_site_levels_outside_whole_numbers_is_a_clear_error(
    warehouse: Warehouse, value: object
) -> None:
    from engine import OxyError

    config = warehouse.config.with_overrides({"anomaly": {"site_levels": value}})
    with pytest.raises(OxyError, match="site_levels must be a whole number >= 0"):
        anomaly.settings(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spike": {"z": 0}}, r"\[anomaly.spike\] z must be a number > 0"),
        ({"noise": {"ratio": "x"}}, r"\[anomaly.noise\] ratio must be a number > 0"),
        ({"history": "soon"}, "history must be a duration"),
        ({"range": {"fail_sat": 100.0}}, "fail_sat > suspect_sat"),
        ({"drift": {"gap": "60 days"}}, "reference must be longer than drift.gap"),
        ({"severity_threshold": 0.95}, "severity_threshold <= qartod_fail_severity"),
    ],
)
def test_detector_settings_are_checked(warehouse: Warehouse, overrides: dict, message: str) -> None:
    from engine import OxyError

    with pytest.raises(OxyError, match=message):
        anomaly.settings(warehouse.config.with_overrides({"anomaly": overrides}))


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


def _con(warehouse: Warehouse) -> duckdb.DuckDBPyConnection:
    return warehouse.connect_memory()


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
    anomaly._create_support_tables(con)
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
    a, w = anomaly.settings(warehouse.config)
    params = {**anomaly.event_params(a, w), "files": [str(path)]}
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
    con.execute(
        sql_text("score/events_cut_create"), bind(sql_text("score/events_cut_create"), params)
    )
    assert con.execute("from events_cut").fetchall() == [("a", datetime(2023, 12, 31, 22, 4))]
    rows = con.execute(query, bind(query, params)).fetchall()
    assert [(r[0], r[1], r[2].minute, r[4], r[5]) for r in rows] == [
        ("a", datetime(2023, 12, 31, 20, 0), 5, 6, "noise"),  # kept
        ("a", datetime(2024, 1, 1, 0, 1), 4, 3, "point"),  # rebuilt: it grew to 00:04
        ("a", datetime(2024, 1, 1, 0, 30), 30, 1, "stuck"),
        ("c", datetime(2024, 1, 1, 0, 10), 10, 1, "spike"),  # out of scope: as stored
    ]


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
    small.write_text("[anomaly.run]\nchunk_rows = 5000\n")  # about one sensor-day per chunk
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
    tiny.write_text("[anomaly.run]\nchunk_rows = 1\n")  # each bucket, each sensor on its own
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

    def fail_on_second(wh: Warehouse, staged: Path, dest: Path, *args: Any, **kw: Any) -> int:
        replaced.append(dest)
        if len(replaced) == 2:
            raise RuntimeError("disk full")
        return replace_file(wh, staged, dest, *args, **kw)

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
    fives.write_text("[anomaly.run]\nfile_days = 5\n")
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

    with pytest.raises(OxyError, match="file_days must be a whole number of days"):
        anomaly.file_days(
            warehouse.config.with_overrides({"anomaly": {"run": {"file_days": days}}})
        )


# -- sites and time zones ------------------------------------------------------------------


def _site(names: list[str], days: float, *, seed: int = 0) -> pl.DataFrame:
    return pl.concat([diel(days, sensor=name, seed=seed + k) for k, name in enumerate(names)])


def test_site_peers_are_rescored_and_incremental_equals_full(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A batch of one probe rescores its site's peers from its first changed hour (their drift
    reads the site's shared movement, which it moved); late rows of another probe too; the
    result equals a full run to 1e-9, drift columns and site movement included."""
    config = warehouse.config.with_overrides(
        {"anomaly": {"drift": {"gap": "2 days", "reference": "4 days", "min_reference_days": 1}}}
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
