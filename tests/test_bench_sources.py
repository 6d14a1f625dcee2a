"""bench/sources.py and the suite's accounting: LRO labels from a hand-made file, exports that
carry temperature only where the readings schema has it, sentinel dropouts counted through
oxy's real ingest."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import engine.warehouse
from bench.detection_suite import evaluate_frame, prepare, with_quarantine
from bench.inject import DAY_US, MINUTE_US
from bench.sources import (
    DATA,
    Source,
    build_semi,
    calibration_overlap,
    lro_site_year,
    runs_to_labels,
    write_export,
)
from engine.config import Config

LRO_HEADER = (
    "datetime,temp,temp_cor,temp_qual,cond,cond_cor,cond_qual,ph,ph_cor,ph_qual,"
    "do,do_cor,do_qual,turb,turb_cor,turb_qual,stage,stage_cor,stage_qual"
)


def lro_row(time: str, do: str, qual: str, temp: str = "5.1") -> str:
    return f"{time},{temp},{temp},NULL,1,1,NULL,8,8,NULL,{do},{do},{qual},1,1,NULL,1,1,NULL"


def test_lro_labels_are_runs_of_qualified_readings(tmp_path: Path) -> None:
    rows = [
        lro_row("2019-01-01 00:00", "10.0", "NULL"),
        lro_row("2019-01-01 00:15", "10.1", "1"),
        lro_row("2019-01-01 00:30", "10.2", "10"),
        lro_row("2019-01-01 00:45", "NULL", "NULL"),  # no reading: left out
        lro_row("2019-01-01 01:00", "10.3", "NULL", temp="-9999"),
        lro_row("2019-01-01 01:15", "0.0", "7"),
        lro_row("2019-01-01 01:30", "10.4", "NULL"),
        lro_row("2019-01-01 01:45", "109.8", "7"),
    ]
    path = tmp_path / "Site2019.csv"
    path.write_text("\n".join([LRO_HEADER, *rows]) + "\n")
    frame = lro_site_year(path, "Site")
    assert frame["sensor_id"].unique().to_list() == ["lro|Site|do"]
    assert frame["ts"][0] == datetime(2019, 1, 1, 7, 0)  # naive UTC-07:00 -> UTC
    assert frame.height == 7
    assert frame["temperature_c"].to_list() == [5.1, 5.1, 5.1, None, 5.1, 5.1, 5.1]
    labels = runs_to_labels(frame)
    assert labels.rows() == [
        ("lro|Site|do", datetime(2019, 1, 1, 7, 15), datetime(2019, 1, 1, 7, 30), "technician"),
        ("lro|Site|do", datetime(2019, 1, 1, 8, 15), datetime(2019, 1, 1, 8, 15), "technician"),
        ("lro|Site|do", datetime(2019, 1, 1, 8, 45), datetime(2019, 1, 1, 8, 45), "technician"),
    ]


def test_runs_never_join_two_sensors() -> None:
    frame = pl.DataFrame(
        {
            "sensor_id": ["a", "a", "b", "b"],
            "ts": [datetime(2020, 1, 1, h) for h in (0, 1, 0, 1)],
            "labelled": [False, True, True, False],
        }
    )
    assert runs_to_labels(frame)["sensor_id"].to_list() == ["a", "b"]


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sensor_id": ["x|do"] * 3,
            "ts": [datetime(2020, 1, 1, 0, m) for m in range(3)],
            "value": [8.0, 8.1, 8.2],
            "temperature_c": [10.0, None, 11.5],
        }
    )


def test_exports_drop_temperature_while_readings_have_no_such_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = engine.warehouse.READINGS_SCHEMA
    without = pa.schema([f for f in schema if f.name not in ("temperature_c", "salinity")])
    monkeypatch.setattr(engine.warehouse, "READINGS_SCHEMA", without)
    mapping = write_export(tmp_path, "x", _frame(), customer="c", timezone="UTC")
    assert pl.read_csv(tmp_path / "x.csv").columns == ["sensor_id", "ts", "value"]
    assert "temperature_column" not in mapping


def test_exports_pass_temperature_through_once_readings_carry_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = engine.warehouse.READINGS_SCHEMA
    if "temperature_c" not in schema.names:
        schema = schema.append(pa.field("temperature_c", pa.float64()))
    monkeypatch.setattr(engine.warehouse, "READINGS_SCHEMA", schema)
    mapping = write_export(tmp_path, "x", _frame(), customer="c", timezone="UTC")
    written = pl.read_csv(tmp_path / "x.csv")
    assert written.columns == ["sensor_id", "ts", "value", "temperature_c"]
    assert written["temperature_c"].to_list() == [10.0, None, 11.5]
    assert mapping["temperature_column"] == "temperature_c"


def test_sentinel_dropouts_are_found_through_the_ingests_quarantine(tmp_path: Path) -> None:
    # from 2020 (the ingest quarantines times before ingest.time_range, 1990, as implausible)
    start = np.datetime64("2020-01-01T00:00", "us").astype(np.int64)
    ts = (start + np.arange(0, 6 * DAY_US, 10 * MINUTE_US)).astype("datetime64[us]")
    phase = 2 * np.pi * np.arange(ts.size) / 144
    background = pl.DataFrame(
        {"ts": ts, "value": 8 + np.sin(phase), "temperature_c": np.full(ts.size, 12.0)}
    )

    def build(folder: Path):
        return build_semi(folder, "tiny", {"probe": background}, [4, 5], "UTC")

    prepared = prepare(Source("tiny", "tiny", "semi-synthetic", "10 min", build), tmp_path)
    labels = pl.read_csv(tmp_path / "tiny" / "data" / "labels.csv")
    lake = pl.concat(
        [pl.read_csv(p) for p in sorted((tmp_path / "tiny" / "data").glob("tiny_s*.csv"))]
    ).with_columns(pl.col("ts").str.to_datetime())
    sentinels = lake.filter(pl.col("value").is_in([-9999.0, 9999.0, -999.0, 999.0, -127.0]))
    assert sentinels.height > 0
    assert (
        prepared.quarantined.sort("sensor_id", "ts")
        .select("sensor_id", "ts")
        .equals(sentinels.sort("sensor_id", "ts").select("sensor_id", "ts"))
    )
    assert set(prepared.quarantined["reason"]) == {"sentinel value"}
    assert prepared.readings + prepared.quarantined.height == lake.height
    # no flag from any detector: every sentinel dropout is still found, nothing else
    nothing = pl.DataFrame(
        schema={"sensor_id": pl.String, "ts": pl.Datetime("us"), "is_anomaly": pl.Boolean}
    )
    result = evaluate_frame(with_quarantine(nothing, prepared), prepared.labels)
    windows = labels.with_columns(pl.col("start", "end").str.to_datetime())
    with_sentinel = windows.join(sentinels, on="sensor_id").filter(
        pl.col("ts").is_between(pl.col("start"), pl.col("end"))
    )
    n_sentinel_events = with_sentinel.select("sensor_id", "start").unique().height
    assert 0 < n_sentinel_events <= result["by_type"]["dropout"]["events"]
    assert result["by_type"]["dropout"]["found"] == n_sentinel_events
    assert sum(b["found"] for b in result["by_type"].values()) == n_sentinel_events
    assert result["flagged"] == sentinels.height and result["precision"] == 1.0
    assert Config.load(prepared.config_path).sources["tiny_s4"].customer == "tiny-s4"


@pytest.mark.skipif(not (DATA / "lro").is_dir(), reason="../shared/data/lro is not here")
def test_the_calibration_file_does_not_overlap_the_lro_files() -> None:
    found = calibration_overlap(DATA / "lro")
    assert found["calibration_intervals"] == 13
    assert found["overlapping"] == 0
    assert found["calibration_span"][1] < found["file_spans"][0][0]


def test_evaluate_counts_level_shift_like_any_other_non_drift_type() -> None:
    ts = [datetime(2024, 1, 1, 0, m) for m in range(30)]
    flags = pl.DataFrame(
        {"sensor_id": ["s"] * 30, "ts": ts, "is_anomaly": [10 <= m <= 12 for m in range(30)]}
    )
    labels = pl.DataFrame(
        {
            "sensor_id": ["s", "s"],
            "start_ts": [ts[11], ts[25]],
            "end_ts": [ts[20], ts[28]],
            "type": ["level_shift", "level_shift"],
        }
    ).with_row_index("event_id")
    result = evaluate_frame(flags, labels)
    assert result["by_type"] == {"level_shift": {"events": 2, "found": 1, "recall": 0.5}}
    assert result["precision"] == 1.0  # minute 10 is within the 2-minute lead
