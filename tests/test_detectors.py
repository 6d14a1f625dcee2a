"""The detectors on small built series whose answer is known (engine/detectors.py, in memory)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import detectors
from engine.config import Config
from engine.detectors import DETECTORS, SCORE_COLUMNS

T0 = datetime(2024, 3, 1)
ROOT = Path(__file__).resolve().parent.parent


def anomaly_config(**overrides: dict) -> dict:
    a = Config.load()["anomaly"]
    for section, values in overrides.items():
        a[section] = {**a[section], **values}
    return a


def diel(
    days: float,
    *,
    sensor: str = "s1",
    step_min: int = 1,
    seed: int = 0,
    level: float = 8.0,
    amplitude: float = 1.5,
    noise: float = 0.03,
) -> pl.DataFrame:
    """A clean diel DO series (mg/L, UTC) with white noise, rounded to 0.001."""
    rng = np.random.default_rng(seed)
    n = int(days * 1440 / step_min)
    minutes = np.arange(n) * step_min
    value = level + amplitude * np.sin(2 * np.pi * (minutes / 1440 - 0.3))
    value = value + rng.normal(0, noise, n)
    return pl.DataFrame(
        {
            "sensor_id": sensor,
            "ts": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "value": np.round(value, 3),
        }
    )


def run(
    frame: pl.DataFrame, a: dict | None = None, *, sites: dict[str, str | None] | None = None
) -> pl.DataFrame:
    """Score ``frame`` (sensor_id, ts, value; UTC sensors, mg/L) in memory."""
    a = a or anomaly_config()
    frame = frame.with_columns(unit=pl.lit("mg/L"), local_hour=pl.col("ts").dt.hour().cast(pl.Int8))
    ids = frame["sensor_id"].unique().to_list()
    scores, _ = detectors.score_frame(
        frame, {s: "mg/L" for s in ids}, sites or dict.fromkeys(ids), a
    )
    return scores


def window(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    return frame.filter(pl.col("ts").is_between(start, end))


def with_values(frame: pl.DataFrame, start: datetime, end: datetime, expr: pl.Expr) -> pl.DataFrame:
    inside = pl.col("ts").is_between(start, end)
    return frame.with_columns(value=pl.when(inside).then(expr).otherwise(pl.col("value")))


def hours_since(start: datetime) -> pl.Expr:
    return (pl.col("ts") - start).dt.total_seconds() / 3600.0


# -- the registry -------------------------------------------------------------------------------


def test_each_detector_is_defined_once_and_everything_derives_from_the_list() -> None:
    names = [d.name for d in DETECTORS]
    assert len(set(names)) == len(names)
    assert sorted(d.rank for d in DETECTORS) == list(range(1, len(DETECTORS) + 1))
    assert [c for c in SCORE_COLUMNS if c.startswith("score_")] == [
        *(d.column for d in DETECTORS),
        "score_sensor_fault",
    ]
    assert set(detectors.FAULT_TYPES) == {d.name for d in DETECTORS if d.fault}
    assert set(detectors.COLOURS) == set(names)
    a = Config.load()["anomaly"]
    for d in DETECTORS:
        assert d.name in a, f"[anomaly.{d.name}] is missing from the defaults"
    from engine.evaluate import LABEL_TYPES

    assert set(names) <= set(LABEL_TYPES)


def test_every_detector_is_described_in_the_docs_and_the_readme() -> None:
    docs = (ROOT / "docs" / "detection.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    scoring = readme.split("## Anomaly scoring", 1)[1].split("\n## ", 1)[0]
    marts = readme.split("#### `anomaly_scores`", 1)[1].split("\n#### ", 1)[0]
    a = Config.load()["anomaly"]
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in scoring.splitlines()
        if line.startswith("| `")
    }
    for d in DETECTORS:
        assert f"`{d.name}`" in docs, d.name
        assert d.name in rows, d.name
        for key, value in a[d.name].items():  # a default the table names is the default
            if f"`{d.name}.{key}` =" in rows[d.name]:
                named = rows[d.name].split(f"`{d.name}.{key}` =")[1].split("|")[0].strip()
                assert float(named) == float(value), (d.name, key)
        assert f"| {d.column} | DOUBLE |" in marts, d.column


# -- each detector on a built series ------------------------------------------------------------


def test_a_clean_series_is_quiet() -> None:
    scores = run(diel(8))
    assert scores.height == 8 * 1440
    assert scores["is_anomaly"].mean() < 0.002
    assert not scores.select("sensor_id", "ts").is_duplicated().any()
    assert set(scores["qartod_flag"].unique()) <= {1, 3}
    severity = scores.select(pl.max_horizontal(pl.col("^score_.*$"))).to_series()
    assert (severity - scores["severity"]).abs().max() == 0


def test_a_lone_spike_is_a_spike_at_its_minute() -> None:
    frame = diel(6)
    when = T0 + timedelta(days=5, hours=3, minutes=17)
    frame = with_values(frame, when, when, pl.col("value") + 0.6)
    scores = run(frame)
    row = scores.filter(pl.col("ts") == when).row(0, named=True)
    assert row["is_anomaly"] and row["anomaly_type"] == "spike"
    around = window(scores, when - timedelta(hours=2), when + timedelta(hours=2))
    assert around["is_anomaly"].sum() == 1


def test_a_flat_line_at_fifteen_minutes_is_stuck_and_zeros_are_dropouts() -> None:
    frame = diel(20, step_min=15)
    start = T0 + timedelta(days=15, hours=2)
    stuck_end = start + timedelta(hours=8)
    frame = with_values(frame, start, stuck_end, pl.lit(7.321))
    zero_at = T0 + timedelta(days=17, hours=5)
    frame = with_values(frame, zero_at, zero_at + timedelta(minutes=45), pl.lit(0.0))
    scores = run(frame)
    stuck = window(scores, start, stuck_end)
    assert stuck["anomaly_type"].tail(10).to_list() == ["stuck"] * 10
    # not from the first repeat: a few repeats at this cadence are no fault
    assert "stuck" not in stuck["anomaly_type"].head(3).to_list()
    zeros = window(scores, zero_at, zero_at + timedelta(minutes=45))
    assert zeros["anomaly_type"].to_list() == ["dropout"] * 4
    assert set(zeros["qartod_flag"]) == {4}
    before = window(scores, T0 + timedelta(days=3), start - timedelta(hours=1))
    assert before["is_anomaly"].mean() < 0.005


def test_a_six_hour_supply_failure_is_found_and_its_recovery_ends_it() -> None:
    frame = diel(12)
    start = T0 + timedelta(days=10, hours=6)
    end = start + timedelta(hours=6)
    # decay to 40 % of the level over 3 h, recovery over the next 3 h
    depth = 1 - 0.6 * (1 - (hours_since(start) - 3).abs() / 3)
    frame = with_values(frame, start, end, pl.col("value") * depth)
    scores = run(frame)
    event = window(scores, start, end)
    assert event["is_anomaly"].mean() > 0.6
    assert set(event.filter("is_anomaly")["anomaly_type"]) <= {"collective", "contextual", "point"}
    after = window(scores, end + timedelta(minutes=30), end + timedelta(hours=12))
    assert after["is_anomaly"].mean() < 0.02


def test_a_slow_ten_day_fouling_is_drift_and_the_days_before_are_not() -> None:
    frame = diel(42, step_min=5, noise=0.02)
    start, end = T0 + timedelta(days=28), T0 + timedelta(days=38)
    loss = (hours_since(start) / (10 * 24)).clip(0, 1) * 0.25  # 25 % low after ten days
    frame = with_values(frame, start, end, pl.col("value") * (1 - loss))
    scores = run(frame)
    second_half = window(scores, start + (end - start) / 2, end)
    assert second_half["is_anomaly"].mean() >= 0.25
    assert "drift" in set(second_half.filter("is_anomaly")["anomaly_type"])
    before = window(scores, T0 + timedelta(days=10), start)
    assert before.filter(pl.col("anomaly_type") == "drift").height == 0


def test_an_upward_offset_is_flagged_while_it_lasts() -> None:
    frame = diel(40, step_min=5, noise=0.02)
    start, end = T0 + timedelta(days=28), T0 + timedelta(days=33)
    frame = with_values(frame, start, end, pl.col("value") * 1.15)
    scores = run(frame)
    offset = window(scores, start, end)
    assert offset["is_anomaly"].mean() > 0.5
    late = window(scores, start + timedelta(days=3), end)
    assert "drift" in set(late.filter("is_anomaly")["anomaly_type"])


def test_a_site_wide_weather_dip_is_no_anomaly_but_one_fouled_probe_is() -> None:
    sensors = [f"farm|pond{i}|do" for i in range(4)]
    frames = [
        diel(36, sensor=s, step_min=5, seed=i, level=8 + 0.3 * i, noise=0.02)
        for i, s in enumerate(sensors)
    ]
    frame = pl.concat(frames)
    dip_start, dip_end = T0 + timedelta(days=30), T0 + timedelta(days=31, hours=6)
    # a cloudy day and a half: every pond of the farm reads 18 % low
    dip = 1 - 0.18 * (1 - (hours_since(dip_start) / 15 - 1).abs()).clip(0, 1)
    frame = with_values(frame, dip_start, dip_end, pl.col("value") * dip)
    # one probe fouls: 20 % low and falling over the same days, on top of the weather
    fouled = sensors[2]
    foul = (pl.col("sensor_id") == fouled) & pl.col("ts").is_between(dip_start, dip_end)
    frame = frame.with_columns(
        value=pl.when(foul)
        .then(pl.col("value") * (1 - 0.2 * (hours_since(dip_start) / 30).clip(0, 1)))
        .otherwise(pl.col("value"))
    )
    sites = dict.fromkeys(sensors, "farm")
    scores = run(frame, sites=sites)
    during = window(scores, dip_start, dip_end)
    clean = during.filter(pl.col("sensor_id") != fouled)
    assert clean["is_anomaly"].mean() < 0.01
    mine = during.filter(pl.col("sensor_id") == fouled)
    late = mine.filter(pl.col("ts") >= dip_start + timedelta(hours=15))
    assert late["is_anomaly"].mean() > 0.5
    # alone (no site), the same dip reads as an anomaly of every pond
    alone = run(frame)
    alone_clean = window(alone, dip_start, dip_end).filter(pl.col("sensor_id") != fouled)
    assert alone_clean["is_anomaly"].mean() > clean["is_anomaly"].mean()


def test_gross_range_uses_saturation_at_the_readings_temperature() -> None:
    frame = diel(3).with_columns(temperature_c=pl.lit(30.0))
    hot = T0 + timedelta(days=2, hours=5)
    # 20 mg/L at 30 degC is ~265 % of saturation (7.56 mg/L): suspect; at 0 degC it is 137 %
    frame = with_values(frame, hot, hot + timedelta(minutes=9), pl.lit(20.0))
    scores = run(frame)
    row = scores.filter(pl.col("ts") == hot + timedelta(minutes=5)).row(0, named=True)
    assert row["score_range"] >= 0.5
    cold = run(frame.with_columns(temperature_c=pl.lit(0.0)))
    assert cold.filter(pl.col("ts") == hot)["score_range"].item() == 0.0
    neg = run(with_values(diel(3), hot, hot, pl.lit(-0.5)))
    assert neg.filter(pl.col("ts") == hot).row(0, named=True)["qartod_flag"] == 4


def test_a_gap_starts_fresh_windows() -> None:
    frame = diel(6).filter(
        ~pl.col("ts").is_between(T0 + timedelta(days=5), T0 + timedelta(days=5, hours=3))
    )
    scores = run(frame)
    after = window(scores, T0 + timedelta(days=5, hours=3), T0 + timedelta(days=5, hours=4))
    # the level across a 3-hour gap is not the reading's neighbourhood: no spike, no point
    assert not after["is_anomaly"].any()


def test_scores_wait_for_a_day_of_history() -> None:
    frame = diel(3)
    first_day = T0 + timedelta(hours=23)
    frame = with_values(frame, T0 + timedelta(hours=5), T0 + timedelta(hours=5), pl.lit(12.0))
    scores = run(frame)
    early = scores.filter(pl.col("ts") < first_day)
    calibrated = [d.column for d in DETECTORS if d.name not in ("range", "dropout")]
    assert early.select(pl.max_horizontal(calibrated)).to_series().max() == 0


# -- invariance: the self-calibrating detectors scale with the signal ----------------------------

SCALE_FREE = [d.column for d in DETECTORS if d.name not in ("range", "dropout", "drift")]


def _anomalous(seed: int) -> pl.DataFrame:
    frame = diel(5, step_min=5, seed=seed)
    t = T0 + timedelta(days=4, hours=seed % 7)
    frame = with_values(frame, t, t, pl.col("value") + 0.7)
    frame = with_values(frame, t + timedelta(hours=3), t + timedelta(hours=5), pl.lit(8.123))
    return with_values(
        frame, t + timedelta(hours=9), t + timedelta(hours=12), pl.col("value") * 0.6
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 50),
    k=st.floats(0.05, 20.0),
    c=st.floats(-5.0, 5.0),
)
def test_flags_do_not_change_when_the_signal_is_scaled_and_shifted(
    seed: int, k: float, c: float
) -> None:
    frame = _anomalous(seed)
    base = run(frame)
    moved = run(frame.with_columns(value=pl.col("value") * k + c))
    for column in SCALE_FREE:
        a, b = base[column], moved[column]
        assert ((a >= 0.5) == (b >= 0.5)).all() or ((a - b).abs() < 1e-6).all(), column


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 50), k=st.floats(0.05, 20.0))
def test_drift_does_not_change_when_the_signal_is_scaled(seed: int, k: float) -> None:
    frame = _anomalous(seed)
    base = run(frame)
    moved = run(frame.with_columns(value=pl.col("value") * k))
    assert ((base["score_drift"] - moved["score_drift"]).abs() < 1e-6).all()


# -- the QARTOD part against ioos-qc ------------------------------------------------------------


def test_gross_range_flags_equal_ioos_qc_gross_range_test() -> None:
    qartod = pytest.importorskip("ioos_qc.qartod")
    a = anomaly_config()
    suspect, fail = a["range"]["suspect_sat"], a["range"]["fail_sat"]
    rng = np.random.default_rng(3)
    sat = np.concatenate([rng.uniform(-50, 600, 400), [suspect, fail, 0.0, -0.001, np.nan]])
    frame = pl.DataFrame({"value": sat, "unit": "%sat"}).with_columns(
        temperature_c=pl.lit(None, pl.Float64), salinity=pl.lit(None, pl.Float64)
    )
    frame = frame.with_columns(saturation=detectors.saturation(frame, a))
    ours = frame.select(
        score=detectors.detector("range").score(a["range"]),
    ).with_columns(
        flag=pl.when(frame["value"].is_null() | frame["value"].is_nan())
        .then(9)
        .when(pl.col("score") >= a["qartod_fail_severity"])
        .then(4)
        .when(pl.col("score") >= a["severity_threshold"])
        .then(3)
        .otherwise(1)
    )
    theirs = qartod.gross_range_test(inp=sat, fail_span=(0.0, fail), suspect_span=(0.0, suspect))
    # ioos-qc: suspect strictly above the suspect span's upper bound, fail outside the fail
    # span; ours: suspect above suspect_sat, fail from fail_sat on and below 0
    mine = ours["flag"].to_numpy()
    theirs = np.asarray(theirs, dtype=int)
    inside = (sat != fail) & ~np.isnan(sat)
    assert (mine[inside] == theirs[inside]).all()
    assert mine[np.isnan(sat)].tolist() == [9] and theirs[np.isnan(sat)].tolist() == [9]


def test_flat_line_agrees_with_ioos_qc_where_both_use_the_same_duration() -> None:
    qartod = pytest.importorskip("ioos_qc.qartod")
    # a series without history of repeats: our stuck threshold is min_readings readings at the
    # cadence; ioos-qc's flat line with that duration and a zero tolerance flags the same runs
    frame = diel(3, step_min=15, noise=0.2, seed=4)
    start = T0 + timedelta(days=2, hours=3)
    frame = with_values(frame, start, start + timedelta(hours=4), pl.lit(9.5))
    a = anomaly_config(stuck={"min_readings": 4})
    scores = run(frame, a)
    ts = frame["ts"].to_numpy()
    secs = 4 * 15 * 60
    theirs = np.asarray(
        qartod.flat_line_test(
            inp=frame["value"].to_numpy(),
            tinp=ts,
            suspect_threshold=secs,
            fail_threshold=3 * secs,
            tolerance=1e-9,
        ),
        dtype=int,
    )
    late = scores["ts"].to_numpy() >= np.datetime64(T0 + timedelta(days=1, hours=1))
    ours_flat = scores["score_stuck"].to_numpy() >= 0.5
    assert (ours_flat[late] == (theirs[late] >= 3)).all()
