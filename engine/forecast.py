"""Forecasting: one global LightGBM model, direct multi-horizon, a week ahead.

Strategy (see README "Forecasting"): for a forecast origin ``o`` and horizon ``h`` the
model predicts the reading at ``o + h`` from features known at ``o`` (:mod:`engine.features`):
the target's calendar, the same minute on the latest known day and week, the 7-day daily
profile, and the origin's level relative to that profile (an anomaly that decays with h).
Its target is the reading minus the profile, in units of the sensor's daily spread, so one
model serves every sensor, unit and cadence. No rolling forward: a week is one batch predict.

* :func:`train` — per lake bucket: sampled (origin, horizon) pairs (origins every
  ``origin_every``, log-uniform horizons) split by target time into train / valid; a small
  grid chosen on validation MAE; a rolling-origin backtest on the final ``test_days`` with
  both seasonal naives beside the model; conformal intervals from validation residuals per
  horizon bucket, with their coverage measured on the backtest; the run saved by
  :mod:`engine.artifacts` and recorded by :mod:`engine.registry`.
* :func:`forecast` — the ``forecasts`` and ``forecast_status`` marts.
* :func:`one_step_predictions` — 1-step-ahead predictions for batch inference.
* :func:`evaluate_run` — a saved run's backtest metrics on another test window.
"""

from __future__ import annotations

import math
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import lightgbm as lgb
import numpy as np
import polars as pl

from engine import OxyError
from engine.artifacts import Run, latest_run, load_run, save_run
from engine.features import (
    FEATURES,
    MINUTES_PER_DAY,
    PROFILE_DAYS,
    SeriesGrid,
    feature_frame,
    feature_matrix,
    from_minutes,
    pair_base,
    pair_frame,
    sensor_series,
    steps_up,
)
from engine.progress import bar as progress_bar
from engine.warehouse import (
    StagedWarehouse,
    Warehouse,
    apply_file_ops,
    has_relation,
    query_frame,
    readings_buckets,
    sensor_timezones,
    sql_rows,
    sql_text,
)

if TYPE_CHECKING:
    from engine.cluster import Executor

HORIZON_BUCKETS: tuple[tuple[str, int], ...] = (
    ("first_hour", 60),
    ("first_day", MINUTES_PER_DAY),
    ("week", 7 * MINUTES_PER_DAY),
)
INTERVAL_EDGES: tuple[int, ...] = (60, 360, 1440, 4320, 10080)  # conformal buckets (minutes)
MIN_RESIDUALS = 30  # fewer validation residuals in a bucket: use all of them
# Days of each sensor's latest readings `oxy forecast` reads: every feature of a week-ahead
# pair looks back at most the profile's days (plus the target's day) from the origin.
HISTORY_DAYS = PROFILE_DAYS + 1
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_UNITS = {"m": 1, "min": 1, "minute": 1, "minutes": 1, "h": 60, "hour": 60, "hours": 60}
_UNITS |= {"d": 1440, "day": 1440, "days": 1440, "w": 10080, "week": 10080, "weeks": 10080}


def minutes_of(text: str | int) -> int:
    """``"7d"``, ``"6h"``, ``"90 minutes"`` ... as whole minutes.

    >>> minutes_of("7d"), minutes_of("6 hours"), minutes_of(15)
    (10080, 360, 15)
    """
    if isinstance(text, int):
        return text
    match = _DURATION.match(str(text).lower())
    if not match or match.group(2) not in _UNITS:
        raise OxyError(f"not a duration: {text!r} (e.g. 7d, 6h, 90m)")
    minutes = round(float(match.group(1)) * _UNITS[match.group(2)])
    if minutes <= 0:
        raise OxyError(f"duration must be positive: {text!r}")
    return minutes


# -- reading the warehouse --------------------------------------------------------------


def excluded_minutes(
    con: duckdb.DuckDBPyConnection, quantile: float, fault_types: Sequence[str]
) -> tuple[pl.DataFrame, float | None, str]:
    """Minutes left out of training: ``(frame(sensor_id, ts), cutoff, note)``.

    Those above the severity quantile, and anomalies of a sensor-fault type.
    """
    empty = pl.DataFrame(schema={"sensor_id": pl.String, "ts": pl.Datetime("us")})
    if not has_relation(con, "anomaly_scores"):
        return empty, None, "no anomaly_scores (run `oxy score`): training on all readings"
    frame = query_frame(
        con,
        sql_text("intermediate/int_forecast_excluded"),
        {"quantile": quantile, "fault_types": list(fault_types)},
    )
    cutoff_row = con.execute(
        sql_text("intermediate/int_forecast_severity_cutoff"), {"quantile": quantile}
    ).fetchall()
    cutoff = cutoff_row[0][0]
    faults = f"a sensor fault ({', '.join(fault_types)})"
    if cutoff is None or cutoff >= 1:  # severity is at most 1: no reading lies above it
        why = f"{faults}; the {quantile:g} quantile of severity is 1, so none for severity"
    else:
        why = f"severity above {cutoff:.3g} (its {quantile:g} quantile) or {faults}"
    note = f"training leaves out {frame.height:,} readings: {why}"
    return frame.select("sensor_id", pl.col("ts").cast(pl.Datetime("us"))), cutoff, note


def bucket_readings(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    bucket: int,
    *,
    sensor_ids: Sequence[str] | None = None,
    history_days: int | None = None,
    excluded: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``sensor_id, ts, value`` of one lake bucket; excluded minutes become null values."""
    files = [str(p) for p in warehouse.files(con, "readings", bucket)]
    return readings_of_files(
        con, files, sensor_ids=sensor_ids, history_days=history_days, excluded=excluded
    )


def readings_of_files(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    *,
    sensor_ids: Sequence[str] | None = None,
    history_days: int | None = None,
    excluded: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """:func:`bucket_readings` from the bucket's lake ``files`` (any connection: a cluster
    worker's in-memory one)."""
    if not files:
        return pl.DataFrame(
            schema={"sensor_id": pl.String, "ts": pl.Datetime("us"), "value": pl.Float64}
        )
    readings = query_frame(
        con,
        sql_text("staging/forecast_readings"),
        {
            "files": files,
            "sensor_ids": list(sensor_ids) if sensor_ids is not None else None,
            "history_days": history_days,
        },
    )
    readings = readings.with_columns(pl.col("ts").cast(pl.Datetime("us")))
    if excluded is not None and excluded.height:
        flagged = excluded.with_columns(pl.lit(True).alias("_excluded"))
        readings = (
            readings.join(flagged, on=["sensor_id", "ts"], how="left")
            .with_columns(
                pl.when(pl.col("_excluded")).then(None).otherwise(pl.col("value")).alias("value")
            )
            .drop("_excluded")
        )
    return readings


# -- pairs ------------------------------------------------------------------------------


def sampled_pairs(
    grid: SeriesGrid,
    *,
    origin_every: int,
    horizon: int,
    per_origin: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs: origins every ``origin_every`` minutes (UTC-aligned, at a reading),
    ``per_origin`` log-uniform horizons each in [cadence, horizon], on the cadence grid."""
    pos_parts, origin_parts = [], []
    for pos in range(len(grid.sensor_ids)):
        first = -(-int(grid.start[pos]) // origin_every) * origin_every
        origins = np.arange(first, int(grid.last_minute()[pos]) + 1, origin_every)
        p = np.full(len(origins), pos)
        known = np.isfinite(grid.at("value", p, origins))
        pos_parts.append(p[known])
        origin_parts.append(origins[known])
    pos = np.repeat(np.concatenate(pos_parts), per_origin).astype(np.int64)
    origin = np.repeat(np.concatenate(origin_parts), per_origin).astype(np.int64)
    cadence = grid.cadence[pos]
    log_h = rng.uniform(np.log(cadence), np.log(horizon), size=len(pos))
    h = np.minimum(steps_up(np.exp(log_h).astype(np.int64), cadence), horizon // cadence * cadence)
    return pos, origin, np.maximum(h, cadence)


def backtest_pairs(
    grid: SeriesGrid, *, start: int, end: int, every: int, step: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling-origin pairs: origins at ``start``, ``start + every`` ... (snapped back to each
    sensor's grid), every ``step`` (cadence multiple) up to ``horizon`` and ``end``."""
    pos_parts, origin_parts, h_parts = [], [], []
    for pos in range(len(grid.sensor_ids)):
        cad = int(grid.cadence[pos])
        stride = int(steps_up(step, cad))
        for o in range(start, end, every):
            origin = int(grid.start[pos]) + (o - int(grid.start[pos])) // cad * cad
            if origin < grid.start[pos]:
                continue
            h = np.arange(stride, min(horizon, end - origin) + 1, stride, dtype=np.int64)
            pos_parts.append(np.full(len(h), pos))
            origin_parts.append(np.full(len(h), origin))
            h_parts.append(h)
    if not h_parts:
        return (np.zeros(0, np.int64),) * 3
    return (
        np.concatenate(pos_parts).astype(np.int64),
        np.concatenate(origin_parts).astype(np.int64),
        np.concatenate(h_parts),
    )


def seasonal_scale(grid: SeriesGrid, before: int, days: int | None = None) -> np.ndarray:
    """Per sensor: mean |reading - reading one day earlier| before minute ``before`` (the
    MASE scale; only the last ``days`` days when given)."""
    out = np.full(len(grid.sensor_ids), np.nan)
    for pos in range(len(grid.sensor_ids)):
        cad = int(grid.cadence[pos])
        if MINUTES_PER_DAY % cad:
            continue
        lag = MINUTES_PER_DAY // cad
        lo, n = int(grid.offset[pos]), int(grid.n[pos])
        values = grid.columns["value"][lo : lo + n]
        times = grid.start[pos] + np.arange(n) * cad
        keep = times < before
        if days is not None:
            keep &= times >= before - days * MINUTES_PER_DAY
        diff = np.abs(values[lag:] - values[:-lag])[keep[lag:]]
        diff = diff[np.isfinite(diff)]
        if len(diff):
            out[pos] = max(float(diff.mean()), 1e-9)
    return out


def _knots(pos: np.ndarray, origin: np.ndarray, horizon: np.ndarray, every: int) -> np.ndarray:
    """The pairs the model is evaluated on: each forecast's first hour, every ``every``
    minutes, its first and last step (pairs grouped by (sensor, origin), ascending horizons)."""
    new_group = np.ones(len(pos), dtype=bool)
    new_group[1:] = (pos[1:] != pos[:-1]) | (origin[1:] != origin[:-1])
    last = np.ones(len(pos), dtype=bool)
    last[:-1] = new_group[1:]
    return new_group | last | (horizon <= 60) | (horizon % every == 0)


def _with_ids(grid: SeriesGrid, raw: pl.DataFrame) -> pl.DataFrame:
    ids = pl.Series("sensor_id", grid.sensor_ids, dtype=pl.String)
    return raw.with_columns(ids.gather(raw["pos"]).alias("sensor_id"))


def _zones(grid: SeriesGrid, timezones: Mapping[str, str]) -> list[str]:
    return [timezones.get(s, "UTC") or "UTC" for s in grid.sensor_ids]


def _pairs_with_features(
    grid: SeriesGrid,
    pos: np.ndarray,
    origin: np.ndarray,
    horizon: np.ndarray,
    timezones: Mapping[str, str],
    knot_every: int | None = None,
) -> pl.DataFrame:
    """Pair rows with their features; ``knot`` marks the rows the model is evaluated on.

    With ``knot_every``, only the first hour, every ``knot_every`` minutes and each
    forecast's first and last step are knots (features elsewhere are null): the model's
    residual is interpolated in between (:func:`predict_z`), the baseline stays per step.
    Pairs must come grouped by (sensor, origin) with ascending horizons.
    """
    raw = _with_ids(grid, pair_frame(grid, pos, origin, horizon))
    zones = _zones(grid, timezones)
    if knot_every is None or raw.is_empty():
        return feature_frame(raw, zones).with_columns(pl.lit(True).alias("knot"))
    raw = raw.with_columns(pl.Series("knot", _knots(pos, origin, horizon, knot_every)))
    with_features = feature_frame(raw.filter(pl.col("knot")), zones)
    return pl.concat([with_features, raw.filter(~pl.col("knot"))], how="diagonal_relaxed")


def _forecast_pairs(
    grid: SeriesGrid,
    pos: np.ndarray,
    origin: np.ndarray,
    horizon: np.ndarray,
    timezones: Mapping[str, str],
    knot_every: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """For a forecast (no backtest lookups): every pair with what turns a predicted z into a
    reading (:func:`engine.features.pair_base`) and ``knot``, in the pairs' order; and the
    knots' features, in the same order. Pairs as for :func:`_pairs_with_features`."""
    knot = _knots(pos, origin, horizon, knot_every)
    pairs = _with_ids(grid, pair_base(grid, pos, origin, horizon))
    knots = _with_ids(grid, pair_frame(grid, pos[knot], origin[knot], horizon[knot]))
    return pairs.with_columns(knot=pl.Series(knot)), feature_frame(knots, _zones(grid, timezones))


def predict_z(
    predict: Callable[[np.ndarray], np.ndarray],
    pairs: pl.DataFrame,
    *,
    grouped: bool = False,
    knot_features: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, np.ndarray]:
    """``(pairs sorted by sensor, origin, horizon; predicted z)``: the model on the knots,
    linear interpolation of z in horizon between them (never across forecasts).
    ``grouped``: the pairs already come grouped by (sensor, origin) with ascending horizons
    (they are not sorted again); ``knot_features``: the knots' features in their order (else
    the knot rows of ``pairs`` hold them)."""
    if not grouped:
        pairs = pairs.sort("sensor_id", "origin_t", "horizon_min")
    knot = pairs["knot"].to_numpy() if "knot" in pairs.columns else np.ones(pairs.height, bool)
    z = np.full(pairs.height, np.nan)
    if knot.any():
        rows = knot_features if knot_features is not None else pairs.filter(pl.Series(knot))
        z[knot] = predict(feature_matrix(rows))
    if not knot.all():
        sensor, origin = pl.col("sensor_id"), pl.col("origin_t")
        new_group = ((sensor != sensor.shift(1)) | (origin != origin.shift(1))).fill_null(True)
        group = pairs.select(new_group.cum_sum()).to_series()
        x = group.to_numpy().astype(np.float64) * 100_000 + pairs["horizon_min"].to_numpy()
        z = np.interp(x, x[knot], z[knot])
    return pairs, z


# -- the model --------------------------------------------------------------------------


@dataclass
class DirectForecaster:
    """Global direct multi-horizon regressor (scikit-learn-style contract).

    ``fit(train, valid)`` takes :func:`engine.features.feature_frame` rows with
    ``target_z``; ``predict(frame)`` returns readings (``baseline + z * scale``).
    """

    params: dict[str, Any]
    num_boost_round: int = 400
    early_stopping_rounds: int = 30
    booster_: lgb.Booster | None = field(default=None, init=False, repr=False)

    def fit(self, train: pl.DataFrame, valid: pl.DataFrame) -> DirectForecaster:
        if train.is_empty() or valid.is_empty():
            raise OxyError(
                f"not enough history to train: {train.height} training and {valid.height} "
                "validation pairs (need readings before the valid and test days)"
            )
        names = list(FEATURES)
        dtrain = lgb.Dataset(
            feature_matrix(train), label=train["target_z"].to_numpy(), feature_name=names
        )
        dvalid = lgb.Dataset(
            feature_matrix(valid), label=valid["target_z"].to_numpy(), reference=dtrain
        )
        self.booster_ = lgb.train(
            {**self.params, "metric": "l1", "verbose": -1},
            dtrain,
            num_boost_round=self.num_boost_round,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        return self

    def predict_z(self, frame: pl.DataFrame) -> np.ndarray:
        if self.booster_ is None:
            raise OxyError("the forecaster is not fitted: call fit() or load a run")
        if frame.is_empty():
            return np.zeros(0)
        return self.booster_.predict(
            feature_matrix(frame), num_iteration=self.booster_.best_iteration or None
        )

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        z = self.predict_z(frame)
        return frame["baseline"].to_numpy() + z * frame["scale"].to_numpy()


def conformal_intervals(
    residual_z: np.ndarray, horizon: np.ndarray, level: float
) -> list[list[float]]:
    """``[[upper_horizon_min, q_lo, q_hi], ...]``: residual quantiles per horizon bucket."""
    alpha = (1 - level) / 2
    finite = np.isfinite(residual_z)
    pooled = np.quantile(residual_z[finite], [alpha, 1 - alpha]) if finite.any() else [0.0, 0.0]
    table, lower = [], 0
    for upper in INTERVAL_EDGES:
        inside = finite & (horizon > lower) & (horizon <= upper)
        enough = inside.sum() >= MIN_RESIDUALS
        q = np.quantile(residual_z[inside], [alpha, 1 - alpha]) if enough else pooled
        table.append([upper, min(float(q[0]), 0.0), max(float(q[1]), 0.0)])
        lower = upper
    return table


def apply_intervals(
    frame: pl.DataFrame, z: np.ndarray, table: Sequence[Sequence[float]]
) -> pl.DataFrame:
    """``yhat, yhat_lo, yhat_hi`` from predicted z and the conformal table (lo <= yhat <= hi)."""
    edges = np.array([row[0] for row in table])
    idx = np.minimum(np.searchsorted(edges, frame["horizon_min"].to_numpy()), len(edges) - 1)
    q_lo = np.array([row[1] for row in table])[idx]
    q_hi = np.array([row[2] for row in table])[idx]
    base, scale = frame["baseline"].to_numpy(), frame["scale"].to_numpy()
    return frame.with_columns(
        pl.Series("yhat", base + z * scale),
        pl.Series("yhat_lo", base + (z + q_lo) * scale),
        pl.Series("yhat_hi", base + (z + q_hi) * scale),
    ).with_columns(pl.col("yhat", "yhat_lo", "yhat_hi").fill_nan(None))


def error_metrics(frame: pl.DataFrame, prediction: str) -> dict[str, float]:
    """MAE, RMSE and MASE (mean over sensors of MAE / seasonal scale) of one prediction."""
    rows = frame.filter(pl.col(prediction).is_not_null() & pl.col("actual").is_not_null())
    if rows.is_empty():
        return {"mae": math.nan, "rmse": math.nan, "mase": math.nan, "n": 0}
    err = rows.select((pl.col("actual") - pl.col(prediction)).alias("e"), "sensor_id", "mase_scale")
    per_sensor = err.group_by("sensor_id").agg(
        (pl.col("e").abs().mean() / pl.col("mase_scale").first()).alias("mase")
    )
    return {
        "mae": float(err["e"].abs().mean()),
        "rmse": float(math.sqrt((err["e"] ** 2).mean())),
        "mase": float(per_sensor["mase"].drop_nans().mean() or math.nan),
        "n": rows.height,
    }


def backtest_report(scored: pl.DataFrame) -> dict[str, Any]:
    """Model and both seasonal naives per horizon bucket, plus interval coverage.

    Only rows where the model and both naives exist are compared (like for like).
    """
    rows = scored.filter(
        pl.col("yhat").is_not_null()
        & pl.col("last_day").is_not_nan()
        & pl.col("last_week").is_not_nan()
        & pl.col("actual").is_not_nan()
    ).with_columns(pl.col("last_day").alias("naive_day"), pl.col("last_week").alias("naive_week"))
    report: dict[str, Any] = {}
    for name, upper in HORIZON_BUCKETS:
        part = rows.filter(pl.col("horizon_min") <= upper)
        covered = part.select(
            ((pl.col("actual") >= pl.col("yhat_lo")) & (pl.col("actual") <= pl.col("yhat_hi")))
            .mean()
            .alias("c")
        )["c"][0]
        report[name] = {
            "model": error_metrics(part, "yhat"),
            "naive_day": error_metrics(part, "naive_day"),
            "naive_week": error_metrics(part, "naive_week"),
            "coverage": float(covered) if covered is not None else math.nan,
        }
    return report


# -- training ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_id: str
    path: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    grid: list[dict[str, Any]]
    notes: list[str]
    decision: dict[str, Any] | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _settings(warehouse: Warehouse) -> dict[str, Any]:
    cfg = warehouse.config["forecast"]
    return {
        "horizon": minutes_of(cfg["horizon"]),
        "valid": int(cfg["valid_days"]) * MINUTES_PER_DAY,
        "test": int(cfg["test_days"]) * MINUTES_PER_DAY,
        "quantile": float(cfg["severity_quantile_cutoff"]),
        "level": float(cfg["interval"]),
        "seed": int(cfg["seed"]),
        "origin_every": minutes_of(cfg["origin_every"]),
        "per_origin": int(cfg["horizons_per_origin"]),
        "backtest_every": minutes_of(cfg["backtest_every"]),
        "backtest_step": minutes_of(cfg["backtest_step"]),
        "learning_rates": [float(x) for x in cfg["learning_rates"]],
        "num_leaves": [int(x) for x in cfg["num_leaves"]],
        "rounds": int(cfg["num_boost_round"]),
        "early": int(cfg["early_stopping_rounds"]),
        "min_data_in_leaf": int(cfg["min_data_in_leaf"]),
        "exclude_types": [str(x) for x in cfg["exclude_types"]],
        "predict_every": minutes_of(cfg["predict_every"]),
    }


_KEEP = (
    "sensor_id",
    "origin_t",
    "target_t",
    "baseline",
    "scale",
    "actual",
    "last_day",
    "last_week",
    "target_z",
    *FEATURES,
)


def training_frames(
    warehouse: Warehouse,
    s: Mapping[str, Any],
    echo: Callable[[str], None],
    executor: Executor | None = None,
    progress: bool = False,
) -> tuple[Any, pl.DataFrame, pl.DataFrame, dict[str, Any], list[str]]:
    """``(train, valid, backtest, span, notes)`` pair frames, one lake bucket at a time
    (:func:`bucket_pairs`). With ``executor`` the buckets' pairs are built on a cluster's
    workers (:func:`engine.cluster.training_pairs`); ``train`` is then a frame, or, past
    ``[cluster] dask_train_rows`` pairs, the workers' :class:`engine.cluster.DistributedPairs`."""
    notes: list[str] = []
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` first)")
    with warehouse.reader() as con:
        span_row = con.execute(sql_text("meta/readings_span")).fetchall()[0]
        if not span_row[2]:
            raise OxyError("no readings in the warehouse (run `oxy ingest` first)")
        excluded, cutoff, note = excluded_minutes(con, s["quantile"], s["exclude_types"])
        notes.append(note)
        timezones = sensor_timezones(con)
        end = int((span_row[1] - datetime(1970, 1, 1)).total_seconds() // 60) + 1
        test_start = end - s["test"]
        valid_start = test_start - s["valid"]
        bounds = (valid_start, test_start, end)
        buckets = readings_buckets(con)
        if executor is None:
            parts = []
            for bucket in progress_bar(
                buckets, desc="train: features", unit="bucket", enabled=progress
            ):
                part = bucket_pairs(
                    bucket_readings(warehouse, con, bucket, excluded=excluded),
                    bucket,
                    s,
                    timezones,
                    bounds,
                )
                if part is not None:
                    parts.append(part)
                    echo(f"  bucket {bucket:02d}: {part[3]} sensor(s)")
            train = pl.concat([p[0] for p in parts])
            valid = pl.concat([p[1] for p in parts])
            test = pl.concat([p[2] for p in parts])
        else:
            from engine.cluster import training_pairs

            files = {b: [str(p) for p in warehouse.files(con, "readings", b)] for b in buckets}
            in_bucket = dict(sql_rows(con, "meta/sensor_buckets"))
            train, valid, test = training_pairs(
                executor, warehouse, files, in_bucket, excluded, s, timezones, bounds, echo
            )
    span = {
        "first_ts": span_row[0],
        "last_ts": span_row[1],
        "readings": span_row[2],
        "sensors": span_row[3],
        "severity_cutoff": cutoff,
        "split": {
            "train_end": from_minutes_ts(valid_start),
            "valid_start": from_minutes_ts(valid_start),
            "valid_end": from_minutes_ts(test_start),
            "test_start": from_minutes_ts(test_start),
            "test_end": from_minutes_ts(end),
        },
    }
    return train, valid, test, span, notes


def bucket_pairs(
    readings: pl.DataFrame,
    bucket: int,
    s: Mapping[str, Any],
    timezones: Mapping[str, str],
    bounds: tuple[int, int, int],
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, int] | None:
    """One bucket's ``(train, valid, backtest, sensors)`` pairs from its ``readings`` (excluded
    minutes null); ``bounds``: the valid start, test start and end minute. The bucket's horizons
    are drawn from its own random stream (``seed``, ``bucket``), so buckets can be built in
    any order, or on a cluster's workers. None: no sensor."""
    valid_start, test_start, end = bounds
    grid = SeriesGrid.from_series(sensor_series(readings.lazy()))
    if not grid.sensor_ids:
        return None
    rng = np.random.default_rng([s["seed"], bucket])
    scale = pl.DataFrame(
        {"sensor_id": grid.sensor_ids, "mase_scale": seasonal_scale(grid, valid_start)}
    )
    pos, origin, horizon = sampled_pairs(
        grid,
        origin_every=s["origin_every"],
        horizon=s["horizon"],
        per_origin=s["per_origin"],
        rng=rng,
    )
    pairs = _pairs_with_features(grid, pos, origin, horizon, timezones)
    pairs = pairs.filter(pl.col("target_z").is_not_null()).select(_KEEP)
    pairs = pairs.join(scale, on="sensor_id")
    train = pairs.filter(pl.col("target_t") < valid_start)
    valid = pairs.filter(pl.col("target_t").is_between(valid_start, test_start, "left"))
    bt = backtest_pairs(
        grid,
        start=test_start,
        end=end,
        every=s["backtest_every"],
        step=s["backtest_step"],
        horizon=s["horizon"],
    )
    pairs = _pairs_with_features(grid, *bt, timezones, s["predict_every"])
    pairs = pairs.filter(pl.col("actual").is_not_nan() | pl.col("knot"))
    test = pairs.select(*_KEEP, "knot").join(scale, on="sensor_id")
    return train, valid, test, len(grid.sensor_ids)


def from_minutes_ts(minutes: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(minutes=int(minutes))


def _versions() -> dict[str, str]:
    import duckdb as _duckdb

    return {
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "polars": pl.__version__,
        "duckdb": _duckdb.__version__,
        "numpy": np.__version__,
    }


def train(
    warehouse: Warehouse,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = False,
    executor: Executor | None = None,
) -> TrainResult:
    """Train, backtest and save one global model; record it in the registry.

    With ``executor``, each bucket's pairs are built on a cluster's workers; the model is
    fitted on the gathered pairs (the embedded model, identical) up to ``[cluster]
    dask_train_rows`` training pairs, and across the workers by ``lightgbm.dask`` past it.

    Returns
    -------
    TrainResult
        Run id and folder, metrics per split and horizon bucket, the grid, notes and the
        registry's promotion decision.
    """
    started = time.perf_counter()
    s = _settings(warehouse)
    train_pairs, valid_pairs, test_pairs, span, notes = training_frames(
        warehouse, s, echo, executor, progress
    )
    for note in notes:
        echo(note)
    echo(f"features in {time.perf_counter() - started:.1f} s")
    echo(
        f"{len(train_pairs):,} training, {valid_pairs.height:,} validation, "
        f"{test_pairs.height:,} backtest pairs"
    )
    base = {
        "objective": "huber",
        "alpha": 1.0,
        "min_data_in_leaf": s["min_data_in_leaf"],
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": s["seed"],
        "num_threads": int(warehouse.config["warehouse"]["threads"]),
        "deterministic": True,
        "max_bin": 63,
    }
    grid_results, best = [], None
    grid_size = len(s["learning_rates"]) * len(s["num_leaves"])
    fits = progress_bar(total=grid_size, desc="train: grid", unit="model", enabled=progress)
    for lr in s["learning_rates"]:
        for leaves in s["num_leaves"]:
            params = {**base, "learning_rate": lr, "num_leaves": leaves}
            fit_started = time.perf_counter()
            model = DirectForecaster(params, s["rounds"], s["early"])
            if isinstance(train_pairs, pl.DataFrame):
                model.fit(train_pairs, valid_pairs)
            else:  # the workers' pairs, too many to gather: lightgbm.dask
                model.booster_ = train_pairs.fit(model, valid_pairs)
            fit_seconds = time.perf_counter() - fit_started
            mae = float(
                np.mean(np.abs(model.predict(valid_pairs) - valid_pairs["actual"].to_numpy()))
            )
            assert model.booster_ is not None
            grid_results.append(
                {
                    "learning_rate": lr,
                    "num_leaves": leaves,
                    "trees": model.booster_.best_iteration,
                    "valid_mae": mae,
                }
            )
            echo(
                f"  lr {lr:<5} leaves {leaves:<4} trees {model.booster_.best_iteration:<4} "
                f"valid MAE {mae:.4f} ({fit_seconds:.1f} s)"
            )
            if best is None or mae < best[0]:
                best = (mae, model, params)
            fits.update()
    fits.close()
    assert best is not None
    model = best[1]
    valid_z = model.predict_z(valid_pairs)
    residual = valid_pairs["target_z"].to_numpy() - valid_z
    table = conformal_intervals(residual, valid_pairs["horizon_min"].to_numpy(), s["level"])
    assert model.booster_ is not None
    best_trees = model.booster_.best_iteration or None
    booster_ = model.booster_
    test_pairs, test_z = predict_z(
        lambda x: booster_.predict(x, num_iteration=best_trees), test_pairs
    )
    scored = apply_intervals(test_pairs, test_z, table)
    metrics: dict[str, Any] = {
        "train": error_metrics(
            train_pairs.with_columns(pl.Series("yhat", model.predict(train_pairs))), "yhat"
        )
        if isinstance(train_pairs, pl.DataFrame)
        else train_pairs.metrics(model),
        "valid": error_metrics(
            valid_pairs.with_columns(pl.Series("yhat", model.predict(valid_pairs))), "yhat"
        ),
    }
    report = backtest_report(scored)
    metrics["test"] = report["week"]["model"]
    metrics["backtest"] = report
    booster = model.booster_
    assert booster is not None
    booster.best_iteration = booster.best_iteration or booster.current_iteration()
    meta = {
        "created_at": datetime.utcnow().isoformat(timespec="seconds"),
        "strategy": "direct multi-horizon, target = (reading - 7-day profile) / daily spread",
        "params": {**best[2], "num_boost_round": booster.best_iteration},
        "grid": grid_results,
        "split": {k: v.isoformat() for k, v in span["split"].items()},
        "data_span": {
            "first_ts": span["first_ts"].isoformat(),
            "last_ts": span["last_ts"].isoformat(),
            "readings": span["readings"],
            "sensors": span["sensors"],
        },
        "severity_cutoff": span["severity_cutoff"],
        "horizon_min": s["horizon"],
        "predict_every_min": s["predict_every"],
        "intervals": {"level": s["level"], "buckets": table},
        "metrics": metrics,
        "notes": notes,
        "versions": _versions(),
    }
    run_id, path = save_run(warehouse, _trimmed(booster), meta)
    decision = None
    try:
        from engine import registry
    except ImportError:
        registry = None  # type: ignore[assignment]
    if registry is not None and hasattr(registry, "record_run"):
        decision = registry.record_run(warehouse, run_id, load_run(path).meta).to_dict()
    return TrainResult(
        run_id,
        str(path),
        metrics,
        meta["params"],
        grid_results,
        notes,
        decision,
        time.perf_counter() - started,
    )


def _trimmed(booster: lgb.Booster) -> lgb.Booster:
    """The booster cut at its best iteration (what is saved and predicted with)."""
    best = booster.best_iteration or -1
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


# -- forecasting ------------------------------------------------------------------------


def model_run(warehouse: Warehouse) -> str:
    """The run ``oxy forecast`` uses: production if the registry names one, else the newest."""
    run_id = None
    try:
        from engine.registry import production_run
    except ImportError:
        production_run = None  # type: ignore[assignment]
    if production_run is not None:
        run_id = production_run(warehouse)
    run_id = run_id or latest_run(warehouse)
    if run_id is None:
        raise OxyError("no trained model yet (run `oxy train` first)")
    return run_id


def _predict(
    run: Run,
    frame: pl.DataFrame,
    *,
    grouped: bool = False,
    knot_features: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``frame`` (sorted by sensor, origin, horizon) with ``yhat, yhat_lo, yhat_hi``;
    ``grouped``, ``knot_features``: see :func:`predict_z`."""
    frame, z = predict_z(run.booster.predict, frame, grouped=grouped, knot_features=knot_features)
    return apply_intervals(frame, z, run.meta["intervals"]["buckets"])


@dataclass
class ForecastSummary:
    run_id: str
    sensors: int
    forecast_sensors: int
    rows: int
    statuses: dict[str, int]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


FAULT_SCHEMA = {
    "sensor_id": pl.String,
    "readings": pl.Int64,
    "fault_readings": pl.Int64,
    "fault_type": pl.String,
}


def recent_faults(
    con: duckdb.DuckDBPyConnection, bucket: int, grid: SeriesGrid, cfg: Mapping[str, Any]
) -> pl.DataFrame:
    """Per sensor of one bucket: scored readings in the last ``fault_window`` before its latest
    scored one, and how many are sensor faults. Reads only the bucket's partition, from a day
    before the earliest last reading of its sensors on (scoring may lag the lake a little)."""
    window = minutes_of(cfg["fault_window"])
    since = from_minutes_ts(int(grid.last_minute().min()) - window - MINUTES_PER_DAY)
    found = query_frame(
        con,
        sql_text("intermediate/int_forecast_recent_faults"),
        {
            "bucket": bucket,
            "since": since,
            "window_min": window,
            "fault_types": list(cfg["fault_types"]),
        },
    )
    return found.select(pl.col(name).cast(dtype) for name, dtype in FAULT_SCHEMA.items())


def sensor_status(
    grid: SeriesGrid, faults: pl.DataFrame | None, min_history: int, fault_fraction: float
) -> pl.DataFrame:
    """``sensor_id, status, reason`` per grid sensor: ok, insufficient_history or sensor_fault.

    ``grid`` holds the last ``HISTORY_DAYS`` of readings; ``faults`` is :func:`recent_faults`
    (None without anomaly scores)."""
    if faults is None:
        faults = pl.DataFrame(schema=FAULT_SCHEMA)
    counts = np.array(
        [
            np.isfinite(grid.columns["value"][o : o + n]).sum()
            for o, n in zip(grid.offset, grid.n, strict=True)
        ]
    )
    covered = counts * grid.cadence
    frame = pl.DataFrame(
        {"sensor_id": grid.sensor_ids, "covered_min": covered, "cadence": grid.cadence}
    ).join(faults, on="sensor_id", how="left")
    fault = (pl.col("fault_readings").fill_null(0) / pl.col("readings").fill_null(1)).fill_nan(0)
    return frame.select(
        "sensor_id",
        pl.when(pl.col("covered_min") < min_history)
        .then(pl.lit("insufficient_history"))
        .when(fault >= fault_fraction)
        .then(pl.lit("sensor_fault"))
        .otherwise(pl.lit("ok"))
        .alias("status"),
        pl.when(pl.col("covered_min") < min_history)
        .then(
            pl.format(
                f"{{}} h of readings in the last {HISTORY_DAYS} days, need {{}} h",
                (pl.col("covered_min") / 60).round(1),
                pl.lit(round(min_history / 60, 1)),
            )
        )
        .when(fault >= fault_fraction)
        .then(
            pl.format(
                "{} of {} latest scored readings flagged '{}'",
                pl.col("fault_readings"),
                pl.col("readings"),
                pl.col("fault_type"),
            )
        )
        .otherwise(pl.lit(""))
        .alias("reason"),
    )


def _write_partition(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    name: str,
    frame: pl.DataFrame,
    bucket: int,
    replaced: Sequence[str] | None,
) -> int:
    """Write one bucket partition of a mart; with ``replaced`` keep the other sensors' rows."""
    partition = f"bucket={bucket:02d}"
    existing = warehouse.marts_dir / name / partition / "data.parquet"
    if replaced is not None and existing.is_file():
        old = pl.read_parquet(existing, hive_partitioning=False)
        old = old.filter(~pl.col("sensor_id").is_in(list(replaced)))
        frame = pl.concat([old, frame.select(old.columns)], how="vertical_relaxed")
    con.register("mart_rows", frame.to_arrow())
    try:
        return warehouse.write_mart(con, name, "select * from mart_rows", partition=partition)
    finally:
        con.unregister("mart_rows")


def forecast(
    warehouse: Warehouse,
    *,
    sensor_ids: Sequence[str] | None = None,
    horizon: str | int | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = False,
    executor: Executor | None = None,
) -> ForecastSummary:
    """Forecast every sensor (or ``sensor_ids``) from its last reading, ``horizon`` ahead.

    With ``executor``, each bucket is forecast on a cluster's worker (:func:`forecast_job`),
    which stages its partitions; they are moved into place here once every bucket is back.

    Writes the ``forecasts`` mart (``run_id, sensor_id, origin_ts, ts, horizon_min, yhat,
    yhat_lo, yhat_hi``) and the ``forecast_status`` mart (``run_id, sensor_id, origin_ts,
    status, reason, steps``): a sensor with too little history or a recent sensor fault gets
    a status and no forecast rows.
    """
    started = time.perf_counter()
    cfg = warehouse.config["forecast"]
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` first)")
    run_id = model_run(warehouse)
    run = load_run(warehouse, run_id)
    h_total = minutes_of(horizon if horizon is not None else cfg["horizon"])
    if h_total > run.meta.get("horizon_min", h_total):
        raise OxyError(
            f"horizon {h_total} min is longer than run {run_id} was trained for "
            f"({run.meta['horizon_min']} min)"
        )
    min_history = minutes_of(cfg["min_history"])
    fault_fraction = float(cfg["fault_fraction"])
    statuses: dict[str, int] = {}
    rows = forecast_sensors = sensors = 0
    with warehouse.writer() as con:
        timezones = sensor_timezones(con)
        if sensor_ids is not None:
            unknown = sorted(set(sensor_ids) - set(timezones))
            if unknown:
                raise OxyError(f"unknown sensor(s): {', '.join(unknown)}")
        scored = has_relation(con, "anomaly_scores")
        buckets = readings_buckets(con)
        if executor is not None:
            jobs = [
                (
                    warehouse,
                    run_id,
                    bucket,
                    [str(p) for p in warehouse.files(con, "readings", bucket)],
                    sensor_ids,
                    h_total,
                    timezones,
                    scored,
                )
                for bucket in buckets
            ]
            buckets = []  # the loop below has nothing left to do
            try:
                parts = executor.map(forecast_job, jobs, label="forecast")
                con.execute("begin")  # every bucket's partitions, recorded, in one transaction
                try:
                    for part in parts:
                        if part is None:
                            continue
                        apply_file_ops(warehouse, con, part.ops)
                        sensors += part.sensors
                        rows += part.rows
                        forecast_sensors += part.statuses.get("ok", 0)
                        for name, n in part.statuses.items():
                            statuses[name] = statuses.get(name, 0) + n
                    con.execute("commit")
                except BaseException:
                    con.execute("rollback")
                    raise
            finally:
                warehouse.sweep_units()
        bar = progress_bar(buckets, desc="forecast", unit="bucket", enabled=progress)
        reader = con.cursor()  # the next bucket is read while this one is forecast

        def read(bucket: int) -> tuple[SeriesGrid, pl.DataFrame | None] | None:
            readings = bucket_readings(
                warehouse, reader, bucket, sensor_ids=sensor_ids, history_days=HISTORY_DAYS
            )
            if readings.is_empty():
                return None
            grid = SeriesGrid.from_series(sensor_series(readings.lazy()))
            return grid, (recent_faults(reader, bucket, grid, cfg) if scored else None)

        writer = con.cursor()  # ... and the previous bucket's marts are written meanwhile

        def _write_bucket(frame: pl.DataFrame, status: pl.DataFrame, bucket: int) -> None:
            _write_partition(warehouse, writer, "forecasts", frame, bucket, sensor_ids)
            _write_partition(warehouse, writer, "forecast_status", status, bucket, sensor_ids)

        written: Future[None] | None = None
        with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(max_workers=1) as writes:
            pending = pool.submit(read, buckets[0]) if buckets else None
            for i, bucket in enumerate(bar):
                assert pending is not None
                loaded = pending.result()
                pending = pool.submit(read, buckets[i + 1]) if i + 1 < len(buckets) else None
                if loaded is None:
                    continue
                grid, faults = loaded
                status = sensor_status(grid, faults, min_history, fault_fraction)
                frame, status = forecast_grid(run, grid, status, h_total, timezones)
                if written is not None:
                    written.result()  # one bucket's marts in flight at a time
                written = writes.submit(_write_bucket, frame, status, bucket)
                sensors += status.height
                rows += frame.height
                forecast_sensors += int((status["status"] == "ok").sum())
                for name, n in status.group_by("status").len().iter_rows():
                    statuses[name] = statuses.get(name, 0) + n
            if written is not None:
                written.result()
        warehouse.refresh_mart_views(con)
    return ForecastSummary(
        run_id, sensors, forecast_sensors, rows, statuses, time.perf_counter() - started
    )


@dataclass(frozen=True)
class ForecastPart:
    """What :func:`forecast_job` made of one bucket: the file operations of its ``forecasts``
    and ``forecast_status`` partitions, its sensors, rows and sensors per status."""

    ops: list[Any]
    sensors: int
    rows: int
    statuses: dict[str, int]


def forecast_job(
    warehouse: Warehouse,
    run_id: str,
    bucket: int,
    files: list[str],
    sensor_ids: Sequence[str] | None,
    horizon: int,
    timezones: Mapping[str, str],
    scored: bool,
) -> ForecastPart | None:
    """Forecast one bucket on a cluster worker: read its lake ``files``, its recent faults from
    the ``anomaly_scores`` files (``scored``), predict with run ``run_id`` from the registry,
    and stage its mart partitions (:class:`~engine.warehouse.StagedWarehouse`; no catalog)."""
    cfg = warehouse.config["forecast"]
    run = load_run(warehouse, run_id)
    staged = StagedWarehouse(warehouse.root, warehouse.config)
    con = staged.connect_memory()
    try:
        readings = readings_of_files(con, files, sensor_ids=sensor_ids, history_days=HISTORY_DAYS)
        if readings.is_empty():
            return None
        grid = SeriesGrid.from_series(sensor_series(readings.lazy()))
        faults = None
        if scored:
            staged.mart_view(con, "anomaly_scores")
            faults = recent_faults(con, bucket, grid, cfg)
        status = sensor_status(
            grid, faults, minutes_of(cfg["min_history"]), float(cfg["fault_fraction"])
        )
        frame, status = forecast_grid(run, grid, status, horizon, timezones)
        _write_partition(staged, con, "forecasts", frame, bucket, sensor_ids)
        _write_partition(staged, con, "forecast_status", status, bucket, sensor_ids)
        counts = dict(status.group_by("status").len().iter_rows())
        return ForecastPart(staged.ops, status.height, frame.height, counts)
    finally:
        con.close()


FORECAST_COLUMNS = (
    "run_id",
    "sensor_id",
    "origin_ts",
    "ts",
    "horizon_min",
    "yhat",
    "yhat_lo",
    "yhat_hi",
)


def forecast_grid(
    run: Run,
    grid: SeriesGrid,
    status: pl.DataFrame,
    horizon: int,
    timezones: Mapping[str, str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Forecast rows of the ``ok`` sensors of one grid, and the status rows of all."""
    ok = set(status.filter(pl.col("status") == "ok")["sensor_id"].to_list())
    last = grid.last_minute()
    pos_parts, h_parts = [], []
    for pos, sid in enumerate(grid.sensor_ids):
        if sid in ok:
            cad = int(grid.cadence[pos])
            h = np.arange(cad, horizon + 1, cad, dtype=np.int64)
            pos_parts.append(np.full(len(h), pos, dtype=np.int64))
            h_parts.append(h)
    steps = {sid: 0 for sid in grid.sensor_ids}
    if pos_parts:
        pos = np.concatenate(pos_parts)
        h = np.concatenate(h_parts)
        every = int(run.meta.get("predict_every_min", 1))
        pairs, features = _forecast_pairs(grid, pos, last[pos], h, timezones, every)
        frame = _predict(run, pairs, grouped=True, knot_features=features).select(
            pl.lit(run.run_id).alias("run_id"),
            "sensor_id",
            from_minutes(pl.col("origin_t")).alias("origin_ts"),
            from_minutes(pl.col("target_t")).alias("ts"),
            pl.col("horizon_min").cast(pl.Int64),
            "yhat",
            "yhat_lo",
            "yhat_hi",
        )
        steps |= dict(frame.group_by("sensor_id").len().iter_rows())
    else:
        frame = pl.DataFrame(
            schema={
                "run_id": pl.String,
                "sensor_id": pl.String,
                "origin_ts": pl.Datetime("us"),
                "ts": pl.Datetime("us"),
                "horizon_min": pl.Int64,
                "yhat": pl.Float64,
                "yhat_lo": pl.Float64,
                "yhat_hi": pl.Float64,
            }
        )
    origin = pl.DataFrame({"sensor_id": grid.sensor_ids, "origin_t": last})
    status = status.join(origin, on="sensor_id").select(
        pl.lit(run.run_id).alias("run_id"),
        "sensor_id",
        from_minutes(pl.col("origin_t")).alias("origin_ts"),
        "status",
        "reason",
        pl.col("sensor_id").replace_strict(steps, return_dtype=pl.Int64).alias("steps"),
    )
    return frame, status


# -- batch inference and re-evaluation --------------------------------------------------


def one_step_predictions(warehouse: Warehouse, run: Run, readings: pl.DataFrame) -> pl.DataFrame:
    """For each new reading, the prediction made one step (its sensor's cadence) earlier.

    Features come from the warehouse's history of those sensors plus ``readings`` (which win
    on a duplicate minute). Returns ``sensor_id, ts, yhat`` (yhat null when unknown).
    """
    new = readings.select("sensor_id", pl.col("ts").cast(pl.Datetime("us")), "value")
    if new.is_empty():
        return pl.DataFrame(
            schema={"sensor_id": pl.String, "ts": pl.Datetime("us"), "yhat": pl.Float64}
        )
    ids = new["sensor_id"].unique().sort().to_list()
    since = new["ts"].min() - timedelta(days=9)  # type: ignore[operator]
    timezones: dict[str, str] = {}
    history = new.clear()
    if warehouse.exists():
        with warehouse.reader() as con:
            timezones = sensor_timezones(con)
            history = query_frame(
                con,
                sql_text("staging/forecast_history"),
                {"sensor_ids": ids, "since": since, "until": new["ts"].max()},
            ).select("sensor_id", pl.col("ts").cast(pl.Datetime("us")), "value")
    combined = pl.concat([history, new]).unique(["sensor_id", "ts"], keep="last")
    grid = SeriesGrid.from_series(sensor_series(combined.lazy()))
    pos = grid.position(new["sensor_id"].to_list())
    t = new.select((pl.col("ts").dt.epoch("s") // 60).alias("t"))["t"].to_numpy()
    cad = grid.cadence[np.where(pos >= 0, pos, 0)]
    pairs = _pairs_with_features(grid, pos, t - cad, cad, timezones)
    predicted = _predict(run, pairs).select(
        "sensor_id", from_minutes(pl.col("target_t")).alias("ts"), "yhat"
    )
    return new.select("sensor_id", "ts").join(
        predicted.unique(["sensor_id", "ts"]),
        on=["sensor_id", "ts"],
        how="left",
        maintain_order="left",
    )


def evaluate_run(
    warehouse: Warehouse, run_id: str, window: tuple[datetime, datetime]
) -> dict[str, float]:
    """A saved run's backtest metrics (MAE, RMSE, MASE) with ``window`` as the test days.

    The same procedure as training's backtest (rolling origins from the window's start,
    compared where both naives exist; MASE scale from before the ``valid_days`` preceding
    the window), so a run re-evaluated on its own test window reproduces its test metrics
    (up to the minutes training left out as anomalous).
    """
    s = _settings(warehouse)
    run = load_run(warehouse, run_id)
    start = int((window[0] - datetime(1970, 1, 1)).total_seconds() // 60)
    end = int((window[1] - datetime(1970, 1, 1)).total_seconds() // 60)
    parts = []
    with warehouse.reader() as con:
        timezones = sensor_timezones(con)
        for bucket in readings_buckets(con):
            grid = SeriesGrid.from_series(
                sensor_series(bucket_readings(warehouse, con, bucket).lazy())
            )
            if not grid.sensor_ids:
                continue
            scale = pl.DataFrame(
                {
                    "sensor_id": grid.sensor_ids,
                    "mase_scale": seasonal_scale(grid, start - s["valid"]),
                }
            )
            bt = backtest_pairs(
                grid,
                start=start,
                end=end,
                every=s["backtest_every"],
                step=s["backtest_step"],
                horizon=int(run.meta.get("horizon_min", s["horizon"])),
            )
            every = int(run.meta.get("predict_every_min", 1))
            pairs = _pairs_with_features(grid, *bt, timezones, every)
            pairs = pairs.filter(pl.col("actual").is_not_nan() | pl.col("knot"))
            parts.append(_predict(run, pairs.select(*_KEEP, "knot").join(scale, on="sensor_id")))
    if not parts:
        raise OxyError("no readings to evaluate on")
    found = backtest_report(pl.concat(parts))["week"]["model"]
    return {k: float(v) for k, v in found.items() if k != "n"}


def render_train(result: TrainResult) -> str:
    """Human summary of a training run: splits, backtest beside both naives, coverage."""
    m = result.metrics
    lines = [f"run {result.run_id} ({result.seconds:.1f} s): {result.path}"]
    lines.append(
        f"chosen: learning_rate {result.params['learning_rate']}, "
        f"num_leaves {result.params['num_leaves']}, trees {result.params['num_boost_round']}"
    )
    lines.append(f"{'split':<8}{'MAE':>10}{'RMSE':>10}{'MASE':>8}")
    for split in ("train", "valid", "test"):
        x = m[split]
        lines.append(f"{split:<8}{x['mae']:>10.4f}{x['rmse']:>10.4f}{x['mase']:>8.3f}")
    lines.append("backtest (rolling origins over the test days), MASE:")
    lines.append(
        f"{'horizon':<12}{'model':>8}{'naive (last day)':>18}{'naive (last week)':>19}"
        f"{'coverage':>10}"
    )
    for name, _ in HORIZON_BUCKETS:
        b = m["backtest"][name]
        lines.append(
            f"{name:<12}{b['model']['mase']:>8.3f}{b['naive_day']['mase']:>18.3f}"
            f"{b['naive_week']['mase']:>19.3f}{b['coverage']:>10.1%}"
        )
    if result.decision:
        lines.append(f"registry: {result.decision['reason']}")
    return "\n".join(lines)
