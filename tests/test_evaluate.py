"""Evaluation arithmetic on tiny labelled examples, and the CLI around it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli import oxy
from engine import OxyError
from engine.evaluate import (
    evaluate,
    evaluate_flags,
    metrics,
    read_labels,
    seed_params,
    seed_windows,
)
from engine.warehouse import Warehouse, bind, sql_text

T0 = datetime(2024, 5, 1)


def minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def write_labels(path: Path, rows: list[tuple[str, datetime, datetime, str]]) -> Path:
    pl.DataFrame(
        {
            "sensor_id": [r[0] for r in rows],
            "start": [r[1].isoformat() for r in rows],
            "end": [r[2].isoformat() for r in rows],
            "type": [r[3] for r in rows],
        }
    ).write_csv(path)
    return path


def test_metrics_arithmetic() -> None:
    events = pl.DataFrame(
        {"type": ["spike", "spike", "stuck", "drift"], "found": [True, False, True, True]}
    )
    m = metrics(events, {"readings": 1000, "flagged": 20, "flagged_inside": 15})
    assert m["by_type"]["spike"] == {"events": 2, "found": 1, "recall": 0.5}
    assert m["recall"] == 0.75 and m["precision"] == 0.75
    assert m["f1"] == pytest.approx(0.75)
    assert m["flagged_fraction"] == 0.02


def test_tolerance_and_drift_rule_on_a_tiny_example(warehouse: Warehouse, tmp_path: Path) -> None:
    # 100 minutes of sensor a; flagged minutes: 8 (2 min before the spike at 10), 30..31,
    # 60 (outside every window), and the drift 70..89: second half 80..89 has 3 of 10 flagged
    flagged = {8, 30, 31, 60, 82, 85, 88}
    flags = pl.DataFrame(
        {
            "sensor_id": "a",
            "ts": [minute(m) for m in range(100)],
            "is_anomaly": [m in flagged for m in range(100)],
        }
    )
    labels = read_labels(
        write_labels(
            tmp_path / "labels.csv",
            [
                ("a", minute(10), minute(10), "spike"),  # found: 8 is within the 2-min lead
                ("a", minute(20), minute(24), "stuck"),  # 30 is 6 min after: not found
                ("a", minute(26), minute(32), "noise"),  # found
                ("a", minute(70), minute(89), "drift"),  # 3/10 >= 25 %: found
            ],
        )
    )
    con = warehouse.connect_memory()
    con.register("eval_flags", flags.to_arrow())
    result = evaluate_flags(con, labels)
    assert result["by_type"]["spike"]["found"] == 1
    assert result["by_type"]["stuck"]["found"] == 0
    assert result["by_type"]["drift"]["found"] == 1
    assert result["recall"] == 0.75
    # inside (with tolerance): 8, 30, 31, 82, 85, 88 (30 lies in stuck's 5-min lag too); 60 not
    assert (result["flagged"], result["flagged_inside"]) == (7, 6)
    assert result["precision"] == pytest.approx(6 / 7)
    assert result["readings"] == 100
    assert result["missed"][0]["type"] == "stuck"


def test_drift_needs_a_quarter_of_its_second_half(warehouse: Warehouse, tmp_path: Path) -> None:
    flags = pl.DataFrame(
        {
            "sensor_id": "a",
            "ts": [minute(m) for m in range(20)],
            "is_anomaly": [m in {0, 1, 2, 3, 4, 5, 10} for m in range(20)],
        }
    )
    labels = read_labels(write_labels(tmp_path / "l.csv", [("a", minute(0), minute(19), "drift")]))
    con = warehouse.connect_memory()
    con.register("eval_flags", flags.to_arrow())
    assert evaluate_flags(con, labels)["by_type"]["drift"]["found"] == 0  # 1/10 in 10..19


def test_bad_labels_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("sensor_id,begin,end,type\n")
    with pytest.raises(OxyError, match="lack column"):
        read_labels(tmp_path / "a.csv")
    write_labels(tmp_path / "b.csv", [("a", minute(5), minute(1), "spike")])
    with pytest.raises(OxyError, match="end before"):
        read_labels(tmp_path / "b.csv")


def test_evaluate_end_to_end_with_seed_rules_and_cli(
    warehouse: Warehouse, readings_loader: Callable[..., None], tmp_path: Path
) -> None:
    n = 4 * 1440
    ts = [T0 + timedelta(minutes=i) for i in range(n)]
    value = [8.0 + 0.5 * ((i % 1440) / 1440) + (0.02 if i % 2 else -0.02) for i in range(n)]
    value[3 * 1440 + 100] = 0.0  # a dropout minute
    readings_loader(warehouse, pl.DataFrame({"sensor_id": "a", "ts": ts, "value": value}))
    labels = write_labels(
        tmp_path / "labels.csv", [("a", ts[3 * 1440 + 100], ts[3 * 1440 + 100], "dropout")]
    )
    with pytest.raises(OxyError, match="oxy score"):
        evaluate(warehouse, labels)
    runner = CliRunner()
    scored = runner.invoke(oxy, ["--warehouse", str(warehouse.root), "score"])
    assert scored.exit_code == 0, scored.output
    assert scored.output.startswith(
        f"this run (new readings only): scored {n:,} readings of 1 sensor(s) in 1 bucket(s)"
    )
    assert "\nwarehouse: " in scored.output
    again = runner.invoke(oxy, ["--warehouse", str(warehouse.root), "--json", "score", "--full"])
    assert json.loads(again.output)["rows_scored"] == n
    out = tmp_path / "eval.json"
    result = runner.invoke(
        oxy,
        [
            "--warehouse",
            str(warehouse.root),
            "evaluate",
            "--labels",
            str(labels),
            "--seed-rules",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recall dropout (1)" in result.output and "seed rules" in result.output
    saved = json.loads(out.read_text())
    assert saved["ours"]["by_type"]["dropout"]["recall"] == 1.0
    assert saved["seed_rules"]["readings"] == n
    assert saved["ours"]["readings"] == n


def test_seed_rules_grouped_buckets_equal_one_bucket_at_a_time(
    warehouse: Warehouse, readings_loader: Callable[..., None], tmp_path: Path
) -> None:
    """The seed's rules score buckets together (up to chunk_rows readings): the flags equal
    scoring each bucket alone, and every reading is scored once."""
    import numpy as np

    from engine.config import Config
    from engine.evaluate import _seed_flags
    from engine.warehouse import bucket_of

    names = [f"s{i}" for i in range(6)]
    assert len({bucket_of(n, int(warehouse.config["warehouse"]["buckets"])) for n in names}) >= 3
    rng = np.random.default_rng(2)
    n = 2 * 1440
    frames = []
    for name in names:
        value = 8 + np.sin(np.arange(n) / 1440 * 2 * np.pi) + rng.normal(0, 0.05, n)
        value[rng.integers(0, n, 5)] += 2.0  # spikes
        frames.append(
            pl.DataFrame({"sensor_id": name, "ts": [minute(i) for i in range(n)], "value": value})
        )
    readings_loader(warehouse, pl.concat(frames))

    def flags(config: Config) -> pl.DataFrame:
        with Warehouse(warehouse.root, config).reader() as con:
            _seed_flags(Warehouse(warehouse.root, config), con)
            table = con.sql("from eval_flags order by sensor_id, ts").to_arrow_table()
        return pl.from_arrow(table)

    alone = tmp_path / "alone.toml"
    alone.write_text("[anomaly.run]\nchunk_rows = 1\n")
    grouped, single = flags(Config.load()), flags(Config.load(alone))
    assert grouped.height == single.height == 6 * n
    assert grouped.equals(single)
    assert 0 < grouped["is_anomaly"].sum() < grouped.height


# -- the seed's rules against slow references ----------------------------------------------

T0 = datetime(2024, 3, 1)


def _reference_seed_point(ts: list[datetime], values: list[float]) -> list[float]:
    """The seed's point score from first principles: 60-min time window incl. the reading."""
    out = []
    for i, t in enumerate(ts):
        window = [v for s, v in zip(ts, values, strict=True) if t - timedelta(minutes=60) < s <= t]
        if len(window) < 2:
            out.append(0.0)
            continue
        mean = sum(window) / len(window)
        std = math.sqrt(sum((v - mean) ** 2 for v in window) / (len(window) - 1))
        z = abs(values[i] - mean) / std if std > 0 else None
        out.append(0.0 if z is None else min(max((z - 2.0) / 3.0, 0.0), 1.0))
    return out


def test_seed_point_score_matches_a_slow_reference_across_gaps(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    minutes = sorted(rng.choice(np.arange(400), size=150, replace=False).tolist())
    minutes += [600, 601, 602, 700]  # a gap longer than every window
    ts = [T0 + timedelta(minutes=m) for m in minutes]
    values = (8 + rng.normal(0, 0.3, len(ts))).round(3).tolist()
    values[40] += 3
    con = warehouse.connect_memory()
    con.execute(
        "create table sensors as select 'a' as sensor_id, 'UTC' as timezone, 'mg/L' as unit"
    )
    lake = tmp_path / "lake.parquet"
    pl.DataFrame(
        {"sensor_id": "a", "ts": ts, "value": values, "ingested_at": datetime(2024, 1, 1)}
    ).write_parquet(lake)
    params = seed_params(warehouse.config)
    con.register("seed_windows", seed_windows(con, [str(lake)], warehouse.config))
    seed = (
        sql_text("intermediate/int_seed_scores")
        .replace("select sensor_id, ts, severity,", "select sensor_id, ts, score_point, severity,")
        .replace(
            "select\n        sensor_id,\n        ts,\n        greatest(",
            "select\n        sensor_id,\n        ts,\n        score_point,\n        greatest(",
        )
    )
    got = con.execute(seed + " order by ts", bind(seed, params)).fetchall()
    expected = _reference_seed_point(ts, values)
    assert [r[2] for r in got] == pytest.approx(expected, abs=1e-9)
    assert max(expected) > 0.5


def _seed_windows_row_by_row(rows: list[tuple[str, datetime, float]], zones: dict) -> list:
    """The seed's windows of each reading from first principles (sorted by sensor, ts): local
    hour, steps within 30 min, stds over (ts - 60, ts] (a flat window: 0) and (ts - 15, ts],
    point z, and the mean point z over (ts - 120, ts]."""
    from zoneinfo import ZoneInfo

    def std(values: list[float]) -> float | None:
        if len(values) < 2:
            return None
        if len(set(values)) == 1:
            return 0.0
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def within(sensor: str, t: datetime, minutes: int) -> list[tuple[datetime, float]]:
        reach = timedelta(minutes=minutes)
        return [(s, v) for k, s, v in rows if k == sensor and t - reach < s <= t]

    out, z_of = [], {}
    for i, (sensor, t, value) in enumerate(rows):
        point = [v for _, v in within(sensor, t, 60)]
        point_std = std(point)
        z = abs(value - sum(point) / len(point)) / point_std if point_std else None
        z_of[(sensor, t)] = z
        zs = [z_of[(sensor, s)] for s, _ in within(sensor, t, 120)]
        zs = [x for x in zs if x is not None]
        before = rows[i - 1] if i > 0 else None
        after = rows[i + 1] if i + 1 < len(rows) else None
        gap = timedelta(minutes=30)
        local = t.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(zones[sensor]))
        out.append(
            {
                "local_hour": local.hour,
                "step": value - before[2]
                if before and before[0] == sensor and before[1] >= t - gap
                else None,
                "next_step": after[2] - value
                if after and after[0] == sensor and after[1] <= t + gap
                else None,
                "point_std": point_std,
                "stuck_std": point_std,
                "noise_std": std([v for _, v in within(sensor, t, 15)]),
                "point_z": z,
                "collective_z": sum(zs) / len(zs) if zs else None,
            }
        )
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    minutes=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=0, max_value=600)),
        min_size=1,
        max_size=120,
        unique=True,
    ),
    levels=st.lists(st.sampled_from([8.0, 8.0, 8.0, 8.1, 8.4, 11.0]), min_size=120, max_size=120),
)
# a flat hour after a step, a 3-hour gap, a lone reading; sensor b's zone switches to summer
# time at 01:00 UTC on 31 March 2024; c's local hours start at half past UTC hours
@example(
    minutes=[("a", m) for m in (0, 1, 2, *range(3, 70), 250, 251, 252)]
    + [("b", 30), ("c", 29), ("c", 30)],
    levels=[9.0] * 3 + [8.0] * 117,
)
def test_seed_windows_match_their_windows_row_by_row(
    warehouse: Warehouse, tmp_path: Path, minutes: list[tuple[str, int]], levels: list[float]
) -> None:
    start = datetime(2024, 3, 30, 22, 0)
    zones = {"a": "UTC", "b": "Europe/Oslo", "c": "Asia/Kolkata"}  # c: half-hour offset
    rows = sorted(
        (sensor, start + timedelta(minutes=m), levels[i]) for i, (sensor, m) in enumerate(minutes)
    )
    con = warehouse.connect_memory()
    con.execute(
        "create table sensors as select * from (values ('a', 'UTC', 'mg/L'), "
        "('b', 'Europe/Oslo', 'mg/L'), ('c', 'Asia/Kolkata', 'mg/L')) "
        "as t(sensor_id, timezone, unit)"
    )
    lake = tmp_path / "lake.parquet"
    shuffled = list(reversed(rows))  # the lake's order is not the windows' order
    pl.DataFrame(
        {
            "sensor_id": [r[0] for r in shuffled],
            "ts": [r[1] for r in shuffled],
            "value": [r[2] for r in shuffled],
            "ingested_at": datetime(2024, 4, 1),
        }
    ).write_parquet(lake)
    got = seed_windows(con, [str(lake)], warehouse.config)
    assert got.select("sensor_id", "ts").rows() == [(r[0], r[1]) for r in rows]
    expected = _seed_windows_row_by_row(rows, zones)
    for column in expected[0]:
        want = [e[column] for e in expected]
        have = got[column].to_list()
        assert [w is None for w in want] == [h is None for h in have], column
        pairs = [(h, w) for h, w in zip(have, want, strict=True) if w is not None]
        assert [h for h, _ in pairs] == pytest.approx([w for _, w in pairs], abs=1e-9), column
