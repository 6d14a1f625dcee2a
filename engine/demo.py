"""Realistic, labelled, multi-customer demo data for minute-level dissolved oxygen (DO).

Three kinds of site, each driven by a small physical model, plus labelled anomalies and
unlabelled gaps. Everything is vectorised numpy, generated per sensor (memory stays flat),
and deterministic per seed: sensor *k* of site *s* gets the random stream
``SeedSequence(seed, spawn_key=(s, k))``, so growing ``sensors_per_site`` adds sensors
without changing the existing ones.

Physics
-------
Oxygen solubility
    Benson & Krause (1984) as in APHA 4500-O / USGS memo 2011.03, at 1 atm::

        ln C* = -139.34411 + 1.575701e5/T - 6.642308e7/T^2 + 1.2438e10/T^3
                - 8.621949e11/T^4 - S (0.017674 - 10.754/T + 2140.7/T^2)

    with T in kelvin and S the salinity (g/kg); C* in mg/L (:func:`oxygen_solubility_mg_l`).
Sea cages (Norway, Europe/Oslo, mg/L, salinity 34)
    Water temperature = seasonal cosine (peak late August, ~9.5 +- 4 degC) + a small
    diurnal swing + a slow site-wide weather AR(1). DO = C*(T, 34) x a saturation fraction
    ~0.90 lowered by fish respiration (deeper probes a little lower), modulated by tidal
    water exchange (M2 12.42 h plus S2 12.00 h, giving spring-neap beats), dipping after
    each local meal (08:00, 12:00, 15:30; a gamma-shaped respiration pulse ~35 min to peak,
    appetite varying by day), and a slow AR(1) current/weather term shared by the site.
RAS tanks (Chile, America/Santiago, mg/L, fresh water ~14 degC)
    Oxygen injection holds a setpoint (day 10-11 mg/L while lights and feeders run
    07:00-19:00, 0.5-1.0 mg/L lower at night). The on/off injection valve with hysteresis
    gives a triangle-shaped limit cycle (0.1-0.25 mg/L, period 6-15 min, jittering).
    Each feed raises oxygen demand faster than the controller reacts: a dip of 0.3-0.8
    mg/L that the controller recovers in ~20-40 min (difference of exponentials).
Ponds (Vietnam, Asia/Ho_Chi_Minh, %sat)
    Photosynthesis drives a daily pulse: from the dawn low (~06:00) DO rises as
    sin^2 to an afternoon peak (~15:00) of 110-180 %sat, then decays exponentially
    (respiration, tau ~3.5 h). The pulse amplitude is scaled each day by a cloud factor
    (AR(1) over days, shared by the farm) with intraday flicker of passing clouds.
    Night aerators (21:00-06:30) hold a slowly sagging floor (~68 -> ~53 %sat), so the
    minimum sits just before dawn.
Sensors
    Sensors of a site share the site signal (temperature, tide, weather, meals, clouds)
    and differ by calibration offset/gain, depth or pond, their own controller, and white
    measurement noise (0.02-0.05 mg/L or 0.6-1.4 %sat). Values are rounded to the
    instrument resolution (0.01 mg/L, 0.1 %sat).

Anomalies (labelled, exact inclusive UTC minutes; never in the final ``clean_days``)
    spike (1-3 min at 4-8 sigma of the local variability from the local level),
    collective (oxygen supply or aerator failure: exponential decay over 1-2.5 h, then
    recovery), contextual (a value normal for the sensor but wrong for the hour: pond
    probe lifted into air at night reading ~100 %sat; sea-cage probe in air reading 100 %
    of its salinity-compensated saturation; RAS controller running the other (day/night)
    setpoint), stuck (1-3 h of one exactly repeated value), noise (45 min-2 h of 3-6x the
    local variability), dropout (5-45 min of exact zeros), drift (biofouling: a
    multiplicative decline of 8-20 % over 1.5-3.5 days, ending with a step back at
    cleaning; a fifth of the sensors plus the first sensor of each export's first site;
    never in a sensor's first 10 days: the probe starts clean).
    Labelled windows never overlap and keep >= 3 h apart; about 1.3 % of the minutes are
    in short-lived anomalies (drift adds ~4 %).
Gaps (not labelled)
    Random missing minutes (0.1-0.4 %), 0-2 multi-hour sensor blocks and site-wide
    logger outages; they never touch a labelled window.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from engine import OxyError
from engine.config import SourceMapping
from engine.detectors import benson_krause_ln

DEFAULT_START = datetime(2024, 10, 1)  # the 35-day default spans Oslo's DST end (2024-10-27)
LABEL_TYPES = ("spike", "collective", "contextual", "stuck", "noise", "dropout", "drift")
MINUTES_PER_DAY = 1440

# --------------------------------------------------------------------------------------
# physics
# --------------------------------------------------------------------------------------


def oxygen_solubility_mg_l(temperature_c: Any, salinity: Any = 0.0) -> Any:
    """Oxygen solubility at 1 atm in mg/L (Benson & Krause 1984, APHA 4500-O).

    Parameters
    ----------
    temperature_c
        Water temperature in degrees Celsius (scalar or array).
    salinity
        Salinity in g/kg (PSU); 0 for fresh water.

    Examples
    --------
    >>> round(float(oxygen_solubility_mg_l(20.0)), 2)
    9.09
    >>> round(float(oxygen_solubility_mg_l(10.0, 35.0)), 2)
    9.02
    """
    t = np.asarray(temperature_c, dtype=np.float64) + 273.15
    s = np.asarray(salinity, dtype=np.float64)
    return np.exp(benson_krause_ln(t, s))


# --------------------------------------------------------------------------------------
# sites and export formats
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One farm site: its kind, owner, export source and local zone."""

    name: str
    kind: str  # "seacage" | "ras" | "pond"
    source: str
    customer: str
    timezone: str
    unit: str
    salinity: float
    code: str  # the site's part of the sensor tag

    def sensor_levels(self, k: int) -> tuple[str, ...]:
        """Tag levels of the site's k-th sensor (k from 0)."""
        if self.kind == "seacage":  # cage k//2, probe at 5 m (SubUnit_07) or 12 m (08)
            return (
                f"System_{self.code}",
                f"EquipmentUnit_{10 + k // 2}",
                f"SubUnit_{7 + k % 2:02d}",
            )
        if self.kind == "ras":
            return (f"{self.code}/tank-{k + 1:02d}/o2",)
        return (self.code, f"Pond{k // 2 + 1:02d}", "DO", f"Probe{k % 2 + 1}")

    def sensor_id(self, k: int) -> str:
        """Canonical sensor_id, exactly as ingest derives it from the source mapping."""
        return "|".join(self.sensor_levels(k))


SITES: tuple[Site, ...] = (
    Site("fjord-north", "seacage", "seacage", "nordfjord", "Europe/Oslo", "mg/L", 34.0, "10"),
    Site("fjord-south", "seacage", "seacage", "nordfjord", "Europe/Oslo", "mg/L", 33.5, "11"),
    Site("andes-ras", "ras", "ras", "andesras", "America/Santiago", "mg/L", 0.0, "ras1"),
    Site("mekong-1", "pond", "pond", "mekong", "Asia/Ho_Chi_Minh", "%sat", 5.0, "Farm1"),
    Site("mekong-2", "pond", "pond", "mekong", "Asia/Ho_Chi_Minh", "%sat", 8.0, "Farm2"),
)


@dataclass(frozen=True)
class ExportFormat:
    """How one customer's historian exports: file type, columns and time encoding."""

    mapping: SourceMapping
    file_type: str  # "csv" | "parquet"
    time_encoding: str  # "local_offset" | "utc_z" | "epoch_ms"
    value_decimals: int

    @property
    def filename(self) -> str:
        return f"{self.mapping.name}.{self.file_type}"


EXPORTS: dict[str, ExportFormat] = {
    "seacage": ExportFormat(
        SourceMapping(
            name="seacage",
            customer="nordfjord",
            timezone="Europe/Oslo",
            unit="mg/L",
            sensor_columns=("TagName",),
            time_column="LocalTime",
            value_column="DO_mg_L",
            time_format="iso",
            naive_time_zone="Europe/Oslo",
        ),
        "csv",
        "local_offset",
        2,
    ),
    "ras": ExportFormat(
        SourceMapping(
            name="ras",
            customer="andesras",
            timezone="America/Santiago",
            unit="mg/L",
            sensor_columns=("point",),
            time_column="ts_epoch_ms",
            value_column="o2_mgl",
            time_format="epoch_ms",
            naive_time_zone="UTC",
        ),
        "parquet",
        "epoch_ms",
        2,
    ),
    "pond": ExportFormat(
        SourceMapping(
            name="pond",
            customer="mekong",
            timezone="Asia/Ho_Chi_Minh",
            unit="%sat",
            sensor_columns=("Unit", "Section", "Equipment", "Subunit"),
            time_column="TimeUTC",
            value_column="DO_pct_sat",
            time_format="iso",
            naive_time_zone="UTC",
        ),
        "csv",
        "utc_z",
        1,
    ),
}


def sensor_count(sensors_per_site: int) -> int:
    """Number of demo sensors: ``len(SITES) * sensors_per_site`` (5 x N)."""
    return len(SITES) * sensors_per_site


# --------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoData:
    """Simulated demo data (all times naive UTC).

    Attributes
    ----------
    readings
        ``sensor_id, ts, value, unit, customer``; ordered by (sensor_id, ts); gaps are
        missing rows (value is never NaN).
    labels
        ``sensor_id, start, end, type``: inclusive UTC minutes of each injected anomaly.
    sensors
        ``sensor_id, customer, source, timezone, unit, site, site_kind``.
    conditions
        Hourly ``site, ts, water_temp_c, saturation_mg_l`` (Benson-Krause at the site's
        salinity): the environment the sensors saw.
    """

    readings: pl.DataFrame
    labels: pl.DataFrame
    sensors: pl.DataFrame
    conditions: pl.DataFrame
    start: datetime
    days: int
    clean_days: int
    sources: dict[str, SourceMapping] = field(default_factory=dict)

    @property
    def clean_start(self) -> datetime:
        """First minute of the anomaly-free final stretch."""
        return self.start + timedelta(days=self.days - self.clean_days)


LABELS_SCHEMA = {
    "sensor_id": pl.String,
    "start": pl.Datetime("us"),
    "end": pl.Datetime("us"),
    "type": pl.String,
}


# --------------------------------------------------------------------------------------
# site-level signals (shared by the sensors of a site)
# --------------------------------------------------------------------------------------


@dataclass
class _Clock:
    start: datetime
    n: int
    minute: np.ndarray  # minutes since start (float)
    local_hour: np.ndarray  # local clock hour of day, float
    local_minute_of_day: np.ndarray  # int
    local_day: np.ndarray  # local calendar day index from the first local day (int)
    day_of_year: np.ndarray  # UTC day of year (float)


def _clock(start: datetime, n: int, timezone: str) -> _Clock:
    ts = pl.datetime_range(
        start, start + timedelta(minutes=n - 1), "1m", time_unit="us", eager=True
    )
    local = ts.dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)
    hour = local.dt.hour().to_numpy().astype(np.int64)
    minute = local.dt.minute().to_numpy().astype(np.int64)
    day = local.dt.date().cast(pl.Int32).to_numpy().astype(np.int64)
    doy = ts.dt.ordinal_day().to_numpy().astype(np.float64)
    t = np.arange(n, dtype=np.float64)
    return _Clock(
        start=start,
        n=n,
        minute=t,
        local_hour=hour + minute / 60.0,
        local_minute_of_day=hour * 60 + minute,
        local_day=day - day[0],
        day_of_year=doy + (ts.dt.hour().to_numpy() * 60 + ts.dt.minute().to_numpy()) / 1440.0,
    )


def _ar1(rng: np.random.Generator, steps: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) series with marginal standard deviation ``sd``."""
    eps = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), steps)
    out = np.empty(steps)
    level = rng.normal(0.0, sd)
    for i in range(steps):  # steps are hours or days: short loops
        level = phi * level + eps[i]
        out[i] = level
    return out


def _hourly_ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """AR(1) on an hourly grid, linearly interpolated to minutes."""
    hours = n // 60 + 2
    return np.interp(np.arange(n) / 60.0, np.arange(hours), _ar1(rng, hours, phi, sd))


def _meal_pulses(
    clock: _Clock, meals: tuple[float, ...], magnitude: np.ndarray, kernel: np.ndarray
) -> np.ndarray:
    """Sum of ``kernel`` pulses starting at each local meal time, scaled per local day."""
    impulses = np.zeros(clock.n)
    meal_minutes = np.array([round(m * 60) for m in meals])
    hit = np.isin(clock.local_minute_of_day, meal_minutes)
    # the repeated hour of an autumn DST change would feed twice: keep first per day & meal
    idx = np.flatnonzero(hit)
    if idx.size:
        key = clock.local_day[idx] * 10_000 + clock.local_minute_of_day[idx]
        _, first = np.unique(key, return_index=True)
        idx = idx[first]
        impulses[idx] = magnitude[np.minimum(clock.local_day[idx], magnitude.size - 1)]
    return np.convolve(impulses, kernel)[: clock.n]


@dataclass
class _SiteSignal:
    site: Site
    clock: _Clock
    temperature: np.ndarray
    saturation: np.ndarray
    parts: dict[str, np.ndarray]
    outages: list[tuple[int, int]]


def _site_signal(site: Site, clock: _Clock, rng: np.random.Generator) -> _SiteSignal:
    n, hour, days = clock.n, clock.local_hour, int(clock.local_day[-1]) + 2
    parts: dict[str, np.ndarray] = {}
    if site.kind == "seacage":
        temp = (
            9.5
            + 4.0 * np.cos(2 * np.pi * (clock.day_of_year - 235.0) / 365.25)
            + 0.15 * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
            + _hourly_ar1(rng, n, 0.97, 0.3)
        )
        hours = clock.minute / 60.0
        phase = rng.uniform(0, 2 * np.pi, 2)
        parts["tide"] = 0.030 * np.cos(2 * np.pi * hours / 12.4206 + phase[0]) + 0.012 * np.cos(
            2 * np.pi * hours / 12.0 + phase[1]
        )
        parts["weather"] = _hourly_ar1(rng, n, 0.9, 0.015)
        tau = np.arange(240, dtype=np.float64)
        kernel = (tau / 35.0) * np.exp(1.0 - tau / 35.0)  # peak 1 at 35 min
        appetite = rng.uniform(0.035, 0.07, days)
        parts["feeding"] = _meal_pulses(clock, (8.0, 12.0, 15.5), appetite, kernel)
    elif site.kind == "ras":
        temp = 14.0 + _hourly_ar1(rng, n, 0.95, 0.2)
        parts["supply"] = _hourly_ar1(rng, n, 0.9, 0.04)
        tau = np.arange(180, dtype=np.float64)
        kernel = np.exp(-tau / 18.0) - np.exp(-tau / 5.0)
        kernel /= kernel.max()
        parts["feeding"] = _meal_pulses(
            clock, (8.0, 10.0, 12.0, 14.0, 16.0, 18.0), np.ones(days), kernel
        )
        # lights/feeders on 07:00-19:00 local, smooth 20-min transitions
        parts["day"] = 1.0 / (1.0 + np.exp(-(hour - 7.0) * 9.0)) - 1.0 / (
            1.0 + np.exp(-(hour - 19.0) * 9.0)
        )
    else:  # pond
        temp = (
            29.0 + 1.5 * np.cos(2 * np.pi * (hour - 15.0) / 24.0) + _hourly_ar1(rng, n, 0.95, 0.3)
        )
        cloud = 1.0 / (1.0 + np.exp(-(_ar1(rng, days + 1, 0.6, 1.2) - 0.3)))
        parts["sun"] = 1.0 - 0.6 * cloud  # per local day
        parts["flicker"] = _hourly_ar1(rng, n, 0.5, 0.06)
    saturation = oxygen_solubility_mg_l(temp, site.salinity)
    outages: list[tuple[int, int]] = []
    for _ in range(rng.poisson(clock.n / MINUTES_PER_DAY / 30.0)):
        length = int(rng.integers(60, 240))
        start = int(rng.integers(0, max(1, clock.n - length)))
        outages.append((start, start + length))
    return _SiteSignal(site, clock, temp, saturation, parts, outages)


# --------------------------------------------------------------------------------------
# one sensor
# --------------------------------------------------------------------------------------


# (sensor_id, values with NaN for gaps, labelled [start, end) minute windows)
_SensorResult = tuple[str, np.ndarray, list[tuple[int, int, str]]]


@dataclass
class _SensorSeries:
    clean: np.ndarray  # measured signal before anomalies (with noise)
    context: np.ndarray  # a plausible-for-the-sensor but wrong-for-the-hour signal
    noise_sd: float
    floor: float  # lowest plausible non-zero value


def _sensor_series(sig: _SiteSignal, k: int, rng: np.random.Generator) -> _SensorSeries:
    clock, n, hour = sig.clock, sig.clock.n, sig.clock.local_hour
    p = sig.parts
    if sig.site.kind == "seacage":
        depth_drop = 0.025 * (k % 2)
        fraction = (
            rng.uniform(0.88, 0.92)
            - depth_drop
            + p["tide"] * (1.0 - 0.4 * (k % 2))
            + p["weather"]
            - p["feeding"] * rng.uniform(0.8, 1.2)
            + _hourly_ar1(rng, n, 0.8, 0.006)
        )
        gain, offset = rng.uniform(0.98, 1.02), rng.uniform(-0.08, 0.08)
        true = sig.saturation * fraction
        noise_sd = rng.uniform(0.025, 0.05)
        in_air = sig.saturation * rng.uniform(0.99, 1.01) + _hourly_ar1(rng, n, 0.5, 0.02)
        clean = gain * true + offset + rng.normal(0.0, noise_sd, n)
        context = gain * in_air + offset + rng.normal(0.0, noise_sd * 0.7, n)
        floor = 3.0
    elif sig.site.kind == "ras":
        day_sp = rng.uniform(10.0, 11.0)
        night_sp = day_sp - rng.uniform(0.5, 1.0)
        period = rng.uniform(6.0, 15.0) * np.exp(_hourly_ar1(rng, n, 0.9, 0.08))
        cycle_phase = np.cumsum(2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.1, 0.25)
        limit_cycle = amp * (2.0 / np.pi) * np.arcsin(np.sin(cycle_phase))
        dips = p["feeding"] * rng.uniform(0.3, 0.8)
        rest = limit_cycle - dips + p["supply"] + _hourly_ar1(rng, n, 0.8, 0.03)
        noise_sd = rng.uniform(0.02, 0.04)
        setpoint = night_sp + (day_sp - night_sp) * p["day"]
        other = day_sp + night_sp - setpoint  # the controller on the wrong schedule
        clean = setpoint + rest + rng.normal(0.0, noise_sd, n)
        context = other + rest + rng.normal(0.0, noise_sd, n)
        floor = 2.0
    else:  # pond
        amplitude = rng.uniform(95.0, 145.0)
        dawn = rng.uniform(36.0, 44.0)
        sun = p["sun"]
        tau = hour - 6.0  # hours since the day's photosynthesis pulse began
        day = clock.local_day
        today = np.where(tau >= 0, day, day - 1)
        tau = np.where(tau >= 0, tau, tau + 24.0)
        rise = np.sin(np.pi * np.minimum(tau, 9.0) / 18.0) ** 2
        decay = np.exp(-np.maximum(tau - 9.0, 0.0) / 3.5)
        pulse = rise * decay * sun[np.clip(today, 0, sun.size - 1)]
        # the previous day's tail at the small hours
        tail = np.exp(-(tau + 24.0 - 9.0) / 3.5) * sun[np.clip(today - 1, 0, sun.size - 1)]
        # passing clouds flicker the photosynthesis while the sun is up, fading out towards
        # dusk (no step in the signal when the afternoon decay begins)
        daylight = np.sin(np.pi * np.clip(tau, 0.0, 12.0) / 12.0)
        natural = dawn + amplitude * (pulse * (1.0 + p["flicker"] * daylight) + tail)
        natural += _hourly_ar1(rng, n, 0.8, 1.5)
        night_hours = np.where(hour >= 21.0, hour - 21.0, hour + 3.0)  # since 21:00
        aerating = (hour >= 21.0) | (hour < 6.5)
        floor_level = np.where(aerating, 68.0 - 1.9 * night_hours, 0.0)
        soft = 2.0
        true = floor_level + soft * np.logaddexp(0.0, (natural - floor_level) / soft)
        true = np.where(aerating, true, natural)
        gain, offset = rng.uniform(0.97, 1.03), rng.uniform(-2.0, 2.0)
        noise_sd = rng.uniform(0.6, 1.4)
        clean = gain * true + offset + rng.normal(0.0, noise_sd, n)
        in_air = rng.uniform(98.0, 106.0) + _hourly_ar1(rng, n, 0.6, 1.0)
        context = in_air + rng.normal(0.0, noise_sd, n)
        floor = 10.0
    return _SensorSeries(np.maximum(clean, floor), np.maximum(context, floor), noise_sd, floor)


# (mean count per 28 eligible days, min duration, max duration) in minutes
_ANOMALY_PLAN: dict[str, tuple[float, int, int]] = {
    "spike": (4.0, 1, 3),
    "collective": (1.2, 90, 180),
    "contextual": (1.5, 30, 75),
    "stuck": (1.2, 60, 180),
    "noise": (1.2, 45, 120),
    "dropout": (2.5, 5, 45),
}
_SEPARATION = 180  # minutes kept free around every labelled window
# lower bounds of the widened ranges (``anomaly_spread`` > 1): durations in minutes per type
# (a failure needs time to decay and recover, a flat run of a few minutes is no fault),
# sizes in local sigmas, depths and fractions above zero, drift in days
_SPREAD_FLOORS: dict[str, float] = {
    "spike": 1.0,
    "collective": 20.0,
    "contextual": 5.0,
    "stuck": 15.0,
    "noise": 10.0,
    "dropout": 1.0,
    "size": 0.5,
    "fraction": 0.01,
    "drift_days": 0.5,
}


def widen(lo: float, hi: float, spread: float, floor: float) -> tuple[float, float]:
    """The range ``[lo, hi]`` widened ``spread`` times around its centre, kept >= ``floor``.

    ``spread`` 1.0 returns ``(lo, hi)`` unchanged (today's demo, byte for byte); a wider
    range that would cross ``floor`` is moved up to start there, so its width is always
    ``spread * (hi - lo)``.

    Examples
    --------
    >>> widen(4.0, 8.0, 2.0, 0.5)
    (2.0, 10.0)
    >>> widen(60.0, 180.0, 2.0, 15.0)
    (15.0, 255.0)
    >>> widen(0.08, 0.2, 1.0, 0.01)
    (0.08, 0.2)
    """
    if spread == 1.0:
        return lo, hi
    low = max(floor, (lo + hi) / 2.0 - spread * (hi - lo) / 2.0)
    return low, low + spread * (hi - lo)


def _widen_int(lo: int, hi: int, spread: float, floor: float) -> tuple[int, int]:
    a, b = widen(float(lo), float(hi), spread, floor)
    return (lo, hi) if spread == 1.0 else (int(round(a)), int(round(b)))


DRIFT_CLEAN_DAYS = 10  # a drift (biofouling) starts no earlier than this many days in


def _local_variability(values: np.ndarray, start: int, end: int) -> float:
    """Std of the residual from a 15-min moving mean in the 2 h around a window."""
    lo, hi = max(0, start - 60), min(values.size, end + 60)
    seg = values[lo:hi]
    if seg.size < 20:
        return float(np.std(values))
    smooth = np.convolve(seg, np.ones(15) / 15.0, mode="same")
    return float(np.std((seg - smooth)[7:-7]))


def _inject(
    series: _SensorSeries,
    sig: _SiteSignal,
    rng: np.random.Generator,
    lo: int,
    hi: int,
    forced_drift: bool,
    spread: float = 1.0,
) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Apply anomalies to a copy of the clean series; return it and [start, end) windows.

    ``spread`` widens every anomaly range around its centre (:func:`widen`)."""
    floors = _SPREAD_FLOORS

    def draw(a: float, b: float, floor: float) -> float:
        return float(rng.uniform(*widen(a, b, spread, floor)))

    values = series.clean.copy()
    n = values.size
    occupied = np.zeros(n + 1, dtype=bool)
    for a, b in sig.outages:
        occupied[max(0, a - 30) : b + 30] = True
    windows: list[tuple[int, int, str]] = []
    hour = sig.clock.local_hour
    eligible_days = (hi - lo) / MINUTES_PER_DAY
    if eligible_days < 1.0:
        return values, windows

    def place(
        length: int, ok: Callable[[int, int], bool] | None = None, first: int = lo
    ) -> int | None:
        if hi - first <= length:
            return None
        for _ in range(300):
            s = int(rng.integers(first, hi - length))
            if occupied[max(0, s - _SEPARATION) : s + length + _SEPARATION].any():
                continue
            if ok is not None and not ok(s, s + length):
                continue
            occupied[s : s + length] = True
            return s
        return None

    # drift first: it is long and needs room; at least one sensor per site drifts. A probe
    # starts clean (deployed or cleaned at the start of the series): biofouling begins only
    # after DRIFT_CLEAN_DAYS, once a sensor's history holds more than a week of clean days
    drift_first = max(lo, DRIFT_CLEAN_DAYS * MINUTES_PER_DAY)
    drift_days = (hi - drift_first) / MINUTES_PER_DAY
    if (forced_drift or rng.random() < 0.2) and drift_days >= 3.0:
        d_lo, d_hi = widen(1.5, 3.5, spread, floors["drift_days"])
        length = int(rng.uniform(d_lo, min(d_hi, drift_days - 0.5)) * MINUTES_PER_DAY)
        s = place(length, first=drift_first)
        if s is not None:
            depth = draw(0.08, 0.2, floors["fraction"])
            frac = (np.arange(length) + 1.0) / length
            values[s : s + length] *= 1.0 - depth * frac**1.3
            windows.append((s, s + length, "drift"))

    def is_night(s: int, e: int) -> bool:
        h0, h1 = hour[s], hour[e - 1]
        night = (h0 >= 20.0) | (h0 < 4.5)
        return bool(night and ((h1 >= 20.0) | (h1 < 4.5)) and (e - s) < 9 * 60)

    for atype, (rate, shortest, longest) in _ANOMALY_PLAN.items():
        count = max(1, int(rng.poisson(rate * eligible_days / 28.0)))
        dmin, dmax = _widen_int(shortest, longest, spread, floors[atype])
        for _ in range(count):
            length = int(rng.integers(dmin, dmax + 1))
            night_only = sig.site.kind == "pond" and atype in ("contextual", "collective")
            s = place(length, is_night if night_only else None)
            if s is None:
                continue
            e = s + length
            local_sd = max(_local_variability(values, s, e), series.noise_sd)
            if atype == "spike":
                # measured from the local level (median of the 10 min either side), so
                # the spike always stands out of its neighbourhood by 4-8 sigma
                sign = rng.choice([-1.0, 1.0])
                size = draw(4.0, 8.0, floors["size"]) * local_sd
                level = float(np.median(np.r_[values[max(0, s - 10) : s], values[e : e + 10]]))
                shape = np.r_[1.0, 0.7, np.full(max(0, length - 2), 0.5)][:length]
                values[s:e] = np.maximum(level + sign * size * shape, series.floor)
            elif atype == "collective":
                fail = max(1, int(length * min(draw(0.6, 0.75, floors["fraction"]), 0.95)))
                level = float(np.median(values[s:e]))
                depth = min(draw(0.3, 0.55, floors["fraction"]), 0.95) * level
                tau = np.arange(length, dtype=np.float64)
                decline = 1.0 - np.exp(-tau / (fail / 2.5))
                recover_tau = (length - fail) / 3.5
                at_fail = 1.0 - math.exp(-2.5)
                drop = np.where(tau < fail, decline, at_fail * np.exp(-(tau - fail) / recover_tau))
                values[s:e] = values[s:e] - depth * drop
            elif atype == "contextual":
                ramp = np.clip(
                    np.minimum(np.arange(length) + 1, length - np.arange(length)) / 3.0, 0, 1
                )
                values[s:e] = values[s:e] * (1.0 - ramp) + series.context[s:e] * ramp
            elif atype == "stuck":
                values[s:e] = values[s]
            elif atype == "noise":
                extra = draw(3.0, 6.0, floors["size"]) * local_sd
                values[s:e] = np.maximum(values[s:e] + rng.normal(0.0, extra, length), series.floor)
            elif atype == "dropout":
                values[s:e] = 0.0
            windows.append((s, e, atype))
    return values, windows


def _gaps(
    n: int,
    windows: list[tuple[int, int, str]],
    outages: list[tuple[int, int]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Boolean mask of missing minutes; never inside or right next to a labelled window."""
    protected = np.zeros(n, dtype=bool)
    for s, e, _ in windows:
        protected[max(0, s - 30) : e + 30] = True
    missing = rng.random(n) < rng.uniform(0.001, 0.004)
    for _ in range(int(rng.integers(0, 3))):
        length = int(rng.integers(60, 6 * 60))
        for _ in range(50):
            s = int(rng.integers(0, max(1, n - length)))
            if not protected[s : s + length].any():
                missing[s : s + length] = True
                break
    for a, b in outages:
        missing[a:b] = True
    missing &= ~protected
    return missing


def _simulate_site(
    site_index: int,
    sensors_per_site: int,
    clock: _Clock,
    seed: int,
    clean_days: int,
    anomaly_spread: float = 1.0,
) -> tuple[_SiteSignal, list[_SensorResult]]:
    """Site signal and, per sensor, (sensor_id, values with NaN for gaps, windows)."""
    site = SITES[site_index]
    site_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(site_index,)))
    sig = _site_signal(site, clock, site_rng)
    # a drifting sensor guaranteed in the first site of each source (its first sensor, so
    # that growing sensors_per_site never changes the sensors that already exist)
    first_of_source = site_index == min(i for i, s in enumerate(SITES) if s.source == site.source)
    forced = 0 if first_of_source else -1
    hi = clock.n - clean_days * MINUTES_PER_DAY
    lo = MINUTES_PER_DAY
    decimals = EXPORTS[site.source].value_decimals
    out = []
    for k in range(sensors_per_site):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(site_index, k)))
        series = _sensor_series(sig, k, rng)
        values, windows = _inject(series, sig, rng, lo, hi, k == forced, anomaly_spread)
        values = np.round(values, decimals)
        values[_gaps(clock.n, windows, sig.outages, rng)] = np.nan
        out.append((site.sensor_id(k), values, windows))
    return sig, out


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def _check_size(
    sensors_per_site: int, days: int, clean_days: int, anomaly_spread: float = 1.0
) -> None:
    if not (math.isfinite(anomaly_spread) and anomaly_spread >= 1.0):
        raise OxyError(f"anomaly spread must be a number >= 1, not {anomaly_spread}")
    if sensors_per_site < 1:
        raise OxyError(f"sensors per site must be at least 1, not {sensors_per_site}")
    if days < 1:
        raise OxyError(f"days must be at least 1, not {days}")
    if not 0 <= clean_days <= days:
        raise OxyError(f"clean days must be between 0 and days ({days}), not {clean_days}")


def _sensors_frame(sensors_per_site: int) -> pl.DataFrame:
    rows = [
        {
            "sensor_id": site.sensor_id(k),
            "customer": site.customer,
            "source": site.source,
            "timezone": site.timezone,
            "unit": site.unit,
            "site": site.name,
            "site_kind": site.kind,
        }
        for site in SITES
        for k in range(sensors_per_site)
    ]
    return pl.DataFrame(rows).sort("sensor_id")


def _labels_frame(start: datetime, rows: list[tuple[str, int, int, str]]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=LABELS_SCHEMA)
    sensor, s, e, atype = zip(*rows, strict=True)
    base = np.datetime64(start, "us")
    one = np.timedelta64(1, "m")
    return pl.DataFrame(
        {
            "sensor_id": list(sensor),
            "start": base + np.array(s, dtype=np.int64) * one,
            "end": base + (np.array(e, dtype=np.int64) - 1) * one,
            "type": list(atype),
        },
        schema=LABELS_SCHEMA,
    ).sort("sensor_id", "start")


def _conditions_frame(sig: _SiteSignal) -> pl.DataFrame:
    n_hours = sig.clock.n // 60
    if n_hours == 0:
        return pl.DataFrame(
            schema={
                "site": pl.String,
                "ts": pl.Datetime("us"),
                "water_temp_c": pl.Float64,
                "saturation_mg_l": pl.Float64,
            }
        )
    temp = sig.temperature[: n_hours * 60].reshape(n_hours, 60).mean(axis=1)
    return pl.DataFrame(
        {
            "site": [sig.site.name] * n_hours,
            "ts": np.datetime64(sig.clock.start, "us")
            + np.arange(n_hours, dtype=np.int64) * np.timedelta64(1, "h"),
            "water_temp_c": temp,
            "saturation_mg_l": oxygen_solubility_mg_l(temp, sig.site.salinity),
        }
    )


def _iter_sites(
    sensors_per_site: int,
    days: int,
    seed: int,
    clean_days: int,
    start: datetime,
    anomaly_spread: float = 1.0,
) -> Iterator[tuple[_SiteSignal, list[_SensorResult]]]:
    n = days * MINUTES_PER_DAY
    clocks: dict[str, _Clock] = {}
    for i, site in enumerate(SITES):
        if site.timezone not in clocks:
            clocks[site.timezone] = _clock(start, n, site.timezone)
        yield _simulate_site(
            i, sensors_per_site, clocks[site.timezone], seed, clean_days, anomaly_spread
        )


def simulate(
    *,
    sensors_per_site: int = 2,
    days: int = 35,
    seed: int = 7,
    clean_days: int = 7,
    start: datetime | None = None,
    anomaly_spread: float = 1.0,
) -> DemoData:
    """Simulate the demo fleet in memory: canonical readings, labels, sensors.

    Parameters
    ----------
    sensors_per_site
        Sensors at each of the 5 sites (2 sea-cage, 1 RAS, 2 pond): ``5 * N`` sensors.
    days
        Length of the series in days (minute cadence, one row per sensor-minute minus gaps).
    seed
        Random seed; equal seeds give identical data.
    clean_days
        The final days hold no injected anomaly (a stretch to score forecasts against).
    start
        First minute (naive UTC); default 2024-10-01 00:00, so 35 days span Oslo's DST end.
    anomaly_spread
        Every anomaly range (durations, sizes, depths, drift length) widened this many times
        around its centre (:func:`widen`); 1.0 = the ranges above, the same data byte for
        byte. The detection benchmark uses 2 or more: data shaped like the demo but not like
        the ranges the detector was tuned on.

    Returns
    -------
    DemoData
        ``readings`` (sensor_id, ts, value, unit, customer), ``labels`` (sensor_id, start,
        end, type), ``sensors``, ``conditions``.

    Examples
    --------
    >>> demo = simulate(sensors_per_site=1, days=3, clean_days=1)
    >>> demo.sensors.height, demo.readings["unit"].unique().sort().to_list()
    (5, ['%sat', 'mg/L'])
    """
    _check_size(sensors_per_site, days, clean_days, anomaly_spread)
    start = (start or DEFAULT_START).replace(second=0, microsecond=0, tzinfo=None)
    base = np.datetime64(start, "us")
    frames: dict[str, pl.DataFrame] = {}
    label_rows: list[tuple[str, int, int, str]] = []
    conditions = []
    for sig, sensors in _iter_sites(
        sensors_per_site, days, seed, clean_days, start, anomaly_spread
    ):
        conditions.append(_conditions_frame(sig))
        for sensor_id, values, windows in sensors:
            keep = np.flatnonzero(~np.isnan(values))
            frames[sensor_id] = pl.DataFrame(
                {
                    "sensor_id": pl.Series([sensor_id]).gather(np.zeros(keep.size, np.int64)),
                    "ts": base + keep.astype(np.int64) * np.timedelta64(1, "m"),
                    "value": values[keep],
                }
            ).with_columns(
                pl.lit(sig.site.unit).alias("unit"), pl.lit(sig.site.customer).alias("customer")
            )
            label_rows.extend((sensor_id, s, e, t) for s, e, t in windows)
    readings = pl.concat([frames.pop(k) for k in sorted(frames)], rechunk=False)
    return DemoData(
        readings=readings,
        labels=_labels_frame(start, label_rows),
        sensors=_sensors_frame(sensors_per_site),
        conditions=pl.concat(conditions),
        start=start,
        days=days,
        clean_days=clean_days,
        sources={name: fmt.mapping for name, fmt in EXPORTS.items()},
    )


# --------------------------------------------------------------------------------------
# exports on disk
# --------------------------------------------------------------------------------------

_CHUNK_MINUTES = 7 * MINUTES_PER_DAY  # rows are written a week at a time: flat memory


def _time_column(fmt: ExportFormat, start: datetime, n: int) -> pl.Series:
    """The export's time column for every minute of the span (shared by all sensors)."""
    ts = pl.datetime_range(
        start, start + timedelta(minutes=n - 1), "1m", time_unit="us", eager=True
    ).dt.replace_time_zone("UTC")
    name = fmt.mapping.time_column
    if fmt.time_encoding == "epoch_ms":
        return ts.dt.epoch("ms").alias(name)
    if fmt.time_encoding == "local_offset":
        local = ts.dt.convert_time_zone(fmt.mapping.timezone)
        return local.dt.strftime("%Y-%m-%dT%H:%M:%S%:z").alias(name)
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias(name)


def _export_chunks(
    fmt: ExportFormat, levels: list[tuple[str, ...]], values: np.ndarray, times: pl.Series
) -> Iterator[pl.DataFrame]:
    """Export rows a week at a time, interleaved across sensors (time, then tag order)."""
    n_sensors, n = values.shape
    columns = fmt.mapping.sensor_columns
    if len(columns) == 1:  # identity in one column: the whole tag, "|" and all
        levels = [(fmt.mapping.sensor_separator.join(lv),) for lv in levels]
    level_series = [
        pl.Series(column, [lv[j] for lv in levels], dtype=pl.String)
        for j, column in enumerate(columns)
    ]
    for a in range(0, n, _CHUNK_MINUTES):
        b = min(n, a + _CHUNK_MINUTES)
        block = values[:, a:b].T.reshape(-1)  # minute-major: all sensors of a minute together
        keep = np.flatnonzero(~np.isnan(block))
        minute = a + keep // n_sensors
        sensor = keep % n_sensors
        yield pl.DataFrame(
            [
                times.gather(minute),
                *(s.gather(sensor) for s in level_series),
                pl.Series(fmt.mapping.value_column, block[keep], dtype=pl.Float64),
            ]
        )


def _atomic_target(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_export(
    fmt: ExportFormat,
    path: Path,
    levels: list[tuple[str, ...]],
    values: np.ndarray,
    start: datetime,
) -> int:
    """Write one export atomically (temp file + rename); return its row count."""
    times = _time_column(fmt, start, values.shape[1])
    tmp = _atomic_target(path)
    rows = 0
    try:
        if fmt.file_type == "csv":
            with tmp.open("wb") as fh:
                for i, chunk in enumerate(_export_chunks(fmt, levels, values, times)):
                    chunk.write_csv(
                        fh,
                        include_header=i == 0,
                        separator=fmt.mapping.delimiter,
                        float_precision=fmt.value_decimals,
                    )
                    rows += chunk.height
        else:
            writer: pq.ParquetWriter | None = None
            try:
                for chunk in _export_chunks(fmt, levels, values, times):
                    table = chunk.to_arrow()
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                    writer.write_table(table)
                    rows += chunk.height
            finally:
                if writer is not None:
                    writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _toml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string of ASCII text is a valid TOML basic string


def sources_toml(exports: dict[str, ExportFormat] | None = None) -> str:
    """The ``[sources.NAME]`` TOML declaring every demo export (loads with ``Config.load``)."""
    exports = EXPORTS if exports is None else exports
    lines = [
        "# Source mappings of the oxy demo exports (written by `oxy demo-data`).",
        "# Use: oxy --config THIS_FILE ingest DIR/NAME.csv --source NAME",
    ]
    for name, fmt in exports.items():
        lines += ["", f"[sources.{name}]  # {fmt.filename}"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in fmt.mapping.to_dict().items()]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = _atomic_target(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_labels(path: Path, labels: pl.DataFrame) -> None:
    tmp = _atomic_target(path)
    try:
        labels.with_columns(pl.col("start", "end").dt.strftime("%Y-%m-%dT%H:%M:%S")).write_csv(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_labels(path: str | Path) -> pl.DataFrame:
    """Read a ``labels.csv`` written by :func:`generate_demo` (times as naive UTC).

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = generate_demo(out, sensors_per_site=1, days=4, clean_days=1)
    >>> read_labels(out / "labels.csv").columns
    ['sensor_id', 'start', 'end', 'type']
    """
    try:
        raw = pl.read_csv(
            path,
            schema={
                "sensor_id": pl.String,
                "start": pl.String,
                "end": pl.String,
                "type": pl.String,
            },
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise OxyError(f"cannot read labels {path}: {str(exc).splitlines()[0]}") from None
    return raw.with_columns(
        pl.col("start", "end")
        .str.strip_suffix("Z")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us", strict=True)
    )


def generate_demo(
    out_dir: str | Path,
    *,
    sensors_per_site: int = 2,
    days: int = 35,
    seed: int = 7,
    clean_days: int = 7,
    start: datetime | None = None,
    anomaly_spread: float = 1.0,
) -> dict[str, Any]:
    """Write the demo exports, their source mappings and the anomaly labels to ``out_dir``.

    Layout (a contract other tools rely on): ``sources.toml`` with one ``[sources.NAME]``
    per export, ``NAME.csv`` / ``NAME.parquet`` per export (file stem = source name), and
    ``labels.csv`` (``sensor_id,start,end,type``; inclusive minutes, ISO, naive UTC).
    Each file is written to a temporary name and renamed into place. Data is generated per
    source and written a week at a time, so memory stays flat as the fleet grows.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing; existing demo files are replaced).
    sensors_per_site, days, seed, clean_days, start, anomaly_spread
        As in :func:`simulate`; the same arguments give the same readings and labels.

    Returns
    -------
    dict
        ``out_dir, sensors, rows, labels, files, rows_by_source, start, days, seed``.

    Examples
    --------
    >>> import tempfile
    >>> summary = generate_demo(tempfile.mkdtemp(), sensors_per_site=1, days=2, clean_days=1)
    >>> summary["sensors"], summary["files"]
    (5, ['seacage.csv', 'ras.parquet', 'pond.csv', 'labels.csv', 'sources.toml'])
    """
    _check_size(sensors_per_site, days, clean_days, anomaly_spread)
    start = (start or DEFAULT_START).replace(second=0, microsecond=0, tzinfo=None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OxyError(f"demo output {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OxyError(f"cannot create demo output directory {out}: {exc.strerror}") from None

    by_source: dict[str, list[tuple[Site, list[_SensorResult]]]] = {}
    rows_by_source: dict[str, int] = {}
    label_rows: list[tuple[str, int, int, str]] = []

    def flush(source: str) -> None:
        fmt = EXPORTS[source]
        sensors = sorted(
            (
                (site.sensor_levels(k), values)
                for site, ss in by_source.pop(source)
                for k, (_, values, _) in enumerate(ss)
            ),
            key=lambda item: "|".join(item[0]),
        )
        levels = [lv for lv, _ in sensors]
        matrix = np.vstack([v for _, v in sensors])
        rows_by_source[source] = _write_export(fmt, out / fmt.filename, levels, matrix, start)

    for sig, sensors in _iter_sites(
        sensors_per_site, days, seed, clean_days, start, anomaly_spread
    ):
        source = sig.site.source
        for pending in [s for s in by_source if s != source]:
            flush(pending)
        by_source.setdefault(source, []).append((sig.site, sensors))
        label_rows.extend((sid, s, e, t) for sid, _, windows in sensors for s, e, t in windows)
    for pending in list(by_source):
        flush(pending)

    labels = _labels_frame(start, label_rows)
    _write_labels(out / "labels.csv", labels)
    _write_text(out / "sources.toml", sources_toml())
    files = [fmt.filename for fmt in EXPORTS.values()] + ["labels.csv", "sources.toml"]
    return {
        "out_dir": str(out),
        "sensors": sensor_count(sensors_per_site),
        "rows": sum(rows_by_source.values()),
        "labels": labels.height,
        "files": files,
        "rows_by_source": rows_by_source,
        "start": start.isoformat(),
        "days": days,
        "seed": seed,
    }
