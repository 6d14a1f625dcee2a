"""bench/bench_forecast.py's split and scoring: origins a week apart see nothing after them,
labelled readings are seen but never scored, and a method is scored on what it forecast."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_forecast import holdout, mark_labelled, scales, score
from engine.metrics import mase_scale


def series(sensors: int, days: int, step_min: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(sensors):
        ts = pl.datetime_range(
            datetime(2024, 1, 1),
            datetime(2024, 1, 1) + timedelta(days=days - k),
            f"{step_min}m",
            eager=True,
        )
        # a sensor with a gap: no reading on its 10th day
        ts = ts.filter((ts < datetime(2024, 1, 10)) | (ts >= datetime(2024, 1, 11)))
        values = 8 + np.sin(np.arange(len(ts)) * step_min / 1440 * 2 * np.pi)
        frames.append(
            pl.DataFrame(
                {"sensor_id": f"s{k}", "ts": ts, "value": values + rng.normal(0, 0.1, len(ts))}
            )
        )
    return pl.concat(frames)


@settings(max_examples=15, deadline=None)
@given(back=st.integers(0, 3), step=st.sampled_from([1, 15, 60]), sensors=st.integers(1, 3))
def test_each_origin_sees_only_its_past(back: int, step: int, sensors: int) -> None:
    readings = series(sensors, 40, step)
    history, future, origins = holdout(readings, back=back)
    ends = readings.group_by("sensor_id").agg(pl.col("ts").max().alias("end"))
    joined = (
        future.group_by("sensor_id")
        .agg(pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last"))
        .join(history.group_by("sensor_id").agg(pl.col("ts").max().alias("seen")), on="sensor_id")
        .join(ends, on="sensor_id")
        .join(origins, on="sensor_id")
    )
    for row in joined.iter_rows(named=True):
        assert row["seen"] == row["origin"] < row["first"]
        # the held-out week is the (back + 1)-th week from the sensor's end
        assert row["last"] <= row["end"] - timedelta(days=7 * back)
        assert row["first"] > row["end"] - timedelta(days=7 * (back + 1))
    assert future["horizon_min"].min() >= 1 and future["horizon_min"].max() <= 7 * 1440
    # the weeks of two origins never share a reading
    _, other, _ = holdout(readings, back=back + 1)
    assert future.join(other, on=["sensor_id", "ts"]).is_empty()


def test_labelled_readings_are_marked_across_overlapping_labels() -> None:
    ts = pl.datetime_range(datetime(2024, 1, 1), datetime(2024, 1, 1, 1), "10m", eager=True)
    readings = pl.DataFrame({"sensor_id": ["a"] * 7 + ["b"] * 7, "ts": list(ts) * 2, "value": 1.0})
    labels = pl.DataFrame(
        {
            "sensor_id": ["a", "a", "b"],
            "start": [datetime(2024, 1, 1, 0, 10), datetime(2024, 1, 1, 0, 15), ts[6]],
            "end": [datetime(2024, 1, 1, 0, 40), datetime(2024, 1, 1, 0, 20), ts[6]],
        }
    )
    got = mark_labelled(readings, labels)
    assert got.filter(pl.col("sensor_id") == "a")["labelled"].to_list() == [
        False,
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert got.filter(pl.col("sensor_id") == "b")["labelled"].to_list() == [False] * 6 + [True]


def test_labelled_readings_are_not_scored_nor_in_the_scale() -> None:
    readings = series(1, 30, 15, seed=3)
    # a sentinel-sized spike one hour into the last week and one in the week before the origin
    end = readings["ts"].max()
    spikes = [end - timedelta(days=7) + timedelta(hours=1), end - timedelta(days=9)]
    readings = readings.with_columns(
        pl.when(pl.col("ts").is_in(spikes)).then(9999.0).otherwise(pl.col("value")).alias("value")
    )
    labels = pl.DataFrame({"sensor_id": ["s0", "s0"], "start": spikes, "end": spikes})
    marked, future, origins = holdout(mark_labelled(readings, labels))
    scale = scales(marked, origins)["s0"]
    clean = marked.filter(~pl.col("labelled"))
    t = (clean["ts"].dt.epoch("s") // 60).to_numpy()
    origin = int(origins["origin"].dt.epoch("s").item() // 60)
    assert scale == mase_scale(t, clean["value"].to_numpy(), origin + 1) < 1
    scored = future.filter(~pl.col("labelled")).drop("labelled")
    perfect = scored.select("sensor_id", "ts", pl.col("value").alias("yhat"))
    perfect = perfect.with_columns(
        (pl.col("yhat") - 0.2).alias("yhat_lo"), (pl.col("yhat") + 0.2).alias("yhat_hi")
    )
    result = score(perfect, scored, {"s0": scale})
    assert all(result[b]["mase"] == 0 and result[b]["coverage"] == 1 for b in result)
    # one forecast 1 off everywhere: MASE 1 / scale in every bucket
    off = perfect.with_columns(pl.col("yhat") + 1)
    result = score(off, scored, {"s0": scale})
    assert np.allclose([result[b]["mase"] for b in result], 1 / scale)
    assert result["week"]["readings"] == scored.height
