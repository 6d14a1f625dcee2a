"""The anomaly detectors: each defined once, each calibrated from the sensor's own history.

A detector is a :class:`Detector` in :data:`DETECTORS`: its name (the ``anomaly_type`` it
reports), its output column in ``anomaly_scores``, its tie rank, whether it is a sensor fault,
its colour in the report, its configuration keys (``[anomaly.<name>]``) and its score (a polars
expression over the reading's features and its hour's baselines). The mart's columns, the
QARTOD flag, ``anomaly_type``, the report's colours and the evaluation's types all derive from
that one list.

How a reading is scored (``docs/detection.md`` explains why):

1. **Minute features** (:func:`minute_features`) — windows counted in readings at the sensor's
   cadence (the median step of its last 24 hours), never across a gap: a window whose span is
   more than twice its nominal length is not used. ``level`` is the median of the reading and
   ``neighbours`` readings either side; ``resid`` = value - level (the spike residual);
   ``step`` = value - previous reading; ``flat`` = how long the value has not changed.
2. **Hourly statistics** (:func:`hourly_statistics`) per sensor and UTC hour: the median level,
   the mean |resid|, the median |step|, the longest flat run, the within-hour spread of the
   level, the median time step. They are stored (``score_hourly``) so that an incremental run
   reads hours, not minutes, of history.
3. **Baselines** (:func:`baselines`) per sensor and hour, from the previous ``history`` (28
   days) only: for the same local hour of day, medians over days (typical noise, typical step,
   typical flat run, the hour-of-day profile) and the day-to-day spread (IQR / 1.349) of the
   hour's level and of its change over the collective horizon; the same statistics pooled over
   all hours floor each local hour's (``hour_floor``).
4. **Scores** (:func:`score_readings_frame`): each detector's statistic divided by its
   calibrated scale, against one threshold per detector; ``score = clip(stat / threshold -
   0.5, 0, 1)``: 0.5 (the flag) at the threshold, 1 at 1.5 times it.

Every window is bounded in time, so a reading's scores depend only on readings within
:attr:`Windows.ahead` after it, on the minutes of :attr:`Windows.minutes` before it and on the
hourly rows of :attr:`Windows.hours` before its hour: an incremental run that recomputes from
a changed hour with that much history equals a full run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import polars as pl

from engine import OxyError

# -- definitions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One detector: what it reports, where, and how it scores a reading.

    ``score`` maps the configuration section ``[anomaly.<name>]`` (a dict) to a polars
    expression over the columns of :func:`score_inputs` giving the score in [0, 1] (null where
    the detector cannot judge the reading, e.g. without enough history)."""

    name: str
    column: str
    rank: int
    fault: bool
    qartod_fail: bool  # a flagged reading of this detector is QARTOD 4 (fail) whatever its score
    colour: str
    summary: str
    score: Callable[[dict[str, Any]], pl.Expr]


def ramp(statistic: pl.Expr, threshold: float) -> pl.Expr:
    """The score of a statistic against its threshold: 0 up to half the threshold, 0.5 at it,
    1 from 1.5 times it (null stays null)."""
    return (statistic / threshold - 0.5).clip(0.0, 1.0)


def _range_score(p: dict[str, Any]) -> pl.Expr:
    # QARTOD gross range on saturation: suspect above suspect_sat (0.5 rising to just below the
    # QARTOD fail score), fail from fail_sat on or below zero (1)
    sat = pl.col("saturation")
    suspect, fail = float(p["suspect_sat"]), float(p["fail_sat"])
    over = 0.5 + 0.39 * ((sat - suspect) / (fail - suspect)).clip(0.0, 1.0)
    return (
        pl.when((pl.col("value") < 0) | (sat >= fail))
        .then(1.0)
        .when(sat > suspect)
        .then(over)
        .otherwise(0.0)
    )


def _dropout_score(p: dict[str, Any]) -> pl.Expr:
    level = pl.when(pl.col("unit") == "%sat").then(p["%sat"]).otherwise(p["mg/L"])
    return pl.when(pl.col("value") <= level).then(1.0).otherwise(0.0)


def _stuck_score(p: dict[str, Any]) -> pl.Expr:
    # how long the value has not changed / (ratio x the longest flat run this local hour
    # typically holds, at least min_readings readings at the cadence)
    floor = pl.col("cadence_s") * float(p["min_readings"])
    typical = pl.max_horizontal(pl.col("flat_typ") * float(p["ratio"]), floor)
    return pl.when(pl.col("flat_typ").is_not_null()).then(ramp(pl.col("flat_s") / typical, 1.0))


def _spike_score(p: dict[str, Any]) -> pl.Expr:
    # |value - local level| / sigma, sigma = the larger of this local hour's typical noise and
    # the noise around the reading (inside a noise burst a large residual is noise, not a spike)
    sigma = pl.max_horizontal("noise_sigma", pl.col("rough_around") * CURVE_SIGMA)
    judged = pl.col("noise_sigma").is_not_null()
    return pl.when(judged).then(ramp(pl.col("resid").abs() / sigma, float(p["z"])))


def _noise_score(p: dict[str, Any]) -> pl.Expr:
    # mean |second difference| (clipped) over the noise window / this local hour's typical
    return ramp(pl.col("rough") / pl.col("noise_typ"), float(p["ratio"]))


def _point_score(p: dict[str, Any]) -> pl.Expr:
    # rate of change: the step from the previous reading, as far as it leaves the level of the
    # readings before (the step back from a spike is none), / this local hour's typical step
    into = pl.min_horizontal(pl.col("step").abs(), (pl.col("value") - pl.col("before")).abs())
    return ramp(into / pl.col("step_sigma"), float(p["z"]))


def _collective_score(p: dict[str, Any]) -> pl.Expr:
    # the level against the hour-of-day profile shifted by the last 24 hours' own departure
    # from it (a day of weather shifts all its hours), in units of that residual's spread
    residual = pl.col("level") - pl.col("day_expected")
    return ramp(residual.abs() / pl.col("collective_sigma"), float(p["z"]))


def _contextual_score(p: dict[str, Any]) -> pl.Expr:
    # the level against the hour-of-day profile (moved as the site moved), in units of the
    # hour's day-to-day spread
    residual = pl.col("level") - pl.col("expected")
    return ramp(residual.abs() / pl.col("contextual_sigma"), float(p["z"]))


def _drift_score(p: dict[str, Any]) -> pl.Expr:
    # the departure of the day's level (relative to the site) / its own spread over the
    # reference weeks, where it is at least min_relative of the level (a sensor's accuracy)
    z, gate = float(p["z"]), math.log1p(float(p["min_relative"]))
    departure = pl.col("drift_departure")
    sigma = pl.max_horizontal(pl.col("drift_spread"), pl.lit(gate / z))
    return (
        pl.when(departure >= gate)
        .then(ramp(departure / sigma, z))
        .when(departure.is_not_null())
        .then(0.0)
    )


DETECTORS: tuple[Detector, ...] = (
    Detector(
        "point",
        "score_point",
        6,
        False,
        False,
        "#ff7f0e",
        "the step from the previous reading against the local hour's typical step (QARTOD "
        "rate of change, calibrated per sensor)",
        _point_score,
    ),
    Detector(
        "collective",
        "score_collective",
        7,
        False,
        False,
        "#1f77b4",
        "the level against its hour-of-day profile shifted by the last day's own departure "
        "from it: a supply failure, a recovery, a level shift within a day of weather",
        _collective_score,
    ),
    Detector(
        "contextual",
        "score_contextual",
        8,
        False,
        False,
        "#2ca02c",
        "the level against the sensor's hour-of-day profile, moved as its site moved: normal "
        "for the sensor, wrong for the hour",
        _contextual_score,
    ),
    Detector(
        "stuck",
        "score_stuck",
        3,
        True,
        False,
        "#8c564b",
        "the value has not changed for ratio x the longest flat run this local hour typically "
        "holds (QARTOD flat line, calibrated per sensor)",
        _stuck_score,
    ),
    Detector(
        "spike",
        "score_spike",
        4,
        True,
        False,
        "#d62728",
        "the reading against the median of its neighbours, in units of the local hour's "
        "typical noise (QARTOD spike, calibrated per sensor)",
        _spike_score,
    ),
    Detector(
        "noise",
        "score_noise",
        5,
        True,
        False,
        "#9467bd",
        "the mean residual around the reading against the local hour's typical noise",
        _noise_score,
    ),
    Detector(
        "drift",
        "score_drift",
        9,
        True,
        False,
        "#e377c2",
        "the day's level against the sensor's level one to four weeks earlier (relative to its "
        "site's other sensors where it has some): fouling, a failing membrane, a calibration "
        "offset",
        _drift_score,
    ),
    Detector(
        "dropout",
        "score_dropout",
        2,
        True,
        True,
        "#000000",
        "a reading at or below the dropout level: an exact zero is a dropout, not oxygen",
        _dropout_score,
    ),
    Detector(
        "range",
        "score_range",
        1,
        True,
        False,
        "#7f0000",
        "saturation outside what water holds: above suspect_sat (injection farms reach "
        "~200 %) to fail_sat, or negative; mg/L via Benson-Krause at the reading's temperature",
        _range_score,
    ),
)

DETECTOR_NAMES: tuple[str, ...] = tuple(d.name for d in DETECTORS)
FAULT_TYPES: tuple[str, ...] = tuple(d.name for d in DETECTORS if d.fault)
COLOURS: dict[str, str] = {d.name: d.colour for d in DETECTORS}


def detector(name: str) -> Detector:
    for d in DETECTORS:
        if d.name == name:
            return d
    raise KeyError(name)


# -- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """The windows of the detectors, and how far a score reaches in time."""

    neighbours: int  # the level: median of the reading and this many readings either side
    noise_readings: int  # the noise window: this many readings centred on the reading
    history: timedelta  # baselines look back this far (days of the same local hour)
    day: timedelta  # collective: the contextual residual against its median over this window
    drift_window: timedelta  # drift: the level over this window ...
    drift_gap: timedelta  # ... against the level from drift_reference before to drift_gap
    drift_reference: timedelta  # before it
    max_cadence: timedelta  # the sparsest cadence a window is sized for

    @property
    def reach(self) -> int:
        """Readings a minute window reaches either side of a reading."""
        return max(self.neighbours + self.noise_readings // 2, self.neighbours * 2)

    @property
    def ahead(self) -> timedelta:
        """How far ahead of a reading its scores may look: the readings of its windows, and the
        rest of its hour (its hour's statistics)."""
        return self.ahead_at(self.max_cadence)

    def ahead_at(self, cadence: timedelta) -> timedelta:
        """:attr:`ahead` for a sensor whose cadence is at most ``cadence`` (a window spans at
        most twice its readings at the cadence, and never more than at ``max_cadence``)."""
        return self.reach * 2 * min(cadence, self.max_cadence) + timedelta(hours=1)

    @property
    def minutes(self) -> timedelta:
        """The readings before a rescored reading its windows need (and the flat run's cap)."""
        return max(self.reach * 2 * self.max_cadence, FLAT_CAP) + timedelta(hours=1)

    @property
    def hours(self) -> timedelta:
        """The hourly rows before a rescored hour its baselines need: the spreads of the
        residuals from a profile over ``history`` reach back twice ``history`` (and the day of
        the collective offset); the drift's spread over its reference weeks of departures from
        their own reference weeks, twice the reference and the drift window."""
        residuals = 2 * self.history + self.day
        drift = 2 * self.drift_reference + self.drift_window
        return max(residuals, drift) + timedelta(hours=26)


FLAT_CAP = timedelta(hours=12)  # a flat run is counted up to this long (bounded look-back)


def duration(text: Any, key: str) -> timedelta:
    """``"90 minutes"``, ``"2 hours"``, ``"28 days"`` (or ``"1h"``-style) as a timedelta."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise OxyError(f"[anomaly] {key} must be a duration such as '2 hours', not {text!r}")
    units = {
        "minute": 60,
        "minutes": 60,
        "min": 60,
        "m": 60,
        "hour": 3600,
        "hours": 3600,
        "h": 3600,
        "day": 86400,
        "days": 86400,
        "d": 86400,
        "week": 604800,
        "weeks": 604800,
        "w": 604800,
    }
    body = text.strip().lower()
    number = body.rstrip("abcdefghijklmnopqrstuvwxyz ").strip()
    unit = body[len(number) :].strip()
    try:
        amount = float(number)
    except ValueError:
        amount = math.nan
    if unit not in units or not amount > 0:
        raise OxyError(f"[anomaly] {key} must be a duration such as '2 hours', not {text!r}")
    return timedelta(seconds=amount * units[unit])


def windows(config_anomaly: dict[str, Any]) -> Windows:
    """The :class:`Windows` of an ``[anomaly]`` configuration."""
    a = config_anomaly
    d = a["drift"]
    w = Windows(
        neighbours=int(a["neighbours"]),
        noise_readings=int(a["noise"]["readings"]),
        history=duration(a["history"], "history"),
        day=duration(a["collective"]["window"], "collective.window"),
        drift_window=duration(d["window"], "drift.window"),
        drift_gap=duration(d["gap"], "drift.gap"),
        drift_reference=duration(d["reference"], "drift.reference"),
        max_cadence=duration(a["max_cadence"], "max_cadence"),
    )
    if w.neighbours < 1 or w.noise_readings < 3:
        raise OxyError("[anomaly] neighbours must be >= 1 and noise.readings >= 3")
    if w.day < timedelta(hours=2):
        raise OxyError("[anomaly] collective.window must be at least 2 hours")
    if w.drift_reference <= w.drift_gap:
        raise OxyError("[anomaly] drift.reference must be longer than drift.gap")
    return w


# -- minute features ----------------------------------------------------------------------------

US = 1_000_000


def _same(shift: int) -> pl.Expr:
    return pl.col("sensor_id") == pl.col("sensor_id").shift(shift)


def with_steps(readings: pl.DataFrame) -> pl.DataFrame:
    """``dt_s``: seconds since the sensor's previous reading (null for its first); ``hour``."""
    return readings.with_columns(
        hour=pl.col("ts").dt.truncate("1h"),
        dt_s=pl.when(_same(1)).then((pl.col("ts") - pl.col("ts").shift(1)).dt.total_seconds()),
    )


def cadence_by_hour(hourly_dt: pl.DataFrame) -> pl.DataFrame:
    """Per sensor and hour, the cadence in seconds: the median of the hourly median steps over
    the last 24 hours (this one included). ``hourly_dt``: sensor_id, hour, dt_med."""
    return (
        hourly_dt.sort("sensor_id", "hour")
        .with_columns(
            cadence_s=pl.col("dt_med")
            .rolling_median_by("hour", "24h", closed="right")
            .over("sensor_id")
        )
        .select("sensor_id", "hour", "cadence_s")
    )


def _window_ok(k_before: int, k_after: int, w: Windows) -> pl.Expr:
    """The rows ``k_before`` back and ``k_after`` ahead belong to the sensor and span at most
    twice the window's nominal length at the cadence (no gap inside), and at most that at
    ``max_cadence`` (the windows of a sparser sensor are not used: every window is bounded)."""
    span = (pl.col("ts").shift(-k_after) - pl.col("ts").shift(k_before)).dt.total_seconds()
    nominal = (k_before + k_after) * pl.min_horizontal(
        pl.col("cadence_s"), pl.lit(w.max_cadence.total_seconds())
    )
    return _same(k_before) & _same(-k_after) & (span <= 2 * nominal)


def minute_features(frame: pl.DataFrame, w: Windows) -> pl.DataFrame:
    """Per reading (sorted by sensor_id, ts; with ``cadence_s``): ``level``, ``resid``,
    ``step``, ``flat_s`` (seconds the value has stood still, capped at :data:`FLAT_CAP`)."""
    k = w.neighbours
    value = pl.col("value")
    level = value.rolling_median(2 * k + 1, center=True, min_samples=1)
    gap_ok = pl.col("dt_s") <= 2 * pl.col("cadence_s")
    moved = (value != value.shift(1)) | ~_same(1) | ~gap_ok.fill_null(False)
    next_ok = gap_ok.shift(-1) & _same(-1)
    before = value.shift(1).rolling_median(k, min_samples=1)
    frame = frame.with_columns(
        level=pl.when(_window_ok(k, k, w)).then(level),
        before=pl.when(_window_ok(k, 0, w)).then(before),
        step=pl.when(gap_ok).then(value - value.shift(1)),
        # the second difference: the reading against the mean of its two neighbours (the
        # noise of a smooth signal, where a median of neighbours equals the reading)
        curve=pl.when(gap_ok & next_ok).then(value - (value.shift(1) + value.shift(-1)) / 2),
    )
    run_start = pl.when(moved).then(pl.col("ts")).forward_fill()
    flat = (pl.col("ts") - run_start).dt.total_seconds().clip(upper_bound=FLAT_CAP.total_seconds())
    return frame.with_columns(
        resid=value - pl.col("level"),
        flat_s=pl.when(value.is_not_null()).then(flat),
    )


# -- hourly statistics --------------------------------------------------------------------------

HOURLY_COLUMNS: dict[str, pl.DataType] = {
    "sensor_id": pl.String(),
    "hour": pl.Datetime("us"),
    "local_hour": pl.Int8(),
    "n": pl.UInt32(),
    "dt_med": pl.Float64(),
    "value_med": pl.Float64(),
    "level_med": pl.Float64(),
    "level_mad": pl.Float64(),
    "curve_mean": pl.Float64(),
    "step_med": pl.Float64(),
    "step_min": pl.Float64(),
    "flat_max": pl.Float64(),
    "temperature_med": pl.Float64(),
    "salinity_med": pl.Float64(),
}


def hourly_statistics(frame: pl.DataFrame) -> pl.DataFrame:
    """Per sensor and UTC hour, the statistics the baselines are built from (see
    :data:`HOURLY_COLUMNS`). ``frame``: the minute features of whole hours."""
    level = pl.col("level")
    return (
        frame.group_by("sensor_id", "hour")
        .agg(
            local_hour=pl.col("local_hour").first().cast(pl.Int8),
            n=pl.len().cast(pl.UInt32),
            dt_med=pl.col("dt_s").median(),
            value_med=pl.col("value").median(),
            level_med=level.median(),
            level_mad=(level - level.median()).abs().median(),
            curve_mean=pl.col("curve").abs().mean(),
            step_med=pl.col("step").abs().median(),
            step_min=pl.col("step").abs().filter(pl.col("step") != 0).min(),
            flat_max=pl.col("flat_s").max(),
            temperature_med=pl.col("temperature_c").median(),
            salinity_med=pl.col("salinity").median(),
        )
        .select(list(HOURLY_COLUMNS))
        .cast({k: v for k, v in HOURLY_COLUMNS.items() if k != "sensor_id"})
        .sort("sensor_id", "hour")
    )


# -- baselines ----------------------------------------------------------------------------------

IQR_SIGMA = 1.349  # IQR of a normal distribution in sigmas
SAME_HOUR = ["sensor_id", "local_hour"]  # windows over the same local hour of earlier days
MAD_SIGMA = 1.4826  # sigma per median absolute deviation of a normal distribution
CURVE_SIGMA = 1.023  # white noise sigma per mean |second difference| (sqrt(1.5) x sqrt(2/pi))


def benson_krause_ln(t_kelvin: Any, salinity: Any) -> Any:
    """ln of the Benson-Krause oxygen solubility (mg/L) at 1 atm; arithmetic only, so it
    takes numbers, numpy arrays or polars expressions (temperature in kelvin, salinity g/kg)."""
    return (
        -139.34411
        + 1.575701e5 / t_kelvin
        - 6.642308e7 / t_kelvin**2
        + 1.2438e10 / t_kelvin**3
        - 8.621949e11 / t_kelvin**4
        - salinity * (0.017674 - 10.754 / t_kelvin + 2140.7 / t_kelvin**2)
    )


def oxygen_solubility(temperature_c: pl.Expr, salinity: pl.Expr) -> pl.Expr:
    """Benson-Krause oxygen solubility (mg/L) at 1 atm, temperature in degC, salinity g/kg."""
    t = pl.when(temperature_c.is_between(-5.0, 45.0)).then(temperature_c) + 273.15
    return benson_krause_ln(t, salinity).exp()


def _log_level(unit: pl.Expr, value: pl.Expr, temperature: pl.Expr, salinity: pl.Expr) -> pl.Expr:
    """log of the level as a saturation where the temperature is known (a season's change of
    temperature moves mg/L, not saturation), else of the level itself."""
    sat = pl.when(unit == "mg/L").then(
        value / oxygen_solubility(temperature, salinity.fill_null(0.0))
    )
    positive = pl.when(value > 0)
    return positive.then(pl.coalesce(sat, value).log())


# A windowed aggregation: (alias, column, operation, quantile). The windows are polars
# ``rolling_*_by`` over the hour, partitioned per sensor (and local hour): nulls are skipped, an
# empty window gives null (a count gives 0); quantiles are the "nearest" ones, as
# ``Expr.quantile``'s.
Agg = tuple[str, str, str, float | None]
ClosedInterval = Literal["left", "right"]


def _med(column: str, alias: str) -> Agg:
    return (alias, column, "median", None)


def _qtl(column: str, quantile: float, alias: str) -> Agg:
    return (alias, column, "quantile", quantile)


def _abs_qtl(column: str, quantile: float, alias: str) -> Agg:
    return (alias, column, "abs_quantile", quantile)


def _cnt(column: str, alias: str) -> Agg:
    return (alias, column, "count", None)


def _rolled(agg: Agg, period: str, closed: ClosedInterval) -> pl.Expr:
    alias, column, op, quantile = agg
    x = pl.col(column)
    if op == "median":
        out = x.rolling_median_by("hour", period, closed=closed)
    elif op == "quantile":
        out = x.rolling_quantile_by("hour", period, quantile=quantile or 0.5, closed=closed)
    elif op == "abs_quantile":
        out = x.abs().rolling_quantile_by("hour", period, quantile=quantile or 0.5, closed=closed)
    else:
        out = x.is_not_null().cast(pl.UInt32).rolling_sum_by("hour", period, closed=closed)
    return out.alias(alias)


def _windowed(
    frame: pl.DataFrame,
    by: list[str],
    start: timedelta,
    end: timedelta | None,
    aggs: list[Agg],
) -> pl.DataFrame:
    """``aggs`` per group ``by`` (sensor, or sensor and local hour) over the earlier hours of a
    window, one row per row of ``frame`` (sensor_id, hour and the aggregates): [hour - start,
    hour) when ``end`` is None, else (hour - start, hour - end]. An offset window is evaluated
    at a query row placed at hour - end (after the real rows of that hour)."""
    columns = sorted({a[1] for a in aggs})
    keep = [*by, "hour", *columns]
    if end is None:
        period = f"{int(start.total_seconds())}s"
        ordered = frame.select(keep).sort(*by, "hour")
        out = ordered.with_columns([_rolled(a, period, "left").over(by) for a in aggs]).select(
            "sensor_id", "hour", *(a[0] for a in aggs)
        )
        return out
    period = f"{int((start - end).total_seconds())}s"
    real = frame.select(keep).with_columns(query=pl.lit(False))
    asked = frame.select(
        *by,
        (pl.col("hour") - end).alias("hour"),
        *(pl.lit(None).cast(frame.schema[c]).alias(c) for c in columns),
    ).with_columns(query=pl.lit(True))
    both = pl.concat([real, asked]).sort(*by, "hour", "query")
    out = both.with_columns([_rolled(a, period, "right").over(by) for a in aggs])
    return out.filter("query").select(
        "sensor_id", (pl.col("hour") + end).alias("hour"), *(a[0] for a in aggs)
    )


def levels(hourly: pl.DataFrame, w: Windows) -> pl.DataFrame:
    """Per sensor and hour, the levels the site stage and the baselines share:

    * ``log_level``: log of the hour's median value — as a saturation where the temperature is
      known (a season's temperature moves mg/L, not saturation);
    * ``log_profile``: its median over the previous days of the same local hour;
    * ``drift_dep``: the median over the last ``drift.window`` (24 h) of each hour's log level
      against the median of the same local hour over (hour - drift.reference, hour - drift.gap]
      (the weeks before a fouling of up to three weeks started); ``drift_n`` the days that
      reference holds.

    ``hourly``: the hourly statistics with ``unit`` (sorted by sensor_id, hour)."""
    q = pl.col
    logged = hourly.with_columns(
        log_level=_log_level(q("unit"), q("value_med"), q("temperature_med"), q("salinity_med"))
    )
    prof = _windowed(logged, SAME_HOUR, w.history, None, [_med("log_level", "log_profile")])
    logged = logged.join(prof, on=["sensor_id", "hour"], how="left")
    # each hour against the same local hour over the reference weeks, then the median of those
    # departures over the drift window: the diel shape cancels, and an event of hours (a
    # supply failure) does not move a day's median
    reference = _windowed(
        logged,
        SAME_HOUR,
        w.drift_reference,
        w.drift_gap,
        [_med("log_level", "drift_ref"), _cnt("log_level", "drift_n")],
    )
    window = f"{int(w.drift_window.total_seconds())}s"
    min_hours = max(int(w.drift_window / timedelta(hours=1)) // 2, 1)
    logged = (
        logged.join(reference, on=["sensor_id", "hour"], how="left")
        .sort("sensor_id", "hour")
        .with_columns(drift_hour=q("log_level") - q("drift_ref"))
    )
    return logged.with_columns(
        drift_dep=q("drift_hour")
        .rolling_median_by("hour", window, closed="right", min_samples=min_hours)
        .over("sensor_id")
    )


def site_movement(levelled: pl.DataFrame, min_sensors: int) -> pl.DataFrame:
    """Per site and hour, how the site moved (weather, tide or a bloom moves every probe of a
    site; fouling one): ``ctx_move``, the median over its sensors of their log level against
    their own hour-of-day profile, and ``drift_move``, the median of their drift departures;
    each where at least ``min_sensors`` sensors hold one. ``levelled``: :func:`levels` with
    ``site``."""
    q = pl.col
    sited = levelled.filter(q("site").is_not_null())
    ctx = (q("log_level") - q("log_profile")).drop_nans()
    dep = q("drift_dep").drop_nans()
    return (
        sited.group_by("site", "hour")
        .agg(
            ctx_move=ctx.median(),
            ctx_n=ctx.count(),
            drift_move=dep.median(),
            drift_n_site=dep.count(),
        )
        .with_columns(
            ctx_move=pl.when(q("ctx_n") >= min_sensors).then(q("ctx_move")),
            drift_move=pl.when(q("drift_n_site") >= min_sensors).then(q("drift_move")),
        )
        .select("site", "hour", "ctx_move", "drift_move")
    )


def _spread_quantiles(column: str, prefix: str) -> list[Agg]:
    return [_qtl(column, x, f"{prefix}_q{round(100 * x):02d}") for x in (0.05, 0.25, 0.75, 0.95)]


def _spread(prefix: str) -> pl.Expr:
    """A residual's spread from its quantiles: the larger of the IQR's sigma and the 5-95 %
    range's (a residual's tails are heavier than a normal's where weather moves it in
    episodes; the wider tails give the wider scale)."""
    q = pl.col
    iqr = (q(f"{prefix}_q75") - q(f"{prefix}_q25")) / IQR_SIGMA
    tails = (q(f"{prefix}_q95") - q(f"{prefix}_q05")) / (2 * 1.645)
    return pl.max_horizontal(iqr, tails)


def baselines(
    hourly: pl.DataFrame, sites: pl.DataFrame | None, a: dict[str, Any], w: Windows
) -> pl.DataFrame:
    """Per sensor and hour, every calibrated scale and expected value the scores need, from
    earlier hours only.

    ``hourly``: the hourly statistics of every hour the baselines need (sorted by sensor_id,
    hour) with ``unit`` and ``site``; ``sites``: :func:`site_movement` of the sites concerned
    (None: no site moves its sensors)."""
    q = pl.col
    floor_ratio = float(a["hour_floor"])
    one_hour = timedelta(hours=1)
    frame = levels(hourly, w)
    if sites is not None and not sites.is_empty():
        frame = frame.join(sites, on=["site", "hour"], how="left")
    else:
        frame = frame.with_columns(
            ctx_move=pl.lit(None, pl.Float64), drift_move=pl.lit(None, pl.Float64)
        )
    # the hour-of-day profile of the level, moved as the site moved this hour
    prof = _windowed(frame, SAME_HOUR, w.history, None, [_med("level_med", "profile")])
    frame = frame.join(prof, on=["sensor_id", "hour"], how="left").with_columns(
        move=q("ctx_move").fill_null(0.0).exp()
    )
    # contextual residual of the hour; collective: that residual against its own median of
    # the last 24 hours (a day's weather shifts every hour of it; an event of hours does not
    # move that median)
    frame = frame.with_columns(ctx_resid=q("level_med") - q("profile") * q("move"))
    frame = frame.with_columns(
        ctx_offset=q("ctx_resid")
        .rolling_median_by(
            "hour",
            f"{int(w.day.total_seconds())}s",
            closed="right",
            min_samples=max(int(w.day / one_hour) // 2, 1),
        )
        .over("sensor_id")
    ).with_columns(col_resid=q("ctx_resid") - q("ctx_offset"))
    same_hour = _windowed(
        frame,
        SAME_HOUR,
        w.history,
        None,
        [
            *_spread_quantiles("ctx_resid", "ctx"),
            _cnt("ctx_resid", "days"),
            *_spread_quantiles("col_resid", "col"),
            _med("level_mad", "level_mad_typ"),
            _med("curve_mean", "curve_typ_h"),
            _med("step_med", "step_typ_h"),
            _qtl("flat_max", 0.75, "flat_typ"),
        ],
    )
    pooled = _windowed(
        frame,
        ["sensor_id"],
        w.history,
        None,
        [
            _med("curve_mean", "curve_typ_all"),
            _med("step_med", "step_typ_all"),
            _med("step_min", "resolution"),
            _med("level_mad", "level_mad_all"),
            _cnt("n", "hours_seen"),
        ],
    )
    frame = frame.join(same_hour, on=["sensor_id", "hour"], how="left").join(
        pooled, on=["sensor_id", "hour"], how="left"
    )
    # the noise can be no finer than the sensor's resolution (its smallest typical step)
    noise_floor = q("resolution").fill_null(0.0) / 2
    within = pl.max_horizontal(
        q("level_mad_typ") * MAD_SIGMA, q("level_mad_all") * MAD_SIGMA * floor_ratio
    ).fill_null(0.0)
    frame = frame.with_columns(
        curve_typ=pl.max_horizontal(
            q("curve_typ_h"), q("curve_typ_all") * floor_ratio, noise_floor
        ),
        step_typ=pl.max_horizontal(q("step_typ_h"), q("step_typ_all") * floor_ratio, noise_floor),
    )
    frame = frame.with_columns(
        # no level is known better than the noise of one reading
        contextual_spread=pl.max_horizontal(
            (_spread("ctx") ** 2 + within**2).sqrt(),
            q("curve_typ") * CURVE_SIGMA,
        ),
        collective_spread=pl.max_horizontal(
            (_spread("col") ** 2 + within**2).sqrt(),
            q("curve_typ") * CURVE_SIGMA,
        ),
    )
    # pooled floors for the spreads: each hour's at least hour_floor x the spread of the same
    # residuals over all hours
    pooled_spreads = _windowed(
        frame,
        ["sensor_id"],
        w.history,
        None,
        [*_spread_quantiles("ctx_resid", "ctx_all"), *_spread_quantiles("col_resid", "col_all")],
    )
    frame = frame.join(pooled_spreads, on=["sensor_id", "hour"], how="left").with_columns(
        ctx_all=_spread("ctx_all"), col_all=_spread("col_all")
    )
    min_days = int(a["contextual"]["min_days"])
    ready = q("hours_seen") >= int(a["min_hours"])
    spread_ready = ready & (q("days") >= min_days)
    # the profile between hours: linear through the hour boundaries (the mean of the hours
    # beside), so that a steep diel ramp is no step at :00
    frame = frame.sort("sensor_id", "hour").with_columns(
        moved=q("profile") * q("move"),
    )
    frame = frame.with_columns(
        moved_prev=q("moved").shift(1).over("sensor_id"),
        moved_next=q("moved").shift(-1).over("sensor_id"),
        hour_prev=q("hour").shift(1).over("sensor_id"),
        hour_next=q("hour").shift(-1).over("sensor_id"),
    )
    frame = frame.with_columns(
        prof_start=pl.when(q("hour_prev") == q("hour") - one_hour)
        .then((q("moved") + q("moved_prev")) / 2)
        .otherwise(q("moved")),
        prof_end=pl.when(q("hour_next") == q("hour") + one_hour)
        .then((q("moved") + q("moved_next")) / 2)
        .otherwise(q("moved")),
        noise_typ=pl.when(ready).then(q("curve_typ")),
        step_sigma=pl.when(ready).then(q("step_typ") * MAD_SIGMA),
        contextual_sigma=pl.when(spread_ready).then(
            pl.max_horizontal(q("contextual_spread"), q("ctx_all") * floor_ratio)
        ),
        collective_sigma=pl.when(spread_ready).then(
            pl.max_horizontal(q("collective_spread"), q("col_all") * floor_ratio)
        ),
        flat_typ=pl.when(ready).then(q("flat_typ").fill_null(0.0)),
    )
    drift = drift_scores(frame, a, w)
    return frame.join(drift, on=["sensor_id", "hour"], how="left").select(
        "sensor_id",
        "hour",
        "prof_start",
        "prof_end",
        "ctx_offset",
        "noise_typ",
        "step_sigma",
        "contextual_sigma",
        "collective_sigma",
        "flat_typ",
        "drift_departure",
        "drift_spread",
    )


def drift_scores(levelled: pl.DataFrame, a: dict[str, Any], w: Windows) -> pl.DataFrame:
    """Per sensor and hour, the drift departure (:func:`levels`) less its site's (where the
    site has enough sensors) and that statistic's own spread over its reference period (the
    drift detector compares the two)."""
    d = a["drift"]
    q = pl.col
    frame = levelled.sort("sensor_id", "hour").with_columns(
        drift_rel=pl.when(q("drift_move").is_not_null())
        .then(q("drift_dep") - q("drift_move"))
        .otherwise(q("drift_dep"))
    )
    spread = _windowed(
        frame,
        ["sensor_id"],
        w.drift_reference,
        w.drift_gap,
        [
            _qtl("drift_rel", 0.75, "rel_q75"),
            _qtl("drift_rel", 0.25, "rel_q25"),
            _abs_qtl("drift_rel", 0.9, "rel_a90"),
            _cnt("drift_rel", "rel_n"),
        ],
    )
    frame = frame.join(spread, on=["sensor_id", "hour"], how="left")
    min_ref = int(d["min_reference_days"])
    # judged once the reference holds min_reference_days of each hour, and the statistic's own
    # history over the reference weeks as many days (its spread is no guess)
    judged = (q("drift_n") >= min_ref) & (q("rel_n") >= 24 * min_ref) & q("drift_rel").is_not_null()
    # the statistic is slow and its tails heavy (a river's level moves in episodes): its
    # spread is the larger of the IQR's and the 90th percentile of its size's
    spread = pl.max_horizontal(
        (q("rel_q75") - q("rel_q25")) / IQR_SIGMA, q("rel_a90") / 1.645
    ).fill_null(0.0)
    return frame.select(
        "sensor_id",
        "hour",
        drift_departure=pl.when(judged).then(q("drift_rel").abs()),
        drift_spread=pl.when(judged).then(spread),
    )


# -- scores -------------------------------------------------------------------------------------


def score_inputs(features: pl.DataFrame, base: pl.DataFrame, w: Windows) -> pl.DataFrame:
    """The minute features joined with their hour's baselines, with the interpolated
    expected values and the local roughness."""
    frac = (pl.col("ts") - pl.col("hour")).dt.total_seconds() / 3600.0
    q = pl.col
    frame = features.join(base, on=["sensor_id", "hour"], how="left")
    clip = q("noise_typ") * 4.0
    clipped = pl.min_horizontal(q("curve").abs(), clip)
    n = w.noise_readings
    half = n // 2
    window_sum = clipped.fill_null(0.0).rolling_sum(n, center=True, min_samples=1)
    window_n = clipped.is_not_null().cast(pl.Int32).rolling_sum(n, center=True, min_samples=1)
    # the noise around a reading for its spike test leaves out the reading and its two
    # neighbours (their second differences hold the spike itself)
    own = (
        clipped.fill_null(0.0) + clipped.shift(1).fill_null(0.0) + clipped.shift(-1).fill_null(0.0)
    )
    own_n = (
        clipped.is_not_null().cast(pl.Int32)
        + clipped.shift(1).is_not_null().cast(pl.Int32)
        + clipped.shift(-1).is_not_null().cast(pl.Int32)
    )
    ok = _window_ok(half, half, w)
    return frame.with_columns(
        expected=q("prof_start") + (q("prof_end") - q("prof_start")) * frac,
        day_expected=q("prof_start") + (q("prof_end") - q("prof_start")) * frac + q("ctx_offset"),
        rough=pl.when(ok & (window_n > half)).then(window_sum / window_n),
        rough_around=pl.when(ok & (window_n - own_n > half)).then(
            (window_sum - own) / (window_n - own_n)
        ),
        noise_sigma=q("noise_typ") * CURVE_SIGMA,
    )


def saturation(frame: pl.DataFrame, a: dict[str, Any]) -> pl.Expr:
    """Percent saturation of each reading: %sat as read; mg/L against Benson-Krause solubility
    at the reading's temperature and salinity (the configured fallbacks where absent)."""
    r = a["range"]
    temperature = pl.col("temperature_c").fill_null(float(r["temperature_c"]))
    salinity = pl.col("salinity").fill_null(float(r["salinity"]))
    return (
        pl.when(pl.col("unit") == "%sat")
        .then(pl.col("value"))
        .otherwise(pl.col("value") / oxygen_solubility(temperature, salinity) * 100.0)
    )


def detector_scores(inputs: pl.DataFrame, a: dict[str, Any]) -> pl.DataFrame:
    """Every detector's score column, severity, anomaly_type, is_anomaly and qartod_flag."""
    frame = inputs.with_columns(saturation=saturation(inputs, a))
    frame = frame.with_columns(
        [
            d.score(a.get(d.name, {})).fill_nan(None).fill_null(0.0).alias(d.column)
            for d in DETECTORS
        ]
    )
    faults = [d.column for d in DETECTORS if d.fault]
    ranked = sorted(DETECTORS, key=lambda d: d.rank)
    severity = pl.max_horizontal([d.column for d in DETECTORS])
    kind = pl.lit("none")
    for d in reversed(ranked):  # the first in rank order among the largest wins a tie
        kind = pl.when(pl.col(d.column) == pl.col("severity")).then(pl.lit(d.name)).otherwise(kind)
    threshold = float(a["severity_threshold"])
    fail = float(a["qartod_fail_severity"])
    hard = [pl.col(d.column) >= threshold for d in DETECTORS if d.qartod_fail]
    frame = frame.with_columns(
        score_sensor_fault=pl.max_horizontal(faults),
        severity=severity,
    ).with_columns(
        anomaly_type=pl.when(pl.col("severity") > 0).then(kind).otherwise(pl.lit("none")),
        is_anomaly=pl.col("severity") >= threshold,
    )
    return frame.with_columns(
        qartod_flag=pl.when(pl.col("value").is_null())
        .then(9)
        .when(pl.any_horizontal(hard) | (pl.col("severity") >= fail))
        .then(4)
        .when(pl.col("is_anomaly") | (pl.col("saturation") >= float(a["range"]["suspect_sat"])))
        .then(3)
        .otherwise(1)
        .cast(pl.Int32)
    )


SCORE_COLUMNS: dict[str, pl.DataType] = {
    "sensor_id": pl.String(),
    "ts": pl.Datetime("us"),
    "value": pl.Float64(),
    **{d.column: pl.Float64() for d in DETECTORS if d.column != "score_sensor_fault"},
    "score_sensor_fault": pl.Float64(),
    "severity": pl.Float64(),
    "anomaly_type": pl.String(),
    "is_anomaly": pl.Boolean(),
    "qartod_flag": pl.Int32(),
    "prev_ts": pl.Datetime("us"),
}


# -- the whole chain ----------------------------------------------------------------------------


def site_of(sensor_id: str, customer: str | None, levels: int, separator: str = "|") -> str | None:
    """The site of a sensor: its customer and the first ``levels`` tag levels of its id
    (``Farm1`` of ``Farm1|Pond01|DO|Probe1``; ids split on ``|`` or ``/``); None when
    ``levels`` is 0."""
    if levels <= 0:
        return None
    parts = sensor_id.replace("/", separator).split(separator)
    return f"{customer or ''}::{separator.join(parts[:levels])}"


def prepare(readings: pl.DataFrame) -> pl.DataFrame:
    """Readings (sensor_id, ts, value, unit, local_hour[, temperature_c, salinity]) sorted by
    sensor and time, with ``hour``, ``dt_s`` and the optional columns present."""
    frame = readings
    for column in ("temperature_c", "salinity"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(column))
    return with_steps(frame.sort("sensor_id", "ts"))


def raw_hourly_steps(frame: pl.DataFrame) -> pl.DataFrame:
    """Per sensor and hour, the median step (``dt_med``) the cadence is read from."""
    return frame.group_by("sensor_id", "hour").agg(dt_med=pl.col("dt_s").median())


def score_frame(
    readings: pl.DataFrame,
    units: dict[str, str],
    sites: dict[str, str | None],
    a: dict[str, Any],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score every reading of ``readings`` (all of each sensor's history, in memory): the
    ``anomaly_scores`` rows and the hourly statistics. ``units`` and ``sites`` map each
    sensor to its unit and site (None: alone). The warehouse path (``engine.anomaly``) runs the
    same steps bucket by bucket with stored hourly rows."""
    w = windows(a)
    ids = pl.Enum(sorted(units))
    frame = prepare(readings.with_columns(pl.col("sensor_id").cast(ids)))
    cadence = cadence_by_hour(raw_hourly_steps(frame))
    frame = frame.join(cadence, on=["sensor_id", "hour"], how="left").sort("sensor_id", "ts")
    features = minute_features(frame, w)
    hourly = hourly_statistics(features)
    meta = pl.DataFrame(
        {
            "sensor_id": list(units),
            "unit": [units[s] for s in units],
            "site": [sites.get(s) for s in units],
        },
        schema={"sensor_id": ids, "unit": pl.String, "site": pl.String},
    )
    hourly_meta = hourly.join(meta, on="sensor_id", how="left")
    site_min = int(a["drift"]["site_min_sensors"])
    moved = site_movement(levels(hourly_meta, w), site_min)
    base = baselines(hourly_meta, moved, a, w)
    inputs = score_inputs(features, base, w)
    scored = detector_scores(inputs, a)
    prev_ok = pl.col("dt_s") <= 2 * pl.col("cadence_s")
    scored = scored.with_columns(
        prev_ts=pl.when(prev_ok).then(pl.col("ts") - pl.duration(seconds=pl.col("dt_s")))
    )
    return (
        scored.select(list(SCORE_COLUMNS)).cast(SCORE_COLUMNS),
        hourly.with_columns(pl.col("sensor_id").cast(pl.String)),
    )
