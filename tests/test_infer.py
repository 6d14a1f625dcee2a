"""Batch inference: known sensors scored from warehouse history, new sensors from the file."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cli import oxy
from engine import anomaly
from engine.config import Config
from engine.infer import NOTE_NEW, infer_file
from engine.warehouse import Warehouse

START = datetime(2024, 3, 1)
SOURCES = """
[sources.farm]
customer = "farm"
timezone = "UTC"
unit = "mg/L"
sensor_columns = ["Tag"]
time_column = "Timestamp"
value_column = "Value"
"""


def series(sensor: str, start: datetime, minutes: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    m = np.arange(minutes)
    return pl.DataFrame(
        {
            "sensor_id": sensor,
            "ts": [start + timedelta(minutes=int(i)) for i in m],
            "value": 8 + np.sin(2 * np.pi * m / 1440) + rng.normal(0, 0.05, m.size),
        }
    )


@pytest.fixture
def scored_warehouse(tmp_path: Path, readings_loader) -> Warehouse:
    """Two days of history for sensors A and B, scored."""
    (tmp_path / "sources.toml").write_text(SOURCES)
    wh = Warehouse(tmp_path / "wh", Config.load(tmp_path / "sources.toml"))
    history = pl.concat([series(s, START, 2 * 1440, i) for i, s in enumerate("AB")])
    readings_loader(wh, history)
    anomaly.score(wh)
    return wh


def warehouse_fingerprint(wh: Warehouse) -> dict[str, str]:
    return {
        p.relative_to(wh.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(wh.root.rglob("*"))
        if p.is_file() and ".staging" not in p.parts and p.name != ".lock"
    }


def export_csv(path: Path, frame: pl.DataFrame, extra_lines: list[str]) -> Path:
    lines = ["Tag,Timestamp,Value"]
    lines += [
        f"{r['sensor_id']},{r['ts']:%Y-%m-%dT%H:%M:%SZ},{r['value']:.4f}"
        for r in frame.iter_rows(named=True)
    ]
    path.write_text("\n".join(lines + extra_lines) + "\n")
    return path


def test_known_sensors_match_score_readings_and_warehouse_is_untouched(
    scored_warehouse: Warehouse, tmp_path: Path
) -> None:
    wh = scored_warehouse
    after = START + timedelta(days=2)
    new = series("A", after, 180, 7).with_columns(
        value=pl.when(pl.col("ts") == after + timedelta(minutes=90))
        .then(pl.lit(15.0))
        .otherwise(pl.col("value"))
    )
    new = pl.concat([new, series("B", after, 180, 8)])
    export = export_csv(
        tmp_path / "export.csv",
        new,
        [
            f"A,{after:%Y-%m-%dT%H:%M:%SZ},{new['value'][0]:.4f}",  # identical duplicate
            f"A,{after + timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ},1.2345",  # conflict
            "A,not-a-time,8.0",  # quarantined
            f"B,{after + timedelta(hours=5):%Y-%m-%dT%H:%M:%SZ},-9999",  # sentinel
        ],
    )
    before = warehouse_fingerprint(wh)
    result = infer_file(wh, export, "farm", tmp_path / "out.parquet")
    assert warehouse_fingerprint(wh) == before

    assert (result.rows_read, result.rows_written) == (364, 360)
    assert (result.duplicates, result.quarantined) == (1, 3)
    assert (result.known_sensors, result.new_sensors) == (2, 0)
    quarantine = pl.read_csv(result.quarantine_file)
    assert quarantine["line"].to_list() == [363, 364, 365]
    assert quarantine["reason"][0] == "conflicting duplicate"

    out = pl.read_parquet(result.output)
    expected = anomaly.score_readings(wh, new.with_columns(pl.col("value").round(4)))
    assert (
        out.select(expected.columns[:-1])
        .sort("sensor_id", "ts")
        .equals(expected.drop("prev_ts").sort("sensor_id", "ts"))
    )
    spike = out.filter(pl.col("ts") == after + timedelta(minutes=90), pl.col("sensor_id") == "A")
    assert spike["is_anomaly"].to_list() == [True]
    assert out["note"].null_count() == out.height  # known sensors need no note


def test_new_sensor_is_scored_from_the_file_with_a_note(
    scored_warehouse: Warehouse, tmp_path: Path
) -> None:
    wh = scored_warehouse
    after = START + timedelta(days=2)
    fresh = series("C", START, 2 * 1440, 9).with_columns(
        value=pl.when(pl.col("ts") == START + timedelta(hours=30))
        .then(pl.lit(20.0))
        .otherwise(pl.col("value"))
    )
    export = export_csv(tmp_path / "mixed.csv", pl.concat([series("A", after, 60, 3), fresh]), [])
    before = warehouse_fingerprint(wh)
    out_csv = tmp_path / "mixed_scored.csv"
    cli = CliRunner().invoke(
        oxy,
        [
            "--warehouse",
            str(wh.root),
            "--config",
            str(tmp_path / "sources.toml"),
            "infer",
            str(export),
            "--source",
            "farm",
            "--output",
            str(out_csv),
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert "1 known + 1 new sensors" in cli.output
    assert warehouse_fingerprint(wh) == before
    out = pl.read_csv(out_csv, try_parse_dates=True)
    assert out.height == 60 + 2 * 1440
    notes = dict(out.group_by("sensor_id").agg(pl.col("note").first()).iter_rows())
    assert notes["C"] == NOTE_NEW and notes["A"] is None
    spike = out.filter(pl.col("sensor_id") == "C", pl.col("ts") == START + timedelta(hours=30))
    assert spike["is_anomaly"].to_list() == [True]
    assert out.filter(pl.col("sensor_id") == "C")["is_anomaly"].sum() < 30


def test_bad_requests_are_one_line(scored_warehouse: Warehouse, tmp_path: Path) -> None:
    base = ["--warehouse", str(scored_warehouse.root), "--config", str(tmp_path / "sources.toml")]
    runner = CliRunner()
    export = export_csv(tmp_path / "e.csv", series("A", START, 5, 1), [])
    cases = {
        ("--source", "nope", "--output", str(tmp_path / "o.parquet")): "unknown source 'nope'",
        ("--source", "farm", "--output", str(tmp_path / "o.txt")): "must end in .parquet or .csv",
    }
    for args, message in cases.items():
        out = runner.invoke(oxy, [*base, "infer", str(export), *args])
        assert out.exit_code == 1 and message in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1
    missing = runner.invoke(
        oxy, [*base, "infer", str(tmp_path / "missing.csv"), "--source", "farm", "-o", "x.csv"]
    )
    assert missing.exit_code == 1 and "no such file" in missing.output


def test_production_model_adds_one_step_predictions(
    scored_warehouse: Warehouse, tmp_path: Path, fake_forecasting_engine: list[str]
) -> None:
    loaded = fake_forecasting_engine
    wh = scored_warehouse
    (wh.registry_dir / "runs" / "r1").mkdir(parents=True)
    (wh.registry_dir / "runs" / "r1" / "meta.json").write_text('{"metrics": {}}')
    from engine.registry import record_run

    assert record_run(wh, "r1").promoted
    after = START + timedelta(days=2)
    export = export_csv(tmp_path / "e.csv", series("A", after, 30, 5), [])
    result = infer_file(wh, export, "farm", tmp_path / "p.parquet")
    assert loaded == ["r1"] and result.production_run == "r1"
    out = pl.read_parquet(result.output)
    # the stand-in predicts the previous value: exact check of the join
    assert out["yhat_1step"].to_list()[1:] == out["value"].to_list()[:-1]
    assert result.predictions == 29 and result.prediction_note == ""
