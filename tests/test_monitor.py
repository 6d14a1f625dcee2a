"""Monitoring: each check calibrated on the sensor's own history — quiet on healthy data that
moves with the weather, loud on a shift, a stop, an anomaly burst or a forecast gone bad."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import oxy
from conftest import load_readings
from engine import OxyError
from engine.config import Config
from engine.monitor import limits, parse_interval, psi, run_monitor, sensor_sites
from engine.registry import record_run
from engine.warehouse import Warehouse, bucket_of

START = datetime(2024, 3, 1)
DAYS = 12
CONFIG = {
    "monitor": {"recent_window": "1 day", "reference_window": "2 days", "calibration_windows": 9}
}
END = START + timedelta(days=DAYS)  # just after the last reading
LAST_DAY = END - timedelta(days=1)


@pytest.fixture
def wh(tmp_path, config: Config) -> Warehouse:
    return Warehouse(tmp_path / "wh", config.with_overrides(CONFIG))


def clean_readings(
    sensors=("A", "B", "C"), seed: int = 1, weather: float = 0.0, days: int = DAYS
) -> pl.DataFrame:
    """Minute readings with a daily cycle and small noise; ``weather`` moves each day's level
    and amplitude at random (healthy, but no two days alike)."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * 1440)
    frames = []
    for i, sensor in enumerate(sensors):
        level = np.repeat(rng.normal(0, weather, days), 1440)
        amplitude = np.repeat(1 + rng.normal(0, weather, days), 1440)
        value = (
            8
            + i
            + level
            + amplitude * np.sin(2 * np.pi * minutes / 1440)
            + rng.normal(0, 0.1, minutes.size)
        )
        frames.append(
            pl.DataFrame(
                {
                    "sensor_id": sensor,
                    "ts": [START + timedelta(minutes=int(m)) for m in minutes],
                    "value": value,
                }
            )
        )
    return pl.concat(frames)


def write_scores(wh: Warehouse, readings: pl.DataFrame, anomalous: pl.Expr | None = None) -> None:
    """A synthetic anomaly_scores mart (low severity; `anomalous` rows get severity 0.9),
    partitioned by the sensors' lake buckets like the real one."""
    flag = anomalous if anomalous is not None else pl.lit(False)
    scores = readings.with_columns(
        severity=pl.when(flag).then(0.9).otherwise(0.05),
        is_anomaly=flag,
    )
    buckets = int(wh.config["warehouse"]["buckets"])
    bucket = pl.col("sensor_id").map_elements(
        lambda s: bucket_of(s, buckets), return_dtype=pl.Int64
    )
    with wh.writer() as con:
        for (b,), part in scores.with_columns(bucket.alias("bucket")).group_by("bucket"):
            con.register("synthetic_scores", part.drop("bucket").to_arrow())
            partition = f"bucket={b:02d}/month=all"
            wh.write_mart(
                con, "anomaly_scores", "select * from synthetic_scores", partition=partition
            )
            con.unregister("synthetic_scores")
        wh.refresh_mart_views(con)


def production_with_forecast(
    wh: Warehouse, readings: pl.DataFrame, bias: float, origin: datetime = LAST_DAY
) -> None:
    """A promoted run with test RMSE 0.2 and a forecast (readings + bias) from ``origin``."""
    folder = wh.registry_dir / "runs" / "r1"
    if not folder.exists():
        folder.mkdir(parents=True)
        meta = {
            "run_id": "r1",
            "created_at": "2024-03-03T00:00:00",
            "params": {},
            "metrics": {"test": {"mae": 0.15, "rmse": 0.2, "mase": 1.0}},
            "split": {"test_start": "2024-02-25T00:00:00", "test_end": "2024-03-03T00:00:00"},
        }
        (folder / "meta.json").write_text(json.dumps(meta))
        record_run(wh, "r1", meta)
    forecast = (
        readings.filter(pl.col("ts") > origin)
        .select(
            pl.lit("r1").alias("run_id"),
            "sensor_id",
            pl.lit(origin).alias("origin_ts"),
            "ts",
            ((pl.col("ts") - origin).dt.total_minutes()).alias("horizon_min"),
            (pl.col("value") + bias).alias("yhat"),
        )
        .with_columns(yhat_lo=pl.col("yhat") - 1, yhat_hi=pl.col("yhat") + 1)
    )
    with wh.writer() as con:
        con.register("synthetic_forecast", forecast.to_arrow())
        wh.write_mart(con, "forecasts", "select * from synthetic_forecast")
        wh.refresh_mart_views(con)


def statuses(result) -> dict[tuple[str, str], str]:
    return {(c.scope, c.check): c.status for c in result.checks}


def check(result, scope: str, name: str):
    return next(c for c in result.checks if (c.scope, c.check) == (scope, name))


def test_psi_and_interval_helpers() -> None:
    rng = np.random.default_rng(0)
    same = psi(rng.normal(size=4000), rng.normal(size=4000), 10)[0]
    shifted = psi(rng.normal(size=4000), rng.normal(1, 1, size=4000), 10)[0]
    assert same < 0.02 < 0.25 < shifted
    # stuck reference (all ties): one bin; a moved sensor still shows as drift
    assert psi(np.full(100, 5.0), np.full(100, 5.0), 10)[0] == 0
    assert psi(np.full(100, 5.0), np.full(100, 4.0), 10)[0] > 1
    assert parse_interval("90 minutes") == timedelta(minutes=90)
    assert parse_interval("1 week") == timedelta(days=7)


CAL = {"warn_z": 3.0, "alert_z": 5.0, "min_calibration_windows": 5}


@given(
    st.lists(st.floats(0, 10, allow_nan=False), min_size=0, max_size=40),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 20, allow_nan=False),
    st.sampled_from(["linear", "sqrt", "log"]),
)
def test_limits_respect_floors_order_and_never_alert_uncalibrated(
    history, floor_a, floor_b, value, scale
) -> None:
    floor_warn, floor_alert = sorted((floor_a, floor_b))
    lim = limits(
        history,
        CAL,
        floor_warn=floor_warn,
        floor_alert=floor_alert,
        scale=scale,
        min_spread=0.05,
    )
    assert lim.warn >= floor_warn and lim.alert >= floor_alert and lim.alert >= lim.warn
    assert lim.calibrated == (len(history) >= 5)
    grade = lim.grade(value)
    assert grade == (
        "ok"
        if value <= lim.warn
        else "warn"
        if value <= lim.alert
        else ("alert" if lim.calibrated else "warn")
    )
    # grading is monotone in the value
    order = {"ok": 0, "warn": 1, "alert": 2}
    assert order[lim.grade(value + 1)] >= order[grade]


def test_limits_follow_the_sensors_own_spread() -> None:
    def levels(history: list[float]):
        return limits(history, CAL, floor_warn=0, floor_alert=0, scale="sqrt", min_spread=0.05)

    steady = levels([0.10, 0.11, 0.09, 0.10, 0.10, 0.11])
    moving = levels([0.1, 0.5, 0.2, 1.0, 0.3, 0.6])
    assert steady.alert < 0.35 < 3 < moving.alert
    assert moving.grade(0.9) == "ok" and steady.grade(0.9) == "alert"
    # one earlier incident does not raise the levels (median, MAD)
    assert levels([0.10, 0.11, 0.09, 0.10, 0.10, 5.0]).alert == pytest.approx(steady.alert)


def test_clean_data_is_quiet_and_missing_stages_are_skipped(
    wh: Warehouse, readings_loader: Callable
) -> None:
    readings_loader(wh, clean_readings())
    result = run_monitor(wh, now=END + timedelta(hours=1))
    found = statuses(result)
    assert result.status == "ok", [c for c in result.checks if c.status != "ok"]
    assert found[("fleet", "anomaly_rate")] == "skipped"
    assert found[("fleet", "forecast_rmse")] == "skipped"
    assert {found[(s, "stale")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    assert {found[(s, "drift_psi")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    reasons = {c.check: c.reason for c in result.checks if c.status == "skipped"}
    assert reasons["anomaly_rate"] == "anomaly_scores not built yet (run `oxy score`)"
    assert reasons["forecast_rmse"] == "no production model yet (run `oxy train`)"
    drift = check(result, "A", "drift_psi")
    assert "over 9 earlier windows" in drift.reason and drift.threshold == 0.25  # the floor


def test_weather_moves_psi_past_fixed_thresholds_but_not_the_calibrated_ones(
    wh: Warehouse, readings_loader
) -> None:
    readings = clean_readings(("A", "B", "C", "D", "E"), seed=5, weather=0.1)
    readings_loader(wh, readings)
    write_scores(wh, readings)
    result = run_monitor(wh, now=END)
    drift = [c for c in result.checks if c.check == "drift_psi" and c.scope != "fleet"]
    assert max(c.value for c in drift) > 0.25  # the old fixed alert level
    assert {c.status for c in drift} <= {"ok", "warn"}
    assert sum(c.status == "warn" for c in drift) <= 1
    # the same weather with the probe reading 1.5 mg/L low on the last day: alert
    fouled = readings.with_columns(
        value=pl.when((pl.col("sensor_id") == "C") & (pl.col("ts") > LAST_DAY))
        .then(pl.col("value") - 1.5)
        .otherwise(pl.col("value"))
    )
    other = Warehouse(wh.root.parent / "fouled", wh.config)
    readings_loader(other, fouled)
    write_scores(other, fouled)
    assert statuses(run_monitor(other, now=END))[("C", "drift_psi")] == "alert"


def test_drift_stale_and_anomalies_alert(wh: Warehouse, readings_loader) -> None:
    readings = clean_readings()
    readings = readings.with_columns(
        value=pl.when((pl.col("sensor_id") == "B") & (pl.col("ts") > LAST_DAY))
        .then(pl.col("value") + 3)
        .otherwise(pl.col("value"))
    ).filter(~((pl.col("sensor_id") == "C") & (pl.col("ts") > END - timedelta(hours=5))))
    readings_loader(wh, readings)
    write_scores(wh, readings, (pl.col("sensor_id") == "A") & (pl.col("ts") > LAST_DAY))
    result = run_monitor(wh, now=END)
    found = statuses(result)
    assert result.status == "alert"
    assert found[("B", "drift_psi")] == "alert" and found[("A", "drift_psi")] == "ok"
    assert found[("C", "stale")] == "alert" and found[("A", "stale")] == "ok"
    stale = check(result, "C", "stale")
    assert stale.value == pytest.approx(5 * 60 - 1) and stale.threshold == 120
    assert found[("A", "anomaly_rate")] == "alert" and found[("B", "anomaly_rate")] == "ok"
    assert found[("A", "severity_median")] == "alert"

    # the table and the mart hold exactly this run's rows
    mart = pq.read_table(wh.marts_dir / "monitoring" / "data.parquet")
    assert mart.num_rows == len(result.checks)
    assert mart.column_names == ["time", "scope", "check", "value", "threshold", "status", "reason"]

    runner = CliRunner()
    cli = runner.invoke(oxy, ["--warehouse", str(wh.root), "monitor"])
    assert cli.exit_code == 2  # the CLI's defaults (3 + 14 days, uncalibrated) still alert on B
    as_json = runner.invoke(oxy, ["--warehouse", str(wh.root), "--json", "monitor"])
    assert as_json.exit_code == 2 and json.loads(as_json.output)["status"] == "alert"


def test_short_history_is_uncalibrated_and_never_alerts(tmp_path, config, readings_loader) -> None:
    wh = Warehouse(tmp_path / "short", config.with_overrides(CONFIG))
    days = 5  # 1 + 2 days judged, 3 earlier windows (the last partial; need 5)
    readings = clean_readings(days=days).with_columns(
        value=pl.when(
            (pl.col("sensor_id") == "B") & (pl.col("ts") > START + timedelta(days=days - 1))
        )
        .then(pl.col("value") + 3)
        .otherwise(pl.col("value"))
    )
    readings_loader(wh, readings)
    drift = check(run_monitor(wh, now=START + timedelta(days=days)), "B", "drift_psi")
    assert drift.status == "warn"
    assert "uncalibrated: 3 earlier window(s), need 5" in drift.reason


def test_stale_follows_the_sensors_cadence_and_pauses(wh: Warehouse, readings_loader) -> None:
    minute = clean_readings(("minute",))
    quarter = clean_readings(("quarter",)).filter(pl.col("ts").dt.minute() % 15 == 0)
    # a sensor that pauses 6 hours every night, now 7 hours into tonight's pause
    nightly = clean_readings(("nightly",)).filter(
        (pl.col("ts").dt.hour() >= 6) & (pl.col("ts") < END - timedelta(hours=1))
    )
    readings_loader(wh, pl.concat([minute, quarter.drop_nulls(), nightly]))
    result = run_monitor(wh, now=END)
    found = statuses(result)
    assert found[("quarter", "stale")] == "ok"
    assert found[("nightly", "stale")] == "ok"
    nightly_check = check(result, "nightly", "stale")
    assert nightly_check.threshold == pytest.approx(1.5 * 361)  # 1.5 x its usual nightly gap
    assert "usual longest gap of a day 361 min" in nightly_check.reason
    # 15-minute cadence: the limit is the 2-hour floor; 6 intervals (90 min) is below it
    assert check(result, "quarter", "stale").threshold == 120


def test_historical_data_and_a_silent_fleet(wh: Warehouse, readings_loader) -> None:
    readings = clean_readings().filter(
        ~((pl.col("sensor_id") == "C") & (pl.col("ts") > END - timedelta(hours=5)))
    )
    readings_loader(wh, readings)
    later = run_monitor(wh, now=END + timedelta(days=400))
    fleet = check(later, "fleet", "stale")
    assert fleet.status == "ok" and fleet.reason.startswith("historical data: the fleet's latest")
    stale_c = check(later, "C", "stale")
    assert stale_c.status == "ok" and "historical data" in stale_c.reason
    silent = run_monitor(wh, now=END + timedelta(hours=3))
    assert check(silent, "fleet", "stale").status == "alert"
    assert "the whole fleet is silent" in check(silent, "fleet", "stale").reason


def test_as_of_replays_a_past_day(wh: Warehouse, readings_loader) -> None:
    readings = clean_readings().filter(
        ~((pl.col("sensor_id") == "C") & (pl.col("ts") > END - timedelta(hours=5)))
    )
    readings_loader(wh, readings)
    # a day earlier, C was not stale yet: readings after as_of do not exist for the replay
    earlier = run_monitor(wh, as_of=LAST_DAY)
    assert check(earlier, "C", "stale").status == "ok" and earlier.time == LAST_DAY
    assert check(run_monitor(wh, now=END), "C", "stale").status == "alert"


def test_windows_must_be_whole_steps(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, clean_readings(days=2))
    odd = Warehouse(wh.root, wh.config.with_overrides({"monitor": {"recent_window": "36 hours"}}))
    with pytest.raises(OxyError, match="whole number of monitor.step"):
        run_monitor(odd)


def test_forecast_error_against_its_recorded_history(wh: Warehouse, readings_loader) -> None:
    readings = clean_readings()
    readings_loader(wh, readings)
    production_with_forecast(wh, readings, bias=0.1)
    first = run_monitor(wh, as_of=LAST_DAY + timedelta(hours=2))
    rmse = check(first, "A", "forecast_rmse")
    # no history yet: against the run's test RMSE (0.2) x 1.5 / 2.5, never above warn
    assert rmse.status == "ok" and rmse.threshold == pytest.approx(0.5)
    assert "uncalibrated: 0 earlier window(s)" in rmse.reason
    for hours in (4, 6, 8, 10, 12):
        run_monitor(wh, as_of=LAST_DAY + timedelta(hours=hours))
    calibrated = run_monitor(wh, as_of=LAST_DAY + timedelta(hours=14))
    assert check(calibrated, "A", "forecast_rmse").status == "ok"
    assert "over 6 earlier windows" in check(calibrated, "A", "forecast_rmse").reason
    production_with_forecast(wh, readings, bias=0.4)  # the model went bad
    gone = run_monitor(wh, as_of=LAST_DAY + timedelta(hours=16))
    assert check(gone, "A", "forecast_rmse").status == "alert"
    assert check(gone, "fleet", "forecast_rmse").status == "alert"
    assert check(gone, "A", "forecast_rmse").value < 0.2 * 2.5  # the old rule: no alert


def test_empty_warehouse_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path / "none"), "monitor"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no warehouse at ")
    assert len(result.output.strip().splitlines()) == 1


def test_real_scores_on_clean_data_stay_quiet(wh: Warehouse, readings_loader) -> None:
    from engine import anomaly

    readings_loader(wh, clean_readings(weather=0.1))
    anomaly.score(wh)
    result = run_monitor(wh, now=END)
    found = statuses(result)
    assert {found[(s, "anomaly_rate")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    assert {found[(s, "severity_median")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    assert result.status == "ok", [c for c in result.checks if c.status != "ok"]


def test_anomalous_reference_minutes_are_left_out_of_the_drift_baseline(
    wh: Warehouse, readings_loader
) -> None:
    shifted = (pl.col("sensor_id") == "A") & pl.col("ts").is_between(
        LAST_DAY - timedelta(days=2), LAST_DAY - timedelta(days=1), closed="left"
    )
    readings = clean_readings().with_columns(
        value=pl.when(shifted).then(pl.col("value") + 3).otherwise(pl.col("value"))
    )
    readings_loader(wh, readings)
    write_scores(wh, readings)  # the shifted day is not flagged: the baseline is polluted
    assert statuses(run_monitor(wh, now=END))[("A", "drift_psi")] == "alert"
    write_scores(wh, readings, shifted)  # flagged: left out of the reference
    assert statuses(run_monitor(wh, now=END))[("A", "drift_psi")] == "ok"


@given(
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=20, max_size=300),
    st.lists(st.floats(-50, 50, allow_nan=False), min_size=20, max_size=300),
    st.integers(2, 20),
)
def test_psi_is_non_negative_and_zero_on_itself(reference, recent, bins) -> None:
    reference, recent = np.array(reference), np.array(recent)
    assert psi(reference, recent, bins)[0] >= 0
    assert psi(reference, reference, bins)[0] == pytest.approx(0, abs=1e-12)
    counts = psi(reference, recent, bins)[1]
    assert counts[0].sum() == len(recent) and counts[1].sum() == len(reference)


def test_forecast_error_on_minutes_arrived_after_a_real_forecast(tmp_path, readings_loader):
    from conftest import FAST_FORECAST
    from engine import anomaly, forecast

    wh = Warehouse(tmp_path / "loop", Config.load().with_overrides(FAST_FORECAST))
    start = datetime(2024, 3, 1)
    rng = np.random.default_rng(2)
    minutes = np.arange(23 * 1440)
    readings = pl.DataFrame(
        {
            "sensor_id": "s1",
            "ts": [start + timedelta(minutes=int(m)) for m in minutes],
            "value": 8 + np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.05, minutes.size),
        }
    )
    cut = start + timedelta(days=22)
    readings_loader(wh, readings.filter(pl.col("ts") < cut), batch_id="history")
    anomaly.score(wh)
    run_id = forecast.train(wh, echo=lambda _: None).run_id
    forecast.forecast(wh, echo=lambda _: None)
    skipped = next(c for c in run_monitor(wh).checks if c.check == "forecast_rmse")
    assert skipped.status == "skipped" and "no readings have arrived" in skipped.reason
    readings_loader(wh, readings.filter(pl.col("ts") >= cut), batch_id="new-day")
    checks = {(c.scope, c.check): c for c in run_monitor(wh).checks}
    rmse = checks[("s1", "forecast_rmse")]
    assert rmse.status in ("ok", "warn") and "over 1440 arrived minutes" in rmse.reason
    assert f"of run {run_id}" in rmse.reason and rmse.value < 1.0


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), decimals=st.integers(0, 2))
def test_drift_psi_equals_numpy_psi_of_the_window_values(
    tmp_path_factory: pytest.TempPathFactory, config: Config, seed: int, decimals: int
) -> None:
    """The SQL binning (reference quantile edges, ties above an edge, equal edges merged,
    flagged reference minutes left out) gives numpy's ``psi`` of the same values."""
    wh = Warehouse(tmp_path_factory.mktemp("psi") / "wh", config.with_overrides(CONFIG))
    rng = np.random.default_rng(seed)
    readings = clean_readings(("A", "B"), seed=seed).with_columns(
        value=(pl.col("value") + pl.lit(rng.normal(0, 0.5))).round(decimals)
    )
    flagged = (pl.col("sensor_id") == "A") & (pl.col("ts").dt.hour() == 3)
    load_readings(wh, readings)
    write_scores(wh, readings, flagged)
    found = {c.scope: c.value for c in run_monitor(wh).checks if c.check == "drift_psi"}
    latest = readings["ts"].max()
    recent_start = latest - timedelta(days=1)
    reference_start = recent_start - timedelta(days=2)
    bins = int(wh.config["monitor"]["psi_bins"])
    for sensor in ("A", "B"):
        mine = readings.filter(pl.col("sensor_id") == sensor)
        recent = mine.filter(pl.col("ts") > recent_start)["value"].to_numpy()
        reference = mine.filter(
            (pl.col("ts") > reference_start)
            & (pl.col("ts") <= recent_start)
            & ~(flagged if sensor == "A" else pl.lit(False))
        )["value"].to_numpy()
        assert found[sensor] == pytest.approx(psi(reference, recent, bins)[0], abs=1e-12)


def test_a_model_that_slowly_goes_stale_is_judged_against_itself_when_fresh(
    wh: Warehouse, readings_loader
) -> None:
    readings = clean_readings(("A",))
    readings_loader(wh, readings)
    production_with_forecast(wh, readings, bias=0.1)
    for hours in range(2, 14, 2):  # six runs of the fresh model
        run_monitor(wh, as_of=LAST_DAY + timedelta(hours=hours))
    statuses_seen = []
    for step, bias in enumerate((0.12, 0.14, 0.17, 0.2, 0.24, 0.3)):  # a little worse each run
        production_with_forecast(wh, readings, bias=bias)
        result = run_monitor(wh, as_of=LAST_DAY + timedelta(hours=14 + step))
        statuses_seen.append(check(result, "A", "forecast_rmse").status)
    assert statuses_seen[0] == "ok" and statuses_seen[-1] == "alert"


def site_readings(shift_all: float, shift_one: float) -> pl.DataFrame:
    """Four probes of one site ("farm|pen|N") moving together with the site's weather; on the
    last day the whole site moves by ``shift_all`` and probe 3 alone by ``shift_one`` more."""
    rng = np.random.default_rng(9)
    minutes = np.arange(DAYS * 1440)
    site_level = np.repeat(rng.normal(0, 0.1, DAYS), 1440)
    last = minutes >= (DAYS - 1) * 1440
    frames = []
    for probe in range(4):
        value = (
            8 + site_level + np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.1, minutes.size)
        )
        value[last] += shift_all + (shift_one if probe == 3 else 0)
        frames.append(
            pl.DataFrame(
                {
                    "sensor_id": f"farm|pen|{probe}",
                    "ts": [START + timedelta(minutes=int(m)) for m in minutes],
                    "value": value,
                }
            )
        )
    return pl.concat(frames)


def test_a_site_moving_together_is_weather_a_probe_moving_alone_is_not(
    tmp_path, config: Config, readings_loader
) -> None:
    def drift(readings: pl.DataFrame, name: str, site_levels: int) -> dict[str, str]:
        overrides = {"monitor": CONFIG["monitor"], "anomaly": {"site_levels": site_levels}}
        wh = Warehouse(tmp_path / name, config.with_overrides(overrides))
        readings_loader(wh, readings)
        result = run_monitor(wh, now=END)
        return {c.scope: c.status for c in result.checks if c.check == "drift_psi"}

    front = site_readings(shift_all=1.0, shift_one=0.0)  # a weather front over the site
    alone, site = drift(front, "alone", 0), drift(front, "site", 1)
    assert {alone[f"farm|pen|{p}"] for p in range(4)} == {"alert"}
    assert {site[f"farm|pen|{p}"] for p in range(4)} == {"ok"}
    fouled = site_readings(shift_all=0.0, shift_one=-1.0)
    found = drift(fouled, "fouled", 1)
    assert found["farm|pen|3"] == "alert"
    assert {found[f"farm|pen|{p}"] for p in range(3)} == {"ok"}


def test_monitor_sql_fixed_answers() -> None:
    """anomaly_windows, sensor_last_seen, sensor_sites and check_history on a handful of rows."""
    import duckdb

    from engine.warehouse import sql_text

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    day = timedelta(days=1)
    t0 = datetime(2024, 3, 1)
    con.execute(
        "create table anomaly_scores as select sensor_id, ts, severity::double as severity, "
        "is_anomaly from (values "
        "('a', $t0 + interval 1 hour, 0.9, true), ('a', $t0 + interval 25 hour, 0.1, false), "
        "('a', $t0 + interval 26 hour, 0.3, false), ('b', $t0 + interval 49 hour, 0.5, true)"
        ") as t(sensor_id, ts, severity, is_anomaly)",
        {"t0": t0},
    )
    rows = con.execute(
        sql_text("monitor/anomaly_windows"),
        {"latest": t0 + 3 * day, "step": day, "recent": day, "origins": 2},
    ).fetchall()
    assert rows == [
        ("a", 1, 2, 0.0, 0.2),  # day 2: two readings, none anomalous, median severity 0.2
        ("a", 2, 1, 1.0, 0.9),  # day 1
        ("b", 0, 1, 1.0, 0.5),  # day 3 (the judged window)
        ("fleet", 0, 1, 1.0, 0.5),
        ("fleet", 1, 2, 0.0, 0.2),
        ("fleet", 2, 1, 1.0, 0.9),
    ]
    # a: every 10 minutes, with a 60-minute pause each day; b: registered, never read
    stamps = [t0 + timedelta(minutes=10 * i) for i in range(3 * 144)]
    stamps = [t for t in stamps if not (t.hour == 3 and t.minute < 50)]
    con.execute(
        "create table readings as select 'a' as sensor_id, unnest($ts) as ts", {"ts": stamps}
    )
    con.execute(
        "create table sensors as select * from (values ('a', 'farm', ['pen1', 'a']), "
        "('b', 'farm', ['b'])) as t(sensor_id, customer, levels)"
    )
    seen = con.execute(
        sql_text("monitor/sensor_last_seen"), {"as_of": t0 + 2 * day, "history": 7 * day}
    ).fetchall()
    assert seen == [
        ("a", t0 + 2 * day, 279, t0 + 2 * day, 10.0, 60.0, 3),  # 2 x (144 - 5) + 1 readings
        ("b", None, 0, t0 + 2 * day, None, None, 0),
    ]
    config = Config.load().with_overrides({"anomaly": {"site_levels": 1}})
    con.execute("alter table sensors add column bucket integer default 0")
    con.execute("alter table sensors add column timezone varchar default 'UTC'")
    con.execute("alter table sensors add column unit varchar default 'mg/L'")
    assert sensor_sites(con, config) == {"a": "farm\x1fpen1", "b": None}  # the scorer's sites
    con.execute(
        'create table monitoring as select time, scope, "check", value::double as value, '
        "status from (values "
        "($t0, 'a', 'forecast_rmse', 0.1, 'ok'), ($t0 + interval 1 day, 'a', 'forecast_rmse', "
        "0.2, 'ok'), ($t0 + interval 2 day, 'a', 'forecast_rmse', 0.3, 'ok'), "
        "($t0 + interval 1 day, 'a', 'forecast_rmse', null, 'skipped')"
        ') as t(time, scope, "check", value, status)',
        {"t0": t0},
    )
    history = con.execute(
        sql_text("monitor/check_history"),
        {"check": "forecast_rmse", "since": t0, "now": t0 + 3 * day, "limit": 2},
    ).fetchall()
    assert history == [("a", [0.1, 0.2])]  # the run's first values, not its latest
