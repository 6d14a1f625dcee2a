"""The warehouse core: writer lock, readers, orphan sweep, atomic publish and marts, paths."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from engine import OxyError
from engine.config import Config
from engine.warehouse import (
    READINGS_SCHEMA,
    Warehouse,
    bucket_of,
    canonical_readings,
    check_parquet,
)

ROOT = Path(__file__).resolve().parent.parent


def _readings(sensors: dict[str, list[float]], start_minute: int = 0) -> pl.DataFrame:
    rows = [
        (sid, datetime(2024, 3, 1, 0, start_minute + i), v)
        for sid, values in sensors.items()
        for i, v in enumerate(values)
    ]
    return pl.DataFrame(rows, schema=["sensor_id", "ts", "value"], orient="row")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count(wh: Warehouse, sql: str) -> int:
    with wh.reader() as con:
        return con.execute(sql).fetchall()[0][0]


# -- locking -------------------------------------------------------------------------------
_HOLD_WRITER = """
import sys
from engine.config import Config
from engine.warehouse import Warehouse
wh = Warehouse(sys.argv[1], Config.load())
with wh.writer():
    print("holding", flush=True)
    sys.stdin.readline()
"""


def _hold_writer(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


@pytest.fixture
def writer_in_other_process(warehouse: Warehouse) -> Iterator[subprocess.Popen]:
    """Another process holding ``warehouse.writer()`` until the test ends."""
    with warehouse.writer():
        pass  # create the catalog first
    with _hold_writer(warehouse.root) as proc:
        yield proc
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0


def _impatient(warehouse: Warehouse) -> Warehouse:
    """The same warehouse with ``warehouse.lock_timeout_s = 0`` (fail at once, no wait)."""
    return Warehouse(
        warehouse.root, warehouse.config.with_overrides({"warehouse": {"lock_timeout_s": 0}})
    )


def test_second_writer_is_refused_while_another_process_writes(
    warehouse: Warehouse, writer_in_other_process: subprocess.Popen
) -> None:
    with pytest.raises(OxyError, match=r"locked by another oxy writer \(pid \d+: .*waited 0 s"):
        with _impatient(warehouse).writer():
            pass


def test_reader_during_another_process_writer_gets_a_clear_message(
    warehouse: Warehouse, writer_in_other_process: subprocess.Popen
) -> None:
    with pytest.raises(OxyError, match=r"being written by another oxy process \(pid \d+"):
        with _impatient(warehouse).reader():
            pass


def test_writer_lock_is_released_and_reusable_after_the_other_process_ends(
    warehouse: Warehouse,
) -> None:
    with _hold_writer(warehouse.root) as proc:
        proc.kill()  # a killed writer must not leave the warehouse locked
        proc.wait(timeout=30)
    with warehouse.writer() as con:
        assert con.execute("select count(*) from lake_files").fetchall() == [(0,)]


def test_second_writer_in_another_thread_is_refused(warehouse: Warehouse) -> None:
    errors: list[str] = []

    def second_writer() -> None:
        try:
            with _impatient(warehouse).writer():
                errors.append("no error")
        except OxyError as exc:
            errors.append(str(exc))

    with warehouse.writer():
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(timeout=30)
    assert len(errors) == 1 and "locked by another oxy writer" in errors[0]


def test_reader_in_the_writing_process_gets_a_clear_message(warehouse: Warehouse) -> None:
    with warehouse.writer():
        with pytest.raises(OxyError, match="being written by this oxy process"):
            with warehouse.reader():
                pass


def test_writer_waits_up_to_lock_timeout_then_gets_the_lock(tmp_path: Path) -> None:
    config_file = tmp_path / "oxy.toml"
    config_file.write_text("[warehouse]\nlock_timeout_s = 20\n", encoding="utf-8")
    wh = Warehouse(tmp_path / "wh", Config.load(config_file))
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with wh.writer():
            holding.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(timeout=30)
    threading.Timer(0.3, release.set).start()
    with wh.writer() as con:  # waits for the holder instead of failing
        assert con.execute("select 1").fetchall() == [(1,)]
    thread.join(timeout=30)


def test_reader_on_a_missing_warehouse_says_so(tmp_path: Path, config: Config) -> None:
    with pytest.raises(OxyError, match=r"no warehouse at .*missing"):
        with Warehouse(tmp_path / "missing", config).reader():
            pass


# -- orphan sweep --------------------------------------------------------------------------
def test_orphans_are_swept_at_next_writer_open_and_listed_files_are_untouched(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    readings_loader(warehouse, _readings({"a|1": [7.0, 7.5], "b|2": [6.0]}))
    listed = sorted(warehouse.lake_dir.rglob("*.parquet"))
    assert len(listed) == 2  # one per bucket (5 and 6)
    hashes = {p: _sha256(p) for p in listed}

    stray = warehouse.lake_dir / "readings" / "bucket=03" / "crashed-batch.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(listed[0].read_bytes())  # valid Parquet, but no transaction lists it
    junk_file = warehouse.staging_dir / "half-written.parquet"
    junk_file.write_bytes(b"PAR1 truncated")
    junk_dir = warehouse.staging_dir / "partitioned-copy"
    (junk_dir / "bucket=1").mkdir(parents=True)
    (junk_dir / "bucket=1" / "data_0.parquet").write_bytes(b"PAR1")
    tmp_dir = warehouse.staging_dir / "duckdb_tmp"
    tmp_dir.mkdir(exist_ok=True)

    with warehouse.writer() as con:
        assert con.execute("select count(*) from readings").fetchall() == [(3,)]

    assert not stray.exists()
    assert not junk_file.exists() and not junk_dir.exists()
    assert tmp_dir.is_dir()  # DuckDB's spill directory is kept
    assert sorted(warehouse.lake_dir.rglob("*.parquet")) == listed
    assert {p: _sha256(p) for p in listed} == hashes
    assert _count(warehouse, "select count(*) from readings") == 3


# -- publish -------------------------------------------------------------------------------
def _stage(wh: Warehouse, con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, batch: str):
    canonical = frame.with_columns(
        unit=pl.lit("mg/L"),
        customer=pl.lit("test"),
        source_file=pl.lit("x.csv"),
        ingested_at=pl.lit(datetime(2024, 3, 2)),
    )
    wh.register_sensors(
        con,
        [
            {
                "sensor_id": s,
                "customer": "test",
                "source": "test",
                "timezone": "UTC",
                "unit": "mg/L",
                "levels": s.split("|"),
            }
            for s in canonical["sensor_id"].unique().to_list()
        ],
    )
    con.register("batch_readings", canonical_readings(canonical))
    try:
        return wh.stage_readings(con, batch)
    finally:
        con.unregister("batch_readings")


def test_publish_refuses_a_truncated_staged_file_and_leaves_nothing_visible(
    warehouse: Warehouse,
) -> None:
    with warehouse.writer() as con:
        staged = _stage(warehouse, con, _readings({"a|1": [7.0, 7.1], "b|2": [6.0]}), "b1")
        assert [(f.bucket, f.rows) for f in staged] == [(5, 2), (6, 1)]
        victim = staged[1].staged
        victim.write_bytes(victim.read_bytes()[:-12])  # footer gone, as after a kill -9
        con.execute("begin")
        with pytest.raises(OxyError, match="is not valid Parquet"):
            warehouse.publish(con, staged)
        con.execute("rollback")
        assert con.execute("select count(*) from lake_files").fetchall() == [(0,)]
        assert con.execute("select count(*) from readings").fetchall() == [(0,)]
    assert list(warehouse.lake_dir.rglob("*.parquet")) == []  # not even the good file
    assert _count(warehouse, "select count(*) from readings") == 0


def test_publish_refuses_a_staged_file_with_the_wrong_row_count(warehouse: Warehouse) -> None:
    with warehouse.writer() as con:
        staged = _stage(warehouse, con, _readings({"a|1": [7.0, 7.1]}), "b1")
        short = [staged[0].__class__(**{**staged[0].__dict__, "rows": 3})]
        with pytest.raises(OxyError, match="has 2 rows, expected 3"):
            warehouse.publish(con, short)
    assert list(warehouse.lake_dir.rglob("*.parquet")) == []


def test_published_files_are_visible_only_after_commit(warehouse: Warehouse) -> None:
    with warehouse.writer() as con:
        staged = _stage(warehouse, con, _readings({"a|1": [7.0, 7.1, 7.2]}), "b1")
        con.execute("begin")
        warehouse.publish(con, staged)
        assert con.execute("select count(*) from readings").fetchall() == [(3,)]
        con.execute("rollback")  # as if the process died before committing
        assert con.execute("select count(*) from readings").fetchall() == [(0,)]
    moved = warehouse.root / "lake/readings/bucket=05/b1.parquet"
    assert moved.is_file()  # renamed into place, but listed by no committed transaction
    assert _count(warehouse, "select count(*) from readings") == 0
    with warehouse.writer():
        pass
    assert not moved.exists()  # swept by the next writer

    with warehouse.writer() as con:
        staged = _stage(warehouse, con, _readings({"a|1": [7.0, 7.1, 7.2]}), "b2")
        con.execute("begin")
        warehouse.publish(con, staged)
        con.execute("commit")
    assert _count(warehouse, "select sum(value) from readings") == pytest.approx(21.3)
    with warehouse.reader() as con:
        assert warehouse.files(con, "readings", 5) == [
            warehouse.root / "lake/readings/bucket=05/b2.parquet"
        ]
        assert warehouse.files(con, "readings", 6) == []
        assert con.execute("select bucket, rows, min_ts, max_ts from lake_files").fetchall() == [
            (5, 3, datetime(2024, 3, 1, 0, 0), datetime(2024, 3, 1, 0, 2))
        ]


def test_check_parquet_counts_rows_and_refuses_garbage(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    with duckdb.connect() as con:
        con.execute(f"copy (select range as i from range(7)) to '{good}' (format parquet)")
    assert check_parquet(good) == 7
    assert check_parquet(good, 7) == 7
    with pytest.raises(OxyError, match="has 7 rows, expected 8"):
        check_parquet(good, 8)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(OxyError, match="bad.parquet is not valid Parquet"):
        check_parquet(bad)


# -- marts ---------------------------------------------------------------------------------
def test_write_mart_replaces_one_partition_atomically_and_the_view_reads_it(
    warehouse: Warehouse,
) -> None:
    query = "select $sensor as sensor_id, $mean as daily_mean"
    with warehouse.writer() as con:
        assert (
            warehouse.write_mart(
                con, "daily", query, {"sensor": "a", "mean": 7.0}, partition="bucket=01"
            )
            == 1
        )
        assert (
            warehouse.write_mart(
                con, "daily", query, {"sensor": "b", "mean": 6.0}, partition="bucket=02"
            )
            == 1
        )
        other = warehouse.marts_dir / "daily/bucket=02/data.parquet"
        other_hash = _sha256(other)
        warehouse.write_mart(
            con, "daily", query, {"sensor": "a", "mean": 7.5}, partition="bucket=01"
        )
        warehouse.refresh_mart_views(con)
        rows = con.execute(
            "select bucket, sensor_id, daily_mean from daily order by all"
        ).fetchall()
    assert rows == [("01", "a", 7.5), ("02", "b", 6.0)]  # hive keeps "01" text
    assert _sha256(other) == other_hash  # the other partition was not rewritten
    assert sorted(
        p.relative_to(warehouse.root).as_posix() for p in warehouse.root.rglob("*.parquet")
    ) == [
        "marts/daily/bucket=01/data.parquet",
        "marts/daily/bucket=02/data.parquet",
    ]
    assert [p for p in warehouse.staging_dir.iterdir() if p.is_file()] == []
    assert warehouse.mart_names() == ["daily"]
    with warehouse.reader() as con:  # the view is in the catalog for later readers too
        assert con.execute("select sum(daily_mean) from daily").fetchall() == [(13.5,)]


@pytest.mark.parametrize("open_files", [1, 2, 8])  # one COPY per key, two, all at once
def test_write_mart_files_sends_each_key_to_its_file(warehouse: Warehouse, open_files: int) -> None:
    marts = warehouse.marts_dir / "parts"
    outputs = [marts / "b=1/x.parquet", marts / "b=2/y.parquet", marts / "b=3/z.parquet"]
    query = "select range as n, (range % 2 + 1) * 10 as k from range($rows)"
    with warehouse.writer() as con:
        warehouse.write_mart(con, "parts", "select 99 as n", partition="b=3", filename="z.parquet")
        kept = _sha256(outputs[2])  # no row has key 30: its file stays as it is
        rows = warehouse.write_mart_files(
            con, query, {"rows": 5}, "k", outputs, keys=[10, 20, 30], open_files=open_files
        )
        got = [
            con.execute(f"select list(n order by n) from '{p}'").fetchall()[0][0]
            for p in outputs[:2]
        ]
        columns = [
            r[0]
            for r in con.execute(
                f"describe from read_parquet('{outputs[0]}', hive_partitioning = false)"
            ).fetchall()
        ]
    assert rows == [3, 2, 0]
    assert got == [[0, 2, 4], [1, 3]]
    assert columns == ["n"]  # the key is the file, not a column
    assert _sha256(outputs[2]) == kept
    assert {p.name for p in warehouse.staging_dir.iterdir()} <= {"duckdb_tmp"}  # nothing staged


def test_write_mart_without_partition_and_a_failing_query_keeps_the_old_file(
    warehouse: Warehouse,
) -> None:
    with warehouse.writer() as con:
        assert warehouse.write_mart(con, "fleet", "select range as n from range(4)") == 4
        with pytest.raises(duckdb.Error):
            warehouse.write_mart(con, "fleet", "select 1 / 0 as n from nonexistent_table")
        warehouse.refresh_mart_views(con)
        assert con.execute("select sum(n) from fleet").fetchall() == [(6,)]


def test_a_mart_named_like_a_catalog_table_gets_no_view(warehouse: Warehouse) -> None:
    with warehouse.writer() as con:
        warehouse.write_mart(con, "sensors", "select 'x' as sensor_id")
        warehouse.refresh_mart_views(con)
        kinds = con.execute(
            "select table_type from information_schema.tables where table_name = 'sensors'"
        ).fetchall()
    assert kinds == [("BASE TABLE",)]


# -- paths and buckets ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "relpath", ["../outside.parquet", "lake/../../outside", "/etc/passwd", "marts/../../../tmp"]
)
def test_resolve_refuses_paths_escaping_the_root(warehouse: Warehouse, relpath: str) -> None:
    with pytest.raises(OxyError, match="escapes the warehouse root"):
        warehouse.resolve(relpath)


def test_resolve_refuses_a_symlink_pointing_outside(warehouse: Warehouse, tmp_path: Path) -> None:
    warehouse.marts_dir.mkdir(parents=True)
    (warehouse.marts_dir / "link").symlink_to(tmp_path)
    with pytest.raises(OxyError, match="escapes the warehouse root"):
        warehouse.resolve("marts/link/data.parquet")
    assert warehouse.resolve("lake/readings/bucket=01/x.parquet") == (
        warehouse.root / "lake/readings/bucket=01/x.parquet"
    )


def test_bucket_of_is_stable() -> None:
    # crc32("123456789") is the standard check value 0xCBF43926.
    assert bucket_of("123456789", 16) == 0xCBF43926 % 16 == 6
    expected = {
        "a|1": (5, 0),
        "b|2": (6, 3),
        "System_10|EquipmentUnit_10|SubUnit_07": (6, 3),
        "ras1/tank-02/o2": (7, 2),
        "ø2": (11, 4),
    }
    assert {s: (bucket_of(s, 16), bucket_of(s, 7)) for s in expected} == expected


def test_bucket_of_does_not_depend_on_the_process() -> None:
    code = "from engine.warehouse import bucket_of; print(bucket_of('ras1/tank-02/o2', 16))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert out.stdout.strip() == "7"


# -- the catalog ---------------------------------------------------------------------------
def test_empty_readings_view_has_the_canonical_schema(warehouse: Warehouse) -> None:
    with warehouse.writer() as con:
        described = con.execute("describe readings").fetchall()
        assert con.execute("select count(*) from readings").fetchall() == [(0,)]
    assert [(r[0], r[1]) for r in described] == [
        ("sensor_id", "VARCHAR"),
        ("ts", "TIMESTAMP"),
        ("value", "DOUBLE"),
        ("unit", "VARCHAR"),
        ("customer", "VARCHAR"),
        ("source_file", "VARCHAR"),
        ("ingested_at", "TIMESTAMP"),
        ("temperature_c", "DOUBLE"),
        ("salinity", "DOUBLE"),
    ]
    assert [f.name for f in READINGS_SCHEMA] == [r[0] for r in described]


def test_readings_view_has_the_same_schema_once_files_exist(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    with warehouse.writer() as con:
        empty = con.execute("describe readings").fetchall()
    readings_loader(warehouse, _readings({"a|1": [7.0]}))
    with warehouse.reader() as con:
        assert con.execute("describe readings").fetchall() == empty
        assert con.execute("select sensor_id, ts, value, unit from readings").fetchall() == [
            ("a|1", datetime(2024, 3, 1), 7.0, "mg/L")
        ]


def test_a_lake_view_is_created_again_only_when_its_files_change(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """Each lake view is tagged with a digest of its definition: a writer keeps a view whose
    tag matches (a stand-in with the right tag survives), and a new file (or a wrong tag)
    makes it list the committed files again."""
    readings_loader(warehouse, _readings({"a|1": [7.0]}))

    def stand_in(con: duckdb.DuckDBPyConnection, tag: str) -> None:
        con.execute("create or replace view readings as select 'stand-in' as sensor_id")
        con.execute(f"comment on view readings is '{tag}'")  # a digest: no quote in it

    def sensors() -> list[str]:
        with warehouse.writer() as con:
            return [r[0] for r in con.execute("select sensor_id from readings").fetchall()]

    with warehouse.writer() as con:
        tag = con.execute(
            "select comment from duckdb_views() where view_name = 'readings'"
        ).fetchall()[0][0]
        assert tag.startswith("oxy:")
        stand_in(con, tag)
    assert sensors() == ["stand-in"]  # same files, same tag: kept
    with warehouse.writer() as con:
        stand_in(con, "oxy:other")
    assert sensors() == ["a|1"]  # a wrong tag: created again
    with warehouse.writer() as con:
        stand_in(con, tag)
    readings_loader(warehouse, _readings({"b|1": [6.0]}))
    assert sorted(sensors()) == ["a|1", "b|1"]  # a new file: created again


def test_register_sensors_keeps_the_first_registration(warehouse: Warehouse) -> None:
    sensor = {
        "sensor_id": "ras1/tank-02/o2",
        "customer": "fjordras",
        "source": "ras",
        "timezone": "Europe/Oslo",
        "unit": "mg/L",
        "levels": ["ras1", "tank-02", "o2"],
    }
    with warehouse.writer() as con:
        assert warehouse.register_sensors(con, [sensor]) == 1
        assert warehouse.register_sensors(con, [{**sensor, "customer": "other"}]) == 0
        rows = con.execute("select customer, bucket, levels from sensors").fetchall()
    assert rows == [("fjordras", 7, ["ras1", "tank-02", "o2"])]


def test_connections_run_in_utc(warehouse: Warehouse) -> None:
    with warehouse.writer() as con:
        assert con.execute("select current_setting('TimeZone')").fetchall() == [("UTC",)]
    with warehouse.reader() as con:
        assert con.execute("select current_setting('TimeZone')").fetchall() == [("UTC",)]
    con = warehouse.connect_memory()
    try:
        assert con.execute("select current_setting('TimeZone')").fetchall() == [("UTC",)]
        assert con.execute("select current_setting('threads')").fetchall() == [(2,)]
    finally:
        con.close()


def test_readings_files_have_the_canonical_arrow_schema(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    readings_loader(warehouse, _readings({"b|2": [6.0, 6.1]}))
    (path,) = warehouse.lake_dir.rglob("*.parquet")
    assert (
        path.relative_to(warehouse.root).as_posix() == "lake/readings/bucket=06/test-batch.parquet"
    )
    assert pq.read_schema(path).remove_metadata().equals(READINGS_SCHEMA)


# -- readers and writers side by side --------------------------------------------------------
_HOLD_READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print("holding", flush=True)
sys.stdin.readline()
"""


def test_a_writer_waits_for_a_reader_holding_the_catalog_then_fails_in_one_line(
    warehouse: Warehouse,
) -> None:
    with warehouse.writer():
        pass
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_READER, str(warehouse.db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(OxyError, match=r"being read by pid \d+; waited 0 s"):
            with _impatient(warehouse).writer():
                pass
        threading.Timer(0.5, lambda: proc.communicate("\n", timeout=30)).start()
        with warehouse.writer() as con:  # lock_timeout_s = 60: waits for the reader to go
            assert con.execute("select 1").fetchall() == [(1,)]
    finally:
        proc.kill()
        proc.wait(timeout=30)


_READER_LOOP = """
import sys, time
from engine import OxyError
from engine.config import Config
from engine.warehouse import Warehouse
wh = Warehouse(sys.argv[1], Config.load())
counts, failures, deadline = set(), 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with wh.reader() as con:
            counts.add(con.execute("select count(*) from readings").fetchall()[0][0])
    except Exception as exc:
        failures += 1
        print(type(exc).__name__, exc, file=sys.stderr)
print(failures, sorted(counts))
"""


def test_writers_beside_a_reader_loop_never_fail(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    """A small version of the benchmark's stress run: writers (publishes and mart writes)
    while another process copies the catalog in a loop; neither side fails, and every count
    the reader saw is one a committed writer left."""
    readings_loader(warehouse, _readings({"a|1": [7.0]}), batch_id="b0")
    proc = subprocess.Popen(
        [sys.executable, "-c", _READER_LOOP, str(warehouse.root), "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        for i in range(1, 9):
            readings_loader(warehouse, _readings({"a|1": [7.0]}, start_minute=i), batch_id=f"b{i}")
            with warehouse.writer() as con:
                warehouse.write_mart(con, "totals", "select count(*) as n from readings")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    failures, seen = out.split(" ", 1)
    assert (int(failures), err) == (0, "")
    assert set(eval(seen)) <= set(range(1, 10))  # noqa: S307 - our own printed list


# -- integrity: the cheap check and oxy check's deep one ------------------------------------
def _scored_like(wh: Warehouse, readings_loader: Callable[..., None]) -> None:
    """Two lake files and two mart files of a mart per bucket."""
    readings_loader(wh, _readings({"a|1": [7.0, 7.5, 7.7], "b|2": [6.0, 6.1]}), batch_id="i1")
    with wh.writer() as con:
        for bucket in (5, 6):
            wh.write_mart(
                con,
                "per_bucket",
                "select sensor_id, ts, value from readings where $b = $b",
                {"b": bucket},
                partition=f"bucket={bucket:02d}",
            )


def _problems(wh: Warehouse, deep: bool = False) -> list[tuple[str, str, str]]:
    with wh.reader(check=False) as con:
        return [(p.kind, p.area, p.path) for p in wh.check_files(con, deep=deep)]


def test_the_catalog_records_size_rows_bucket_and_span_of_every_file(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    _scored_like(warehouse, readings_loader)
    with warehouse.reader() as con:
        lake = con.execute("select path, rows, bytes from lake_files order by 1").fetchall()
        marts = con.execute(
            "select mart, path, bucket, rows, bytes, min_ts, max_ts from mart_files order by 2"
        ).fetchall()
    assert [(p, r, b) for p, r, b in lake] == [
        (p, r, (warehouse.root / p).stat().st_size)
        for p, r in [
            ("lake/readings/bucket=05/i1.parquet", 3),
            ("lake/readings/bucket=06/i1.parquet", 2),
        ]
    ]
    start, end = datetime(2024, 3, 1, 0, 0), datetime(2024, 3, 1, 0, 2)
    assert [(m, b, r, lo, hi) for m, _, b, r, _, lo, hi in marts] == [
        ("per_bucket", 5, 5, start, end),
        ("per_bucket", 6, 5, start, end),
    ]
    assert all(size == (warehouse.root / p).stat().st_size for _, p, _, _, size, _, _ in marts)
    assert _problems(warehouse, deep=True) == []


def test_missing_truncated_changed_unreadable_and_unlisted_files_are_found(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    _scored_like(warehouse, readings_loader)
    lake5 = warehouse.root / "lake/readings/bucket=05/i1.parquet"
    lake6 = warehouse.root / "lake/readings/bucket=06/i1.parquet"
    mart5 = warehouse.marts_dir / "per_bucket/bucket=05/data.parquet"
    mart6 = warehouse.marts_dir / "per_bucket/bucket=06/data.parquet"
    lake5.write_bytes(lake5.read_bytes()[:-100])  # truncated
    lake6.write_bytes(lake6.read_bytes() + b"x")  # changed
    mart5.unlink()  # missing
    body = bytearray(mart6.read_bytes())
    body[-5:-4] = b"Z"  # same size, the footer's magic broken: only the deep check sees it
    mart6.write_bytes(bytes(body))
    stray = warehouse.marts_dir / "per_bucket/bucket=07/data.parquet"
    stray.parent.mkdir()
    stray.write_bytes(lake5.read_bytes())
    cheap = _problems(warehouse)
    assert cheap == [
        ("truncated", "lake", "lake/readings/bucket=05/i1.parquet"),
        ("changed", "lake", "lake/readings/bucket=06/i1.parquet"),
        ("missing", "mart", "marts/per_bucket/bucket=05/data.parquet"),
        ("unlisted", "mart", "marts/per_bucket/bucket=07/data.parquet"),
    ]
    deep = _problems(warehouse, deep=True)
    assert ("unreadable", "mart", "marts/per_bucket/bucket=06/data.parquet") in deep
    with warehouse.reader(check=False) as con:
        (truncated, *_) = warehouse.check_files(con)
    assert truncated.bucket == 5 and truncated.rows == 3 and truncated.table == "readings"
    assert truncated.min_ts == datetime(2024, 3, 1) and truncated.blocks_writers
    assert "`oxy forget i1`" in truncated.repair


def test_a_writer_refuses_a_damaged_lake_and_a_repairing_writer_may_open(
    warehouse: Warehouse, readings_loader: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    _scored_like(warehouse, readings_loader)
    (warehouse.root / "lake/readings/bucket=05/i1.parquet").unlink()
    with pytest.raises(OxyError) as info:
        with warehouse.writer():
            pytest.fail("a writer opened on a lake missing a file")
    message = str(info.value)
    assert "1 lake file(s) are not as the catalog recorded them, so nothing was written" in message
    assert "lake/readings/bucket=05/i1.parquet: listed in the catalog but missing" in message
    with warehouse.writer(allow_problems=True) as con:  # e.g. `oxy forget`, which repairs it
        assert [p.kind for p in warehouse.problems] == ["missing"]
        con.execute("delete from lake_files where path like '%bucket=05%'")
    assert _problems(warehouse) == []
    (warehouse.marts_dir / "per_bucket/bucket=06/data.parquet").unlink()
    with caplog.at_level("WARNING", logger="oxy"), warehouse.writer():  # marts: a warning
        pass
    assert "bucket=06/data.parquet: listed in the catalog but missing" in caplog.text


def test_an_older_catalog_gets_sizes_and_its_marts_adopted(
    warehouse: Warehouse, readings_loader: Callable[..., None]
) -> None:
    _scored_like(warehouse, readings_loader)
    with duckdb.connect(str(warehouse.db_path)) as con:  # as an older oxy left it
        con.execute("drop table mart_files")
        con.execute("alter table lake_files drop column bytes")
    with warehouse.writer() as con:
        sizes = con.execute("select count(bytes) from lake_files").fetchall()
        marts = con.execute("select count(*) from mart_files").fetchall()
    assert (sizes, marts) == ([(2,)], [(2,)])
    assert _problems(warehouse, deep=True) == []


# -- the mart journal: a transaction's mart files stand or fall with it ----------------------
def _mart_hashes(wh: Warehouse) -> dict[str, str]:
    return {
        p.relative_to(wh.root).as_posix(): _sha256(p)
        for p in sorted(wh.marts_dir.rglob("*"))
        if p.is_file()
    }


def _change_marts(wh: Warehouse, con: duckdb.DuckDBPyConnection) -> None:
    """Replace one mart file, add one, remove one through the warehouse and one directly."""
    wh.write_mart(con, "m", "select 2 as v", partition="bucket=01")
    wh.write_mart(con, "m", "select 3 as v", partition="bucket=03")
    wh.remove_mart_path(con, wh.marts_dir / "m/bucket=02")
    (wh.marts_dir / "m/bucket=04/data.parquet").unlink()  # a writer's own removal


def _four_parts(wh: Warehouse) -> None:
    with wh.writer() as con:
        for b in (1, 2, 4):
            wh.write_mart(con, "m", f"select {b} as v", partition=f"bucket={b:02d}")


@pytest.mark.parametrize("how", ["rollback", "error"])
def test_a_transaction_that_does_not_commit_leaves_the_marts_as_they_were(
    warehouse: Warehouse, how: str
) -> None:
    _four_parts(warehouse)
    before = _mart_hashes(warehouse)
    if how == "rollback":
        with warehouse.writer() as con:
            con.execute("begin")
            _change_marts(warehouse, con)
            con.execute("rollback")
    else:
        with pytest.raises(RuntimeError, match="boom"), warehouse.writer() as con:
            con.execute("begin")
            _change_marts(warehouse, con)
            raise RuntimeError("boom")
    assert _mart_hashes(warehouse) == before
    assert _problems(warehouse, deep=True) == []
    assert [p.name for p in warehouse.staging_dir.iterdir()] == ["duckdb_tmp"]


def test_a_committed_transaction_keeps_its_mart_files_and_records_them(
    warehouse: Warehouse,
) -> None:
    _four_parts(warehouse)
    with warehouse.writer() as con:
        con.execute("begin")
        _change_marts(warehouse, con)
        con.execute("commit")
        con.execute("begin")  # the next transaction settles the previous journal
        warehouse.write_mart(con, "m", "select 5 as v", partition="bucket=05")
        con.execute("commit")
    assert sorted(_mart_hashes(warehouse)) == [
        f"marts/m/bucket={b:02d}/data.parquet" for b in (1, 3, 5)
    ]
    with warehouse.reader() as con:
        assert con.execute("select list(v order by v) from m").fetchall() == [([2, 3, 5],)]
        assert con.execute("select count(*) from mart_files").fetchall() == [(3,)]
        assert con.execute("select count(*) from mart_journal").fetchall() == [(0,)]
    assert _problems(warehouse, deep=True) == []
    assert [p.name for p in warehouse.staging_dir.iterdir()] == ["duckdb_tmp"]


@pytest.mark.parametrize("end", ["rollback", "commit"])
def test_a_file_replaced_without_a_connection_joins_the_writers_transaction(
    warehouse: Warehouse, end: str
) -> None:
    """The scorer writes its files with polars and calls replace_file(staged, dest): inside a
    writer, the replacement is journalled and recorded as write_mart's are."""
    import polars as pl

    _four_parts(warehouse)
    before = _mart_hashes(warehouse)
    dest = warehouse.marts_dir / "m/bucket=01/data.parquet"
    with warehouse.writer() as con:
        con.execute("begin")
        staged = warehouse.staging_path()
        pl.DataFrame({"v": [7, 8]}).write_parquet(staged)
        assert warehouse.replace_file(staged, dest, expected_rows=2) == 2
        con.execute(end)
    with warehouse.reader() as con:
        rows = con.execute(
            "select rows from mart_files where path = 'marts/m/bucket=01/data.parquet'"
        ).fetchall()
        values = con.execute("select list(v order by v) from m").fetchall()
    if end == "rollback":
        assert _mart_hashes(warehouse) == before and rows == [(1,)]
        assert values == [([1, 2, 4],)]
    else:
        assert rows == [(2,)] and values == [([2, 4, 7, 8],)]
    assert _problems(warehouse, deep=True) == []


_KILLED_WRITER = """
import os, signal, sys
from engine.config import Config
from engine.warehouse import Warehouse
wh = Warehouse(sys.argv[1], Config.load())
with wh.writer() as con:
    con.execute("begin")
    wh.write_mart(con, "m", "select 2 as v", partition="bucket=01")
    wh.write_mart(con, "m", "select 3 as v", partition="bucket=03")
    wh.remove_mart_path(con, wh.marts_dir / "m/bucket=02")
    (wh.marts_dir / "m/bucket=04/data.parquet").unlink()
    if sys.argv[2] == "committed":
        con.execute("commit")
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("when", ["open", "committed"])
def test_kill_9_mid_transaction_or_after_its_commit_is_settled_by_the_next_writer(
    warehouse: Warehouse, when: str
) -> None:
    _four_parts(warehouse)
    before = _mart_hashes(warehouse)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(warehouse.root), when],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    kinds = [k for k, _, _ in _problems(warehouse)]
    assert kinds == ["interrupted"]  # a reader sees the unfinished write, not false problems
    with warehouse.writer():
        pass
    after = _mart_hashes(warehouse)
    if when == "open":
        assert after == before
    else:
        assert sorted(after) == [f"marts/m/bucket={b:02d}/data.parquet" for b in (1, 3)]
    assert _problems(warehouse, deep=True) == []
    assert [p.name for p in warehouse.staging_dir.iterdir()] == ["duckdb_tmp"]


def test_no_space_left_mid_batch_is_one_line_and_leaves_the_marts_as_they_were(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import engine.warehouse as wh_module

    _four_parts(warehouse)
    before = _mart_hashes(warehouse)
    real = wh_module.check_parquet
    calls: list[Path] = []

    def full_disk(path: Path, expected_rows: int | None = None) -> int:
        calls.append(path)
        if len(calls) == 3:  # after two files were replaced
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, expected_rows)

    monkeypatch.setattr(wh_module, "check_parquet", full_disk)
    with pytest.raises(OxyError) as info, warehouse.writer() as con:
        con.execute("begin")
        for b in (1, 2, 3):
            warehouse.write_mart(con, "m", f"select {b * 10} as v", partition=f"bucket={b:02d}")
        con.execute("commit")
    assert str(info.value).startswith("no space left on /")
    assert str(info.value).endswith(
        ": nothing was changed by the failed step (free some space and run the command again)"
    )
    assert "\n" not in str(info.value)
    monkeypatch.setattr(wh_module, "check_parquet", real)
    assert _mart_hashes(warehouse) == before
    assert _problems(warehouse, deep=True) == []


def _can_mount_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if probe.returncode == 0:
        subprocess.run(["umount", str(folder)], check=True)
        return True
    return False


def test_a_real_full_disk_during_writes_leaves_marts_and_lake_as_they_were(
    tmp_path: Path, readings_loader: Callable[..., None], config: Config
) -> None:
    """A tiny tmpfs as the warehouse: a mart write that runs out of space is one line and
    changes nothing; the check stays clean; with space again, the same write succeeds."""
    disk = tmp_path / "tiny"
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root and the mount permission)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        wh = Warehouse(disk / "wh", config)
        readings_loader(wh, _readings({"a|1": [7.0] * 50}), batch_id="i1")
        _four_parts(wh)
        before = _mart_hashes(wh)
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(free - 40_000, 0))
        big = "select range as v, repeat(md5(range::varchar), 8) as pad from range(20000)"
        with pytest.raises(OxyError, match=r"^no space left on .*tiny: nothing was changed"):
            with wh.writer() as con:
                con.execute("begin")
                wh.write_mart(con, "m", "select 9 as v", partition="bucket=01")
                wh.write_mart(con, "m", big, partition="bucket=02")
                con.execute("commit")
        assert _mart_hashes(wh) == before
        filler.unlink()
        assert _problems(wh, deep=True) == []
        with wh.writer() as con:
            wh.write_mart(con, "m", big, partition="bucket=02")
        assert _problems(wh, deep=True) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
