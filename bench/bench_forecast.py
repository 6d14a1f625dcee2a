"""Forecasting benchmark: oxy beside the seasonal naives, StatsForecast and mlforecast.

Every source is a list of canonical readings (``sensor_id, ts, value``). Each sensor is
forecast from several origins a week apart (``--origins``, default 4): its last week held out,
forecast from its last reading before it; then the week before that, from the readings before
it (the later readings dropped); and so on. Every method is refitted per origin on what came
before it and forecasts the same week from the same origin. Methods, one run:

* ``naive_day`` / ``naive_week`` -- repeat the last day / the last week;
* ``mstl`` -- StatsForecast MSTL (daily + weekly seasonality, AutoETS trend) and ``autoets``
  -- StatsForecast AutoETS (daily season), both on 15-minute series: the sensor's own
  readings when its cadence is 15 minutes, else 15-minute means (minute data is too long
  for them), the last 28 days; their forecast is interpolated to each held-out reading;
* ``mlforecast`` -- mlforecast's LightGBM on the same 15-minute series (whole history):
  lags 1-4 steps, 1 day and 1 week, rolling means of them, calendar, seasonal (1-day)
  target differencing, recursive prediction;
* ``oxy`` -- a fresh warehouse with the history, ``oxy score``, ``oxy train`` (config
  defaults), ``oxy forecast``: the forecasts mart.

Printed per source and method: MASE (``engine.metrics``: MAE / the sensor's daily-naive
error over the 7 days before the origin, mean over sensors and origins) for the first hour,
first day and week, 80 % interval coverage in the same buckets, and wall time (fit +
forecast). The table goes to bench/RESULTS.md (section ``forecast``). Then oxy's speed on the
100 sensors x 90 days demo: training wall time and peak RSS (child process), ``oxy forecast``
and its in-memory part.

Sources: ``demo`` (the project's generator, seed 11: not a tuning seed), ``lro`` (the six
Logan River site-years in ../shared/data/lro, 15-min, raw ``do`` with zeros and values above
25 mg/L dropped as faults, as NOTES.md says), ``semi`` (the detection suite's semi/lro-do_cor:
the corrected LRO series with bench/inject.py's anomalies, held out from the detector's tuning;
its other semi-synthetic backgrounds are shorter than two weeks). Other canonical frames plug
in through :func:`run`.

    .venv/bin/python bench/bench_forecast.py               # demo 20x90, LRO, semi; speed 100x90
    .venv/bin/python bench/bench_forecast.py --quick       # demo 10x35, LRO, semi 1 seed; 1 origin
    .venv/bin/python bench/bench_forecast.py --only-speed  # the speed part alone
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from bench.results import write_section  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.metrics import mase, mase_scale  # noqa: E402
from engine.warehouse import Warehouse, canonical_readings  # noqa: E402

LRO = ROOT.parent / "shared" / "data" / "lro"
LAKES = ROOT.parent / "shared" / "data" / "lake_mendota"
HOLDOUT_DAYS = 7
BUCKETS = (("first hour", 60), ("first day", 1440), ("week", 7 * 1440))
PEER_STEP = 15  # minutes: the peers' series
PEER_DAYS = 28  # days of history StatsForecast gets
LEVEL = 80
ORIGINS = 4  # origins per sensor: its last week held out, then the week before it, ...
METHODS = ("naive_day", "naive_week", "mstl", "autoets", "mlforecast", "oxy")


@dataclass
class Source:
    """Canonical readings of one benchmark source (``sensor_id, ts, value`` at least; a
    ``labelled`` column marks readings inside a labelled anomaly, see :func:`mark_labelled`)."""

    name: str
    readings: pl.DataFrame
    timezone: str = "UTC"
    unit: str = "mg/L"
    note: str = ""


def mark_labelled(readings: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """``readings`` with ``labelled``: inside a label's ``[start, end]`` of its sensor.

    Every method still sees a labelled reading in its history (a sensor's faults are part of
    what a forecaster must live with); no labelled reading is scored or enters the MASE scale:
    an injected spike or sentinel is no oxygen a forecast could have known.
    """
    readings = readings.sort("sensor_id", "ts")
    flags = []
    by_sensor = {str(k[0]): g for k, g in labels.group_by("sensor_id")}
    for (sid,), part in readings.group_by("sensor_id", maintain_order=True):
        t = part["ts"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
        depth = np.zeros(len(t) + 1, dtype=np.int64)
        got = by_sensor.get(str(sid))
        if got is not None:
            starts = got["start"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
            ends = got["end"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
            np.add.at(depth, np.searchsorted(t, starts, "left"), 1)
            np.add.at(depth, np.searchsorted(t, ends, "right"), -1)
        flags.append(np.cumsum(depth[:-1]) > 0)
    return readings.with_columns(pl.Series("labelled", np.concatenate(flags)))


@dataclass
class Outcome:
    """One method on one source: predictions at the held-out readings, and wall time."""

    predictions: pl.DataFrame  # sensor_id, ts, yhat, yhat_lo, yhat_hi
    seconds: float
    note: str = ""
    extra: dict = field(default_factory=dict)


# -- sources ----------------------------------------------------------------------------


def demo_source(sensors_per_site: int, days: int, seed: int) -> Source:
    from engine.demo import simulate

    # The last held-out week and the week before it hold no injected anomaly: a sensor whose
    # history ends inside an injected fault would get no oxy forecast (status sensor_fault).
    # Earlier origins' weeks may: their labelled readings are not scored (mark_labelled).
    demo = simulate(
        sensors_per_site=sensors_per_site, days=days, seed=seed, clean_days=2 * HOLDOUT_DAYS
    )
    zones = dict(demo.sensors.select("sensor_id", "timezone").iter_rows())
    readings = mark_labelled(demo.readings.select("sensor_id", "ts", "value", "unit"), demo.labels)
    label = f"demo seed {seed}, {demo.sensors.height} sensors x {days} d, 1-min"
    source = Source(label, readings, note="the project's generator (a seed not tuned on)")
    source.timezone = json.dumps(zones)  # per-sensor zones, see _zones()
    return source


def lro_source(data: Path = LRO) -> Source | None:
    if not data.is_dir():
        print(f"no LRO data at {data}: skipped")
        return None
    frames = []
    for path in sorted(data.glob("*20[0-9][0-9].csv")):
        raw = pl.read_csv(path, infer_schema=False, null_values=["NULL", ""])
        site, year = path.stem[:-4], path.stem[-4:]
        frames.append(
            raw.select(
                pl.lit(f"lro|{site}|{year}").alias("sensor_id"),
                (pl.col("datetime").str.to_datetime(time_unit="us") + timedelta(hours=7)).alias(
                    "ts"
                ),
                pl.col("do").cast(pl.Float64).alias("value"),
                pl.col("do_qual").is_not_null().alias("labelled"),
            ).filter(pl.col("value").is_not_null() & (pl.col("value") > 0) & (pl.col("value") < 25))
        )
    readings = pl.concat(frames).unique(["sensor_id", "ts"], keep="first").sort("sensor_id", "ts")
    return Source(
        "LRO, 6 site-years, 15-min",
        readings,
        timezone="Etc/GMT+7",
        note="real river DO, raw do (zeros, > 25 mg/L dropped; readings with a technician's "
        "do_qual not scored)",
    )


def semi_source(data: Path = LRO, seeds: Sequence[int] = (1, 2, 3)) -> Source | None:
    """The detection benchmark's semi/lro-do_cor source (``bench/sources.py``, the same seeds as
    its full run): the technicians' corrected LRO series where they left no qualifier, with
    bench/inject.py's anomalies; one sensor per site and seed. The other semi-synthetic
    backgrounds are too short for a held-out week (see :func:`lake_note`)."""
    if not data.is_dir():
        print(f"no LRO data at {data}: semi-synthetic source skipped")
        return None
    from bench.sources import lro_background_parts, semi_readings

    parts = semi_readings("semi-lro", lro_background_parts(data), list(seeds))
    readings = pl.concat([frame.select("sensor_id", "ts", "value") for _, frame, _ in parts])
    readings = mark_labelled(readings, pl.concat([labels for _, _, labels in parts]))
    # what oxy's ingest quarantines (sentinels, outside the plausible mg/L range) reaches no
    # method: a practitioner cleans that before fitting a peer too
    ingest = Config.load()["ingest"]
    lo, hi = ingest["mg/L"]["min"], ingest["mg/L"]["max"]
    readings = readings.filter(
        pl.col("value").is_between(lo, hi) & ~pl.col("value").is_in(ingest["sentinels"])
    )
    return Source(
        f"semi/lro-do_cor, {readings['sensor_id'].n_unique()} series, 15-min",
        readings.sort("sensor_id", "ts"),
        timezone="Etc/GMT+7",
        note="LRO do_cor with injected anomalies (detection suite, held out there), seeds "
        + ",".join(map(str, seeds))
        + "; labelled readings not scored, what ingest quarantines dropped",
    )


def lake_note() -> str:
    if not LAKES.is_dir():
        return "lake_mendota: not present"
    return (
        "Too short for a held-out week after a week of history, so not forecast: lake_mendota "
        "(Mendota 7 days at 1 min, Sparkling and Trout Bog 9 days at 10 min) and the fish pond "
        "(40 h), and with them the detection suite's semi-synthetic sources on those backgrounds"
    )


def _zones(source: Source, sensor_ids: Sequence[str]) -> dict[str, str]:
    if source.timezone.startswith("{"):
        zones = json.loads(source.timezone)
        return {s: zones.get(s, "UTC") for s in sensor_ids}
    return {s: source.timezone for s in sensor_ids}


# -- the split --------------------------------------------------------------------------


def holdout(
    readings: pl.DataFrame, days: int = HOLDOUT_DAYS, back: int = 0
) -> tuple[pl.DataFrame, ...]:
    """``(history, future, origins)``: each sensor's last ``days`` held out; the origin is its
    last reading before them. ``back``: the same, ``back`` x ``days`` earlier (the readings after
    that week are dropped: no method sees them). Both frames carry ``labelled``."""
    labelled = pl.col("labelled") if "labelled" in readings.columns else pl.lit(False)
    frame = readings.select(
        "sensor_id", pl.col("ts").cast(pl.Datetime("us")), "value", labelled.alias("labelled")
    )
    frame = frame.drop_nulls().sort("sensor_id", "ts")
    if back:
        end = frame.group_by("sensor_id").agg(
            (pl.col("ts").max() - timedelta(days=back * days)).alias("end")
        )
        frame = frame.join(end, on="sensor_id").filter(pl.col("ts") <= pl.col("end")).drop("end")
    cut = frame.group_by("sensor_id").agg((pl.col("ts").max() - timedelta(days=days)).alias("cut"))
    frame = frame.join(cut, on="sensor_id")
    history = frame.filter(pl.col("ts") <= pl.col("cut")).drop("cut")
    origins = history.group_by("sensor_id").agg(pl.col("ts").max().alias("origin"))
    future = (
        frame.filter(pl.col("ts") > pl.col("cut"))
        .drop("cut")
        .join(origins, on="sensor_id")
        .with_columns(((pl.col("ts") - pl.col("origin")).dt.total_minutes()).alias("horizon_min"))
        .filter(pl.col("horizon_min") <= days * 1440)
    )
    return history, future, origins


def _minutes(ts: pl.Series) -> np.ndarray:
    return (ts.dt.epoch("s") // 60).to_numpy()


def scales(history: pl.DataFrame, origins: pl.DataFrame) -> dict[str, float]:
    """Each sensor's MASE scale (engine.metrics) from the readings up to its origin (labelled
    readings are missing values there)."""
    out = {}
    for (sid,), part in history.group_by("sensor_id"):
        origin = int(_minutes(origins.filter(pl.col("sensor_id") == sid)["origin"])[0])
        values = part.select(
            pl.when(pl.col("labelled")).then(None).otherwise(pl.col("value")).fill_null(np.nan)
        ).to_series()
        out[str(sid)] = mase_scale(_minutes(part["ts"]), values.to_numpy(), origin + 1)
    return out


# -- methods ----------------------------------------------------------------------------


def naive(history: pl.DataFrame, future: pl.DataFrame, period_min: int) -> Outcome:
    """Repeat the last ``period_min`` before the origin (nearest reading within 30 min)."""
    started = time.perf_counter()
    back = future.with_columns(
        (
            pl.col("ts")
            - pl.duration(
                minutes=((pl.col("horizon_min") + period_min - 1) // period_min) * period_min
            )
        ).alias("lookup")
    ).sort("lookup")
    hist = history.sort("ts").rename({"ts": "lookup", "value": "yhat"})
    joined = back.join_asof(
        hist,
        on="lookup",
        by="sensor_id",
        strategy="nearest",
        tolerance=timedelta(minutes=30),
        check_sortedness=False,  # sorted by lookup above; polars cannot check it per group
    )
    predictions = joined.select(
        "sensor_id",
        "ts",
        "yhat",
        pl.lit(None, pl.Float64).alias("yhat_lo"),
        pl.lit(None, pl.Float64).alias("yhat_hi"),
    )
    return Outcome(predictions, time.perf_counter() - started)


def peer_series(history: pl.DataFrame, days: int | None) -> tuple[pl.DataFrame, dict[str, int]]:
    """15-minute series (``unique_id, ds, y``; gaps interpolated) and each sensor's offset of
    a 15-minute value's centre from its label (minutes)."""
    frames, offset = [], {}
    for (sid,), part in history.group_by("sensor_id"):
        part = part.sort("ts")
        cadence = int(np.median(np.diff(_minutes(part["ts"])))) if part.height > 1 else 1
        if days is not None:
            part = part.filter(pl.col("ts") > part["ts"].max() - timedelta(days=days))
        binned = (
            part.group_by_dynamic("ts", every=f"{PEER_STEP}m")
            .agg(pl.col("value").mean())
            .rename({"ts": "ds", "value": "y"})
        )
        full = pl.DataFrame(
            {
                "ds": pl.datetime_range(
                    binned["ds"].min(), binned["ds"].max(), f"{PEER_STEP}m", eager=True
                )
            }
        ).join(binned, on="ds", how="left")
        full = full.with_columns(pl.col("y").interpolate().forward_fill().backward_fill())
        frames.append(full.with_columns(pl.lit(str(sid)).alias("unique_id")))
        offset[str(sid)] = (PEER_STEP - min(cadence, PEER_STEP)) // 2
    return pl.concat(frames).select("unique_id", "ds", "y"), offset


def at_readings(
    forecast: pl.DataFrame, future: pl.DataFrame, offset: Mapping[str, int], column: str
) -> pl.DataFrame:
    """A 15-minute forecast (``unique_id, ds, <column>[-lo-80, -hi-80]``) interpolated in time
    at every held-out reading."""
    lo, hi = f"{column}-lo-{LEVEL}", f"{column}-hi-{LEVEL}"
    parts = []
    for (sid,), want in future.group_by("sensor_id"):
        got = forecast.filter(pl.col("unique_id") == sid).sort("ds")
        x = _minutes(got["ds"].cast(pl.Datetime("us"))) + offset[str(sid)]
        t = _minutes(want["ts"])
        cols = {"sensor_id": want["sensor_id"], "ts": want["ts"]}
        for name, src in (("yhat", column), ("yhat_lo", lo), ("yhat_hi", hi)):
            if src in got.columns:
                cols[name] = np.interp(t, x, got[src].to_numpy().astype(float))
            else:
                cols[name] = np.full(len(t), np.nan)
        parts.append(pl.DataFrame(cols))
    return pl.concat(parts).with_columns(pl.col("yhat_lo", "yhat_hi").fill_nan(None))


def statsforecast_peer(history: pl.DataFrame, future: pl.DataFrame, which: str) -> Outcome:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    started = time.perf_counter()
    series, offset = peer_series(history, PEER_DAYS)
    day, week = 1440 // PEER_STEP, 7 * 1440 // PEER_STEP
    model = MSTL(season_length=[day, week]) if which == "mstl" else AutoETS(season_length=day)
    sf = StatsForecast(models=[model], freq=f"{PEER_STEP}min", n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = sf.forecast(df=series.to_pandas(), h=week, level=[LEVEL])
    name = "MSTL" if which == "mstl" else "AutoETS"
    frame = pl.from_pandas(predicted.reset_index(drop="unique_id" not in predicted.columns))
    outcome = at_readings(frame, future, offset, name)
    return Outcome(outcome, time.perf_counter() - started)


def mlforecast_peer(history: pl.DataFrame, future: pl.DataFrame) -> Outcome:
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.target_transforms import Differences
    from mlforecast.utils import PredictionIntervals

    started = time.perf_counter()
    series, offset = peer_series(history, None)
    day, week = 1440 // PEER_STEP, 7 * 1440 // PEER_STEP
    model = MLForecast(
        models={
            "mlforecast": lgb.LGBMRegressor(
                n_estimators=300, learning_rate=0.05, num_leaves=63, verbose=-1, n_jobs=2
            )
        },
        freq=f"{PEER_STEP}min",
        lags=[1, 2, 3, 4, day, 2 * day, week],
        lag_transforms={
            1: [RollingMean(window_size=4), RollingMean(window_size=day)],
            day: [RollingMean(window_size=4)],
            week: [RollingMean(window_size=4)],
        },
        date_features=["hour", "dayofweek"],
        target_transforms=[Differences([day])],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(
            series.to_pandas(),
            static_features=[],
            prediction_intervals=PredictionIntervals(n_windows=2, h=week),
        )
        predicted = model.predict(h=week, level=[LEVEL])
    outcome = at_readings(pl.from_pandas(predicted), future, offset, "mlforecast")
    return Outcome(outcome, time.perf_counter() - started)


def load_warehouse(wh: Warehouse, readings: pl.DataFrame, zones: Mapping[str, str], unit: str):
    """Put canonical readings into a fresh lake (one batch per time zone and unit), as ingest
    would; ``unit`` where the readings carry none."""
    if "unit" not in readings.columns:
        readings = readings.with_columns(pl.lit(unit).alias("unit"))
    frame = readings.with_columns(
        pl.lit("bench").alias("customer"),
        pl.lit("bench.csv").alias("source_file"),
        pl.lit(datetime(2024, 1, 1)).alias("ingested_at"),
        pl.col("sensor_id").replace_strict(dict(zones), return_dtype=pl.String).alias("_tz"),
    )
    for (tz, part_unit), part in frame.group_by("_tz", "unit"):
        batch = canonical_readings(part)  # the optional columns it lacks are null
        with wh.writer() as con:
            wh.register_sensors(
                con,
                [
                    {
                        "sensor_id": sid,
                        "customer": "bench",
                        "source": "bench",
                        "timezone": tz,
                        "unit": part_unit,
                        "levels": sid.split("|"),
                    }
                    for sid in part["sensor_id"].unique().sort().to_list()
                ],
            )
            con.register("batch_readings", batch)
            con.execute("begin")
            batch_id = f"bench-{str(tz).replace('/', '_')}-{str(part_unit).replace('/', '')}"
            wh.publish(con, wh.stage_readings(con, batch_id.replace("%", "pct")))
            con.execute("commit")
            con.unregister("batch_readings")


def oxy_method(source: Source, history: pl.DataFrame, future: pl.DataFrame) -> Outcome:
    from engine import anomaly, forecast

    tmp = Path(tempfile.mkdtemp(prefix="bench_forecast_"))
    try:
        wh = Warehouse(tmp / "warehouse", Config.load())
        zones = _zones(source, history["sensor_id"].unique().to_list())
        if "unit" in source.readings.columns:  # each sensor's own unit
            units = source.readings.select("sensor_id", "unit").unique("sensor_id")
            history = history.join(units, on="sensor_id", how="left")
        load_warehouse(wh, history, zones, source.unit)
        anomaly.score(wh)
        started = time.perf_counter()
        result = forecast.train(wh, echo=lambda _: None)
        trained = time.perf_counter() - started
        summary = forecast.forecast(wh, echo=lambda _: None)
        seconds = time.perf_counter() - started
        with wh.reader() as con:
            rows = pl.from_arrow(
                con.sql(
                    "select sensor_id, ts, yhat, yhat_lo, yhat_hi from forecasts"
                ).to_arrow_table()
            )
            status = pl.from_arrow(con.sql("select * from forecast_status").to_arrow_table())
        assert isinstance(rows, pl.DataFrame) and isinstance(status, pl.DataFrame)
        predictions = future.select("sensor_id", "ts").join(
            rows.with_columns(pl.col("ts").cast(pl.Datetime("us"))),
            on=["sensor_id", "ts"],
            how="left",
        )
        by = "method" if "method" in status.columns else "status"
        methods = dict(status.group_by(by).len().iter_rows())
        note = f"train {trained:.1f} s; per-sensor method {methods}"
        test = result.metrics["test"]
        extra = {
            "decision": (result.decision or {}).get("reason", ""),
            "backtest": {k: test.get(k) for k in ("mase", "naive_day_mase", "naive_week_mase")},
            "statuses": summary.statuses,
            "one_step": one_step(wh, history, future),
        }
        return Outcome(predictions, seconds, note, extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def one_step(wh: Warehouse, history: pl.DataFrame, future: pl.DataFrame) -> list[dict]:
    """``oxy infer``'s one-step predictions of the held-out readings (as if they arrived as new
    readings, :func:`engine.forecast.one_step_predictions` with the run ``oxy infer`` uses) and
    persistence (the previous reading) beside them: per sensor, both MAEs and the count."""
    from engine import forecast

    run = forecast.load_run(wh, forecast.model_run(wh))
    new = future.select("sensor_id", "ts", "value")
    predicted = forecast.one_step_predictions(wh, run, new)
    last = history.sort("ts").group_by("sensor_id").agg(pl.col("ts", "value").last())
    series = pl.concat([last.select(new.columns), new]).sort("sensor_id", "ts")
    persistence = series.with_columns(
        pl.col("value").shift(1).over("sensor_id").alias("persistence")
    )
    rows = (
        new.join(predicted, on=["sensor_id", "ts"], how="left")
        .join(persistence.select("sensor_id", "ts", "persistence"), on=["sensor_id", "ts"])
        .filter(pl.col("yhat").is_not_null() & pl.col("persistence").is_not_null())
    )
    return (
        rows.group_by("sensor_id")
        .agg(
            (pl.col("value") - pl.col("yhat")).abs().mean().alias("mae"),
            (pl.col("value") - pl.col("persistence")).abs().mean().alias("persistence_mae"),
            pl.len().alias("n"),
        )
        .sort("sensor_id")
        .to_dicts()
    )


def one_step_summary(per_sensor: Sequence[dict]) -> str:
    """One line: the one-step MAE over persistence's, per (sensor, origin)."""
    ratios = [r["mae"] / r["persistence_mae"] for r in per_sensor if r["persistence_mae"] > 0]
    if not ratios:
        return "no one-step predictions"
    worse = sum(ratio > 1.01 for ratio in ratios)
    return (
        f"one-step MAE / persistence MAE: median {np.median(ratios):.3f}, mean "
        f"{np.mean(ratios):.3f} over {len(ratios)} sensor-origins, more than 1 % worse on {worse}"
    )


# -- scoring ----------------------------------------------------------------------------


def score(
    predictions: pl.DataFrame, future: pl.DataFrame, scale: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """Per horizon bucket: MASE (mean over sensors) and 80 % interval coverage."""
    joined = future.join(predictions, on=["sensor_id", "ts"], how="left")
    out = {}
    for name, upper in BUCKETS:
        part = joined.filter(pl.col("horizon_min") <= upper)
        per_sensor = []
        for (sid,), rows in part.group_by("sensor_id"):
            err = (rows["value"] - rows["yhat"]).abs().to_numpy().astype(float)
            per_sensor.append(mase(err, scale.get(str(sid), math.nan)))
        with_interval = part.filter(pl.col("yhat_lo").is_not_null())
        coverage = (
            with_interval.select(
                pl.col("value").is_between(pl.col("yhat_lo"), pl.col("yhat_hi")).mean()
            ).item()
            if with_interval.height
            else math.nan
        )
        missing = part["yhat"].is_null().sum() + part["yhat"].is_nan().sum()
        out[name] = {
            "mase": float(np.nanmean(per_sensor)) if per_sensor else math.nan,
            "coverage": float(coverage),
            "missing": int(missing),
            "readings": part.height,
        }
    return out


def _tagged(frame: pl.DataFrame, back: int) -> pl.DataFrame:
    """Sensor ids tagged with their origin (``<id>@<back>``) for pooled scoring: a sensor's
    windows of different origins do not overlap, but its MASE is one per origin."""
    return frame.with_columns((pl.col("sensor_id") + f"@{back}").alias("sensor_id"))


def run(
    sources: Sequence[Source],
    methods: Sequence[str] = METHODS,
    origins: int = ORIGINS,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Every method on every source from ``origins`` origins per sensor (its last week held
    out, then the week before it ...); returns one row per (source, method), pooled over the
    origins: MASE the mean over (sensor, origin), coverage over every held-out reading."""
    rows = []
    for source in sources:
        futures, scale = [], {}
        predictions: dict[str, list[pl.DataFrame]] = {}
        seconds: dict[str, float] = {}
        notes: dict[str, list[str]] = {}
        extras: dict[str, list[dict]] = {}
        left_out = 0
        for back in range(origins):
            marked, future, first = holdout(source.readings, back=back)
            history = marked.drop("labelled")
            future = future.filter(~pl.col("labelled")).drop("labelled")
            if future.is_empty() or history.is_empty():
                continue
            echo(
                f"== {source.name}, origin {back + 1}/{origins}: "
                f"{history['sensor_id'].n_unique()} sensors, {history.height:,} history and "
                f"{future.height:,} held-out readings ({source.note})"
            )
            outcomes: dict[str, Outcome] = {}
            for method in methods:
                try:
                    if method == "naive_day":
                        outcome = naive(history, future, 1440)
                    elif method == "naive_week":
                        outcome = naive(history, future, 7 * 1440)
                    elif method in ("mstl", "autoets"):
                        outcome = statsforecast_peer(history, future, method)
                    elif method == "mlforecast":
                        outcome = mlforecast_peer(history, future)
                    elif method == "oxy":
                        outcome = oxy_method(source, history, future)
                    else:
                        raise ValueError(method)
                except ImportError as exc:
                    echo(f"  {method}: not installed ({exc}); `make bench` installs the peers")
                    continue
                outcomes[method] = outcome
                echo(f"  {method:<11} {outcome.seconds:.1f} s {outcome.note}")
                if outcome.extra:
                    echo(f"    {outcome.extra}")
            # Like for like: the sensors every method forecast (oxy gives none for a sensor whose
            # history ends in a sensor fault or is too short; the table says how many were left
            # out).
            common = set(future["sensor_id"].unique().to_list())
            for outcome in outcomes.values():
                known = outcome.predictions.group_by("sensor_id").agg(
                    pl.col("yhat").is_not_null().mean().alias("known")
                )
                common &= set(known.filter(pl.col("known") >= 0.5)["sensor_id"].to_list())
            dropped = future["sensor_id"].n_unique() - len(common)
            if dropped:
                echo(f"  {dropped} sensor(s) left out: not forecast by every method")
            left_out += dropped
            futures.append(_tagged(future.filter(pl.col("sensor_id").is_in(sorted(common))), back))
            scale |= {f"{sid}@{back}": v for sid, v in scales(marked, first).items()}
            for method, outcome in outcomes.items():
                predictions.setdefault(method, []).append(_tagged(outcome.predictions, back))
                seconds[method] = seconds.get(method, 0.0) + outcome.seconds
                notes.setdefault(method, []).append(outcome.note)
                extras.setdefault(method, []).append(outcome.extra)
        if not futures:
            echo(f"== {source.name}: no sensor long enough for a held-out week")
            continue
        scored_future = pl.concat(futures)
        pairs = scored_future["sensor_id"].n_unique()
        for method, parts in predictions.items():
            metrics = score(pl.concat(parts), scored_future, scale)
            row = {"source": source.name, "method": method, "seconds": seconds[method]}
            row |= {"note": "; ".join(n for n in notes[method] if n), "extra": extras[method]}
            row |= {"metrics": metrics, "sensors": pairs, "left_out": left_out}
            if method == "oxy":
                row["one_step"] = [
                    r | {"sensor_id": f"{r['sensor_id']}@{back}"}
                    for back, extra in enumerate(extras[method])
                    for r in extra.get("one_step", [])
                ]
                echo(f"  oxy infer, {one_step_summary(row['one_step'])}")
            rows.append(row)
            echo(
                f"  {method:<11}"
                + "".join(
                    f" {b}: MASE {metrics[b]['mase']:.3f} cov {metrics[b]['coverage']:.1%}"
                    for b, _ in BUCKETS
                )
                + f"  ({seconds[method]:.1f} s over {len(parts)} origin(s), {pairs} "
                "sensor-origins)"
            )
    return rows


def table(rows: Sequence[dict]) -> str:
    """Markdown: per source, MASE per bucket, coverage per bucket, wall time; then ratios."""
    head = (
        "| source | method | MASE 1st hour | MASE 1st day | MASE week | "
        "cov. 1st hour | cov. 1st day | cov. week | wall s |\n" + "|---" * 9 + "|\n"
    )

    def f(x: float, pct: bool = False) -> str:
        if x is None or not math.isfinite(x):
            return "—"
        return f"{x:.1%}" if pct else f"{x:.3f}"

    lines = []
    for r in rows:
        m = r["metrics"]
        lines.append(
            f"| {r['source']} | {r['method']} | "
            + " | ".join(f(m[b]["mase"]) for b, _ in BUCKETS)
            + " | "
            + " | ".join(f(m[b]["coverage"], True) for b, _ in BUCKETS)
            + f" | {r['seconds']:.1f} |"
        )
    counts = ["", "Held-out readings scored per source (1st hour / 1st day / week):", ""]
    for source in dict.fromkeys(r["source"] for r in rows):
        r = next(r for r in rows if r["source"] == source)
        n = " / ".join(f"{r['metrics'][b]['readings']:,}" for b, _ in BUCKETS)
        text = f"- {source}: {r['sensors']} sensor-origins, {n}"
        if r["left_out"]:
            text += f" ({r['left_out']} sensor-origin(s) left out: not forecast by every method)"
        counts.append(text)
    ratios = [
        "",
        "oxy's week MASE against the better seasonal naive and the best peer "
        "(targets: <= 0.8 and <= 0.9):",
        "",
    ]
    for source in dict.fromkeys(r["source"] for r in rows):
        got = {r["method"]: r["metrics"]["week"]["mase"] for r in rows if r["source"] == source}
        if "oxy" not in got:
            continue
        naive_best = min(got.get("naive_day", math.inf), got.get("naive_week", math.inf))
        peers = {k: v for k, v in got.items() if k in ("mstl", "autoets", "mlforecast")}
        best_peer = min(peers, key=peers.__getitem__) if peers else None
        text = f"- {source}: {got['oxy'] / naive_best:.2f}x the better naive"
        if best_peer:
            text += f", {got['oxy'] / peers[best_peer]:.2f}x the best peer ({best_peer})"
        ratios.append(text)
    steps = [
        "",
        "`oxy infer`'s one-step predictions of the held-out readings (the model at one step or "
        "persistence, per sensor as validation chose) against persistence (the previous reading):",
        "",
    ]
    for r in rows:
        if r["method"] == "oxy" and "one_step" in r:
            steps.append(f"- {r['source']}: {one_step_summary(r['one_step'])}")
    return (
        head
        + "\n".join(lines)
        + "\n"
        + "\n".join(counts)
        + "\n"
        + "\n".join(ratios)
        + "\n"
        + "\n".join(steps)
    )


# -- speed on the demo fleet ------------------------------------------------------------


def train_child(root: str) -> None:
    """Child process: train; print wall time and peak RSS (VmHWM) as JSON."""
    from engine import forecast

    wh = Warehouse(root, Config.load())
    started, cpu = time.perf_counter(), time.process_time()
    forecast.train(wh, echo=lambda line: None)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    hwm = next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")
    )
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "peak_rss_mb": hwm / 1024}))


def speed(sensors_per_site: int, days: int, seed: int, echo: Callable[[str], None]) -> str:
    """Training (wall, peak RSS) and forecasting times on the demo fleet."""
    from engine import anomaly, forecast
    from engine.warehouse import readings_buckets, sensor_timezones

    source = demo_source(sensors_per_site, days, seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench_forecast_speed_"))
    try:
        wh = Warehouse(tmp / "warehouse", Config.load())
        zones = _zones(source, source.readings["sensor_id"].unique().to_list())
        load_warehouse(wh, source.readings, zones, source.unit)
        anomaly.score(wh)
        child = subprocess.run(
            [sys.executable, __file__, "--train-child", str(wh.root)],
            capture_output=True,
            text=True,
            check=True,
        )
        stats = json.loads(child.stdout.strip().splitlines()[-1])
        started, cpu = time.perf_counter(), time.process_time()
        result = forecast.forecast(wh, echo=lambda _: None)
        whole, whole_cpu = time.perf_counter() - started, time.process_time() - cpu
        run = forecast.load_run(wh, result.run_id)
        with wh.reader() as con:
            tz = sensor_timezones(con)
            frames = [
                forecast.bucket_readings(wh, con, b, history_days=forecast.HISTORY_DAYS)
                for b in readings_buckets(con)
            ]
        grids = [forecast.SeriesGrid.from_series(forecast.sensor_series(f.lazy())) for f in frames]
        started, cpu = time.perf_counter(), time.process_time()
        for grid in grids:
            status = forecast.sensor_status(grid, None, 0, 1.0)
            forecast.forecast_grid(run, grid, status, 7 * 1440, tz)
        in_memory, in_memory_cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    text = (
        f"{source.name}: train {stats['seconds']:.1f} s wall ({stats['cpu_s']:.1f} s CPU), "
        f"peak RSS {stats['peak_rss_mb']:.0f} MB (targets 60 s, 2048 MB); `oxy forecast` "
        f"{result.rows:,} rows in {whole:.2f} s wall ({whole_cpu:.2f} s CPU; target 5 s), "
        f"features + predict {in_memory:.2f} s wall ({in_memory_cpu:.2f} s CPU; target 2 s); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (CPU seconds are what a "
        "quiet box's wall time approaches: 2 threads at most)"
    )
    echo(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small demo fleet, no speed part")
    parser.add_argument("--seed", type=int, default=11, help="demo seed (not a tuning seed)")
    parser.add_argument("--sources", default="demo,lro,semi", help="comma list: demo, lro, semi")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--origins",
        type=int,
        help=f"origins per sensor, a week apart (default {ORIGINS}; --quick: 1)",
    )
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument(
        "--only-speed", action="store_true", help="only the speed part (keeps the table)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--train-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        train_child(args.train_child)
        return
    if args.only_speed:
        line = speed(20, 90, args.seed, print)
        if not args.no_write:
            write_section("forecast_speed", line, title="Forecasting speed (alone)")
        return
    load_before = os.getloadavg()
    wanted = args.sources.split(",")
    sources: list[Source] = []
    if "demo" in wanted:
        # 20 sensors x 90 days side by side (the peers' fits take minutes per 10 series on a
        # shared 2-core box); the speed part below runs oxy alone on 100 x 90.
        per_site, days = (2, 35) if args.quick else (4, 90)
        sources.append(demo_source(per_site, days, args.seed))
    if "lro" in wanted:
        lro = lro_source()
        if lro is not None:
            sources.append(lro)
    if "semi" in wanted:
        semi = semi_source(seeds=(1,) if args.quick else (1, 2, 3))
        if semi is not None:
            sources.append(semi)
    print(lake_note())
    started = time.perf_counter()
    origins = args.origins or (1 if args.quick else ORIGINS)
    rows = run(sources, [m for m in args.methods.split(",") if m], origins)
    print(f"accuracy part: {time.perf_counter() - started:.0f} s")
    body = table(rows)
    print(body)
    speed_line = ""
    if not (args.quick or args.no_speed):
        speed_line = speed(20, 90, args.seed, print)
    load_after = os.getloadavg()
    if not args.no_write:
        notes = [
            "",
            f"{origins} origin(s) per sensor, a week apart: its last {HOLDOUT_DAYS} days held out "
            "from its last reading before them, then the week before that from the data before "
            "it, and so on (every method refitted per origin on what came before). MASE = MAE / "
            "the sensor's daily-naive MAE over the 7 days before the origin "
            "(`engine/metrics.py`), mean over (sensor, origin); coverage pooled over every "
            "held-out reading; wall s summed over the origins. StatsForecast on "
            f"15-minute series (15-min means of minute data), the last {PEER_DAYS} days; "
            "mlforecast on the same 15-minute series, whole history. Peers' forecasts are "
            "interpolated to each held-out reading. " + lake_note() + ".",
            f"Load average (1 min) {load_before[0]:.2f} at start, {load_after[0]:.2f} at end "
            "(2 cores; wall times are noisy when others run).",
        ]
        if speed_line:
            notes.append("")
            notes.append("Speed: " + speed_line)
        write_section("forecast", body + "\n" + "\n".join(notes), title="Forecasting")


if __name__ == "__main__":
    main()
