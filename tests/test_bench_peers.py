"""bench/peers.py: the peers' thresholds as the issue states them (ioos-qc itself is in the
bench extra, not dev: its flags are checked only where it is installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bench.peers import flat_line_seconds, qartod_config, step_sigma


def test_flat_line_durations_follow_the_cadence() -> None:
    assert flat_line_seconds(1.0) == (1800.0, 3600.0)  # 30 / 60 min at 1 min
    assert flat_line_seconds(15.0) == (10800.0, 21600.0)  # 3 / 6 h at 15 min
    suspect, fail = flat_line_seconds(5.0)
    assert 1800.0 < suspect < 10800.0 and fail == 2 * suspect
    assert flat_line_seconds(30.0) == flat_line_seconds(15.0)


def test_thresholds_come_from_the_sensors_own_steps_not_its_sentinels() -> None:
    rng = np.random.default_rng(1)
    values = 8.0 + np.cumsum(rng.normal(0.0, 0.05, 2000))
    clean_sigma = step_sigma(values, (0.0, 25.0))
    values[[100, 900]] = -9999.0
    assert step_sigma(values, (0.0, 25.0)) == pytest.approx(clean_sigma, rel=0.05)
    river = qartod_config(values, 900.0, "mg/L", river=True)
    lake = qartod_config(values, 60.0, "mg/L", river=False)
    assert river.suspect_span == (2.0, 18.0) and lake.suspect_span == (1.0, 20.0)
    assert river.fail_span == (0.0, 25.0)
    assert river.spike_fail == pytest.approx(2 * river.spike_suspect)
    assert lake.rate_per_s == pytest.approx(3 * step_sigma(values, (0.0, 25.0)) / 60.0)
    sat = qartod_config(values * 10, 60.0, "%sat", river=False)
    assert sat.fail_span == (0.0, 300.0) and sat.suspect_span == (10.0, 250.0)


@pytest.mark.skipif(importlib.util.find_spec("ioos_qc") is None, reason="ioos-qc not installed")
def test_qartod_flags_a_sentinel_a_spike_and_a_flat_line() -> None:
    from bench.peers import qartod_flags

    ts = np.arange(0, 600 * 60, 60).astype("datetime64[s]")
    rng = np.random.default_rng(2)
    values = 8.0 + 0.5 * np.sin(np.arange(600) / 50) + rng.normal(0, 0.01, 600)
    values[50] = -9999.0
    values[200] += 2.0
    values[300:400] = values[299]
    flags = qartod_flags(ts, values, qartod_config(values, 60.0, "mg/L", river=False))
    assert flags[50] == 4 and flags[200] >= 3
    assert flags[300 + 61] == 4  # flat for more than an hour at 1-min cadence: fail
    assert np.mean(flags[450:] == 1) > 0.95
