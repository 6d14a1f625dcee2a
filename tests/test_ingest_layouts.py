"""Ingest of every common export layout, each on a small file written here: constant and
templated sensor ids, wide files, split date/time columns, several time formats, comment
headers, units with their conversion, temperature and salinity, file formats by mapping,
implausible times, and lake files written before the optional reading columns."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_ingest import BASE_SOURCE, counts, make_warehouse, query, write

from engine import OxyError
from engine.config import SourceMapping
from engine.ingest import ingest_files
from engine.warehouse import Warehouse

SITE = {"customer": "lro", "timezone": "America/Denver", "unit": "mg/L"}


def ingest_one(tmp_path: Path, source: dict[str, Any], name: str, text: str | bytes) -> Any:
    """Ingest one file written from ``text`` with mapping ``source`` into a fresh warehouse
    under ``tmp_path``: (warehouse, result)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    wh = make_warehouse(tmp_path, src=source)
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        write(path, text)
    (result,) = ingest_files(wh, [path], source="src")
    return wh, result


def test_constant_sensor_id_for_a_logger_file_without_a_sensor_column(tmp_path: Path) -> None:
    source = {**SITE, "sensor_id": "lro|MainStreet|do", "time_column": "datetime"}
    source |= {"value_column": "do", "naive_time_zone": "Etc/GMT+7"}
    wh, result = ingest_one(
        tmp_path,
        source,
        "MainStreet2019.csv",
        """
        datetime,temp,do
        2019-01-01 00:00,0.76,14.08
        2019-01-01 00:15,0.72,14.1
        """,
    )
    assert counts(result) == (2, 2, 0, 0)
    assert query(wh, "select sensor_id, ts, value from readings order by ts") == [
        ("lro|MainStreet|do", datetime(2019, 1, 1, 7, 0), 14.08),
        ("lro|MainStreet|do", datetime(2019, 1, 1, 7, 15), 14.1),
    ]
    assert query(wh, "select levels from sensors") == [(["lro", "MainStreet", "do"],)]


def test_template_over_file_name_pattern_and_columns(tmp_path: Path) -> None:
    source = {
        **SITE,
        "sensor_id": "{site}|{Probe}|{{raw}}",
        "file_pattern": "(?P<site>[A-Za-z]+)[0-9]{4}",
        "time_column": "t",
        "value_column": "v",
    }
    wh = make_warehouse(tmp_path, src=source)
    a = write(tmp_path / "Mendon2019.csv", "t,Probe,v\n2019-01-01T00:00:00Z,p1,8\n")
    b = write(tmp_path / "Mendon2020.csv", "t,Probe,v\n2020-01-01T00:00:00Z,p1,9\n")
    c = write(tmp_path / "Mendon2020b.csv", "t,Probe,v\n2020-01-02T00:00:00Z,p1,9\n")
    ingest_files(wh, [a, b], source="src")
    assert query(wh, "select distinct sensor_id from readings") == [("Mendon|p1|{raw}",)]
    with pytest.raises(OxyError, match=r"'Mendon2020b' does not match file_pattern"):
        ingest_files(wh, [c], source="src")
    (tmp_path / "stem").mkdir()
    stem = make_warehouse(tmp_path / "stem", src={**source, "sensor_id": "{stem}|do"})
    ingest_files(stem, [a], source="src")
    assert query(stem, "select sensor_id from readings") == [("Mendon2019|do",)]


def test_template_naming_an_absent_column_is_refused(tmp_path: Path) -> None:
    source = {**SITE, "sensor_id": "{Tag}|do", "time_column": "t", "value_column": "v"}
    wh = make_warehouse(tmp_path, src=source)
    path = write(tmp_path / "a.csv", "t,v\n2019-01-01T00:00:00Z,8\n")
    with pytest.raises(OxyError, match=r"sensor_id field \{Tag\} .* neither a column"):
        ingest_files(wh, [path], source="src")


def test_wide_file_one_sensor_per_value_column_with_true_lines(tmp_path: Path) -> None:
    """Three value columns (a glob and a name): each reading is a row; a bad cell is
    quarantined on its own line; a line that cannot be split counts once."""
    source = {
        **SITE,
        "sensor_columns": ["site"],
        "time_column": "time",
        "value_columns": ["do_*", "oxygen"],
    }
    wh, result = ingest_one(
        tmp_path,
        source,
        "buoy.csv",
        """
        time,site,do_1m,do_5m,oxygen
        2024-05-01T00:00:00Z,A,8.1,7.9,7.5
        2024-05-01T00:01:00Z,A,8.2,x,7.6
        2024-05-01T00:02:00Z,A,8.3
        2024-05-01T00:03:00Z,A,8.4,7.7,
        """,
    )
    assert counts(result) == (10, 7, 0, 3)
    assert query(wh, "select sensor_id, count(*) from readings group by 1 order by 1") == [
        ("A|do_1m", 3),
        ("A|do_5m", 2),
        ("A|oxygen", 2),
    ]
    assert query(wh, "select line, reason, sensor_id from quarantine order by line, reason") == [
        (3, "non-numeric value", "A|do_5m"),
        (4, "ragged line", None),
        (5, "missing value", "A|oxygen"),
    ]
    with_column = {**source, "sensor_id": "{column}@{site}", "value_columns": ["do_*"]}
    del with_column["sensor_columns"]
    text = "time,site,do_1m\n2024-05-01T00:00:00Z,B,8\n"
    wh2, _ = ingest_one(tmp_path / "template", with_column, "buoy.csv", text)
    assert query(wh2, "select sensor_id from readings") == [("do_1m@B",)]


def test_split_date_and_time_columns(tmp_path: Path) -> None:
    source = {
        **SITE,
        "sensor_columns": ["Tag"],
        "time_columns": ["date", "time"],
        "time_format": "%d/%m/%Y %H:%M",
        "naive_time_zone": "Europe/Oslo",
        "value_column": "v",
    }
    wh, result = ingest_one(
        tmp_path,
        source,
        "a.csv",
        """
        date,time,Tag,v
        01/06/2024,14:00,c,7.0
        01/06/2024,14:01,c,7.1
        01/06/2024,,c,7.2
        """,
    )
    assert counts(result) == (3, 2, 0, 1)
    assert query(wh, "select ts from readings order by ts") == [
        (datetime(2024, 6, 1, 12, 0),),
        (datetime(2024, 6, 1, 12, 1),),
    ]
    assert query(wh, "select line, reason from quarantine") == [(4, "missing timestamp")]


def test_rows_with_two_time_formats_each_read_by_the_first_that_fits(tmp_path: Path) -> None:
    """The aquaponics layout: 'YYYY-MM-DD HH:MM:SS CET' (fixed UTC+1) and later day-first
    dates without a time; an ISO+epoch list too."""
    source = {
        **SITE,
        "sensor_columns": ["Tag"],
        "time_column": "created_at",
        "time_format": ["%Y-%m-%d %H:%M:%S CET", "%d/%m/%Y"],
        "naive_time_zone": "Africa/Lagos",
        "value_column": "v",
    }
    wh, result = ingest_one(
        tmp_path,
        source,
        "pond.csv",
        """
        created_at,Tag,v
        2021-06-25 15:14:07 CET,p,7.0
        10/10/2021,p,6.0
        7/2/2022,p,5.0
        2021/10/10,p,4.0
        """,
    )
    assert counts(result) == (4, 3, 0, 1)
    assert query(wh, "select ts, value from readings order by ts") == [
        (datetime(2021, 6, 25, 14, 14, 7), 7.0),
        (datetime(2021, 10, 9, 23, 0), 6.0),
        (datetime(2022, 2, 6, 23, 0), 5.0),
    ]
    mixed = {**source, "time_format": ["iso", "epoch_s"], "naive_time_zone": "UTC"}
    text = "created_at,Tag,v\n2024-06-01T12:00:00Z,p,7\n1717243260,p,8\n"
    wh2, _ = ingest_one(tmp_path / "mixed", mixed, "pond.csv", text)
    assert query(wh2, "select ts, value from readings order by ts") == [
        (datetime(2024, 6, 1, 12, 0), 7.0),
        (datetime(2024, 6, 1, 12, 1), 8.0),
    ]


def test_excel_serial_days_are_local_wall_times(tmp_path: Path) -> None:
    source = {**SITE, "sensor_columns": ["Tag"], "time_column": "t", "value_column": "v"}
    source |= {"time_format": "excel", "naive_time_zone": "Europe/Oslo"}
    wh, result = ingest_one(
        tmp_path, source, "x.csv", "t,Tag,v\n45444.5,c,7\n45444.500694444,c,8\n"
    )
    assert counts(result) == (2, 2, 0, 0)
    assert query(wh, "select ts from readings order by ts") == [
        (datetime(2024, 6, 1, 10, 0),),  # 2024-06-01 12:00 in Oslo (UTC+2)
        (datetime(2024, 6, 1, 10, 1),),
    ]


def test_comment_lines_skip_rows_and_true_line_numbers(tmp_path: Path) -> None:
    source = {**BASE_SOURCE, "comment": "#", "skip_rows": 2}
    wh, result = ingest_one(
        tmp_path,
        source,
        "logger.csv",
        """
        Logger export v2
        serial 1234
        # site: fjord
        Timestamp,Tag,Value
        2024-01-01T00:00:00Z,c,7.0
        # calibrated here
        2024-01-01T00:01:00Z,c,x

        2024-01-01T00:02:00Z,c,7.2,9
        2024-01-01T00:03:00Z,c,7.3
        """,
    )
    assert counts(result) == (4, 2, 0, 2)
    assert query(wh, "select line, reason from quarantine order by line") == [
        (7, "non-numeric value"),
        (9, "ragged line"),
    ]


@pytest.mark.parametrize(
    ("unit", "raw", "stored", "canonical"),
    [
        ("mg/L", "8.0", 8.0, "mg/L"),
        ("%sat", "95.5", 95.5, "%sat"),
        ("ppm", "8.0", 8.0, "mg/L"),
        ("µmol/L", "250", 8.0, "mg/L"),  # 250 / 31.25
        ("umol/L", "312.5", 10.0, "mg/L"),
        ("mL/L", "5.6", 8.0024, "mg/L"),  # 5.6 x 1.429
    ],
)
def test_units_are_converted_to_the_canonical_unit_with_the_factor_recorded(
    tmp_path: Path, unit: str, raw: str, stored: float, canonical: str
) -> None:
    source = {**BASE_SOURCE, "unit": unit}
    wh, result = ingest_one(
        tmp_path, source, "a.csv", f"Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,{raw}\n"
    )
    assert counts(result) == (1, 1, 0, 0)
    ((value, stored_unit),) = query(wh, "select value, unit from readings")
    assert value == pytest.approx(stored, abs=1e-9) and stored_unit == canonical
    assert query(wh, "select unit from sensors") == [(canonical,)]
    ((logged_unit, factor),) = query(wh, "select source_unit, unit_factor from ingest_log")
    assert logged_unit == unit
    assert factor == pytest.approx(stored / float(raw))


def test_plausibility_limits_apply_after_conversion(tmp_path: Path) -> None:
    """1,600 umol/L = 51.2 mg/L: above the mg/L maximum of 50."""
    source = {**BASE_SOURCE, "unit": "umol/L"}
    wh, result = ingest_one(
        tmp_path, source, "a.csv", "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,1600\n"
    )
    assert counts(result) == (1, 0, 0, 1)
    assert query(wh, "select reason, detail, raw_value from quarantine") == [
        ("above plausible maximum", "maximum 50.0 mg/L", "1600")
    ]


def test_na_values_are_missing_values(tmp_path: Path) -> None:
    text = "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,NA\n2024-01-01T00:01:00Z,c,NULL\n"
    text += "2024-01-01T00:02:00Z,c,-\nNA,c,7\n"
    wh, result = ingest_one(tmp_path, BASE_SOURCE, "a.csv", text)
    assert counts(result) == (4, 0, 0, 4)
    assert query(wh, "select line, reason from quarantine order by line") == [
        (2, "missing value"),
        (3, "missing value"),
        (4, "non-numeric value"),
        (5, "missing timestamp"),
    ]
    own = {**BASE_SOURCE, "na_values": ["-"]}
    wh2, _ = ingest_one(tmp_path / "own", own, "a.csv", text)
    assert query(wh2, "select line, reason from quarantine order by line")[:3] == [
        (2, "non-numeric value"),
        (3, "non-numeric value"),
        (4, "missing value"),
    ]


def test_format_and_delimiter_for_any_extension(tmp_path: Path) -> None:
    """A tab-separated `.doobs` file (lake buoys) and a Parquet file named `.dat`."""
    doobs = {
        "customer": "gleon",
        "timezone": "America/Chicago",
        "unit": "mg/L",
        "format": "csv",
        "delimiter": "\t",
        "sensor_id": "gleon|{stem}|{column}",
        "time_column": "dateTime",
        "naive_time_zone": "Etc/GMT+6",
        "value_columns": ["doobs_*"],
    }
    wh, result = ingest_one(
        tmp_path, doobs, "mendota.doobs", "DateTime\tdoobs_0.5\n2009-07-23 00:00\t13.550\n"
    )
    assert counts(result) == (1, 1, 0, 0)
    assert query(wh, "select sensor_id, ts from readings") == [
        ("gleon|mendota|doobs_0.5", datetime(2009, 7, 23, 6, 0))
    ]
    plain = {k: v for k, v in doobs.items() if k != "format"}
    (tmp_path / "x").mkdir()
    wh3 = make_warehouse(tmp_path / "x", src=plain)
    with pytest.raises(OxyError, match=r"unknown file type '\.doobs'.*format = \"csv\""):
        ingest_files(wh3, [tmp_path / "mendota.doobs"], source="src")
    pq.write_table(
        pa.table({"t": ["2024-01-01T00:00:00Z"], "Tag": ["c"], "v": [7.5]}), tmp_path / "a.dat"
    )
    parquet = {**BASE_SOURCE, "format": "parquet", "time_column": "t", "value_column": "v"}
    (tmp_path / "p").mkdir()
    wh4 = make_warehouse(tmp_path / "p", src=parquet)
    (result4,) = ingest_files(wh4, [tmp_path / "a.dat"], source="src")
    assert counts(result4) == (1, 1, 0, 0)


def test_temperature_and_salinity_ride_along(tmp_path: Path) -> None:
    source = {**BASE_SOURCE, "temperature_column": "Temp", "salinity": "Sal"}
    text = (
        "Timestamp,Tag,Value,Temp,Sal\n"
        "2024-01-01T00:00:00Z,c,7.0,12.5,34\n"
        "2024-01-01T00:01:00Z,c,7.1,-127,34.5\n"  # a disconnected probe's sentinel
        "2024-01-01T00:02:00Z,c,7.2,55.353,x\n"  # a stuck probe, not a salinity
        "2024-01-01T00:03:00Z,c,7.3,,\n"
    )
    wh, result = ingest_one(tmp_path, source, "a.csv", text)
    assert counts(result) == (4, 4, 0, 0)
    assert query(wh, "select value, temperature_c, salinity from readings order by ts") == [
        (7.0, 12.5, 34.0),
        (7.1, None, 34.5),
        (7.2, None, None),
        (7.3, None, None),
    ]
    constant = {**BASE_SOURCE, "salinity": 34}
    wh2, _ = ingest_one(tmp_path / "constant", constant, "a.csv", text)
    assert query(wh2, "select distinct temperature_c, salinity from readings") == [(None, 34.0)]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("infinity", "outside 1990-01-01 .. "),
        ("-infinity", "outside 1990-01-01 .. "),
        ("epoch", "outside 1990-01-01 .. "),
        ("0001-01-01T00:00:00", "outside 1990-01-01 .. "),
        ("9999-12-31T23:00:00", "outside 1990-01-01 .. "),
        ("2024-01-01T00:00:00+25:00", "offset beyond +-14:00"),
    ],
)
def test_times_that_cannot_be_true_are_quarantined(tmp_path: Path, raw: str, detail: str) -> None:
    wh, result = ingest_one(
        tmp_path,
        BASE_SOURCE,
        "a.csv",
        f"Timestamp,Tag,Value\n{raw},c,7\n2024-01-01T00:00:00Z,c,7\n",
    )
    assert counts(result) == (2, 1, 0, 1)
    ((reason, got),) = query(wh, "select reason, detail from quarantine")
    assert reason == "implausible timestamp" and got.startswith(detail)


@pytest.mark.parametrize("raw", ["9e15", "inf", "nan", "-1704067200000"])
def test_epochs_that_overflow_or_are_not_finite_are_quarantined(tmp_path: Path, raw: str) -> None:
    source = {**BASE_SOURCE, "time_format": "epoch_ms"}
    text = f"Timestamp,Tag,Value\n{raw},c,7\n1704067200000,c,7\n1704067260000,c,7\n"
    wh, result = ingest_one(tmp_path, source, "a.csv", text)
    assert counts(result) == (3, 2, 0, 1)
    assert query(wh, "select reason from quarantine") == [("implausible timestamp",)]


def test_epoch_values_of_another_unit_are_refused_naming_it(tmp_path: Path) -> None:
    source = {**BASE_SOURCE, "time_format": "epoch_ms"}
    rows = "".join(f"{1704067200 + 60 * i},c,7\n" for i in range(34))
    wh = make_warehouse(tmp_path, src=source)
    path = write(tmp_path / "a.csv", "Timestamp,Tag,Value\n" + rows)
    with pytest.raises(OxyError) as err:
        ingest_files(wh, [path], source="src")
    message = str(err.value)
    assert "34 of 34 times are implausible as epoch_ms but look like epoch_s" in message
    assert 'set time_format = "epoch_s"' in message and "\n" not in message
    assert query(wh, "select count(*) from ingest_log") == [(0,)]


def test_time_range_is_configurable(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    wh = Warehouse(
        wh.root, wh.config.with_overrides({"ingest": {"time_range": ["2024-01-01", "now"]}})
    )
    path = write(
        tmp_path / "fjordras.csv",
        "Timestamp,Tag,Value\n2023-12-31T23:59:00Z,c,7\n2024-01-01T00:00:00Z,c,7\n",
    )
    (result,) = ingest_files(wh, [path])
    assert counts(result) == (2, 1, 0, 1)
    bad = wh.config.with_overrides({"ingest": {"time_range": ["soon", "now"]}})
    with pytest.raises(OxyError, match="ingest.time_range: 'soon'"):
        ingest_files(Warehouse(tmp_path / "w2", bad), [path])


def test_column_names_match_case_insensitively_when_unambiguous(tmp_path: Path) -> None:
    wh, result = ingest_one(
        tmp_path, BASE_SOURCE, "a.csv", "TIMESTAMP,tag,value\n2024-01-01T00:00:00Z,c,7\n"
    )
    assert counts(result) == (1, 1, 0, 0)


def test_unknown_mapping_keys_are_refused_listing_the_valid_ones() -> None:
    with pytest.raises(OxyError) as err:
        SourceMapping.from_dict("x", {**BASE_SOURCE, "time_colum": "t"})
    message = str(err.value)
    assert "unknown key(s) ['time_colum']" in message
    assert "valid keys: customer, timezone, unit, sensor_columns, sensor_id" in message
    with pytest.raises(OxyError, match="give sensor_columns or sensor_id, not both"):
        SourceMapping.from_dict("x", {**BASE_SOURCE, "sensor_id": "a"})
    with pytest.raises(OxyError, match="missing key"):
        SourceMapping.from_dict("x", {k: v for k, v in BASE_SOURCE.items() if k != "value_column"})
    with pytest.raises(OxyError, match="not a known text encoding"):
        SourceMapping.from_dict("x", {**BASE_SOURCE, "encoding": "klingon"})


def test_source_mapping_with_every_key_round_trips(tmp_path: Path) -> None:
    raw = {
        "customer": "c",
        "timezone": "UTC",
        "unit": "mL/L",
        "sensor_id": "{stem}|{column}",
        "file_pattern": "(?P<site>.+)",
        "time_columns": ["d", "t"],
        "time_format": ["%d/%m/%Y %H:%M", "iso"],
        "value_columns": ["do_*"],
        "temperature_column": "temp",
        "salinity": 34.0,
        "format": "csv",
        "quote": "'",
        "comment": "#",
        "skip_rows": 3,
        "na_values": ["-"],
    }
    mapping = SourceMapping.from_dict("x", raw)
    assert SourceMapping.from_dict("x", mapping.to_dict()) == mapping


def test_lake_files_written_before_temperature_and_salinity_still_read(
    tmp_path: Path,
) -> None:
    """A lake file of the old seven columns beside a new one: the readings view shows both,
    the old rows with null temperature and salinity; with only old files the columns still
    exist; scoring reads both."""
    from engine.anomaly import score

    wh = make_warehouse(tmp_path, src={**BASE_SOURCE, "temperature_column": "Temp"})
    old_rows = 240
    old = pl.DataFrame(
        {
            "sensor_id": ["c"] * old_rows,
            "ts": pl.datetime_range(
                datetime(2024, 1, 1), datetime(2024, 1, 1, 3, 59), "1m", eager=True
            ),
            "value": [7.0 + (i % 7) / 10 for i in range(old_rows)],
            "unit": ["mg/L"] * old_rows,
            "customer": ["fjordras"] * old_rows,
            "source_file": ["old.csv"] * old_rows,
            "ingested_at": [datetime(2024, 1, 2)] * old_rows,
        }
    )
    with wh.writer() as con:
        wh.register_sensors(
            con,
            [
                {
                    "sensor_id": "c",
                    "customer": "fjordras",
                    "source": "src",
                    "timezone": "UTC",
                    "unit": "mg/L",
                    "levels": ["c"],
                }
            ],
        )
        staged = wh.staging_path()
        old.write_parquet(staged)
        from engine.warehouse import StagedFile, bucket_of

        bucket = bucket_of("c", int(wh.config["warehouse"]["buckets"]))  # where scoring looks

        con.execute("begin")
        wh.publish(
            con,
            [
                StagedFile(
                    staged,
                    f"lake/readings/bucket={bucket:02d}/old.parquet",
                    "readings",
                    bucket,
                    old_rows,
                    old["ts"].min(),
                    old["ts"].max(),
                )
            ],
        )
        con.execute("commit")
    assert query(wh, "select count(*), count(temperature_c), count(salinity) from readings") == [
        (old_rows, 0, 0)
    ]
    new = "Timestamp,Tag,Value,Temp\n" + "".join(
        f"2024-01-01T04:{m:02d}:00Z,c,7.{m % 9},11.5\n" for m in range(60)
    )
    path = write(tmp_path / "new.csv", new)
    (result,) = ingest_files(wh, [path], source="src")
    assert counts(result) == (60, 60, 0, 0)
    assert query(
        wh, "select source_file, count(*), count(temperature_c) from readings group by 1 order by 1"
    ) == [("new.csv", 60, 60), ("old.csv", old_rows, 0)]
    summary = score(wh)
    assert summary.rows_scored == old_rows + 60


def parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def test_typed_parquet_columns_read_without_text(tmp_path: Path) -> None:
    """Numbers and timestamps of a Parquet file pass typed; each still reads as its text
    would: a naive timestamp is a wall time, an integer under a strftime pattern its digits,
    an infinite timestamp implausible, a NaN value non-finite, a null one missing."""
    base = {**BASE_SOURCE, "format": "parquet", "time_column": "t", "value_column": "v"}
    naive = pa.table(
        {
            "t": pa.array([datetime(2024, 7, 1, 12, 0), datetime(2024, 7, 1, 12, 1)]),
            "Tag": ["c", "c"],
            "v": pa.array([7.5, None], pa.float32()),
        }
    )
    wh, result = ingest_one(
        tmp_path / "a", {**base, "naive_time_zone": "Europe/Oslo"}, "x.parquet", parquet(naive)
    )
    assert counts(result) == (2, 1, 0, 1)
    assert query(wh, "select ts, value from readings") == [(datetime(2024, 7, 1, 10, 0), 7.5)]
    assert query(wh, "select reason, raw_time from quarantine") == [
        ("missing value", "2024-07-01T12:01:00.000000")
    ]
    digits = pa.table(
        {"t": pa.array([202407011200, 202407011201], pa.int64()), "Tag": ["c", "c"], "v": [7, 8]}
    )
    wh, result = ingest_one(
        tmp_path / "b", {**base, "time_format": "%Y%m%d%H%M"}, "x.parquet", parquet(digits)
    )
    assert counts(result) == (2, 2, 0, 0)
    assert query(wh, "select ts, value from readings order by ts") == [
        (datetime(2024, 7, 1, 12, 0), 7.0),
        (datetime(2024, 7, 1, 12, 1), 8.0),
    ]
    odd = tmp_path / "odd.parquet"
    duckdb.sql(
        "copy (select * from (values "
        "('infinity'::timestamptz, 'c', 7.0::double), "
        "('2024-01-01 00:00:00+00'::timestamptz, 'c', 'nan'::double), "
        "('2024-01-01 00:01:00+00'::timestamptz, 'c', 9.0::double)"
        ") v(t, Tag, v)) to '" + str(odd) + "' (format parquet)"
    )
    wh, result = ingest_one(tmp_path / "c", base, "odd.parquet", odd.read_bytes())
    assert counts(result) == (3, 1, 0, 2)
    assert query(wh, "select reason, raw_time, raw_value from quarantine order by line") == [
        ("implausible timestamp", "infinity", "7.0"),
        ("non-finite value", "2024-01-01T00:00:00.000000", "nan"),
    ]
