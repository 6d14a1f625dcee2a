"""Monitoring: alerts on drift, stale sensors, anomaly bursts and forecast error; quiet on clean."""

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
from engine.config import Config
from engine.monitor import parse_interval, psi, run_monitor
from engine.registry import record_run
from engine.warehouse import Warehouse, bucket_of

START = datetime(2024, 3, 1)
DAYS = 4
CONFIG = {"monitor": {"recent_window": "1 day", "reference_window": "2 days"}}


@pytest.fixture
def wh(tmp_path, config: Config) -> Warehouse:
    return Warehouse(tmp_path / "wh", config.with_overrides(CONFIG))


def clean_readings(sensors=("A", "B", "C"), seed: int = 1) -> pl.DataFrame:
    """Minute readings with a daily cycle and small noise, identical in distribution daily."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(DAYS * 1440)
    frames = []
    for i, sensor in enumerate(sensors):
        value = 8 + i + np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.1, minutes.size)
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


def production_with_forecast(wh: Warehouse, readings: pl.DataFrame, bias: float) -> None:
    """A promoted run with test RMSE 0.2 and a forecast from the last day's start (+bias)."""
    folder = wh.registry_dir / "runs" / "r1"
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
    origin = START + timedelta(days=DAYS - 1)
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


def test_clean_data_is_quiet_and_missing_stages_are_skipped(
    wh: Warehouse, readings_loader: Callable
) -> None:
    readings_loader(wh, clean_readings())
    result = run_monitor(wh, now=datetime(2024, 3, 5, 1))
    found = statuses(result)
    assert result.status == "ok"
    assert found[("fleet", "anomaly_rate")] == "skipped"
    assert found[("fleet", "forecast_rmse")] == "skipped"
    assert {found[(s, "stale")] for s in "ABC"} == {"ok"}
    assert {found[(s, "drift_psi")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    reasons = {c.check: c.reason for c in result.checks if c.status == "skipped"}
    assert reasons["anomaly_rate"] == "anomaly_scores not built yet (run `oxy score`)"
    assert reasons["forecast_rmse"] == "no production model yet (run `oxy train`)"


def test_clean_with_scores_and_good_forecast_is_ok(wh: Warehouse, readings_loader) -> None:
    readings = clean_readings()
    readings_loader(wh, readings)
    write_scores(wh, readings)
    production_with_forecast(wh, readings, bias=0.1)
    result = run_monitor(wh)
    found = statuses(result)
    assert result.status == "ok", [c for c in result.checks if c.status != "ok"]
    assert found[("fleet", "forecast_rmse")] == "ok"
    rmse = next(c for c in result.checks if (c.scope, c.check) == ("A", "forecast_rmse"))
    assert rmse.value == pytest.approx(0.1) and rmse.threshold == pytest.approx(0.5)
    cli = CliRunner().invoke(oxy, ["--warehouse", str(wh.root), "monitor"])
    # the CLI loads default windows (7-day reference): still no alert on this data
    assert cli.exit_code == 0, cli.output


def test_drift_stale_anomalies_and_forecast_error_alert(wh: Warehouse, readings_loader) -> None:
    readings = clean_readings()
    last_day = START + timedelta(days=DAYS - 1)
    readings = readings.with_columns(
        value=pl.when((pl.col("sensor_id") == "B") & (pl.col("ts") > last_day))
        .then(pl.col("value") + 3)
        .otherwise(pl.col("value"))
    ).filter(~((pl.col("sensor_id") == "C") & (pl.col("ts") > START + timedelta(hours=91))))
    readings_loader(wh, readings)
    write_scores(wh, readings, (pl.col("sensor_id") == "A") & (pl.col("ts") > last_day))
    production_with_forecast(wh, readings, bias=1.0)
    result = run_monitor(wh)
    found = statuses(result)
    assert result.status == "alert"
    assert found[("B", "drift_psi")] == "alert" and found[("A", "drift_psi")] == "ok"
    assert found[("C", "stale")] == "alert" and found[("A", "stale")] == "ok"
    stale = next(c for c in result.checks if (c.scope, c.check) == ("C", "stale"))
    assert stale.value == pytest.approx(5 * 60 - 1) and stale.threshold == 120
    assert found[("A", "anomaly_rate")] == "alert" and found[("B", "anomaly_rate")] == "ok"
    assert found[("A", "severity_median")] == "alert"
    assert found[("fleet", "forecast_rmse")] == "alert"

    # the table and the mart hold exactly this run's rows
    mart = pq.read_table(wh.marts_dir / "monitoring" / "data.parquet")
    assert mart.num_rows == len(result.checks)
    assert mart.column_names == ["time", "scope", "check", "value", "threshold", "status", "reason"]

    runner = CliRunner()
    cli = runner.invoke(oxy, ["--warehouse", str(wh.root), "monitor"])
    assert cli.exit_code == 2
    assert "ALERT   C" in cli.output and "stale" in cli.output
    as_json = runner.invoke(oxy, ["--warehouse", str(wh.root), "--json", "monitor"])
    assert as_json.exit_code == 2 and json.loads(as_json.output)["status"] == "alert"


def test_empty_warehouse_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path / "none"), "monitor"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no warehouse at ")
    assert len(result.output.strip().splitlines()) == 1


def test_real_scores_on_clean_data_stay_quiet(wh: Warehouse, readings_loader) -> None:
    from engine import anomaly

    readings_loader(wh, clean_readings())
    anomaly.score(wh)
    result = run_monitor(wh)
    found = statuses(result)
    assert {found[(s, "anomaly_rate")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    assert {found[(s, "severity_median")] for s in ("A", "B", "C", "fleet")} == {"ok"}
    assert result.status == "ok"


def test_anomalous_reference_minutes_are_left_out_of_the_drift_baseline(
    wh: Warehouse, readings_loader
) -> None:
    shifted = (pl.col("sensor_id") == "A") & pl.col("ts").is_between(
        START + timedelta(days=1), START + timedelta(days=2), closed="left"
    )
    readings = clean_readings().with_columns(
        value=pl.when(shifted).then(pl.col("value") + 3).otherwise(pl.col("value"))
    )
    readings_loader(wh, readings)
    write_scores(wh, readings)  # the shifted day is not flagged: the baseline is polluted
    assert statuses(run_monitor(wh))[("A", "drift_psi")] == "alert"
    write_scores(wh, readings, shifted)  # flagged: left out of the reference
    assert statuses(run_monitor(wh))[("A", "drift_psi")] == "ok"


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
    assert f"(run {run_id})" in rmse.reason and rmse.value < 1.0
    # forecast_mase is engine.metrics' MASE: the arrived minutes' MAE over the scale of the 7
    # days before the origin, as `oxy forecast` stored it; the two checks agree on this data.
    from engine.metrics import mase_scale

    mase = checks[("s1", "forecast_mase")]
    with wh.reader() as con:
        origin, stored = con.execute(
            "select origin_ts, mase_scale from forecast_status where sensor_id = 's1'"
        ).fetchall()[0]
        (mae,) = con.execute(
            "select avg(abs(r.value - f.yhat)) from forecasts f join readings r "
            "using (sensor_id, ts) where f.ts > f.origin_ts"
        ).fetchall()[0]
    history = readings.filter(pl.col("ts") <= origin)
    t = (history["ts"].dt.epoch("s") // 60).to_numpy()
    before = int((origin - datetime(1970, 1, 1)).total_seconds() // 60) + 1
    assert stored == pytest.approx(mase_scale(t, history["value"].to_numpy(), before), rel=1e-9)
    assert mase.value == pytest.approx(mae / stored, rel=1e-9)
    assert mase.status == rmse.status == "ok", (mase, rmse)


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
