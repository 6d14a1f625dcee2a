"""Forecast features: definitions, then their computation, kept apart from the model.

A forecast *pair* is ``(origin, horizon)``: the model sees only what is known at the origin
(the sensor's readings at or before it) and predicts the reading ``horizon`` minutes later.
Everything is in minutes, so one-minute and 15-minute sensors share one global model.

Computation has three steps:

1. :func:`sensor_series` (polars lazy): per reading, time-based rolling statistics
   (``rolling_*_by``, never row counts) of one lake bucket.
2. :class:`SeriesGrid`: each sensor's series on its own regular time grid (its cadence), so
   "the value at t" is an index lookup and a gap is NaN — never a neighbouring reading.
3. :func:`pair_frame` looks up the raw quantities of each pair and :func:`feature_frame`
   turns them into model features with the small ``pl.Expr`` functions below. Levels are
   expressed relative to a seasonal baseline and divided by the sensor's recent daily
   spread, so mg/L and %sat sensors look alike to the model.

The seed's features (lags 1/5/60 min, 60-min rolling mean, minute-of-day, day-of-week and
sin/cos) are all here, at the origin; a week-ahead horizon adds the target's calendar, the
same minute on the latest known day and week, and the 7-day mean daily profile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
PROFILE_DAYS = 7  # days averaged into the daily profile
PROFILE_SHIFT_MIN = 15  # the profile reads the 30-min trailing mean 15 min after a minute

# -- definitions ------------------------------------------------------------------------

#: Lags of the seed (minutes), read at the origin; rounded up to the sensor's cadence.
LAGS_MIN: tuple[int, ...] = (1, 5, 60)

#: The sensor's recent volatility, two statistics over the :data:`VOL_DAYS` before a minute:
#: ``vol_step`` -- noise and short-term wander, the mean ``|step - the same step a day
#: earlier| / sqrt 2`` (so the daily cycle's own slope does not count); ``vol_day`` -- the
#: mean ``|reading - reading a day earlier|``, the daily seasonal naive's error. Interpolated
#: in log(horizon) between one step and one day (held beyond), it is the scale of that
#: horizon's intervals.
VOL_DAYS = 7

#: Model inputs, in this order (stored in each run's meta.json and checked on load).
FEATURES: tuple[str, ...] = (
    "horizon_min",
    "cadence_min",
    "target_minute_sin",
    "target_minute_cos",
    "target_day_of_week",
    "origin_minute_of_day",
    "origin_minute_sin",
    "origin_minute_cos",
    "origin_day_of_week",
    "origin_z",
    "lag_1m_z",
    "lag_5m_z",
    "lag_60m_z",
    "rolling_mean_60m_z",
    "rolling_std_60m_z",
    "last_day_z",
    "last_day_smooth_z",
    "last_week_z",
    "level_shift_z",
    "profile_shift_z",
    "profile_3d_z",
    "profile_days",
    "vol_z",
)

#: Raw per-reading statistics computed by :func:`sensor_series`.
SERIES_COLUMNS: tuple[str, ...] = (
    "value",
    "smooth_30m",
    "rolling_mean_60m",
    "rolling_std_60m",
    "rolling_mean_1d",
    "rolling_std_1d",
    "rolling_mean_7d",
)


# -- per-reading statistics (polars expressions) ----------------------------------------


def rolling_mean_60m() -> pl.Expr:
    """Mean of the readings in ``(ts - 60 min, ts]``."""
    return pl.col("value").rolling_mean_by("ts", "60m", closed="right").alias("rolling_mean_60m")


def rolling_std_60m() -> pl.Expr:
    """Standard deviation of the readings in ``(ts - 60 min, ts]`` (null from one reading)."""
    return pl.col("value").rolling_std_by("ts", "60m", closed="right").alias("rolling_std_60m")


def smooth_30m() -> pl.Expr:
    """Mean of the readings in ``(ts - 30 min, ts]``: the level the daily profile averages."""
    return pl.col("value").rolling_mean_by("ts", "30m", closed="right").alias("smooth_30m")


def rolling_mean_1d() -> pl.Expr:
    """Mean of the readings in the day before ``ts``."""
    return pl.col("value").rolling_mean_by("ts", "1d", closed="right").alias("rolling_mean_1d")


def rolling_std_1d() -> pl.Expr:
    """Standard deviation of the readings in the day before ``ts``: the sensor's scale."""
    return pl.col("value").rolling_std_by("ts", "1d", closed="right").alias("rolling_std_1d")


def rolling_mean_7d() -> pl.Expr:
    """Mean of the readings in the week before ``ts``."""
    return pl.col("value").rolling_mean_by("ts", "7d", closed="right").alias("rolling_mean_7d")


SERIES_EXPRS = (
    smooth_30m,
    rolling_mean_60m,
    rolling_std_60m,
    rolling_mean_1d,
    rolling_std_1d,
    rolling_mean_7d,
)


def sensor_series(readings: pl.LazyFrame) -> pl.DataFrame:
    """Per-reading rolling statistics of ``readings`` (``sensor_id, ts, value``).

    Rows with a null value (excluded readings) are dropped first: they are gaps.
    """
    return (
        readings.select("sensor_id", "ts", "value")
        .drop_nulls("value")
        .sort("sensor_id", "ts")
        .with_columns(expr().over("sensor_id") for expr in SERIES_EXPRS)
        .collect()
    )


# -- the regular grid -------------------------------------------------------------------


def to_minutes(ts: pl.Expr) -> pl.Expr:
    """Naive-UTC timestamps as integer minutes since 1970."""
    return ts.dt.epoch("s").floordiv(60)


def from_minutes(minutes: pl.Expr) -> pl.Expr:
    """Inverse of :func:`to_minutes` (naive UTC, microseconds)."""
    return (minutes * 60_000_000).cast(pl.Datetime("us"))


@dataclass(frozen=True)
class Located:
    """Pairs' sensor positions resolved on a :class:`SeriesGrid` (see ``SeriesGrid.locate``):
    per pair its sensor's first minute, cadence, slot count and offset."""

    ok: np.ndarray  # the grid holds the sensor
    start: np.ndarray
    cadence: np.ndarray
    n: np.ndarray
    offset: np.ndarray
    every_minute: bool  # every located sensor has a 1-minute cadence


@dataclass
class SeriesGrid:
    """Each sensor's statistics on its own regular grid (flat arrays with offsets).

    ``cadence[i]`` minutes apart from ``start[i]`` (minutes since 1970); ``n[i]`` slots at
    ``offset[i]`` in every column array; a missing reading is NaN.
    """

    sensor_ids: list[str]
    start: np.ndarray
    cadence: np.ndarray
    n: np.ndarray
    offset: np.ndarray
    columns: dict[str, np.ndarray]

    @classmethod
    def from_series(cls, series: pl.DataFrame) -> SeriesGrid:
        """Build the grid from :func:`sensor_series` output (sorted by sensor, ts)."""
        frame = series.with_columns(to_minutes(pl.col("ts")).alias("t"))
        stats = (
            frame.group_by("sensor_id", maintain_order=True)
            .agg(
                pl.col("t").min().alias("start"),
                pl.col("t").max().alias("end"),
                pl.col("t").diff().drop_nulls().median().alias("cadence"),
            )
            .with_columns(pl.col("cadence").fill_null(1).round().clip(1).cast(pl.Int64))
            .with_columns(((pl.col("end") - pl.col("start")) // pl.col("cadence") + 1).alias("n"))
            .with_columns((pl.col("n").cum_sum() - pl.col("n")).alias("offset"))
        )
        index = frame.join(
            stats.select("sensor_id", "start", "cadence", "offset"), on="sensor_id"
        ).select(pl.col("offset") + (pl.col("t") - pl.col("start")) // pl.col("cadence"))
        size = int(stats["n"].sum()) if stats.height else 0
        idx = index.to_series().to_numpy()
        columns: dict[str, np.ndarray] = {}
        for name in SERIES_COLUMNS:
            arr = np.full(size, np.nan)
            arr[idx] = frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            columns[name] = arr
        grid = cls(
            sensor_ids=stats["sensor_id"].to_list(),
            start=stats["start"].to_numpy(),
            cadence=stats["cadence"].to_numpy(),
            n=stats["n"].to_numpy(),
            offset=stats["offset"].to_numpy(),
            columns=columns,
        )
        grid.columns |= volatility_columns(grid)
        return grid

    def position(self, sensor_ids: Sequence[str]) -> np.ndarray:
        """Grid position of each sensor id (-1 when the grid does not hold it)."""
        where = {sid: i for i, sid in enumerate(self.sensor_ids)}
        return np.array([where.get(s, -1) for s in sensor_ids], dtype=np.int64)

    def locate(self, pos: np.ndarray) -> Located:
        """``pos`` resolved once for many :meth:`at` lookups of the same pairs."""
        ok = pos >= 0
        p = np.where(ok, pos, 0)
        cadence = self.cadence[p]
        return Located(
            ok=ok,
            start=self.start[p],
            cadence=cadence,
            n=self.n[p],
            offset=self.offset[p],
            every_minute=bool((cadence[ok] == 1).all()),
        )

    def at(self, column: str, pos: np.ndarray | Located, t: np.ndarray) -> np.ndarray:
        """``column`` of sensor ``pos`` at minute ``t`` (NaN off-grid, in a gap or unknown)."""
        where = pos if isinstance(pos, Located) else self.locate(pos)
        out = np.full(len(t), np.nan)
        rel = t - where.start
        if where.every_minute:
            k = rel
            ok = where.ok & (k >= 0) & (k < where.n)
        else:
            k = rel // where.cadence
            ok = where.ok & (rel % where.cadence == 0) & (k >= 0) & (k < where.n)
        out[ok] = self.columns[column][where.offset[ok] + k[ok]]
        return out

    def last_minute(self) -> np.ndarray:
        """Each sensor's last reading (minutes since 1970)."""
        return self.start + (self.n - 1) * self.cadence


def volatility_columns(grid: SeriesGrid) -> dict[str, np.ndarray]:
    """``vol_step`` and ``vol_day`` per slot (see :data:`VOL_DAYS`): means over the slots of
    the :data:`VOL_DAYS` days up to and including it (NaN with less than a quarter day)."""
    values = grid.columns["value"]
    out = {name: np.full(len(values), np.nan) for name in ("vol_step", "vol_day")}
    for pos in range(len(grid.sensor_ids)):
        lo, n, cad = int(grid.offset[pos]), int(grid.n[pos]), int(grid.cadence[pos])
        v = values[lo : lo + n]
        window = max(VOL_DAYS * MINUTES_PER_DAY // cad, 1)
        need = max(MINUTES_PER_DAY // cad // 4, 2)
        day = MINUTES_PER_DAY // cad if MINUTES_PER_DAY % cad == 0 else 0
        step = np.full(n, np.nan)
        step[1:] = v[1:] - v[:-1]
        day_diff = np.full(n, np.nan)
        if day and n > day + 1:
            day_diff[day:] = v[day:] - v[:-day]
            stat_step = np.full(n, np.nan)
            stat_step[day:] = np.abs(step[day:] - step[:-day]) / math.sqrt(2)
        else:  # no whole-day lag on this cadence: plain steps
            stat_step = np.abs(step)
        for name, d in (("vol_step", stat_step), ("vol_day", np.abs(day_diff))):
            ok = np.isfinite(d)
            total = np.concatenate([[0.0], np.cumsum(np.where(ok, d, 0.0))])
            count = np.concatenate([[0], np.cumsum(ok)])
            end = np.arange(1, n + 1)
            begin = np.maximum(end - window, 0)
            c = count[end] - count[begin]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = (total[end] - total[begin]) / c
            out[name][lo : lo + n] = np.where(c >= need, mean, np.nan)
    return out


def volatility_at(
    vol_step: np.ndarray, vol_day: np.ndarray, cadence: np.ndarray, horizon: np.ndarray
) -> np.ndarray:
    """The volatility for ``horizon``: ``vol_step`` at one step, ``vol_day`` from a day on,
    interpolated in log(horizon) between; either alone where the other is unknown."""
    lo = np.log(np.maximum(cadence, 1).astype(np.float64))
    hi = math.log(MINUTES_PER_DAY)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.clip((np.log(np.maximum(horizon, 1)) - lo) / np.maximum(hi - lo, 1e-9), 0.0, 1.0)
    out = vol_step + w * (vol_day - vol_step)
    out = np.where(np.isnan(vol_step), vol_day, out)
    return np.where(np.isnan(vol_day), vol_step, out)


def steps_up(minutes: np.ndarray | int, cadence: np.ndarray | int) -> np.ndarray:
    """``minutes`` rounded up to a multiple of ``cadence`` (at least one step)."""
    return np.maximum(-(-np.asarray(minutes) // cadence), 1) * cadence


# -- raw lookups of each (origin, horizon) pair -----------------------------------------


def _profile(
    grid: SeriesGrid,
    pos: np.ndarray | Located,
    t: np.ndarray,
    first_day: np.ndarray,
    days: int = PROFILE_DAYS,
) -> tuple:
    """Mean over ``days`` days (from ``first_day`` back) of the smoothed level at ``t``."""
    total = np.zeros(len(t))
    count = np.zeros(len(t))
    for k in range(days):
        v = grid.at("smooth_30m", pos, t - (first_day + k) * MINUTES_PER_DAY + PROFILE_SHIFT_MIN)
        ok = np.isfinite(v)
        total[ok] += v[ok]
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


def _baseline_and_scale(
    grid: SeriesGrid, pos: np.ndarray, origin: np.ndarray, horizon: np.ndarray
) -> dict[str, Any]:
    """What every pair needs, knot or not: the target's baseline (the smoothed level at the
    same minute of the latest known days, else the origin's 1-day mean) and the scale (the
    origin's 1-day std, floored), with the lookups they come from."""
    where = grid.locate(pos)
    target = origin + horizon
    # Days back to the same minute: the latest such day whose smoothed level is known.
    profile_first = -(-(horizon + PROFILE_SHIFT_MIN) // MINUTES_PER_DAY)
    profile_target, days = _profile(grid, where, target, profile_first)
    # What depends on the origin alone is looked up once per (sensor, origin): a forecast's
    # thousands of steps share one.
    first = int(origin.min()) if len(origin) else 0
    key = (pos.astype(np.int64) + 1) * (1 << 40) + (origin - first)
    unique, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(-1)
    u_where = grid.locate(unique // (1 << 40) - 1)
    u_origin = unique % (1 << 40) + first
    u_mean_1d = grid.at("rolling_mean_1d", u_where, u_origin)
    u_mean_60m = grid.at("rolling_mean_60m", u_where, u_origin)
    u_profile, _ = _profile(grid, u_where, u_origin, np.ones_like(u_origin))
    u_profile = np.where(np.isfinite(u_profile), u_profile, u_mean_1d)
    u_floor = 1e-3 + 0.01 * np.abs(np.nan_to_num(u_mean_60m))
    u_scale = np.fmax(grid.at("rolling_std_1d", u_where, u_origin), u_floor)
    u_step = grid.at("vol_step", u_where, u_origin)
    u_day = grid.at("vol_day", u_where, u_origin)
    mean_1d, mean_60m = u_mean_1d[inverse], u_mean_60m[inverse]
    scale = u_scale[inverse]
    baseline = np.where(np.isfinite(profile_target), profile_target, mean_1d)
    volatility = volatility_at(u_step[inverse], u_day[inverse], where.cadence, horizon)
    return {
        "where": where,
        "cadence": grid.cadence[np.where(pos >= 0, pos, 0)],
        "target": target,
        "profile_first": profile_first,
        "profile_days": days,
        "mean_1d": mean_1d,
        "mean_60m": mean_60m,
        "baseline": baseline,
        "scale": scale,
        "profile_origin": u_profile[inverse],
        "last": grid.at("value", u_where, u_origin)[inverse],
        "vol": np.fmax(np.where(np.isfinite(volatility), volatility, scale), 1e-9),
        "last_day": grid.at("value", where, target - steps_up(horizon, MINUTES_PER_DAY)),
        "last_week": grid.at("value", where, target - MINUTES_PER_WEEK),
    }


def pair_base(
    grid: SeriesGrid, pos: np.ndarray, origin: np.ndarray, horizon: np.ndarray
) -> pl.DataFrame:
    """The columns of :func:`pair_frame` a pair needs to turn a predicted z into a reading:
    ``pos, origin_t, target_t, horizon_min, cadence_min`` and :data:`BASE_COLUMNS`."""
    b = _baseline_and_scale(grid, pos, origin, horizon)
    return pl.DataFrame(
        {
            "pos": pos,
            "origin_t": origin,
            "target_t": b["target"],
            "horizon_min": horizon,
            "cadence_min": b["cadence"],
            **{name: b[name] for name in BASE_COLUMNS},
        }
    )


#: What turns a predicted z into a reading, its interval and its seasonal-naive alternatives:
#: the baseline and scale, the origin's reading and profile (the anchor), the horizon's
#: volatility (interval scale), and both seasonal naives.
BASE_COLUMNS = ("baseline", "scale", "profile_origin", "last", "vol", "last_day", "last_week")


def pair_frame(
    grid: SeriesGrid, pos: np.ndarray, origin: np.ndarray, horizon: np.ndarray
) -> pl.DataFrame:
    """Raw quantities of each pair, all known at ``origin`` (minutes since 1970).

    Columns: ``pos, origin_t, target_t, horizon_min, cadence_min``, :data:`BASE_COLUMNS`, the
    origin's lags and rolling statistics, ``profile_days`` and ``actual`` (the reading at the
    target, NaN if none: only for training and scoring; never a feature).
    """
    b = _baseline_and_scale(grid, pos, origin, horizon)
    target, profile_first, mean_1d = b["target"], b["profile_first"], b["mean_1d"]
    where = b["where"]
    profile_3d, _ = _profile(grid, where, target, profile_first, 3)
    raw = {
        "pos": pos,
        "origin_t": origin,
        "target_t": target,
        "horizon_min": horizon,
        "cadence_min": b["cadence"],
        **{name: b[name] for name in BASE_COLUMNS},
        "profile_days": b["profile_days"],
        "profile_3d": profile_3d,
        "rolling_mean_60m": b["mean_60m"],
        "rolling_std_60m": grid.at("rolling_std_60m", where, origin),
        "last_day_smooth": grid.at(
            "smooth_30m", where, target - profile_first * MINUTES_PER_DAY + PROFILE_SHIFT_MIN
        ),
        "rolling_mean_1d": mean_1d,
        "rolling_mean_7d": grid.at("rolling_mean_7d", where, origin),
        "actual": grid.at("value", where, target),
    }
    for lag in LAGS_MIN:
        raw[f"lag_{lag}m"] = grid.at("value", where, origin - steps_up(lag, b["cadence"]))
    return pl.DataFrame(raw)


# -- model features (polars expressions over pair_frame) --------------------------------


def _z(column: str, reference: str) -> pl.Expr:
    return (pl.col(column) - pl.col(reference)) / pl.col("scale")


def origin_z() -> pl.Expr:
    """The reading at the origin itself relative to its profile (the seed's lags start one
    step before it)."""
    return _z("last", "profile_origin").alias("origin_z")


def vol_z() -> pl.Expr:
    """The horizon's recent volatility in units of the daily spread."""
    return (pl.col("vol") / pl.col("scale")).alias("vol_z")


def lag_z(lag: int) -> pl.Expr:
    """The reading ``lag`` minutes before the origin, relative to the origin's profile."""
    return _z(f"lag_{lag}m", "profile_origin").alias(f"lag_{lag}m_z")


def rolling_mean_60m_z() -> pl.Expr:
    """The origin's 60-min level relative to its profile (anomaly persistence)."""
    return _z("rolling_mean_60m", "profile_origin").alias("rolling_mean_60m_z")


def rolling_std_60m_z() -> pl.Expr:
    """Recent volatility in units of the daily spread."""
    return (pl.col("rolling_std_60m") / pl.col("scale")).alias("rolling_std_60m_z")


def last_day_z() -> pl.Expr:
    """The same minute on the latest day known at the origin, relative to the baseline."""
    return _z("last_day", "baseline").alias("last_day_z")


def last_day_smooth_z() -> pl.Expr:
    """The 30-min level around the same minute on the latest known day, vs the baseline."""
    return _z("last_day_smooth", "baseline").alias("last_day_smooth_z")


def level_shift_z() -> pl.Expr:
    """The last day's mean level relative to the last week's: slow weather-like shifts."""
    return _z("rolling_mean_1d", "rolling_mean_7d").alias("level_shift_z")


def last_week_z() -> pl.Expr:
    """The same minute one week before the target, relative to the baseline."""
    return _z("last_week", "baseline").alias("last_week_z")


def profile_shift_z() -> pl.Expr:
    """How far the profile moves from the origin's minute to the target's."""
    return _z("baseline", "profile_origin").alias("profile_shift_z")


def profile_3d_z() -> pl.Expr:
    """The 3-day profile at the target's minute vs the 7-day one: recent days weigh more."""
    return _z("profile_3d", "baseline").alias("profile_3d_z")


def minute_sin(column: str) -> pl.Expr:
    return (2 * math.pi * pl.col(column) / MINUTES_PER_DAY).sin()


def minute_cos(column: str) -> pl.Expr:
    return (2 * math.pi * pl.col(column) / MINUTES_PER_DAY).cos()


def target_z() -> pl.Expr:
    """What the model learns: the target reading relative to the pair's ``anchor`` (the
    baseline plus the origin's decaying departure, see ``engine.forecast.anchor``; the
    baseline when no anchor column is given), in scale units."""
    return _z("actual", "anchor").alias("target_z")


def _local_calendar(frame: pl.DataFrame, timezones: Sequence[str], column: str) -> pl.DataFrame:
    """Local minute-of-day and day-of-week (Monday = 1) of ``column`` (minutes since 1970)."""
    prefix = column.removesuffix("_t")
    parts = []
    tz_of = pl.Series("tz", list(timezones), dtype=pl.String)
    tagged = frame.with_row_index("_row").with_columns(tz_of.gather(frame["pos"]).alias("_tz"))
    for (tz,), part in tagged.group_by("_tz"):
        local = from_minutes(pl.col(column)).dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
        parts.append(
            part.select(
                "_row",
                (local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)).alias(
                    f"{prefix}_minute_of_day"
                ),
                local.dt.weekday().cast(pl.Int32).alias(f"{prefix}_day_of_week"),
            )
        )
    calendar = pl.concat(parts).sort("_row").drop("_row")
    return pl.concat([frame, calendar], how="horizontal")


def feature_frame(pairs: pl.DataFrame, timezones: Sequence[str]) -> pl.DataFrame:
    """``pairs`` (from :func:`pair_frame`) with every column of :data:`FEATURES`.

    ``timezones[pos]`` is the IANA zone of the sensor at grid position ``pos``.
    """
    if pairs.is_empty():
        missing = [f for f in (*FEATURES, "target_z") if f not in pairs.columns]
        pairs = pairs.with_columns(pl.lit(None, pl.Float64).alias(f) for f in missing)
        return pairs.with_columns(pl.col(f).cast(pl.Float64) for f in (*FEATURES, "target_z"))
    pairs = _local_calendar(pairs, timezones, "origin_t")
    pairs = _local_calendar(pairs, timezones, "target_t")
    if "anchor" not in pairs.columns:
        pairs = pairs.with_columns(pl.col("baseline").alias("anchor"))
    return pairs.with_columns(
        origin_z(),
        vol_z(),
        *(lag_z(lag) for lag in LAGS_MIN),
        rolling_mean_60m_z(),
        rolling_std_60m_z(),
        last_day_z(),
        last_day_smooth_z(),
        last_week_z(),
        level_shift_z(),
        profile_shift_z(),
        profile_3d_z(),
        target_z(),
        minute_sin("origin_minute_of_day").alias("origin_minute_sin"),
        minute_cos("origin_minute_of_day").alias("origin_minute_cos"),
        minute_sin("target_minute_of_day").alias("target_minute_sin"),
        minute_cos("target_minute_of_day").alias("target_minute_cos"),
    ).with_columns(pl.col(f).cast(pl.Float64).fill_nan(None) for f in (*FEATURES, "target_z"))


def feature_matrix(features: pl.DataFrame) -> np.ndarray:
    """The model's input matrix (float64, NaN for unknown) in :data:`FEATURES` order."""
    return features.select(pl.col(f).cast(pl.Float64) for f in FEATURES).to_numpy()
