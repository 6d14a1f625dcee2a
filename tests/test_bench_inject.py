"""bench/inject.py: the detection benchmark's anomaly injector on real-looking backgrounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.inject import (
    DAY_US,
    HOUR_US,
    KINDS,
    MINUTE_US,
    SENTINELS,
    Event,
    inject,
    warmup_us,
)


def background(days: float, cadence_min: int, seed: int = 0, gaps: int = 0) -> tuple:
    """A diel DO-like series (mg/L) with noise and optional multi-hour gaps."""
    rng = np.random.default_rng(seed)
    ts = np.arange(0, int(days * DAY_US), cadence_min * MINUTE_US, dtype=np.int64)
    for _ in range(gaps):
        start = int(rng.integers(0, ts.size))
        length = int(rng.integers(5, max(6, min(60, ts.size // 10))))
        ts = np.r_[ts[:start], ts[start + length :]]
    phase = 2 * np.pi * ts / DAY_US
    values = 8.0 + 2.0 * np.sin(phase) + rng.normal(0.0, 0.03, ts.size)
    return ts, np.round(values, 3)


def check_labels(ts: np.ndarray, original: np.ndarray, out: np.ndarray, events: list[Event]):
    """Every changed reading lies in exactly one event, and each event starts and ends on a
    changed reading: the labels cover exactly the readings changed."""
    changed = out != original
    covered = np.zeros(ts.size, dtype=int)
    for e in events:
        assert changed[e.first] and changed[e.last]
        covered[e.first : e.last + 1] += 1
    assert covered.max(initial=0) <= 1  # events never overlap
    assert not np.any(changed & (covered == 0))


def check_ranges(ts: np.ndarray, original: np.ndarray, out: np.ndarray, events: list[Event]):
    span = int(ts[-1] - ts[0])
    cadence = int(np.median(np.diff(ts)))
    short = [e for e in events if e.kind != "drift"]
    used = sum(int(ts[e.last] - ts[e.first]) + cadence for e in short)
    assert used <= 0.15 * max(0, span - warmup_us(span)) + cadence  # the short kinds' budget
    assert sum(e.kind == "drift" for e in events) <= 2
    for e in events:
        kind = KINDS[e.kind]
        assert e.label == kind.label
        for name, (lo, hi) in kind.params.items():
            assert lo <= e.params[name] <= hi, (e.kind, name, e.params[name])
        assert ts[e.first] >= ts[0] + warmup_us(span)
        n = e.last - e.first + 1
        assert n >= kind.min_readings
        duration = int(ts[e.last] - ts[e.first])
        if kind.readings is not None:
            assert kind.readings[0] <= n <= kind.readings[1]
        else:
            assert duration <= kind.minutes[1] * MINUTE_US
            if e.kind != "drift":
                assert duration <= (ts[-1] - ts[0] - warmup_us(span)) / 8 + cadence
        window = slice(e.first, e.last + 1)
        if e.kind == "dropout_zero":
            assert np.all(out[window] == 0.0)
        elif e.kind == "dropout_sentinel":
            assert e.params["sentinel"] in SENTINELS
            assert np.all(out[window] == e.params["sentinel"])
        elif e.kind == "stuck":
            assert np.all(out[window] == original[e.first - 1])
        elif e.kind == "drift":
            assert ts[e.first] >= ts[0] + 2 * DAY_US
            assert duration >= DAY_US - 2 * cadence
            assert duration <= (ts[-1] - ts[0] - 2 * DAY_US) / 3 + cadence
            ratio = out[window] / original[window] - 1.0
            assert np.all(np.sign(ratio) == e.params["direction"])
            assert abs(ratio[-1]) == pytest.approx(e.params["magnitude"], rel=1e-9)
        elif e.kind == "contextual":
            assert 6.0 <= e.params["lag_hours"] <= 12.0


def test_the_same_seed_gives_the_same_series_and_labels() -> None:
    ts, values = background(20, 5)
    a = inject(ts, values, seed=7)
    b = inject(ts, values, seed=7)
    c = inject(ts, values, seed=8)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(values, background(20, 5)[1])  # the input is never changed


def test_a_long_series_gets_every_kind_within_its_ranges() -> None:
    ts, values = background(60, 15)
    out, events = inject(ts, values, seed=3)
    assert {e.kind for e in events} == set(KINDS)
    check_labels(ts, values, out, events)
    check_ranges(ts, values, out, events)
    drifts = [e for e in events if e.kind == "drift"]
    assert all(DAY_US <= ts[e.last] - ts[e.first] <= 21 * DAY_US for e in drifts)


def test_only_what_fits_a_short_series() -> None:
    ts, values = background(40 / 24, 10)  # the fish pond's 40 hours
    kinds = set()
    for seed in range(10):
        out, events = inject(ts, values, seed=seed)
        check_labels(ts, values, out, events)
        check_ranges(ts, values, out, events)
        kinds |= {e.kind for e in events}
    assert "drift" not in kinds  # no room after 2 days: none
    assert {"spike", "stuck", "dropout_zero"} <= kinds
    week = background(7, 1)
    for seed in range(5):
        _, events = inject(*week, seed=seed)
        for e in events:
            if e.kind == "drift":  # starts >= 2 days in, lasts <= a third of the rest
                assert week[0][e.last] - week[0][e.first] <= 5 / 3 * DAY_US


def test_spikes_sentinels_and_supply_failures_look_as_documented() -> None:
    ts, values = background(45, 1, seed=2)
    out, events = inject(ts, values, seed=11, kinds=("spike", "supply_failure"))
    assert {e.kind for e in events} == {"spike", "supply_failure"}
    for e in events:
        window = slice(e.first, e.last + 1)
        if e.kind == "supply_failure":
            drop = values[window] - out[window]
            assert np.all(drop > 0)  # oxygen falls, then recovers towards normal
            lowest = int(np.argmax(drop))
            assert drop[-1] < drop[lowest]
        else:
            level_sd = np.std(np.diff(values))
            assert np.min(np.abs(out[window] - values[window])) > 1.5 * level_sd


def test_refuses_series_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        inject(np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 8]) * MINUTE_US, np.ones(10), seed=1)
    with pytest.raises(ValueError, match="differ in length"):
        inject(np.arange(10) * MINUTE_US, np.ones(9), seed=1)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    cadence=st.sampled_from([1, 5, 10, 15]),
    days=st.floats(1.5, 45.0),
    gaps=st.integers(0, 4),
)
def test_labels_and_ranges_hold_for_any_seed_cadence_and_length(
    seed: int, cadence: int, days: float, gaps: int
) -> None:
    if cadence == 1:
        days = min(days, 12.0)  # keep the example small
    ts, values = background(days, cadence, seed=seed % 1000, gaps=gaps)
    out, events = inject(ts, values, seed=seed)
    check_labels(ts, values, out, events)
    check_ranges(ts, values, out, events)
    max_gap = max(4 * cadence * MINUTE_US, HOUR_US)
    for e in events:  # no event straddles a gap
        assert np.diff(ts[e.first : e.last + 1]).max(initial=0) <= max_gap


def test_the_documented_table_of_kinds_is_the_code_s() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "detection-benchmark.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in doc.splitlines()
        if line.startswith("| `") and line.count("|") == 6
    }
    for kind in KINDS.values():
        if kind.readings:
            duration = f"{kind.readings[0]}–{kind.readings[1]} readings"
        else:
            duration = f"{kind.minutes[0]:g}–{kind.minutes[1]:g} min"
        params = ", ".join(f"`{n}` {a:g}–{b:g}" for n, (a, b) in kind.params.items())
        expected = f"| `{kind.name}` | {kind.label} | {duration} | {params} | {kind.rate:g} |"
        assert rows.get(kind.name) == expected
    assert set(rows) >= set(KINDS)
