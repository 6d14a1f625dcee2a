"""Forecast error metrics: the one definition of MASE that every stage uses.

**MASE** (mean absolute scaled error) of a forecast window is, per sensor, the forecast's mean
absolute error divided by the sensor's *scale*: the mean absolute error of the daily seasonal
naive ("the same minute one day earlier") over the :data:`SCALE_DAYS` days of readings before
the window starts. The fleet's MASE is the mean of its sensors' MASEs. MASE 1 means "as good
as repeating yesterday was, recently"; below 1 is better.

The same definition is used by training (backtest, ``model_runs.test_mase``), by ``oxy
forecast`` (which stores each sensor's scale in ``forecast_status.mase_scale``), by the
monitor's ``forecast_mase`` check (which divides the arrived minutes' MAE by that stored
scale) and by ``bench/bench_forecast.py``.

Examples
--------
A 15-minute sensor whose level rose by 0.1 each day: every reading is 0.1 above the one a day
before, so the scale is 0.1 and a forecast that is 0.05 off everywhere has MASE 0.5.

>>> import numpy as np
>>> t = np.arange(0, 9 * 1440, 15)
>>> y = 8 + 0.1 * (t // 1440)
>>> round(mase_scale(t, y, before=int(t[-1]) + 15), 9)
0.1
>>> mase(np.full(10, 0.05), 0.1)
0.5
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

SEASON_MIN = 1440  # the seasonal naive's lag: one day
SCALE_DAYS = 7  # days of readings before the window whose seasonal-naive error is the scale
SCALE_FLOOR = 1e-9  # a perfectly repeating series still gets a positive scale


def mase_scale(t: np.ndarray, values: np.ndarray, before: int, *, days: int = SCALE_DAYS) -> float:
    """Mean ``|y(t) - y(t - 1 day)|`` over readings ``t`` in ``[before - days, before)``.

    ``t`` are minutes (sorted ascending), ``values`` the readings (NaN = missing). Only
    readings whose same minute one day earlier is also a reading count. NaN when none does.
    """
    t = np.asarray(t, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    keep = (t >= before - days * 1440) & (t < before)
    now_t, now_v = t[keep], values[keep]
    if not len(now_t):
        return math.nan
    idx = np.searchsorted(t, now_t - SEASON_MIN)
    idx = np.minimum(idx, len(t) - 1)
    found = t[idx] == now_t - SEASON_MIN
    diff = np.abs(now_v[found] - values[idx[found]])
    diff = diff[np.isfinite(diff)]
    if not len(diff):
        return math.nan
    return max(float(diff.mean()), SCALE_FLOOR)


def mase(abs_errors: np.ndarray, scale: float) -> float:
    """One sensor's MASE: mean absolute error / its :func:`mase_scale`."""
    errors = np.asarray(abs_errors, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    if not len(errors) or not math.isfinite(scale) or scale <= 0:
        return math.nan
    return float(errors.mean() / scale)


def fleet_mase(
    frame: pl.DataFrame,
    prediction: str,
    *,
    actual: str = "actual",
    scale: str = "mase_scale",
    sensor: str = "sensor_id",
) -> float:
    """Mean over sensors of MAE / scale, over the rows of ``frame`` where both values exist."""
    rows = frame.filter(
        pl.col(prediction).is_not_null()
        & pl.col(prediction).is_not_nan()
        & pl.col(actual).is_not_null()
        & pl.col(actual).is_not_nan()
    )
    if rows.is_empty():
        return math.nan
    per_sensor = rows.group_by(sensor).agg(
        ((pl.col(actual) - pl.col(prediction)).abs().mean() / pl.col(scale).first()).alias("m")
    )
    value = per_sensor["m"].fill_nan(None).drop_nulls().mean()
    return float(value) if value is not None else math.nan  # type: ignore[arg-type]
