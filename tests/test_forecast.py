"""Training, split boundaries, artefacts, forecast shape and status on a tiny warehouse."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FAST_FORECAST, load_readings
from engine import OxyError, artifacts, forecast
from engine.config import Config
from engine.warehouse import Warehouse

START = datetime(2024, 3, 1)


def diurnal(sensor_id: str, cadence: int, days: int, *, level: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(0, days * 1440, cadence)
    t = t[~((t >= 3000) & (t < 3300))]  # a 5-hour gap
    noise = np.cumsum(rng.normal(0, 0.02, len(t)))
    value = level + 1.5 * np.sin(2 * np.pi * (t - 360) / 1440) + noise - noise.mean()
    return pl.DataFrame(
        {
            "sensor_id": sensor_id,
            "ts": [START + timedelta(minutes=int(m)) for m in t],
            "value": value,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, forecast.TrainResult]:
    root = tmp_path_factory.mktemp("fc") / "warehouse"
    wh = Warehouse(root, Config.load().with_overrides(FAST_FORECAST))
    minute = pl.concat(
        [
            diurnal("farm|a", 1, 22, level=8.0, seed=1),
            diurnal("farm|b", 1, 22, level=9.0, seed=2),
        ]
    )
    load_readings(wh, minute, timezone="Europe/Oslo", batch_id="minute")
    quarter = diurnal("river|c", 15, 22, level=10.0, seed=3)
    load_readings(wh, quarter, timezone="America/Denver", batch_id="quarter")
    # A sensor that started 12 hours before the end: too little history.
    late = diurnal("farm|new", 1, 22, level=8.0, seed=4).filter(
        pl.col("ts") >= START + timedelta(days=21, hours=12)
    )
    load_readings(wh, late, timezone="Europe/Oslo", batch_id="late")
    result = forecast.train(wh, echo=lambda _: None)
    return wh, result


def test_split_boundaries_and_meta(trained: tuple[Warehouse, forecast.TrainResult]) -> None:
    wh, result = trained
    meta = json.loads((Path(result.path) / "meta.json").read_text())
    end = START + timedelta(days=22)  # one minute after the last reading (21d 23:59)
    assert meta["split"] == {
        "train_end": (end - timedelta(days=14)).isoformat(),
        "valid_start": (end - timedelta(days=14)).isoformat(),
        "valid_end": (end - timedelta(days=7)).isoformat(),
        "test_start": (end - timedelta(days=7)).isoformat(),
        "test_end": end.isoformat(),
    }
    assert meta["features"] == list(forecast.FEATURES)
    assert set(meta["metrics"]) >= {"train", "valid", "test", "backtest"}
    assert meta["notes"][0] == "no anomaly_scores (run `oxy score`): training on all readings"
    assert meta["versions"]["lightgbm"]


def test_training_pairs_respect_the_split(trained: tuple[Warehouse, forecast.TrainResult]) -> None:
    wh, _ = trained
    settings = forecast._settings(wh)
    frames = forecast.training_frames(wh, settings, lambda _: None)
    train, valid, test, span = frames.train, frames.valid, frames.backtest, frames.span
    to_min = int((span["split"]["valid_start"] - datetime(1970, 1, 1)).total_seconds() // 60)
    test_min = to_min + 7 * 1440
    assert train["target_t"].max() < to_min
    assert valid["target_t"].min() >= to_min and valid["target_t"].max() < test_min
    assert test["target_t"].min() > test_min and test["origin_t"].min() >= test_min - 15
    assert (train["origin_t"] < train["target_t"]).all()
    # Horizons stay on each sensor's cadence and within a week.
    assert (test.filter(pl.col("sensor_id") == "river|c")["horizon_min"] % 15 == 0).all()
    assert train["horizon_min"].max() <= 7 * 1440


def test_forecast_shape_and_status(trained: tuple[Warehouse, forecast.TrainResult]) -> None:
    wh, result = trained
    summary = forecast.forecast(wh, echo=lambda _: None)
    assert summary.run_id == result.run_id
    assert summary.forecast_sensors == 3
    assert summary.statuses.get("insufficient_history") == 1
    assert summary.statuses.get("ok", 0) + summary.statuses.get("fallback", 0) == 3
    with wh.reader() as con:
        rows = pl.from_arrow(
            con.sql(
                "select sensor_id, count(*) as n, min(horizon_min) as h0, max(horizon_min) as h1,"
                " bool_and(yhat_lo <= yhat and yhat <= yhat_hi) as ordered,"
                " count(yhat) as known from forecasts group by sensor_id order by sensor_id"
            ).to_arrow_table()
        )
        status = pl.from_arrow(
            con.sql("select * from forecast_status order by sensor_id").to_arrow_table()
        )
    assert rows.to_dicts() == [
        {"sensor_id": "farm|a", "n": 10080, "h0": 1, "h1": 10080, "ordered": True, "known": 10080},
        {"sensor_id": "farm|b", "n": 10080, "h0": 1, "h1": 10080, "ordered": True, "known": 10080},
        {"sensor_id": "river|c", "n": 672, "h0": 15, "h1": 10080, "ordered": True, "known": 672},
    ]
    new = status.filter(pl.col("sensor_id") == "farm|new").row(0, named=True)
    assert new["status"] == "insufficient_history" and new["steps"] == 0
    assert "need 48.0 h" in new["reason"]
    forecast_rows = status.filter(pl.col("status").is_in(["ok", "fallback"]))
    assert forecast_rows["steps"].to_list() == [10080, 10080, 672]
    assert new["method"] == "none"
    chosen = result.metrics and forecast.load_run(wh, result.run_id).meta["sensor_methods"]
    for row in forecast_rows.iter_rows(named=True):
        method = forecast.method_name(chosen[row["sensor_id"]]["pieces"])
        assert row["method"] == method
        assert row["status"] == ("ok" if method == "model" else "fallback")
        assert row["reason"].startswith("backtest MASE") and row["mase_scale"] > 0


def test_forecast_one_sensor_keeps_the_others(
    trained: tuple[Warehouse, forecast.TrainResult],
) -> None:
    wh, _ = trained
    forecast.forecast(wh, echo=lambda _: None)
    forecast.forecast(wh, sensor_ids=["farm|a"], horizon="1d", echo=lambda _: None)
    with wh.reader() as con:
        counts = dict(
            con.execute("select sensor_id, count(*) from forecasts group by sensor_id").fetchall()
        )
    assert counts == {"farm|a": 1440, "farm|b": 10080, "river|c": 672}
    with pytest.raises(OxyError, match="unknown sensor"):
        forecast.forecast(wh, sensor_ids=["nope"], echo=lambda _: None)


def test_artefact_round_trip_and_refusals(
    trained: tuple[Warehouse, forecast.TrainResult], tmp_path: Path
) -> None:
    wh, result = trained
    run = artifacts.load_run(wh, result.run_id)
    booster, meta = run
    assert meta["run_id"] == result.run_id
    x = np.random.default_rng(0).normal(size=(5, len(forecast.FEATURES)))
    again = artifacts.load_run(Path(result.path))
    np.testing.assert_array_equal(booster.predict(x), again.booster.predict(x))

    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(result.path, tampered)
    text = (tampered / "model.txt").read_text()
    (tampered / "model.txt").write_text(text.replace("learning_rate", "learning_rate ", 1))
    with pytest.raises(OxyError, match="model.txt does not match its sha256"):
        artifacts.load_run(tampered)

    renamed = tmp_path / "renamed"
    shutil.copytree(result.path, renamed)
    meta_changed = dict(meta, features=[*meta["features"][:-1], "sensor_id"])
    (renamed / "meta.json").write_text(json.dumps(meta_changed))
    manifest = json.loads((renamed / "manifest.json").read_text())
    manifest["meta.json"] = artifacts._sha256(renamed / "meta.json")
    (renamed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OxyError, match="meta.json features .* differ"):
        artifacts.load_run(renamed)
    assert artifacts.latest_run(wh) == result.run_id


def test_one_step_predictions_follow_readings(
    trained: tuple[Warehouse, forecast.TrainResult],
) -> None:
    wh, result = trained
    run = artifacts.load_run(wh, result.run_id)
    last = START + timedelta(days=21, hours=23, minutes=59)
    new = pl.DataFrame(
        {
            "sensor_id": ["farm|a", "farm|a", "river|c"],
            "ts": [
                last + timedelta(minutes=1),
                last + timedelta(minutes=2),
                last + timedelta(minutes=1),
            ],
            "value": [8.0, 8.1, 10.0],
        }
    )
    got = forecast.one_step_predictions(wh, run, new)
    assert got.columns == ["sensor_id", "ts", "yhat"]
    assert got.select("sensor_id", "ts").equals(
        new.select("sensor_id", "ts").cast({"ts": pl.Datetime("us")})
    )
    assert got["yhat"].is_not_null().all()
    # The one-step forecast of the next minute is the forecast mart's first step (when the run
    # serves farm|a with the model both ways), else the last reading (persistence).
    with wh.reader() as con:
        first = con.execute(
            "select yhat from forecasts where sensor_id = 'farm|a' and horizon_min = 1"
        ).fetchall()
        last_value = con.execute(
            "select value from readings where sensor_id = 'farm|a' order by ts desc limit 1"
        ).fetchall()[0][0]
    one_step = run.meta["one_step"]["sensors"]["farm|a"]
    served = run.meta["sensor_methods"]["farm|a"]["pieces"][0]
    if one_step == "persistence":
        assert got["yhat"][0] == pytest.approx(last_value, rel=1e-12)
    elif first and served == "model":
        assert got["yhat"][0] == pytest.approx(first[0][0], rel=1e-9)


def test_sensor_fault_status(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh", Config.load().with_overrides(FAST_FORECAST))
    grid = forecast.SeriesGrid.from_series(
        forecast.sensor_series(diurnal("x", 1, 3, level=8.0, seed=5).lazy())
    )
    faults = pl.DataFrame(
        {"sensor_id": ["x"], "readings": [60], "fault_readings": [45], "fault_type": ["stuck"]}
    )
    status = forecast.sensor_status(grid, faults, 2 * 1440, 0.5).row(0, named=True)
    assert status == {
        "sensor_id": "x",
        "status": "sensor_fault",
        "reason": "45 of 60 latest scored readings flagged 'stuck'",
    }
    assert wh.config["forecast"]["fault_types"]


def test_cli_train_and_forecast(tmp_path: Path) -> None:
    from cli import oxy

    config = tmp_path / "oxy.toml"
    config.write_text(
        "[forecast]\nlearning_rates = [0.1]\nnum_leaves = [7]\nnum_boost_round = 10\n"
        'min_data_in_leaf = 20\nbacktest_every = "3d"\nbacktest_step = "60m"\n'
    )
    wh = Warehouse(tmp_path / "wh", Config.load(config))
    load_readings(wh, diurnal("farm|a", 15, 22, level=8.0, seed=1))
    runner = CliRunner()
    base = ["--warehouse", str(tmp_path / "wh"), "--config", str(config)]
    trained = runner.invoke(oxy, [*base, "train"])
    assert trained.exit_code == 0, trained.output
    assert "naive (last day)" in trained.output and "MASE" in trained.output
    done = runner.invoke(oxy, [*base, "--json", "forecast", "--horizon", "1d"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["rows"] == 96
    bad = runner.invoke(oxy, [*base, "forecast", "--horizon", "soon"])
    assert bad.exit_code == 1 and "not a duration" in bad.output


def test_evaluate_run_reproduces_test_metrics(
    trained: tuple[Warehouse, forecast.TrainResult],
) -> None:
    wh, result = trained
    meta = artifacts.load_run(wh, result.run_id).meta
    window = (
        datetime.fromisoformat(meta["split"]["test_start"]),
        datetime.fromisoformat(meta["split"]["test_end"]),
    )
    again = forecast.evaluate_run(wh, result.run_id, window)
    for key in ("mae", "rmse", "mase"):
        assert again[key] == pytest.approx(meta["metrics"]["test"][key], rel=1e-9)


def test_model_runs_on_knots_and_interpolates_between() -> None:
    readings = diurnal("s", 1, 9, level=8.0, seed=6)
    grid = forecast.SeriesGrid.from_series(forecast.sensor_series(readings.lazy()))
    origin = int(grid.last_minute()[0])
    h = np.arange(1, 1441, dtype=np.int64)
    pairs = forecast._pairs_with_features(
        grid, np.zeros(len(h), np.int64), np.full(len(h), origin), h, {}, 15
    )
    seen: list[int] = []

    def linear(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return 2.0 * x[:, forecast.FEATURES.index("horizon_min")]

    ordered, z = forecast.predict_z(linear, pairs)
    assert seen == [60 + (1440 - 60) // 15]  # the first hour, then every 15 minutes
    np.testing.assert_allclose(z, 2.0 * ordered["horizon_min"].to_numpy())


def test_recent_faults_read_the_bucket_partition_after_since(tmp_path: Path) -> None:
    """The fault window ends at each sensor's last scored reading: a fault a month earlier
    does not count, and another bucket's sensors are not reported."""
    wh = Warehouse(tmp_path / "wh", Config.load())
    end = START + timedelta(days=40)
    minutes = [end - timedelta(minutes=m) for m in range(120)]

    def scores(sid: str, ts: list[datetime], flagged: int, kind: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "sensor_id": sid,
                "ts": ts,
                "is_anomaly": [i < flagged for i in range(len(ts))],
                "anomaly_type": [kind if i < flagged else "none" for i in range(len(ts))],
            }
        ).with_columns(pl.col("ts").cast(pl.Datetime("us")))

    parts = {
        # bucket 3: x stuck for its last 45 of 60 minutes; y fine lately, stuck a month ago
        ("03", "2024-04"): pl.concat(
            [scores("x", minutes, 45, "stuck"), scores("y", minutes, 0, "stuck")]
        ),
        ("03", "2024-03"): scores(
            "y", [START + timedelta(minutes=m) for m in range(90)], 90, "stuck"
        ),
        # bucket 5: z stuck, but it is not the bucket asked for
        ("05", "2024-04"): scores("z", minutes, 120, "stuck"),
    }
    with wh.writer() as con:
        for (bucket, month), frame in parts.items():
            con.register("rows", frame.to_arrow())
            wh.write_mart(
                con,
                "anomaly_scores",
                "select * from rows",
                partition=f"bucket={bucket}/month={month}",
            )
            con.unregister("rows")
        wh.refresh_mart_views(con)
    grid = forecast.SeriesGrid.from_series(
        forecast.sensor_series(
            pl.DataFrame({"sensor_id": ["x", "y"], "ts": [end, end], "value": [8.0, 8.0]})
            .with_columns(pl.col("ts").cast(pl.Datetime("us")))
            .lazy()
        )
    )
    with wh.reader() as con:
        faults = forecast.recent_faults(con, 3, grid, wh.config["forecast"])
    got = {r["sensor_id"]: r for r in faults.to_dicts()}
    assert set(got) == {"x", "y"}
    assert (got["x"]["readings"], got["x"]["fault_readings"], got["x"]["fault_type"]) == (
        60,
        45,
        "stuck",
    )
    assert (got["y"]["readings"], got["y"]["fault_readings"]) == (60, 0)
    status = forecast.sensor_status(grid, faults, 0, 0.5)
    assert dict(status.select("sensor_id", "status").iter_rows()) == {
        "x": "sensor_fault",
        "y": "ok",
    }


def test_lean_pairs_predict_what_full_pairs_predict() -> None:
    """The forecast path builds full pairs only on the model's knots (``_forecast_pairs``) and
    skips the re-sort (``grouped``): same baselines, scales, z and readings as the full, sorted
    path, on sensors of 1- and 15-minute cadence with a gap."""
    readings = pl.concat(
        [
            diurnal("s|b", 1, 9, level=8.0, seed=7),
            diurnal("s|a", 15, 9, level=9.0, seed=8),
            diurnal("s|c", 1, 9, level=7.0, seed=9),
        ]
    )
    grid = forecast.SeriesGrid.from_series(forecast.sensor_series(readings.lazy()))
    last = grid.last_minute()
    pos = np.concatenate(
        [np.full(len(range(c, 1441, c)), p) for p, c in enumerate(grid.cadence.tolist())]
    ).astype(np.int64)
    h = np.concatenate([np.arange(c, 1441, c) for c in grid.cadence.tolist()]).astype(np.int64)

    def model(x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(x).sum(axis=1) / 100.0

    zones = {"s|a": "America/Denver"}
    lean, features = forecast._forecast_pairs(grid, pos, last[pos], h, zones, 15)
    full = forecast._pairs_with_features(grid, pos, last[pos], h, zones, 15)
    lean_pairs, lean_z = forecast.predict_z(model, lean, grouped=True, knot_features=features)
    full_pairs, full_z = forecast.predict_z(model, full)
    keys = ["sensor_id", "origin_t", "horizon_min", "baseline", "scale", "knot"]
    assert lean_pairs.select(keys).equals(full_pairs.select(keys))
    np.testing.assert_allclose(lean_z, full_z, rtol=0, atol=0)
    assert features.height == lean_pairs["knot"].sum() < lean_pairs.height
    assert "lag_60m" not in lean_pairs.columns  # no feature lookups between knots


# -- intervals, fallback, promotion, one step ----------------------------------------------


def _noisy_sensors(cadence: int, days: int, scale: float, seed: int) -> pl.DataFrame:
    """24 sensors: the same diel signal, white noise of sd 0.1 (``quiet|k``) or 0.5
    (``noisy|k``), all x ``scale``."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, days * 1440, cadence)
    ts = pl.Series([START + timedelta(minutes=int(m)) for m in t]).cast(pl.Datetime("us"))
    signal = 8 + 1.5 * np.sin(2 * np.pi * t / 1440)
    frames = []
    for k in range(12):
        for kind, sd in (("quiet", 0.1), ("noisy", 0.5)):
            frames.append(
                pl.DataFrame(
                    {
                        "sensor_id": f"{kind}|{k}",
                        "ts": ts,
                        "value": scale * (signal + rng.normal(0, sd, len(t))),
                        "signal": scale * signal,
                    }
                )
            )
    return pl.concat(frames)


@settings(max_examples=10, deadline=None)
@given(
    cadence=st.sampled_from([1, 5, 15, 30]),
    scale=st.floats(min_value=0.01, max_value=100.0),
    seed=st.integers(0, 1000),
)
def test_intervals_cover_nominally_per_sensor(cadence: int, scale: float, seed: int) -> None:
    """Calibrated on one stretch of origins, an 80 % interval around the true signal covers
    80 % +- 3 % of the readings of later origins, for quiet and noisy sensors alike (noise
    sd five-fold apart: each interval is scaled by its sensor's recent volatility), at any
    cadence and unit scale."""
    readings = _noisy_sensors(cadence, 28, scale, seed)
    grid = forecast.SeriesGrid.from_series(forecast.sensor_series(readings.lazy()))
    signal_of = {
        sid: (int(part["ts"].dt.epoch("s").min() // 60), part["signal"].to_numpy())
        for (sid,), part in readings.group_by("sensor_id")
    }
    rng = np.random.default_rng(seed)
    t0 = int(grid.start[0])
    quiet = np.array([s.startswith("quiet") for s in grid.sensor_ids])

    def pairs(first_day: int, last_day: int, n: int) -> tuple[np.ndarray, ...]:
        pos = rng.integers(0, len(grid.sensor_ids), n)
        origin = t0 + rng.integers(first_day * 1440, last_day * 1440, n) // cadence * cadence
        h = forecast.steps_up(rng.integers(1, 5 * 1440, n), cadence)
        base = forecast.pair_base(grid, pos, origin, h)
        actual = grid.at("value", pos, origin + h)
        signal = np.empty(n)
        for i, (p, target) in enumerate(zip(pos, origin + h, strict=True)):
            start, values = signal_of[grid.sensor_ids[p]]
            signal[i] = values[(target - start) // cadence]
        return pos, h, base["vol"].to_numpy(), actual, signal

    _, h, vol, actual, signal = pairs(8, 15, 30_000)
    table = forecast.conformal_intervals(actual, signal, vol, h, 0.8)
    pos, h, vol, actual, signal = pairs(15, 22, 20_000)
    lo, hi = forecast.interval_bounds(signal, vol, h, table)
    inside = (actual >= lo) & (actual <= hi)
    for name, group in (("quiet", quiet[pos]), ("noisy", ~quiet[pos])):
        assert abs(inside[group].mean() - 0.8) <= 0.03, (name, table)


def _weekly_and_trend(days: int) -> pl.DataFrame:
    """``weekly``: one random week repeated exactly; ``trend``: a diel cycle, a trend and
    white noise."""
    rng = np.random.default_rng(5)
    t = np.arange(0, days * 1440, 5)
    week = 8 + np.cumsum(rng.normal(0, 0.05, 7 * 1440 // 5))
    weekly = week[(t // 5) % len(week)]
    trend = 8 + 1.5 * np.sin(2 * np.pi * t / 1440) + 0.05 * t / 1440 + rng.normal(0, 0.2, len(t))
    ts = [START + timedelta(minutes=int(m)) for m in t]
    return pl.concat(
        [
            pl.DataFrame({"sensor_id": "weekly", "ts": ts, "value": weekly}),
            pl.DataFrame({"sensor_id": "trend", "ts": ts, "value": trend}),
        ]
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


STRONGER = {"forecast": {**FAST_FORECAST["forecast"], "num_boost_round": 120, "num_leaves": [15]}}


def test_fallback_for_weekly_repetition_not_for_diel_trend(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh", Config.load().with_overrides(STRONGER))
    readings = _weekly_and_trend(35)
    load_readings(wh, readings)
    result = forecast.train(wh, echo=lambda _: None)
    methods = forecast.load_run(wh, result.run_id).meta["sensor_methods"]
    assert methods["weekly"]["pieces"][-1] == "naive_week"  # the week ahead repeats the last
    assert set(methods["trend"]["pieces"]) == {"model"}
    forecast.forecast(wh, echo=lambda _: None)
    with wh.reader() as con:
        status = {
            r[0]: r[1:]
            for r in con.execute(
                "select sensor_id, status, method, reason from forecast_status"
            ).fetchall()
        }
        week_ahead = pl.from_arrow(
            con.sql(
                "select f.ts, f.yhat, r.value as week_before from forecasts f join readings r "
                "on r.sensor_id = f.sensor_id and r.ts = f.ts - interval 7 days "
                "where f.sensor_id = 'weekly' and f.horizon_min > 1440"
            ).to_arrow_table()
        )
    assert status["trend"][:2] == ("ok", "model")
    assert status["weekly"][0] == "fallback" and status["weekly"][1].endswith("naive_week")
    assert "-> naive (last week)" in status["weekly"][2]
    assert isinstance(week_ahead, pl.DataFrame) and week_ahead.height > 1000
    np.testing.assert_allclose(week_ahead["yhat"], week_ahead["week_before"], rtol=0, atol=1e-12)


def test_promotion_refused_for_a_run_that_loses_to_naive(tmp_path: Path) -> None:
    """Pure weekly repetition: repeating the last week is exact, the model is not; the run is
    recorded but not promoted, and `oxy train` prints why."""
    from cli import oxy
    from engine.registry import list_runs, production_run

    wh = Warehouse(tmp_path / "wh", Config.load().with_overrides(FAST_FORECAST))
    load_readings(wh, _weekly_and_trend(30).filter(pl.col("sensor_id") == "weekly"))
    config = tmp_path / "oxy.toml"
    config.write_text(
        "[forecast]\nlearning_rates = [0.1]\nnum_leaves = [7]\nnum_boost_round = 30\n"
        'min_data_in_leaf = 20\nbacktest_every = "3d"\nbacktest_step = "30m"\n'
    )
    out = CliRunner().invoke(oxy, ["--warehouse", str(wh.root), "--config", str(config), "train"])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("registry: "))
    assert line.startswith("registry: not promoted: test MASE ")
    assert "worse than the better seasonal naive (repeat the last week)" in line
    assert production_run(wh) is None
    (run,) = list_runs(wh)
    assert not run["promoted"] and run["reason"] == line.removeprefix("registry: ")


def test_one_step_never_worse_than_persistence_on_a_random_walk(tmp_path: Path) -> None:
    """On a random walk the previous reading is the best one-step prediction: oxy's one-step
    predictions of new readings are at least as good (within 2 %) at 1- and 15-minute
    cadence."""
    rng = np.random.default_rng(11)
    frames = []
    for sid, cadence in (("walk|1", 1), ("walk|15", 15)):
        t = np.arange(0, 24 * 1440, cadence)
        value = 8 + np.cumsum(rng.normal(0, 0.05, len(t)))
        frames.append(
            pl.DataFrame(
                {
                    "sensor_id": sid,
                    "ts": [START + timedelta(minutes=int(m)) for m in t],
                    "value": value,
                }
            )
        )
    readings = pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    cut = START + timedelta(days=22)
    wh = Warehouse(tmp_path / "wh", Config.load().with_overrides(FAST_FORECAST))
    load_readings(wh, readings.filter(pl.col("ts") < cut))
    result = forecast.train(wh, echo=lambda _: None)
    run = artifacts.load_run(wh, result.run_id)
    new = readings.filter(pl.col("ts") >= cut)
    got = forecast.one_step_predictions(wh, run, new).join(new, on=["sensor_id", "ts"])
    got = got.sort("sensor_id", "ts").with_columns(
        pl.col("value").shift(1).over("sensor_id").alias("previous")
    )
    got = got.drop_nulls()
    for (sid,), part in got.group_by("sensor_id"):
        ours = (part["value"] - part["yhat"]).abs().mean()
        persistence = (part["value"] - part["previous"]).abs().mean()
        assert ours <= persistence * 1.02, (sid, ours, persistence, run.meta["one_step"])
