"""MASE: the one definition (engine.metrics), checked on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from engine.metrics import fleet_mase, mase, mase_scale


def test_mase_scale_hand_computed() -> None:
    # Readings twice a day (00:00 and 12:00) for four days, one missing (day 2, 12:00).
    t = np.array([0, 720, 1440, 2160, 2880, 4320, 5040])
    y = np.array([1.0, 5.0, 2.0, 7.0, 4.0, 7.0, 6.0])
    # Day-apart pairs before minute 5041: 1440-0 |2-1| = 1; 2160-720 |7-5| = 2;
    # 2880-1440 |4-2| = 2; 4320-2880 |7-4| = 3; 5040-3600: no reading at 3600.
    assert mase_scale(t, y, before=5041) == pytest.approx((1 + 2 + 2 + 3) / 4)
    # The window is the `days` before `before`: with one day, only 4320 and 5040 are in it.
    assert mase_scale(t, y, before=5041, days=1) == pytest.approx(3.0)
    # A reading at `before` itself is not part of the window.
    assert mase_scale(t, y, before=4320) == pytest.approx((1 + 2 + 2) / 3)
    # NaN readings are gaps.
    y_gap = y.copy()
    y_gap[4] = np.nan
    assert mase_scale(t, y_gap, before=5041) == pytest.approx((1 + 2) / 2)
    assert math.isnan(mase_scale(t[:2], y[:2], before=800))


def test_mase_and_fleet_mase_hand_computed() -> None:
    assert mase(np.array([1.0, 3.0, np.nan]), 2.0) == 1.0  # MAE 2 / scale 2
    assert math.isnan(mase(np.array([1.0]), 0.0))
    frame = pl.DataFrame(
        {
            "sensor_id": ["a", "a", "b", "b", "b"],
            "actual": [10.0, 11.0, 5.0, 5.0, None],
            "yhat": [11.0, 13.0, 5.5, 4.5, 9.0],
            "mase_scale": [3.0, 3.0, 0.25, 0.25, 0.25],
        }
    )
    # a: MAE 1.5 / 3 = 0.5; b: MAE 0.5 / 0.25 = 2.0 (the row without a reading is left out)
    assert fleet_mase(frame, "yhat") == pytest.approx((0.5 + 2.0) / 2)
