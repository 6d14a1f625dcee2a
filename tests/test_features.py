"""Forecast features against a slow, obviously correct reference on tiny series with gaps."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.features import (
    FEATURES,
    SeriesGrid,
    feature_frame,
    pair_frame,
    sensor_series,
    steps_up,
)

START = datetime(2024, 3, 1)
T0 = int((START - datetime(1970, 1, 1)).total_seconds() // 60)


def tiny_series(cadence: int, days: int, seed: int = 0) -> pl.DataFrame:
    """A diurnal series with noise and two gaps (one of 3 h, one of a whole day)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, days * 1440, cadence)
    keep = ~(((t >= 2000) & (t < 2180)) | ((t >= 5 * 1440) & (t < 6 * 1440)))
    keep &= rng.random(len(t)) > 0.05
    t = t[keep]
    value = 8 + 2 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.3, len(t))
    return pl.DataFrame(
        {
            "sensor_id": "s1",
            "ts": [START + timedelta(minutes=int(m)) for m in t],
            "value": value,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def reference(readings: pl.DataFrame, origin: int, horizon: int, cadence: int) -> dict:
    """The raw pair quantities by brute force over a {minute: value} dict."""
    series = {
        int((ts - datetime(1970, 1, 1)).total_seconds() // 60): v
        for ts, v in readings.select("ts", "value").iter_rows()
    }

    def window(end: int, length: int) -> list[float]:
        return [v for t, v in series.items() if end - length < t <= end]

    def mean_at(t: int, length: int) -> float:
        return float(np.mean(window(t, length))) if t in series else math.nan

    target = origin + horizon
    first = -(-(horizon + 15) // 1440)
    profile = [mean_at(target - (first + k) * 1440 + 15, 30) for k in range(7)]
    profile = [p for p in profile if not math.isnan(p)]
    day = window(origin, 1440)
    mean_1d = float(np.mean(day)) if origin in series else math.nan
    baseline = float(np.mean(profile)) if profile else mean_1d
    mean_60 = mean_at(origin, 60)
    std_1d = float(np.std(day, ddof=1)) if origin in series and len(day) > 1 else math.nan
    floor = 1e-3 + 0.01 * abs(0.0 if math.isnan(mean_60) else mean_60)
    out = {
        "baseline": baseline,
        "profile_days": float(len(profile)),
        "rolling_mean_60m": mean_60,
        "scale": max(std_1d, floor) if not math.isnan(std_1d) else floor,
        "last_day": series.get(target - -(-horizon // 1440) * 1440, math.nan),
        "last_week": series.get(target - 10080, math.nan),
        "actual": series.get(target, math.nan),
    }
    for lag in (1, 5, 60):
        out[f"lag_{lag}m"] = series.get(origin - -(-lag // cadence) * cadence, math.nan)
    return out


def _pairs(readings: pl.DataFrame, origins: list[int], horizons: list[int]) -> pl.DataFrame:
    grid = SeriesGrid.from_series(sensor_series(readings.lazy()))
    n = len(origins)
    return pair_frame(
        grid, np.zeros(n, np.int64), np.array(origins, np.int64), np.array(horizons, np.int64)
    )


@pytest.mark.parametrize("cadence", [1, 15])
def test_pair_quantities_equal_reference(cadence: int) -> None:
    readings = tiny_series(cadence, days=10)
    cases = [
        (T0 + 8 * 1440 + 600, cadence),
        (T0 + 8 * 1440 + 600, 60),
        (T0 + 8 * 1440 + 600, 1440),
        (T0 + 7 * 1440 + 120, 2 * 1440 + 45),  # target lands in the day-long gap's shadow
        (T0 + 2000 + 180, 30),  # origin right after the 3-hour gap
        (T0 + 9 * 1440, 7 * 1440 - 15),
    ]
    cases = [(o - (o - T0) % cadence, h) for o, h in cases]
    got = _pairs(readings, [o for o, _ in cases], [h for _, h in cases])
    for row, (origin, horizon) in zip(got.iter_rows(named=True), cases, strict=True):
        want = reference(readings, origin, horizon, cadence)
        for key, expected in want.items():
            assert row[key] == pytest.approx(expected, rel=1e-9, abs=1e-9, nan_ok=True), (
                key,
                origin,
                horizon,
            )


def test_gap_is_nan_not_a_neighbour() -> None:
    readings = tiny_series(1, days=10)
    # 2000 + 60 is inside the 3-hour gap: lag_60m at origin 2000 + 120 must be unknown.
    got = _pairs(readings, [T0 + 2180 + 60], [5])
    assert math.isnan(got["lag_60m"][0])
    assert math.isnan(_pairs(readings, [T0 + 2100], [5])["rolling_mean_60m"][0])


def test_calendar_is_local_time() -> None:
    readings = tiny_series(15, days=10)
    origin = int((datetime(2024, 3, 8, 12, 0) - datetime(1970, 1, 1)).total_seconds() // 60)
    pairs = _pairs(readings, [origin], [60])
    features = feature_frame(pairs, ["Europe/Oslo"])
    # 12:00 UTC on Friday 8 March 2024 is 13:00 in Oslo (CET); the target is 14:00.
    assert features["origin_minute_of_day"][0] == 13 * 60
    assert features["origin_day_of_week"][0] == 5
    assert features["target_minute_sin"][0] == pytest.approx(math.sin(2 * math.pi * 840 / 1440))
    assert set(FEATURES) <= set(features.columns)


@settings(max_examples=25, deadline=None)
@given(
    origin_day=st.integers(min_value=7, max_value=9),
    origin_minute=st.integers(min_value=0, max_value=1439),
    horizon=st.integers(min_value=1, max_value=7 * 1440),
    shift=st.floats(min_value=-5, max_value=5, allow_nan=False),
)
def test_no_look_ahead(origin_day: int, origin_minute: int, horizon: int, shift: float) -> None:
    """Changing every reading after the origin leaves every feature of the pair unchanged."""
    readings = tiny_series(1, days=10, seed=1)
    origin_ts = START + timedelta(days=origin_day, minutes=origin_minute)
    perturbed = readings.with_columns(
        pl.when(pl.col("ts") > origin_ts)
        .then(pl.col("value") + shift + pl.col("value").sin())
        .otherwise(pl.col("value"))
    )
    origin = T0 + origin_day * 1440 + origin_minute
    zones = ["UTC"]
    before = feature_frame(_pairs(readings, [origin], [horizon]), zones).select(FEATURES)
    after = feature_frame(_pairs(perturbed, [origin], [horizon]), zones).select(FEATURES)
    assert before.to_dicts() == after.to_dicts()


def test_steps_up_rounds_to_cadence() -> None:
    assert steps_up(np.array([1, 5, 60, 61]), 15).tolist() == [15, 15, 60, 75]
    assert steps_up(np.array([0, 1, 7]), 1).tolist() == [1, 1, 7]
