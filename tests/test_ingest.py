"""Ingest: accounting, quarantine reasons and lines, dedupe rule, time formats, DST, refusals,
crash safety, the lock, the CLI, real messy data and the demo exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import oxy
from engine import OxyError
from engine.config import Config
from engine.ingest import IngestResult, classify_duplicates, ingest_files
from engine.warehouse import READINGS_SCHEMA as READINGS
from engine.warehouse import Warehouse

ROOT = Path(__file__).resolve().parent.parent
AQUAPONICS = Path("/work/shared/data/aquaponics_dirty")

BASE_SOURCE = {
    "customer": "fjordras",
    "timezone": "Europe/Oslo",
    "unit": "mg/L",
    "sensor_columns": ["Tag"],
    "time_column": "Timestamp",
    "value_column": "Value",
}


def toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


# Most tests feed small files with many bad rows on purpose: the bad-fraction guard is off
# for them (its own tests turn it on).
NO_GUARD = {"max_bad_fraction": 1.0}


def make_config(
    tmp_path: Path, sources: dict[str, dict[str, Any]], ingest: dict[str, Any] | None = None
) -> Path:
    lines = ["[ingest]"] + [
        f"{k} = {toml_value(v)}" for k, v in (NO_GUARD if ingest is None else ingest).items()
    ]
    for name, keys in sources.items():
        lines.append(f"[sources.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path = tmp_path / "sources.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_warehouse(tmp_path: Path, **sources: dict[str, Any]) -> Warehouse:
    config = Config.load(make_config(tmp_path, sources or {"fjordras": BASE_SOURCE}))
    return Warehouse(tmp_path / "warehouse", config)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def query(wh: Warehouse, sql: str) -> list[tuple[Any, ...]]:
    with wh.reader() as con:
        return con.execute(sql).fetchall()


def counts(r: IngestResult) -> tuple[int, int, int, int]:
    return r.rows_read, r.accepted, r.duplicates, r.quarantined


BAD_ROWS = """
Timestamp,Tag,Value
2024-01-01T00:00:00Z,cage1,7.5
2024-01-01T00:01:00Z,cage1,-9999
not a time,cage1,7.1
,cage1,7.2
2024-01-01T00:02:00Z,,7.3
2024-01-01T00:03:00Z,cage1,abc
2024-01-01T00:04:00Z,cage1,
2024-01-01T00:05:00Z,cage1,NaN
2024-01-01T00:06:00Z,cage1,inf
2024-01-01T00:07:00Z,cage1,-0.5
2024-01-01T00:08:00Z,cage1,51
2024-01-01T00:09:00Z,cage1,7.9,extra
2024-01-01T00:10:00Z,cage1
2024-01-01T00:00:00Z,cage1,7.5
2024-01-01T00:00:00Z,cage1,8.5
2024-01-01T00:11:00+01:00,cage2,6.5
"""


def test_every_kind_of_bad_row_is_quarantined_with_reason_line_and_raw_text(
    tmp_path: Path,
) -> None:
    wh = make_warehouse(tmp_path)
    path = write(tmp_path / "fjordras.csv", BAD_ROWS)

    (result,) = ingest_files(wh, [path])

    assert counts(result) == (16, 2, 1, 13)
    assert result.summary() == "fjordras.csv: read 16 = 2 accepted + 1 duplicate + 13 quarantined"
    assert query(wh, "select sensor_id, ts, value from readings order by ts") == [
        ("cage2", datetime(2023, 12, 31, 23, 11), 6.5),
        ("cage1", datetime(2024, 1, 1, 0, 0), 7.5),
    ]
    rows = query(
        wh,
        "select line, reason, detail, sensor_id, raw_time, raw_value, raw_line, source_file "
        "from quarantine order by line",
    )
    assert [(r[0], r[1]) for r in rows] == [
        (3, "sentinel value"),
        (4, "unparseable timestamp"),
        (5, "missing timestamp"),
        (6, "empty sensor identity"),
        (7, "non-numeric value"),
        (8, "missing value"),
        (9, "non-finite value"),
        (10, "non-finite value"),
        (11, "negative value"),
        (12, "above plausible maximum"),
        (13, "ragged line"),
        (14, "ragged line"),
        (16, "conflicting duplicate"),
    ]
    by_line = {r[0]: r for r in rows}
    assert by_line[3][5] == "-9999" and by_line[4][4] == "not a time"
    assert by_line[7][5] == "abc" and by_line[12][2] == "maximum 50.0 mg/L"
    assert by_line[13][6] == "2024-01-01T00:09:00Z,cage1,7.9,extra"
    assert by_line[16][2] == "kept value 7.5 (first in file, line 2)"
    assert by_line[16][5] == "8.5"
    assert {r[7] for r in rows} == {"fjordras.csv"}
    log = query(wh, "select rows_read, accepted, duplicates, quarantined, status from ingest_log")
    assert log == [(16, 2, 1, 13, "ok")]


def test_same_file_twice_adds_nothing_and_overlap_keeps_first_ingested(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    first = write(
        tmp_path / "a.csv",
        """
        Timestamp,Tag,Value
        2024-01-01T00:00:00Z,cage1,7.0
        2024-01-01T00:01:00Z,cage1,7.1
        2024-01-01T00:02:00Z,cage1,oops
        """,
    )
    (r1,) = ingest_files(wh, [first], source="fjordras")
    (r2,) = ingest_files(wh, [first], source="fjordras")
    assert counts(r1) == (3, 2, 0, 1)
    assert r2.status == "skipped" and counts(r2) == (3, 0, 2, 1)
    assert r2.summary().startswith(
        f"a.csv: already ingested (same sha256 as ingest {r1.ingest_id})"
    )

    overlap = write(
        tmp_path / "b.csv",
        """
        Timestamp,Tag,Value
        2024-01-01T00:01:00Z,cage1,7.1
        2024-01-01T00:00:00Z,cage1,9.9
        2024-01-01T00:03:00Z,cage1,7.3
        """,
    )
    (r3,) = ingest_files(wh, [overlap], source="fjordras")
    assert counts(r3) == (3, 1, 1, 1)
    assert query(wh, "select ts, value from readings order by ts") == [
        (datetime(2024, 1, 1, 0, 0), 7.0),
        (datetime(2024, 1, 1, 0, 1), 7.1),
        (datetime(2024, 1, 1, 0, 3), 7.3),
    ]
    assert query(
        wh, "select line, reason, detail, raw_value from quarantine where source_file = 'b.csv'"
    ) == [(3, "conflicting duplicate", "kept value 7.0 (already in the warehouse)", "9.9")]
    assert query(wh, "select count(*), count(distinct status) from ingest_log") == [(3, 2)]
    assert query(wh, "select count(*) from (select distinct sensor_id, ts from readings)") == [(3,)]


def test_classify_duplicates_against_lake_and_within_file() -> None:
    t0, t1 = datetime(2024, 1, 1, 0, 0), datetime(2024, 1, 1, 0, 1)
    candidates = pl.DataFrame(
        {
            "sensor_id": ["b", "a", "a", "a", "b", "a"],
            "ts": [t0, t1, t0, t1, t0, t0],
            "value": [5.0, 2.0, 1.0, 3.0, 5.0, 1.0],
            "ordinal": [0, 1, 2, 3, 4, 5],
        }
    )
    existing = pl.DataFrame({"sensor_id": ["a"], "ts": [t0], "value": [1.5]})
    out = classify_duplicates(candidates, existing)
    assert out.select("sensor_id", "ordinal", "outcome", "kept_value").rows() == [
        ("a", 2, "conflict_existing", 1.5),
        ("a", 5, "conflict_existing", 1.5),
        ("a", 1, "accepted", 2.0),
        ("a", 3, "conflict_in_file", 2.0),
        ("b", 0, "accepted", 5.0),
        ("b", 4, "duplicate", 5.0),
    ]


def classify_reference(
    candidates: list[tuple[Any, int, float]], existing: dict[tuple[Any, int], float]
) -> dict[int, tuple[str, float]]:
    """Slow, obviously correct first-ingested-wins: ordinal -> (outcome, kept value)."""
    kept: dict[tuple[Any, int], float] = {}
    out = {}
    for ordinal, (sensor, minute, value) in enumerate(candidates):
        key = (sensor, minute)
        if key in existing:
            outcome = "duplicate_existing" if value == existing[key] else "conflict_existing"
            out[ordinal] = (outcome, existing[key])
        elif key in kept:
            outcome = "duplicate" if value == kept[key] else "conflict_in_file"
            out[ordinal] = (outcome, kept[key])
        else:
            kept[key] = value
            out[ordinal] = ("accepted", value)
    return out


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 6), st.sampled_from([1.0, 2.0])),
        max_size=30,
    ),
    lake=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.sampled_from([1.0, 2.0]))),
    as_text=st.booleans(),
    rising=st.booleans(),
)
def test_classify_duplicates_matches_a_slow_reference(
    rows: list[tuple[int, int, float]],
    lake: list[tuple[int, int, float]],
    as_text: bool,
    rising: bool,
) -> None:
    """Both paths (times rising per sensor: sort by sensor only; else the full sort), integer
    ranks and string ids, with and without lake rows, give the reference's outcomes."""
    if rising:  # strictly rising minutes per sensor, sensors interleaved as in an export
        rows = sorted({(m, s): v for s, m, v in rows}.items())
        rows = [(s, m, v) for (m, s), v in rows]
    existing = {(s, m): v for s, m, v in lake}
    sid = (lambda s: f"s{s}") if as_text else (lambda s: s)
    t0 = datetime(2024, 1, 1)
    candidates = pl.DataFrame(
        {
            "sensor_id": [sid(s) for s, _, _ in rows],
            "ts": [t0.replace(minute=m) for _, m, _ in rows],
            "value": [v for _, _, v in rows],
            "ordinal": list(range(len(rows))),
        },
        schema={
            "sensor_id": pl.String if as_text else pl.Int64,
            "ts": pl.Datetime("us"),
            "value": pl.Float64,
            "ordinal": pl.Int64,
        },
    )
    in_lake = pl.DataFrame(
        {
            "sensor_id": [sid(s) for s, _ in existing],
            "ts": [t0.replace(minute=m) for _, m in existing],
            "value": list(existing.values()),
        },
        schema={
            "sensor_id": pl.String if as_text else pl.Int64,
            "ts": pl.Datetime("us"),
            "value": pl.Float64,
        },
    )
    out = classify_duplicates(candidates, in_lake)
    expected = classify_reference(rows, existing)
    got = {
        o: (outcome, kept)
        for o, outcome, kept in out.select("ordinal", "outcome", "kept_value").rows()
    }
    assert got == expected
    keys = out.select("sensor_id", "ts").rows()
    assert keys == sorted(keys)  # sorted by key, file order within a key


def test_lake_overlap_sql_fixed_answer(tmp_path: Path) -> None:
    """sql/staging/readings_lake_overlap.sql: the given sensors' rows inside [lo, hi] only."""
    import duckdb

    from engine.warehouse import sql_text

    t = [datetime(2024, 1, 1, 0, m) for m in range(4)]
    lake = tmp_path / "lake.parquet"
    pq.write_table(
        pa.table(
            {
                "sensor_id": ["a", "a", "a", "b", "b", "c"],
                "ts": [t[0], t[1], t[3], t[1], t[2], t[2]],
                "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            }
        ),
        lake,
    )
    con = duckdb.connect()
    rows = con.execute(
        sql_text("staging/readings_lake_overlap") + " order by sensor_id, ts",
        {"lake": [str(lake)], "lo": t[1], "hi": t[2], "sensors": ["a", "b"]},
    ).fetchall()
    assert rows == [("a", t[1], 2.0), ("b", t[1], 4.0), ("b", t[2], 5.0)]
    none = con.execute(
        sql_text("staging/readings_lake_overlap"),
        {"lake": [str(lake)], "lo": t[0], "hi": t[3], "sensors": ["z"]},
    ).fetchall()
    assert none == []


def test_lake_files_are_sorted_plain_parquet(tmp_path: Path) -> None:
    """Bucket files: readings schema as plain columns (no dictionary types leak to readers),
    sorted by (sensor_id, ts) and saying so, one file per bucket and ingest."""
    wh = make_warehouse(tmp_path)
    lines = ["Timestamp,Tag,Value"]
    for minute in range(30):
        for tag in ("cage2", "cage1", "cage3", "cage10"):
            lines.append(f"2024-01-01T00:{minute:02d}:00Z,{tag},{7 + minute / 100}")
    path = tmp_path / "fjordras.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (120, 120, 0, 0)
    files = sorted((wh.root / "lake" / "readings").rglob("*.parquet"))
    assert files and all(f.stem == result.ingest_id for f in files)
    total = 0
    for f in files:
        meta = pq.read_metadata(f)
        assert pq.read_schema(f) == pa.schema(
            [(name, wh_type) for name, wh_type in zip(READINGS.names, READINGS.types, strict=True)]
        )
        sorting = meta.row_group(0).sorting_columns
        assert [c.column_index for c in sorting] == [0, 1]
        frame = pl.read_parquet(f)
        assert frame.schema["sensor_id"] == pl.String
        assert frame.select("sensor_id", "ts").rows() == sorted(
            frame.select("sensor_id", "ts").rows()
        )
        total += frame.height
    assert total == 120
    assert query(wh, "select count(*), count(distinct sensor_id), min(value) from readings") == [
        (120, 4, 7.0)
    ]


@pytest.mark.parametrize(
    ("time_format", "naive_zone", "raw", "expected"),
    [
        ("iso", "UTC", "2024-06-01T12:00:00Z", datetime(2024, 6, 1, 12)),
        ("iso", "UTC", "2024-06-01 14:00:00+02:00", datetime(2024, 6, 1, 12)),
        ("iso", "UTC", "2024-06-01T12:00:00.250", datetime(2024, 6, 1, 12, 0, 0, 250000)),
        ("iso", "Europe/Oslo", "2024-06-01T14:00:00", datetime(2024, 6, 1, 12)),
        ("iso", "Europe/Oslo", "2024-06-01T14:00:00Z", datetime(2024, 6, 1, 14)),
        ("epoch_s", "Europe/Oslo", "1717243200", datetime(2024, 6, 1, 12)),
        ("epoch_ms", "UTC", "1717243200500", datetime(2024, 6, 1, 12, 0, 0, 500000)),
        ("%d/%m/%Y %H:%M", "Europe/Oslo", "01/06/2024 14:00", datetime(2024, 6, 1, 12)),
        ("%d.%m.%Y %H:%M %z", "UTC", "01.06.2024 14:00 +0200", datetime(2024, 6, 1, 12)),
    ],
)
def test_time_formats(
    tmp_path: Path, time_format: str, naive_zone: str, raw: str, expected: datetime
) -> None:
    source = {**BASE_SOURCE, "time_format": time_format, "naive_time_zone": naive_zone}
    wh = make_warehouse(tmp_path, fjordras=source)
    path = write(tmp_path / "fjordras.csv", f'Timestamp,Tag,Value\n"{raw}",cage1,7.0\n')
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (1, 1, 0, 0)
    assert query(wh, "select ts from readings") == [(expected,)]


def test_oslo_autumn_fold_and_spring_gap(tmp_path: Path) -> None:
    source = {**BASE_SOURCE, "naive_time_zone": "Europe/Oslo"}
    wh = make_warehouse(tmp_path, fjordras=source)
    path = write(
        tmp_path / "fjordras.csv",
        """
        Timestamp,Tag,Value
        2024-10-27T01:59:00,a,1
        2024-10-27T02:00:00,a,2
        2024-10-27T02:30:00,a,3
        2024-10-27T02:00:00,a,4
        2024-10-27T02:30:00,a,5
        2024-10-27T03:00:00,a,6
        2024-10-27T02:30:00,b,7
        2024-10-27T02:30:00,a,8
        2024-03-31T01:59:00,a,9
        2024-03-31T02:30:00,a,10
        2024-03-31T03:00:00,a,11
        """,
    )
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (11, 8, 0, 3)
    assert query(wh, "select sensor_id, ts, value from readings order by ts") == [
        ("a", datetime(2024, 3, 31, 0, 59), 9.0),
        ("a", datetime(2024, 3, 31, 1, 0), 11.0),
        ("a", datetime(2024, 10, 26, 23, 59), 1.0),
        ("a", datetime(2024, 10, 27, 0, 0), 2.0),  # first 02:00 = summer time (UTC+2)
        ("a", datetime(2024, 10, 27, 0, 30), 3.0),
        ("a", datetime(2024, 10, 27, 1, 0), 4.0),  # second 02:00 = winter time (UTC+1)
        ("a", datetime(2024, 10, 27, 1, 30), 5.0),
        ("a", datetime(2024, 10, 27, 2, 0), 6.0),
    ]
    assert query(wh, "select line, reason, detail, raw_time from quarantine order by line") == [
        (
            8,
            "ambiguous local time",
            "in the autumn DST fold of Europe/Oslo: occurrence 1 of 1 for this sensor (rule infer)",
            "2024-10-27T02:30:00",
        ),
        (
            9,
            "ambiguous local time",
            "in the autumn DST fold of Europe/Oslo: occurrence 3 of 3 for this sensor (rule infer)",
            "2024-10-27T02:30:00",
        ),
        (
            11,
            "nonexistent local time",
            "in the spring DST gap of Europe/Oslo",
            "2024-03-31T02:30:00",
        ),
    ]


@pytest.mark.parametrize(
    ("rule", "kept"),
    [
        ("earliest", [datetime(2024, 10, 27, 0, 30)]),
        ("latest", [datetime(2024, 10, 27, 1, 30)]),
        ("quarantine", []),
    ],
)
def test_other_fold_rules(tmp_path: Path, rule: str, kept: list[datetime]) -> None:
    source = {**BASE_SOURCE, "naive_time_zone": "Europe/Oslo"}
    wh = make_warehouse(tmp_path, fjordras=source)
    wh = Warehouse(wh.root, wh.config.with_overrides({"ingest": {"ambiguous_local_time": rule}}))
    path = write(tmp_path / "fjordras.csv", "Timestamp,Tag,Value\n2024-10-27T02:30:00,a,1\n")
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (1, len(kept), 0, 1 - len(kept))
    assert query(wh, "select ts from readings") == [(t,) for t in kept]


def ingest_case(
    case: Path, text: str, overrides: dict[str, int], quarantine: str, **sources: dict[str, Any]
) -> tuple:
    """Ingest ``text`` as fjordras.csv into a fresh warehouse under ``case`` with the
    ``[ingest]`` overrides; (counts, readings, quarantine rows from ``quarantine``)."""
    case.mkdir()
    wh = make_warehouse(case, **sources)
    if overrides:
        wh = Warehouse(wh.root, wh.config.with_overrides({"ingest": overrides}))
    (result,) = ingest_files(wh, [write(case / "fjordras.csv", text)])
    return (
        counts(result),
        query(wh, "select sensor_id, ts, value from readings order by all"),
        query(wh, quarantine),
    )


def test_spilling_to_staging_gives_the_same_result(tmp_path: Path) -> None:
    """With tiny batches and spill threshold, rows go through .staging/ parts: same lake."""
    rows = ["Timestamp,Tag,Value"]
    for minute in range(30):
        for tag in ("a", "b", "c"):
            rows.append(f"2024-01-01T00:{minute:02d}:00Z,{tag},{minute % 7 + 1}")
    rows.append("2024-01-01T00:05:00Z,b,9.5")  # conflicting duplicate, kept value 6.0
    text = "\n".join(rows) + "\n"
    results = [
        ingest_case(tmp_path / name, text, overrides, "select line, reason, detail from quarantine")
        for name, overrides in (("held", {}), ("spilled", {"spill_rows": 5, "batch_rows": 4}))
    ]
    assert results[0] == results[1]
    assert results[0][0] == (91, 90, 0, 1)
    assert results[0][2] == [
        (92, "conflicting duplicate", "kept value 6.0 (first in file, line 18)")
    ]


def test_small_batches_give_the_same_fold_gap_and_quarantine(tmp_path: Path) -> None:
    """Naive Oslo times through the autumn fold and the spring gap, a bad row in one batch
    only: batches of 4 rows (some with, some without bad rows or wall times) = one batch."""
    rows = ["Timestamp,Tag,Value"]
    walls = ["2024-10-27T01:50:00"] + [f"2024-10-27T02:{m:02d}:00" for m in range(0, 60, 10)]
    walls += [f"2024-10-27T02:{m:02d}:00" for m in range(0, 60, 10)] + ["2024-10-27T03:00:00"]
    for wall in walls:
        for tag in ("a", "b"):
            rows.append(f"{wall},{tag},7.5")
    rows.insert(3, "2024-10-27T01:55:00,a,abc")
    rows.append("2024-03-31T02:30:00,a,7.0")  # in the spring gap
    rows.append("2024-10-27T02:00:00+02:00,b,7.5")  # explicit offset: a duplicate
    text = "\n".join(rows) + "\n"
    source = {**BASE_SOURCE, "naive_time_zone": "Europe/Oslo"}
    quarantine = "select line, reason, sensor_id, raw_time from quarantine order by all"
    results = [
        ingest_case(tmp_path / name, text, overrides, quarantine, fjordras=source)
        for name, overrides in (("one", {}), ("small", {"spill_rows": 6, "batch_rows": 4}))
    ]
    assert results[0] == results[1]
    assert results[0][0] == (31, 28, 1, 2)
    assert [r[1] for r in results[0][2]] == ["non-numeric value", "nonexistent local time"]


def test_multi_column_identity_and_separator_levels(tmp_path: Path) -> None:
    wh = make_warehouse(
        tmp_path,
        pond={
            **BASE_SOURCE,
            "customer": "mekong",
            "unit": "%sat",
            "sensor_columns": ["Unit", "Section", "Equipment"],
            "time_column": "t",
            "value_column": "sat",
            "time_format": "epoch_s",
        },
        ras={**BASE_SOURCE, "sensor_columns": ["point"], "sensor_separator": "/"},
    )
    pond = write(
        tmp_path / "pond.csv",
        """
        t,Unit,Section,Equipment,sat
        1717243200,Farm1,Pond01,DO,95.5
        1717243200,Farm1, ,DO,96.0
        1717243260, Farm1 ,Pond01,DO,180
        """,
    )
    (result,) = ingest_files(wh, [pond])
    assert counts(result) == (3, 2, 0, 1)
    ras = tmp_path / "ras.csv"
    ras.write_text("point,Timestamp,Value\nras1/tank-02/o2,2024-06-01T00:00:00Z,9\n")
    ingest_files(wh, [ras])
    assert query(
        wh, "select sensor_id, customer, unit, levels, timezone from sensors order by 1"
    ) == [
        ("Farm1|Pond01|DO", "mekong", "%sat", ["Farm1", "Pond01", "DO"], "Europe/Oslo"),
        ("ras1/tank-02/o2", "fjordras", "mg/L", ["ras1", "tank-02", "o2"], "Europe/Oslo"),
    ]
    assert query(wh, "select line, reason, sensor_id from quarantine where source = 'pond'") == [
        (3, "empty sensor identity", "Farm1||DO")
    ]


def test_parquet_input_with_typed_columns_and_row_index(tmp_path: Path) -> None:
    wh = make_warehouse(
        tmp_path,
        ras={**BASE_SOURCE, "time_format": "epoch_ms", "sensor_columns": ["Tag", "Probe"]},
    )
    table = pa.table(
        {
            "Timestamp": pa.array([1717243200000, 1717243260000, None, 1717243320000]),
            "Tag": ["t1", "t1", "t1", "t1"],
            "Probe": pa.array([1, 1, 1, 2]),
            "Value": pa.array([8.0, float("nan"), 8.2, 8.3]),
        }
    )
    pq.write_table(table, tmp_path / "ras.parquet")
    (result,) = ingest_files(wh, [tmp_path / "ras.parquet"])
    assert counts(result) == (4, 2, 0, 2)
    assert query(wh, "select sensor_id, ts, value from readings order by ts") == [
        ("t1|1", datetime(2024, 6, 1, 12, 0), 8.0),
        ("t1|2", datetime(2024, 6, 1, 12, 2), 8.3),
    ]
    assert query(wh, "select line, reason from quarantine order by line") == [
        (1, "non-finite value"),
        (2, "missing timestamp"),
    ]


def test_parquet_timestamp_columns_naive_local_and_zoned(tmp_path: Path) -> None:
    wh = make_warehouse(
        tmp_path,
        local={**BASE_SOURCE, "naive_time_zone": "Europe/Oslo"},
        zoned={**BASE_SOURCE, "naive_time_zone": "Europe/Oslo"},
    )
    naive = pa.array([datetime(2024, 6, 1, 14), datetime(2024, 3, 31, 2, 30)], pa.timestamp("us"))
    pq.write_table(
        pa.table({"Timestamp": naive, "Tag": ["t", "t"], "Value": [8.0, 8.1]}),
        tmp_path / "local.parquet",
    )
    zoned = pa.array([datetime(2024, 6, 1, 14)], pa.timestamp("us", tz="UTC"))
    pq.write_table(
        pa.table({"Timestamp": zoned, "Tag": ["z"], "Value": [9.0]}), tmp_path / "zoned.parquet"
    )
    local, utc = ingest_files(wh, [tmp_path / "local.parquet", tmp_path / "zoned.parquet"])
    assert counts(local) == (2, 1, 0, 1) and counts(utc) == (1, 1, 0, 0)
    assert query(wh, "select sensor_id, ts from readings order by 1") == [
        ("t", datetime(2024, 6, 1, 12)),
        ("z", datetime(2024, 6, 1, 14)),
    ]
    assert query(wh, "select line, reason from quarantine") == [(1, "nonexistent local time")]


def test_line_numbers_survive_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    path = write(
        tmp_path / "fjordras.csv",
        'Timestamp,Tag,Value\n2024-01-01T00:00:00Z,"cage\n1",7\n\n'
        "2024-01-01T00:01:00Z,cage1,x\n2024-01-01T00:02:00Z,cage1,1,2\n"
        "2024-01-01T00:03:00Z,cage1,-1\n\n",
    )
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (4, 0, 0, 4)
    assert query(wh, "select line, reason from quarantine order by line") == [
        (2, "invalid sensor identity"),  # an id with a line break in it
        (5, "non-numeric value"),
        (6, "ragged line"),
        (7, "negative value"),
    ]


def test_semicolon_delimiter_and_decimal_comma(tmp_path: Path) -> None:
    source = {**BASE_SOURCE, "delimiter": ";", "decimal": ","}
    wh = make_warehouse(tmp_path, fjordras=source)
    path = write(tmp_path / "fjordras.csv", "Timestamp;Tag;Value\n2024-01-01T00:00:00Z;c;7,25\n")
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (1, 1, 0, 0)
    assert query(wh, "select value from readings") == [(7.25,)]


def _lake_state(wh: Warehouse) -> tuple[Any, ...]:
    if not wh.exists():
        return (None,)
    files = sorted(p.relative_to(wh.root).as_posix() for p in wh.lake_dir.rglob("*.parquet"))
    tables = query(
        wh,
        "select (select count(*) from lake_files), (select count(*) from ingest_log), "
        "(select count(*) from quarantine), (select count(*) from sensors)",
    )
    return files, tables


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("fjordras.csv", b"", "empty file"),
        ("fjordras.csv", b"Time,Tag,Value\n2024-01-01,c,1\n", "column(s) ['Timestamp'] of source"),
        (
            "fjordras.csv",
            b"Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c\xe6ge,1\n",
            "not valid utf-8",
        ),
        ("fjordras.parquet", b"PAR1 this is not parquet", "cannot read as parquet"),
        ("fjordras.xlsx", b"whatever", "unknown file type '.xlsx'"),
    ],
)
def test_malformed_files_are_refused_with_one_line_and_change_nothing(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    wh = make_warehouse(tmp_path)
    good = write(tmp_path / "good.csv", "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,1\n")
    ingest_files(wh, [good], source="fjordras")
    before = _lake_state(wh)
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(OxyError) as err:
        ingest_files(wh, [bad])
    assert message in str(err.value) and name in str(err.value)
    assert "\n" not in str(err.value)
    assert _lake_state(wh) == before
    assert not any(wh.staging_dir.glob("*.parquet"))


def test_truncated_parquet_is_refused(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    frame = pl.DataFrame(
        {"Timestamp": ["2024-01-01T00:00:00Z"] * 1000, "Tag": ["c"] * 1000, "Value": [1.0] * 1000}
    )
    full = tmp_path / "full.parquet"
    frame.write_parquet(full)
    cut = tmp_path / "fjordras.parquet"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(OxyError, match=r"fjordras\.parquet: cannot read as parquet"):
        ingest_files(wh, [cut])
    assert query(wh, "select count(*) from ingest_log") == [(0,)]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    wh.config["warehouse"]["lock_timeout_s"] = 0  # fail at once instead of waiting
    path = write(tmp_path / "fjordras.csv", "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,1\n")
    with wh.writer(), pytest.raises(OxyError, match="locked by another oxy writer"):
        ingest_files(wh, [path])
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (1, 1, 0, 0)


KILL_MID_INGEST = """
import os, signal, sys
from engine import ingest
from engine.config import Config
from engine.warehouse import Warehouse

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[4] == "publish":   # files renamed into the lake, catalog not yet committed
    original = Warehouse.publish
    def publish(self, con, staged):
        original(self, con, staged)
        die()
    Warehouse.publish = publish
else:                          # reading: rows spilled to .staging/, nothing published
    original_take = ingest._Scan._take
    def take(self, frame):
        original_take(self, frame)
        if self.parts:
            die()
    ingest._Scan._take = take
config = Config.load(sys.argv[2]).with_overrides(
    {"ingest": {"batch_rows": 1000, "spill_rows": 2000}}
)
ingest.ingest_files(Warehouse(sys.argv[1], config), [sys.argv[3]])
"""


@pytest.mark.parametrize("moment", ["scan", "publish"])
def test_kill_9_mid_ingest_leaves_nothing_visible_and_a_rerun_completes(
    tmp_path: Path, moment: str
) -> None:
    config = make_config(tmp_path, {"fjordras": BASE_SOURCE})
    wh = Warehouse(tmp_path / "warehouse", Config.load(config))
    sensors = [f"s{i}" for i in range(40)]
    frame = pl.DataFrame({"Tag": sensors}).join(pl.DataFrame({"minute": range(500)}), how="cross")
    frame = frame.select(
        Timestamp=(pl.datetime(2024, 1, 1) + pl.duration(minutes="minute")).dt.strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        Tag="Tag",
        Value=pl.lit(7.0),
    )
    path = tmp_path / "fjordras.csv"
    frame.write_csv(path)
    script = tmp_path / "die.py"
    script.write_text(KILL_MID_INGEST)
    proc = subprocess.run(
        [sys.executable, str(script), str(wh.root), str(config), str(path), moment],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if moment == "publish":  # renamed but uncommitted files exist ...
        assert any(wh.lake_dir.rglob("*.parquet"))
    else:  # spilled parts exist
        assert any(wh.staging_dir.rglob("*.parquet"))
    assert query(wh, "select count(*) from readings") == [(0,)]  # ... and are invisible
    assert query(wh, "select count(*) from ingest_log") == [(0,)]

    (result,) = ingest_files(wh, [path])
    assert counts(result) == (20_000, 20_000, 0, 0)
    assert query(wh, "select count(*), count(distinct sensor_id) from readings") == [(20_000, 40)]
    listed = {r[0] for r in query(wh, "select path from lake_files")}
    on_disk = {p.relative_to(wh.root).as_posix() for p in wh.lake_dir.rglob("*.parquet")}
    assert on_disk == listed


def test_cli_prints_exact_lines_and_json(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"fjordras": BASE_SOURCE})
    path = write(tmp_path / "fjordras.csv", BAD_ROWS)
    runner = CliRunner()
    base = ["--warehouse", str(tmp_path / "wh"), "--config", str(config)]
    result = runner.invoke(oxy, [*base, "ingest", str(path)])
    assert result.exit_code == 0, result.output
    first, totals = result.output.splitlines()
    assert first == "fjordras.csv: read 16 = 2 accepted + 1 duplicate + 13 quarantined"
    assert totals.startswith("warehouse: 2 readings of ")  # what this run did, then the totals

    result = runner.invoke(oxy, [*base, "--json", "ingest", str(path)])
    assert result.exit_code == 0, result.output
    (payload,) = json.loads(result.output)
    assert payload["status"] == "skipped"
    assert (payload["rows_read"], payload["accepted"], payload["quarantined"]) == (16, 0, 13)

    result = runner.invoke(oxy, [*base, "ingest", str(tmp_path / "other.csv")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "'other' is not a declared source" in result.output
    assert result.output.count("\n") == 1

    missing = runner.invoke(oxy, [*base, "ingest", str(path), "--source", "nope"])
    assert missing.exit_code == 1
    assert "unknown source 'nope'" in missing.output


GOOD = "good"
BAD_VALUES = ["x", "", "-9999", "nan", "-3", "600"]


@st.composite
def export_rows(draw: st.DrawFn) -> list[tuple[str, int, str]]:
    """Rows (kind, minute, value) mixing good rows, bad rows and (conflicting) repeats."""
    rows: list[tuple[str, int, str]] = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["good", "good", "bad", "repeat", "ragged"]))
        if kind == "repeat" and rows:
            previous = draw(st.sampled_from(rows))
            same = draw(st.booleans())
            rows.append(("good", previous[1], previous[2] if same else "9.5"))
        elif kind == "bad":
            rows.append(("bad", draw(st.integers(0, 30)), draw(st.sampled_from(BAD_VALUES))))
        elif kind == "ragged":
            rows.append(("ragged", draw(st.integers(0, 30)), "1"))
        else:
            rows.append(("good", draw(st.integers(0, 30)), str(draw(st.integers(1, 20)))))
    return rows


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=export_rows(), second=export_rows())
def test_accounting_property(tmp_path: Path, first: list[Any], second: list[Any]) -> None:
    """read == accepted + duplicates + quarantined; lake rows == accepted; keys unique."""
    case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    case.mkdir()
    wh = make_warehouse(case)
    total = 0
    for n, rows in enumerate([first, second, first]):
        lines = ["Timestamp,Tag,Value"]
        for kind, minute, value in rows:
            ts = f"2024-01-01T00:{minute:02d}:00Z"
            lines.append(f"{ts},s1,{value},x" if kind == "ragged" else f"{ts},s1,{value}")
        path = case / f"export{n}.csv"
        path.write_text("\n".join(lines) + "\n")
        (result,) = ingest_files(wh, [path], source="fjordras")
        assert result.rows_read == len(rows)
        assert result.rows_read == result.accepted + result.duplicates + result.quarantined
        total += result.accepted
        if n == 2:  # identical bytes to the first file: skipped, adds nothing
            assert result.status == "skipped" and result.accepted == 0
    assert query(wh, "select count(*), count(distinct ts) from readings") == [(total, total)]
    logged = query(
        wh,
        "select coalesce(sum(accepted), 0), coalesce(sum(quarantined), 0) "
        "from ingest_log where status = 'ok'",
    )
    assert logged == [(total, query(wh, "select count(*) from quarantine")[0][0])]


@pytest.mark.skipif(not AQUAPONICS.is_dir(), reason="shared aquaponics data not present")
def test_real_dirty_aquaponics_exports_lose_nothing(tmp_path: Path) -> None:
    source = {
        "customer": "udanor",
        "timezone": "Africa/Lagos",
        "unit": "mg/L",
        "sensor_columns": ["Population"],  # the files carry no pond id
        "time_column": "created_at",
        "value_column": "Dissolved Oxygen(g/ml)",
        "time_format": "iso",
        "naive_time_zone": "Africa/Lagos",
    }
    wh = make_warehouse(tmp_path, aquaponics=source)
    files = sorted(AQUAPONICS.glob("IoTPond*.csv"))
    results = ingest_files(wh, files, source="aquaponics")
    expected_rows = {"IoTPond10.csv": 620, "IoTPond11.csv": 3165, "IoTPond12.csv": 3590}
    for r in results:
        assert r.rows_read == expected_rows[Path(r.path).name]
        assert r.rows_read == r.accepted + r.duplicates + r.quarantined
    total = sum(r.accepted for r in results)
    assert query(wh, "select count(*) from readings") == [(total,)]
    assert query(wh, "select count(*) from quarantine") == [(sum(r.quarantined for r in results),)]
    reasons = {r[0] for r in query(wh, "select distinct reason from quarantine")}
    assert "unparseable timestamp" in reasons  # the date-only D/M/YYYY rows


def test_demo_exports_ingest_end_to_end(tmp_path: Path) -> None:
    from engine.demo import generate_demo

    out = tmp_path / "demo"
    generate_demo(out, sensors_per_site=1, days=3, clean_days=1)
    wh = Warehouse(tmp_path / "warehouse", Config.load(out / "sources.toml"))
    results = ingest_files(wh, [out])
    assert sorted(Path(r.path).name for r in results) == ["pond.csv", "ras.parquet", "seacage.csv"]
    for r in results:
        assert r.rows_read == r.accepted + r.duplicates + r.quarantined
    written = pl.read_csv(out / "seacage.csv").height + pl.read_csv(out / "pond.csv").height
    written += pq.read_metadata(out / "ras.parquet").num_rows
    assert sum(r.rows_read for r in results) == written
    assert query(wh, "select count(*) from readings") == [(sum(r.accepted for r in results),)]
    assert query(wh, "select count(*) from (select distinct sensor_id, ts from readings)") == [
        (sum(r.accepted for r in results),)
    ]
    assert query(wh, "select count(distinct customer) from sensors") == [(3,)]
    again = ingest_files(wh, [out])
    assert [r.status for r in again] == ["skipped"] * 3


def test_folder_without_declared_exports_is_refused(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OxyError, match="no CSV or Parquet export named after a declared source"):
        ingest_files(wh, [tmp_path / "empty"])
    assert os.listdir(tmp_path / "empty") == []
