"""Malformed exports of every kind (hypothesis): never a traceback, every row accounted.

Each example writes a CSV (mixed line endings, a final line without newline, NUL bytes, a BOM,
latin-1 bytes in a UTF-8 mapping, stray quotes anywhere, ragged and over-long lines,
impossible times and values, comment and blank lines) or a Parquet file (odd column types,
non-finite and missing values, truncated bytes) and ingests it into one warehouse. The only
exception allowed is a one-line :class:`OxyError` refusal that changes nothing; otherwise
rows read = accepted + duplicate + quarantined, the lake grows by the accepted rows and the
quarantine by the quarantined ones, and every quarantined CSV line exists in the file.

``OXY_FUZZ_EXAMPLES`` sets the examples per test (``bench/bench_ingest.py --fuzz`` runs
1,000 of each; ``make test`` the default below).
"""

from __future__ import annotations

import io
import itertools
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest import make_warehouse, query

from engine import OxyError
from engine.ingest import ingest_files
from engine.warehouse import Warehouse

# a failing example of megabytes would warn about its repr instead of showing the failure
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
EXAMPLES = int(os.environ.get("OXY_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # `make test` draws the same examples every run; the benchmark's run draws new ones
    derandomize="OXY_FUZZ_EXAMPLES" not in os.environ,
)
_counter = itertools.count()

SOURCES = {
    "iso": {
        "customer": "fuzz",
        "timezone": "Europe/Oslo",
        "unit": "mg/L",
        "sensor_columns": ["Tag"],
        "time_column": "Timestamp",
        "value_column": "Value",
        "naive_time_zone": "Europe/Oslo",
        "comment": "#",
        "temperature_column": "Temp",
    },
    "epoch": {
        "customer": "fuzz",
        "timezone": "UTC",
        "unit": "umol/L",
        "sensor_id": "{stem}|{Tag}",
        "time_column": "Timestamp",
        "time_format": ["epoch_ms", "iso"],
        "value_columns": ["Value", "Temp"],
        "delimiter": ";",
        "decimal": ",",
    },
    "pattern": {
        "customer": "fuzz",
        "timezone": "UTC",
        "unit": "%sat",
        "sensor_columns": ["Tag"],
        "time_columns": ["Timestamp", "Clock"],
        "time_format": ["%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M:%S CET"],
        "value_column": "Value",
        "skip_rows": 1,
    },
}
HEADERS = {
    "iso": ["Timestamp", "Tag", "Value", "Temp"],
    "epoch": ["Timestamp", "Tag", "Value", "Temp"],
    "pattern": ["Timestamp", "Clock", "Tag", "Value"],
}
GOOD_TIMES = {
    "iso": [
        "2024-10-27T02:30:00",
        "2024-03-31T02:30:00",
        "2024-01-01T00:{m:02d}:00Z",
        "2024-06-01 14:{m:02d}:00+02:00",
        "2024-06-01T12:{m:02d}:00.5",
    ],
    "epoch": ["17040672{m:02d}000", "1704067200", "2024-01-01T00:{m:02d}:00Z"],
    "pattern": ["01/06/2024|14:{m:02d}", "2021-06-25|15:14:{m:02d} CET", "31/03/2024|02:30"],
}
BAD_TIMES = [
    "",
    "NA",
    "infinity",
    "-infinity",
    "epoch",
    "0001-01-01",
    "9999-12-31 23:59",
    "2024-01-01T00:00:00+25:00",
    "nan",
    "9e15",
    "-1",
    "1e308",
    "now",
    "24:61",
    "\x00",
]
VALUES = [
    "7.5",
    "0",
    "",
    "NA",
    "NULL",
    "x",
    "inf",
    "-inf",
    "NaN",
    "-9999",
    "1e400",
    "600",
    "-0.5",
    "7,25",
    "\x007",
    "1e-320",
]
PIECES = [
    "good",
    "good",
    "good",
    "bad_time",
    "bad_value",
    "ragged_more",
    "ragged_less",
    "quote_start",
    "quote_mid",
    "nul",
    "latin1",
    "blank",
    "comment",
    "repeat",
    "long",
]


@st.composite
def csv_exports(draw: st.DrawFn) -> tuple[str, bytes]:
    """(mapping name, file bytes) of a malformed CSV export."""
    kind = draw(st.sampled_from(sorted(SOURCES)))
    delim = SOURCES[kind].get("delimiter", ",")
    header = delim.join(HEADERS[kind])
    lines: list[bytes] = []
    if kind == "pattern":  # skip_rows = 1: a metadata line first
        lines.append(draw(st.sampled_from([b"exported by logger", b'"quoted, meta', b""])))
    lines.append(header.encode())
    longs = 0
    for _ in range(draw(st.integers(0, 14))):
        piece = draw(st.sampled_from(PIECES))
        minute = draw(st.integers(0, 59))
        time = draw(st.sampled_from(GOOD_TIMES[kind])).format(m=minute)
        value = draw(st.sampled_from(VALUES[:2] + ["8.1", "6.9"]))
        if piece == "bad_time":
            time = draw(st.sampled_from(BAD_TIMES))
        elif piece == "bad_value":
            value = draw(st.sampled_from(VALUES))
        fields = [time, draw(st.sampled_from(["a", "b", " a ", ""])), value, "12.5"]
        if kind == "pattern":
            date, _, clock = time.partition("|")
            fields = [date, clock, fields[1], value]
        row = delim.join(fields)
        if piece == "ragged_more":
            row += delim + "extra"
        elif piece == "ragged_less":
            row = delim.join(fields[:2])
        elif piece == "quote_start":
            row = row.replace(value, '"' + value, 1) if value else row + '"'
        elif piece == "quote_mid":
            row = row[: len(row) // 2] + '"' + row[len(row) // 2 :]
        elif piece == "blank":
            row = ""
        elif piece == "comment":
            row = "# " + row
        data = row.encode()
        if piece == "nul":
            data = data[:3] + b"\x00" + data[3:]
        elif piece == "latin1":
            data = data.replace(b"a", b"\xe6", 1) if b"a" in data else data + b"\xe6"
        elif piece == "repeat" and len(lines) > 1:
            data = draw(st.sampled_from(lines[1:]))
        elif piece == "long" and longs == 0:
            longs += 1
            data = data + b"9" * 2_100_000
        lines.append(data)
    endings = [draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"])) for _ in lines]
    text = b"".join(line + end for line, end in zip(lines, endings, strict=True))
    if draw(st.booleans()):
        text = text.rstrip(b"\r\n")  # a final line without a newline
    if draw(st.integers(0, 9)) == 0:
        text = b"\xef\xbb\xbf" + text  # a BOM
    return kind, text


@pytest.fixture(scope="module")
def fuzz_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    root = tmp_path_factory.mktemp("fuzz")
    return make_warehouse(root, **SOURCES, parquet=PARQUET_SOURCE)


# lake rows from the catalog (a count over the readings view would read every file again)
COUNTS = (
    "select (select coalesce(sum(rows), 0) from lake_files), "
    "(select count(*) from quarantine), (select count(*) from ingest_log)"
)


def counts_of(wh: Warehouse) -> tuple[int, int, int]:
    return query(wh, COUNTS)[0] if wh.exists() else (0, 0, 0)


def check(wh: Warehouse, path: Path, source: str) -> Any:
    """Ingest ``path``: a clean refusal changes nothing; a result adds up, in the lake too."""
    lake, quarantined, logged = counts_of(wh)
    try:
        (result,) = ingest_files(wh, [path], source=source)
    except OxyError as refusal:
        message = str(refusal)
        assert "\n" not in message and not message.startswith("internal"), message
        assert counts_of(wh) == (lake, quarantined, logged), message
        return None
    assert result.rows_read == result.accepted + result.duplicates + result.quarantined
    if result.status == "skipped":
        assert counts_of(wh) == (lake, quarantined, logged + 1)
    else:
        added = (result.accepted, result.quarantined, 1)
        assert counts_of(wh) == (lake + added[0], quarantined + added[1], logged + 1)
        assert sum(result.reasons.values()) == result.quarantined
    return result


@FUZZ
@given(export=csv_exports())
def test_malformed_csv_never_crashes_and_accounts_for_every_row(
    fuzz_warehouse: Warehouse, export: tuple[str, bytes]
) -> None:
    kind, data = export
    path = fuzz_warehouse.root.parent / f"export{next(_counter)}.csv"
    path.write_bytes(data)
    result = check(fuzz_warehouse, path, kind)
    if result is not None and result.status == "ok":
        physical = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1
        lines = query(
            fuzz_warehouse,
            f"select min(line), max(line) from quarantine where ingest_id = '{result.ingest_id}'",
        )[0]
        if lines[0] is not None:
            assert 1 <= lines[0] and lines[1] <= physical, (lines, physical)


PARQUET_SOURCE = {
    "customer": "fuzz",
    "timezone": "UTC",
    "unit": "mg/L",
    "sensor_columns": ["Tag"],
    "time_column": "Timestamp",
    "time_format": ["iso", "epoch_ms"],
    "value_column": "Value",
}
T = datetime(2024, 1, 1)
TIME_COLUMNS = {
    "text": st.lists(
        st.sampled_from(["2024-01-01T00:00:00Z", "infinity", "", None, "x", "2024-01-01 00:01:00"]),
        min_size=1,
        max_size=8,
    ),
    "epoch": st.lists(
        st.one_of(st.none(), st.integers(-(2**62), 2**62), st.just(1704067200000)),
        min_size=1,
        max_size=8,
    ),
    "float": st.lists(
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=8
    ),
    "timestamp": st.lists(
        st.one_of(st.none(), st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30))),
        min_size=1,
        max_size=8,
    ),
}


@st.composite
def parquet_exports(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(TIME_COLUMNS)))
    times = draw(TIME_COLUMNS[kind])
    n = len(times)
    if kind == "timestamp":
        zone = draw(st.sampled_from([None, "UTC", "Europe/Oslo"]))
        time_array = pa.array(times, pa.timestamp("us", tz=zone))
    elif kind == "epoch":
        time_array = pa.array(times, pa.int64())
    elif kind == "float":
        time_array = pa.array(times, pa.float64())
    else:
        time_array = pa.array(times, pa.string())
    values = draw(
        st.lists(
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
            min_size=n,
            max_size=n,
        )
    )
    tags = draw(st.lists(st.sampled_from(["a", "b", "", None, "a\x00b"]), min_size=n, max_size=n))
    value_array = (
        pa.array([None if v is None else str(v) for v in values])
        if draw(st.booleans())
        else pa.array(values, pa.float64())
    )
    table = pa.table({"Timestamp": time_array, "Tag": pa.array(tags), "Value": value_array})
    out = io.BytesIO()
    pq.write_table(table, out)
    data = out.getvalue()
    if draw(st.integers(0, 5)) == 0:  # truncated: a crash mid-copy, a partial download
        data = data[: draw(st.integers(1, len(data) - 1))]
    return data


@FUZZ
@given(data=parquet_exports())
def test_odd_parquet_never_crashes_and_accounts_for_every_row(
    fuzz_warehouse: Warehouse, data: bytes
) -> None:
    path = fuzz_warehouse.root.parent / f"export{next(_counter)}.parquet"
    path.write_bytes(data)
    check(fuzz_warehouse, path, "parquet")
