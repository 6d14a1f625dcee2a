"""Anomalies injected into clean real DO series, each parameter drawn from a wide range.

The detection benchmark's semi-synthetic sources (``bench/detection_suite.py``): a real
background (lake buoy, river sonde, fish pond) keeps its own diel cycle, weather, noise and
gaps; this module changes some of its readings and labels exactly the readings it changed.
It shares no code with ``engine/demo.py`` (the generator the detector was tuned on): other
shapes, other ranges, time-based durations at any cadence.

Every kind, its label type and its parameter ranges are in :data:`KINDS` (the one definition
``docs/detection-benchmark.md`` and the tests read). Durations are wall-clock time, turned into
readings by the series' own timestamps; sizes are relative to the background (its level, or
``step_sd``, the robust standard deviation of its reading-to-reading steps near the event).

Placement rules (:func:`inject`):

* **warm-up** -- nothing starts before ``max(1 day, min(3 days, 20 % of the span))``: every
  detector has at least a day of the sensor's own history before the first event;
* **drift** starts at least 2 days in and lasts at most a third of the time from day 2 to the
  end (a 21-day fouling only in a series of 65 days or more; none in a 40-hour one); at most
  two per series, and in a series of under 30 eligible days only on half of the seeds;
* any other event lasts at most an eighth of the time from the warm-up to the end, and all
  of them together take at most 15 % of it (a short series holds a few short events, not
  a few long ones; the labelled share stays far from the whole series);
* events end before the series does, keep ``margin`` (a quarter of the event's duration, at
  least 1 h and at most 12 h; 12 h around a drift) free on each side, never overlap, and never
  straddle a gap of more than ``max(4 readings, 1 h)``;
* a label spans the first to the last reading whose value the event changed (an event that
  changed nothing is dropped), so it covers exactly the readings it changed.

Deterministic per seed: ``inject(ts, values, seed=s)`` is a pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MINUTE_US = 60_000_000
DRIFT_SHARE = 3  # a drift lasts at most a third of the time from day 2 to the end
EVENT_SHARE = 8  # any other event at most an eighth of the time after the warm-up ...
BUDGET = 0.15  # ... and all of them together at most 15 % of it
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
# the sentinels an export may write for "no reading" (oxy's [ingest] sentinels hold them all)
SENTINELS = (-9999.0, 9999.0, -999.0, 999.0, -127.0)


@dataclass(frozen=True)
class Kind:
    """One kind of injected anomaly: its label type, how often, how long, its parameters.

    ``minutes`` is the duration range in minutes (``None``: a number of readings, ``readings``);
    ``params`` maps each drawn parameter to its ``(low, high)`` range; ``rate`` is the mean
    count per 30 days of eligible series (at least one where it fits).
    """

    name: str
    label: str
    rate: float
    minutes: tuple[float, float] | None
    params: dict[str, tuple[float, float]] = field(default_factory=dict)
    readings: tuple[int, int] | None = None
    min_readings: int = 1


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        # fouling (down) or a failing membrane / calibration offset (up): a ramp to 5-40 % of
        # the level over 1-21 days (curvature exponent 0.7-1.5), ended by a cleaning step
        Kind(
            "drift",
            "drift",
            1.0,
            (1 * 1440.0, 21 * 1440.0),
            {"magnitude": (0.05, 0.40), "curvature": (0.7, 1.5)},
        ),
        # 1-5 readings off the local level by 3-12 step sds (sign random, each reading 60-100 %)
        Kind("spike", "spike", 6.0, None, {"size_sd": (3.0, 12.0)}, readings=(1, 5)),
        # supply / aerator failure: decay towards a low level (20-70 % of the level at its
        # start), reached after 40-80 % of the event, then recovery; 20 min - 8 h in all
        Kind(
            "supply_failure",
            "collective",
            3.0,
            (20.0, 480.0),
            {"low_fraction": (0.2, 0.7), "decay_share": (0.4, 0.8)},
        ),
        # an abrupt offset of 5-30 % of the level held 1 h - 2 days, then an abrupt return
        Kind("level_shift", "level_shift", 2.0, (60.0, 2 * 1440.0), {"offset": (0.05, 0.30)}),
        # the reading before the event repeated exactly for 30 min - 12 h (>= 3 readings)
        Kind("stuck", "stuck", 2.0, (30.0, 720.0), min_readings=3),
        # Gaussian noise of 3-10 step sds added for 30 min - 6 h (>= 4 readings)
        Kind("noise_burst", "noise", 2.0, (30.0, 360.0), {"noise_sd": (3.0, 10.0)}, min_readings=4),
        # exact zeros for 1 reading - 6 h
        Kind("dropout_zero", "dropout", 2.0, (0.0, 360.0)),
        # a sentinel (SENTINELS, drawn) for 1 reading - 2 h: oxy's ingest quarantines them
        Kind("dropout_sentinel", "dropout", 2.0, (0.0, 120.0)),
        # the series' own values from 6-12 h earlier for 1-4 h: normal values at the wrong
        # time of day; placed only where they differ from the original by >= 3 step sds and
        # >= 3 % of the level on average (ramped in and out over 2 readings)
        Kind("contextual", "contextual", 3.0, (60.0, 240.0), {"lag_hours": (6.0, 12.0)}),
    )
}


@dataclass(frozen=True)
class Event:
    """One injected event: where (reading indices, inclusive), what, and the drawn values."""

    kind: str
    label: str
    first: int
    last: int
    params: dict[str, Any]


def warmup_us(span_us: int) -> int:
    """Time at the start of a series with no anomaly (module docstring, "warm-up")."""
    return int(max(DAY_US, min(3 * DAY_US, 0.2 * span_us)))


def step_sd(values: np.ndarray) -> float:
    """Robust std of reading-to-reading steps (1.4826 x MAD), floored at 1e-3."""
    steps = np.diff(values[np.isfinite(values)])
    if steps.size < 3:
        return 1e-3
    mad = float(np.median(np.abs(steps - np.median(steps))))
    return max(1.4826 * mad, 1e-3)


def _margin(duration_us: int, kind: str) -> int:
    if kind == "drift":
        return 12 * HOUR_US
    return int(min(12 * HOUR_US, max(HOUR_US, duration_us / 4)))


class _Timeline:
    """Free time on a series: events are placed one at a time, never overlapping."""

    def __init__(self, ts_us: np.ndarray, cadence_us: int) -> None:
        self.ts = ts_us
        self.busy: list[tuple[int, int]] = []
        self.max_gap = max(4 * cadence_us, HOUR_US)

    def free(self, start: int, end: int, margin: int) -> bool:
        lo, hi = start - margin, end + margin
        if any(a < hi and lo < b for a, b in self.busy):
            return False
        i, j = np.searchsorted(self.ts, [lo, hi])
        inside = self.ts[max(i - 1, 0) : min(j + 1, self.ts.size)]
        return inside.size >= 2 and float(np.diff(inside).max()) <= self.max_gap

    def take(self, start: int, end: int, margin: int) -> None:
        self.busy.append((start - margin, end + margin))


def _draw(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _apply(
    kind: Kind,
    idx: np.ndarray,
    original: np.ndarray,
    values: np.ndarray,
    ts: np.ndarray,
    rng: np.random.Generator,
    params: dict[str, Any],
    sd: float,
) -> bool:
    """Change ``values[idx]`` for one event; False when the placement does not suit it."""
    n = idx.size
    level = float(np.median(original[max(idx[0] - 12, 0) : idx[-1] + 13]))
    if kind.name == "spike":
        sign = float(rng.choice([-1.0, 1.0]))
        shape = rng.uniform(0.6, 1.0, n)
        shape[0] = 1.0
        values[idx] = original[idx] + sign * params["size_sd"] * sd * shape
    elif kind.name == "supply_failure":
        decay = max(1, int(round(params["decay_share"] * n)))
        depth = (1.0 - params["low_fraction"]) * level
        t = np.arange(n, dtype=np.float64)
        down = 1.0 - np.exp(-3.0 * (t + 1) / decay)
        at_low = down[min(decay, n) - 1]
        up = at_low * np.exp(-3.0 * (t - decay + 1) / max(n - decay, 1))
        values[idx] = original[idx] - depth * np.where(t < decay, down, up)
    elif kind.name == "drift":
        sign = float(params["direction"])
        step = ts[idx[0]] - ts[idx[0] - 1]  # the first reading already drifts a little
        frac = (ts[idx] - ts[idx[0]] + step) / (ts[idx[-1]] - ts[idx[0]] + step)
        ramp = params["magnitude"] * frac ** params["curvature"]
        values[idx] = original[idx] * (1.0 + sign * ramp)
    elif kind.name == "level_shift":
        values[idx] = original[idx] + float(params["direction"]) * params["offset"] * level
    elif kind.name == "stuck":
        held = original[idx[0] - 1]
        if np.any(np.abs(original[idx] - held) < 1e-9):
            return False  # the background itself sits on that value: nothing would change
        values[idx] = held
    elif kind.name == "noise_burst":
        values[idx] = original[idx] + rng.normal(0.0, params["noise_sd"] * sd, n)
    elif kind.name == "dropout_zero":
        values[idx] = 0.0
    elif kind.name == "dropout_sentinel":
        values[idx] = params["sentinel"]
    elif kind.name == "contextual":
        lag = int(params["lag_hours"] * HOUR_US)
        earlier = np.interp(ts[idx] - lag, ts, original)
        if ts[idx[0]] - lag < ts[0]:
            return False
        mean_diff = float(np.mean(np.abs(earlier - original[idx])))
        if mean_diff < max(3.0 * sd, 0.03 * abs(level)):
            return False  # 6-12 h earlier looked the same: no context to get wrong
        ramp = np.clip(np.minimum(np.arange(n) + 1, n - np.arange(n)) / 2.0, 0.0, 1.0)
        values[idx] = original[idx] * (1.0 - ramp) + earlier * ramp
    else:  # pragma: no cover - KINDS and this function are one definition
        raise ValueError(f"unknown kind {kind.name}")
    return True


def _duration(kind: Kind, rng: np.random.Generator, longest_us: int) -> int | None:
    if kind.minutes is None:
        return None
    lo, hi = kind.minutes
    hi = min(hi * MINUTE_US, longest_us)
    lo = lo * MINUTE_US
    if hi < lo:
        return -1
    return int(rng.uniform(lo, hi))


def _params(kind: Kind, rng: np.random.Generator) -> dict[str, Any]:
    params: dict[str, Any] = {name: _draw(rng, span) for name, span in kind.params.items()}
    if kind.name in ("drift", "level_shift"):
        params["direction"] = int(rng.choice([-1, 1]))
    if kind.name == "dropout_sentinel":
        params["sentinel"] = float(rng.choice(SENTINELS))
    return params


def inject(
    ts: np.ndarray,
    values: np.ndarray,
    *,
    seed: int,
    kinds: tuple[str, ...] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[np.ndarray, list[Event]]:
    """Inject anomalies into a clean series; the changed values and the events.

    Parameters
    ----------
    ts
        Reading times (``datetime64[us]`` or int64 microseconds), strictly increasing.
    values
        The clean series (float, finite).
    seed
        Random seed: the same inputs and seed give the same output.
    kinds
        Names from :data:`KINDS` to inject (default: all).

    Returns
    -------
    (values, events)
        A new array, and one :class:`Event` per label (``first``/``last``: the first and last
        reading the event changed).

    Examples
    --------
    >>> t = np.arange(0, 10 * DAY_US, 10 * MINUTE_US)
    >>> v = 8 + np.sin(2 * np.pi * t / DAY_US) + 0.01 * np.random.default_rng(0).normal(size=t.size)
    >>> out, events = inject(t, v, seed=1)
    >>> all(t[e.first] >= warmup_us(int(t[-1] - t[0])) for e in events)
    True
    """
    t_us = np.asarray(ts).astype("datetime64[us]").astype(np.int64)
    original = np.asarray(values, dtype=np.float64)
    if t_us.size != original.size:
        raise ValueError("ts and values differ in length")
    if t_us.size < 10 or np.any(np.diff(t_us) <= 0):
        raise ValueError("need at least 10 readings at strictly increasing times")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out = original.copy()
    span = int(t_us[-1] - t_us[0])
    cadence = int(np.median(np.diff(t_us)))
    first_ok = int(t_us[0]) + warmup_us(span)
    end_ok = int(t_us[-1]) - max(cadence, 10 * MINUTE_US)
    eligible_days = max(0.0, (end_ok - first_ok) / DAY_US)
    timeline = _Timeline(t_us, cadence)
    budget = int(BUDGET * (end_ok - first_ok))  # time the non-drift events may take in all
    events: list[Event] = []
    names = tuple(KINDS) if kinds is None else kinds
    # the longest kinds first: they need room, the short ones fit in between
    for name in sorted(names, key=lambda k: -(KINDS[k].minutes or (0.0, 0.0))[1]):
        kind = KINDS[name]
        count = max(1, int(rng.poisson(kind.rate * eligible_days / 30.0)))
        if name == "drift":  # at most two; in a series under 30 days, on half of the seeds
            count = min(count, 2) if eligible_days >= 30 or rng.random() < 0.5 else 0
        for _ in range(count):
            params = _params(kind, rng)
            start_lo = max(first_ok, int(t_us[0]) + 2 * DAY_US) if name == "drift" else first_ok
            longest = (end_ok - start_lo) // (DRIFT_SHARE if name == "drift" else EVENT_SHARE)
            duration = _duration(kind, rng, longest)
            if duration is not None and duration < 0:
                break  # this kind does not fit this series
            if name != "drift" and (duration or 0) > budget:
                continue  # the short kinds' share of the series is spent
            event = _place(
                kind, params, duration, start_lo, end_ok, t_us, original, out, rng, timeline
            )
            if event is not None and name != "drift":
                cost = int(t_us[event.last] - t_us[event.first]) + cadence
                if cost > budget:  # longer than drawn (a spike over a gap): undo it
                    out[event.first : event.last + 1] = original[event.first : event.last + 1]
                    timeline.busy.pop()
                    continue
                budget -= cost
            if event is not None:
                events.append(event)
                if on_event is not None:
                    on_event(event)
    events.sort(key=lambda e: e.first)
    return out, events


def _place(
    kind: Kind,
    params: dict[str, Any],
    duration: int | None,
    start_lo: int,
    end_ok: int,
    ts: np.ndarray,
    original: np.ndarray,
    out: np.ndarray,
    rng: np.random.Generator,
    timeline: _Timeline,
) -> Event | None:
    """Try random starts until the event fits; apply it and return its event (or None)."""
    for _ in range(60):
        if duration is None:
            n_readings = int(rng.integers(kind.readings[0], kind.readings[1] + 1))
            start = int(rng.integers(start_lo, max(start_lo + 1, end_ok)))
            i = int(np.searchsorted(ts, start))
            j = i + n_readings - 1
            if j >= ts.size or ts[j] > end_ok:
                continue
        else:
            if end_ok - duration <= start_lo:
                return None
            start = int(rng.integers(start_lo, end_ok - duration))
            i = int(np.searchsorted(ts, start))
            j = int(np.searchsorted(ts, start + duration, side="right")) - 1
            if j < i:
                j = i  # shorter than a step: one reading
        if i < 1 or j >= ts.size or j - i + 1 < kind.min_readings:
            continue
        lo_t, hi_t = int(ts[i]), int(ts[j])
        margin = _margin(hi_t - lo_t, kind.name)
        if not timeline.free(lo_t, hi_t, margin):
            continue
        idx = np.arange(i, j + 1)
        if not np.all(out[idx] == original[idx]):
            continue
        sd = step_sd(original[max(0, i - 200) : j + 200])
        if not _apply(kind, idx, original, out, ts, rng, params, sd):
            continue  # _apply refuses before it changes anything
        changed = idx[out[idx] != original[idx]]
        if changed.size == 0:
            continue
        timeline.take(lo_t, hi_t, margin)
        return Event(kind.name, kind.label, int(changed[0]), int(changed[-1]), params)
    return None
