"""`oxy sql` (the read-only sandbox, output formats) and `oxy status`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import oxy
from engine import OxyError
from engine.query import (
    _execute,
    read_only_statement,
    render_status,
    render_table,
    run_sql,
    sandbox,
)
from engine.query import warehouse_status as status_of
from engine.warehouse import Warehouse

TS = datetime(2024, 3, 31, 0, 0)  # the night Europe/Oslo moves to summer time


def _frame(sensors: dict[str, list[float]]) -> pl.DataFrame:
    rows = [
        (sid, TS.replace(minute=i), v)
        for sid, values in sensors.items()
        for i, v in enumerate(values)
    ]
    return pl.DataFrame(rows, schema=["sensor_id", "ts", "value"], orient="row")


@pytest.fixture
def farm(warehouse: Warehouse, readings_loader: Callable[..., None]) -> Warehouse:
    """Two customers, three sensors, nine readings, one mart."""
    readings_loader(
        warehouse,
        _frame({"ras1/tank-01/o2": [8.0, 8.2, 8.4], "ras1/tank-02/o2": [7.0, 7.5]}),
        customer="fjordras",
        timezone="Europe/Oslo",
        batch_id="b1",
    )
    readings_loader(
        warehouse,
        _frame({"pond-1|north|do": [5.0, 6.0, 7.0, 8.0]}),
        customer="pondco",
        timezone="Asia/Bangkok",
        batch_id="b2",
    )
    with warehouse.writer() as con:
        warehouse.write_mart(
            con,
            "sensor_means",
            "select sensor_id, avg(value) as mean_value from readings group by all",
        )
        warehouse.refresh_mart_views(con)
    return warehouse


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the warehouse holding a readable Parquet file and a CSV."""
    folder = tmp_path / "outside"
    folder.mkdir()
    pq.write_table(pa.table({"secret": [42]}), folder / "secret.parquet")
    (folder / "secret.csv").write_text("secret\n42\n", encoding="utf-8")
    return folder


def _hashes(wh: Warehouse) -> dict[str, str]:
    files = [*wh.root.rglob("*.parquet"), wh.db_path]
    return {
        p.relative_to(wh.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


# -- legitimate queries --------------------------------------------------------------------
def test_join_of_readings_with_sensors_aggregates_per_customer(farm: Warehouse) -> None:
    result = run_sql(
        farm,
        "select s.customer, count(distinct r.sensor_id) as sensors, count(*) as n, "
        "round(avg(r.value), 4) as mean from readings r join sensors s using (sensor_id) "
        "group by all order by all",
    )
    assert result.table.to_pylist() == [
        {"customer": "fjordras", "sensors": 2, "n": 5, "mean": 7.82},
        {"customer": "pondco", "sensors": 1, "n": 4, "mean": 6.5},
    ]
    assert not result.truncated


def test_local_time_hour_with_the_sensor_timezone(farm: Warehouse) -> None:
    result = run_sql(
        farm,
        "select sensor_id, hour(timezone(s.timezone, r.ts::timestamptz)) as local_hour "
        "from readings r join sensors s using (sensor_id) "
        "where r.ts = timestamp '2024-03-31 00:00:00' order by all",
    )
    assert [tuple(r.values()) for r in result.table.to_pylist()] == [
        ("pond-1|north|do", 7),
        ("ras1/tank-01/o2", 1),
        ("ras1/tank-02/o2", 1),
    ]


def test_marts_catalog_tables_and_metadata_statements_are_queryable(farm: Warehouse) -> None:
    means = run_sql(farm, "select sensor_id, mean_value from sensor_means order by sensor_id")
    assert means.table.to_pylist() == [
        {"sensor_id": "pond-1|north|do", "mean_value": 6.5},
        {"sensor_id": "ras1/tank-01/o2", "mean_value": pytest.approx(8.2)},
        {"sensor_id": "ras1/tank-02/o2", "mean_value": 7.25},
    ]
    lake = run_sql(farm, "select sum(rows) as rows from lake_files where kind = 'readings'")
    assert lake.table.to_pylist() == [{"rows": 9}]
    tables = run_sql(farm, "show tables").table.column("name").to_pylist()
    assert {"readings", "sensors", "lake_files", "sensor_means"} <= set(tables)
    described = run_sql(farm, "describe readings").table.column("column_name").to_pylist()
    assert described == [
        "sensor_id",
        "ts",
        "value",
        "unit",
        "customer",
        "source_file",
        "ingested_at",
        "temperature_c",
        "salinity",
    ]
    assert run_sql(farm, "summarize sensors").rows == 8
    pivot = run_sql(farm, "pivot (select customer, unit from sensors) on unit using count(*)")
    assert sorted(pivot.table.to_pylist(), key=str) == [
        {"customer": "fjordras", "mg/L": 2},
        {"customer": "pondco", "mg/L": 1},
    ]
    assert run_sql(farm, "explain select * from readings").rows == 1
    assert run_sql(farm, "values (1, 'a'), (2, 'b')").rows == 2
    assert run_sql(farm, "from sensors select count(*) as n").table.to_pylist() == [{"n": 3}]
    assert run_sql(farm, "-- per sensor\nselect 1 as one;").table.to_pylist() == [{"one": 1}]


def test_other_catalog_views_are_recreated_but_cannot_reach_outside(
    farm: Warehouse, outside: Path
) -> None:
    with farm.writer() as con:
        con.execute(
            "create view customer_sensors as "
            "select customer, count(*) as sensors from sensors group by all"
        )
        con.execute(f"create view leak as select * from read_csv('{outside / 'secret.csv'}')")
    assert run_sql(farm, "select * from customer_sensors order by all").table.to_pylist() == [
        {"customer": "fjordras", "sensors": 2},
        {"customer": "pondco", "sensors": 1},
    ]
    with pytest.raises(OxyError) as info:
        run_sql(farm, "select * from leak")
    assert "42" not in str(info.value)


def test_table_rendering_is_aligned_and_cut(farm: Warehouse) -> None:
    result = run_sql(
        farm,
        "select sensor_id, count(*) as n, avg(value) as mean, repeat('x', 12) as note "
        "from readings group by all order by sensor_id",
    )
    assert render_table(result, column_width=10).splitlines() == [
        "sensor_id   n  mean  note",
        "----------  -  ----  ----------",
        "pond-1|no…  4   6.5  xxxxxxxxx…",
        "ras1/tank…  3   8.2  xxxxxxxxx…",
        "ras1/tank…  2  7.25  xxxxxxxxx…",
        "(3 rows)",
    ]


def test_limit_truncates_and_says_so(farm: Warehouse) -> None:
    result = run_sql(farm, "select * from readings order by sensor_id, ts", limit=2)
    assert (result.rows, result.truncated) == (2, True)
    assert result.table.column("value").to_pylist() == [5.0, 6.0]
    assert render_table(result).splitlines()[-1].startswith("(2 rows shown; more exist")
    exact = run_sql(farm, "select * from readings", limit=9)
    assert (exact.rows, exact.truncated) == (9, False)
    assert run_sql(farm, "select * from readings", limit=0).rows == 0


def test_table_format_defaults_to_query_table_rows(farm: Warehouse, tmp_path: Path) -> None:
    from engine.config import Config

    cfg = tmp_path / "oxy.toml"
    cfg.write_text("[query]\ntable_rows = 4\n", encoding="utf-8")
    wh = Warehouse(farm.root, Config.load(cfg))
    result = run_sql(wh, "select * from readings")
    assert (result.rows, result.truncated, result.limit) == (4, True, 4)


# -- output formats ------------------------------------------------------------------------
QUERY = (
    "select r.sensor_id, r.ts, r.value, s.customer, s.bucket, s.timezone "
    "from readings r join sensors s using (sensor_id) order by r.sensor_id, r.ts"
)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_output_files_round_trip(farm: Warehouse, tmp_path: Path, fmt: str) -> None:
    expected = run_sql(farm, QUERY).table
    target = tmp_path / f"result.{fmt}"
    result = run_sql(farm, QUERY, fmt=fmt, output=target)
    assert (result.rows, result.output) == (9, target)
    if fmt == "parquet":
        assert pq.read_table(target).equals(expected)
    else:
        reader = "read_csv" if fmt == "csv" else "read_json"
        with duckdb.connect() as con:
            back = con.execute(
                f"select sensor_id, ts::timestamp as ts, value, customer, bucket::integer, "
                f"timezone from {reader}($path)",
                {"path": str(target)},
            ).fetchall()
        assert back == [tuple(r.values()) for r in expected.to_pylist()]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"result.{fmt}", "warehouse"]


def test_output_with_limit_and_lists(farm: Warehouse, tmp_path: Path) -> None:
    target = tmp_path / "sensors.json"
    result = run_sql(
        farm, "select sensor_id, levels from sensors order by 1", fmt="json", output=target, limit=2
    )
    assert result.rows == 2
    assert json.loads(target.read_text(encoding="utf-8")) == [
        {"sensor_id": "pond-1|north|do", "levels": ["pond-1", "north", "do"]},
        {"sensor_id": "ras1/tank-01/o2", "levels": ["ras1/tank-01/o2"]},
    ]


def test_csv_and_json_to_stdout(farm: Warehouse) -> None:
    csv_out = run_sql(
        farm, "select customer, count(*) as n from sensors group by 1 order by 1", fmt="csv"
    )
    assert csv_out.text == "customer,n\nfjordras,2\npondco,1\n"
    json_out = run_sql(farm, "select customer from sensors order by 1 limit 1", fmt="json")
    assert json.loads(json_out.text) == [{"customer": "fjordras"}]


def test_a_failing_query_leaves_an_existing_output_untouched(
    farm: Warehouse, tmp_path: Path
) -> None:
    target = tmp_path / "keep.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(OxyError, match="query failed: .*boom"):
        run_sql(farm, "select error('boom') from readings", fmt="csv", output=target)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("fmt", "output", "message"),
    [
        ("parquet", None, "--format parquet needs --output"),
        ("table", "x.csv", "--output needs --format csv, json or parquet"),
        ("csv", "warehouse/lake/readings/evil.csv", "inside the warehouse"),
        ("csv", "warehouse/oxy.duckdb", "inside the warehouse"),
        ("parquet", "no/such/dir/x.parquet", "does not exist"),
        ("xml", "x.xml", "unknown format"),
    ],
)
def test_bad_output_options_are_refused(
    farm: Warehouse, tmp_path: Path, fmt: str, output: str | None, message: str
) -> None:
    target = None if output is None else tmp_path / output
    with pytest.raises(OxyError, match=message):
        run_sql(farm, "select 1", fmt=fmt, output=target)


# -- refusals ------------------------------------------------------------------------------
HOSTILE = [
    "select * from read_csv('/etc/passwd')",
    "select * from read_csv_auto('/etc/passwd', header = false)",
    "select * from read_text('/etc/hostname')",
    "select * from read_blob('{db}')",
    "select * from read_blob('{root}/lake/readings/../../oxy.duckdb')",
    "select * from read_parquet('{outside}/secret.parquet')",
    "select * from '{outside}/secret.parquet'",
    "select * from read_csv('{outside}/secret.csv')",
    "select * from parquet_metadata('{outside}/secret.parquet')",
    "select * from glob('{root}/**')",
    "select * from glob('/etc/*')",
    "select * from sniff_csv('/etc/passwd')",
    "select * from read_json('/etc/passwd')",
    "copy readings to '{outside}/dump.csv'",
    "copy (select 1 as x) to '{root}/lake/readings/bucket=00/evil.parquet' (format parquet)",
    "copy (select 1 as x) to '{lake}' (format parquet, use_tmp_file false)",
    "copy (select 1 as x) to '{mart}' (format parquet, use_tmp_file false)",
    "export database '{root}/lake/readings' (format parquet)",
    "select 1); copy (select 1 as x) to '{lake}' (format csv, use_tmp_file false); select (1",
    "copy sensors from '{outside}/secret.csv'",
    "explain analyze copy readings to '{outside}/dump.csv'",
    "attach '{db}' as catalog",
    "attach '{outside}/new.duckdb' as fresh",
    "attach ':memory:' as scratch",
    "detach memory",
    "install httpfs",
    "force install httpfs",
    "load httpfs",
    "load '{outside}/evil.duckdb_extension'",
    "set enable_external_access = true",
    "set threads = 8",
    "set python_enable_replacements = true",
    "reset memory_limit",
    "set variable x = 1",
    "pragma enable_profiling",
    "call pragma_version()",
    "create table evil as select 1",
    "create view readings as select 1",
    "create macro evil() as 1",
    "create persistent secret (type s3)",
    "insert into sensors select * from sensors",
    "update sensors set customer = 'x'",
    "delete from sensors",
    "truncate sensors",
    "drop table sensors",
    "drop view readings",
    "alter table sensors rename to s2",
    "export database '{outside}/export'",
    "import database '{outside}/export'",
    "checkpoint",
    "vacuum",
    "begin transaction",
    "use memory",
    "prepare p as select 1",
    "update extensions",
    "select 1; drop table sensors",
    "with x as (select 1) insert into sensors select * from sensors",
]


def _fill(template: str, wh: Warehouse, outside: Path) -> str:
    lake = sorted(wh.lake_dir.rglob("*.parquet"))[0]
    mart = sorted(wh.marts_dir.rglob("*.parquet"))[0]
    return template.format(db=wh.db_path, root=wh.root, outside=outside, lake=lake, mart=mart)


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_statements_are_refused(farm: Warehouse, outside: Path, template: str) -> None:
    with pytest.raises(OxyError, match=r"^(refused|SQL syntax error): ") as info:
        run_sql(farm, _fill(template, farm, outside))
    assert "\n" not in str(info.value)
    assert "42" not in str(info.value)


def test_a_battery_of_hostile_queries_changes_nothing(
    farm: Warehouse, outside: Path, tmp_path: Path
) -> None:
    before = _hashes(farm)
    outside_before = sorted(p.name for p in outside.iterdir())
    runner = CliRunner()
    for template in HOSTILE:
        statement = _fill(template, farm, outside)
        with pytest.raises(OxyError):
            run_sql(farm, statement)
        result = runner.invoke(oxy, ["--warehouse", str(farm.root), "sql", statement])
        assert result.exit_code == 1
        assert result.output.startswith(("Error: refused: ", "Error: SQL syntax error: "))
        assert result.output.count("\n") == 1  # one line, no traceback
    # the same statements into the sandbox past the statement check: DuckDB runs them only
    # as subqueries of a SELECT (allowed_paths alone would let COPY overwrite a lake file)
    with sandbox(farm) as con:
        for template in HOSTILE:
            with pytest.raises((duckdb.Error, OxyError)):
                _execute(con, _fill(template, farm, outside)).fetchall()
    assert _hashes(farm) == before
    assert sorted(p.name for p in outside.iterdir()) == outside_before
    assert run_sql(farm, "select count(*) as n from sensors").table.to_pylist() == [{"n": 3}]


@pytest.mark.parametrize(
    "template",
    [
        "select * from read_csv('/etc/passwd')",
        "select * from read_blob('{db}')",
        "select * from read_parquet('{outside}/secret.parquet')",
        "copy readings to '{outside}/dump.csv'",
        "copy (select 1) to '{root}/lake/evil.parquet'",
        "attach '{db}' as catalog",
        "attach '{outside}/new.duckdb' as fresh",
        "install httpfs",
        "load httpfs",
        "set enable_external_access = true",
        "set threads = 1",
        "set lock_configuration = false",
        "set python_enable_replacements = true",
        "reset allowed_paths",
        "export database '{outside}/export'",
        "create persistent secret (type s3)",
    ],
)
def test_the_sandbox_itself_refuses_file_access_attach_install_load_and_set(
    farm: Warehouse, outside: Path, template: str
) -> None:
    with sandbox(farm) as con:
        with pytest.raises(
            duckdb.Error, match="disabled (by|through) configuration|has been locked|does not exist"
        ):
            con.execute(_fill(template, farm, outside)).fetchall()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv", "secret.parquet"]


def test_writes_inside_the_sandbox_never_reach_the_warehouse(farm: Warehouse) -> None:
    before = _hashes(farm)
    with sandbox(farm) as con:
        con.execute("drop table sensors")
        con.execute("delete from lake_files")
        con.execute("create table evil as select 1")
    assert _hashes(farm) == before
    assert run_sql(farm, "select count(*) as n from sensors").table.to_pylist() == [{"n": 3}]


def test_python_objects_are_not_reachable(farm: Warehouse) -> None:
    leaked_frame = pl.DataFrame({"secret": [42]})  # noqa: F841 -- the point of the test
    leaked_arrow = pa.table({"secret": [42]})  # noqa: F841
    for name in ("leaked_frame", "leaked_arrow"):
        with pytest.raises(OxyError, match=f"query failed: .*{name} does not exist"):
            run_sql(farm, f"select * from {name}")


def test_refusal_happens_before_the_warehouse_is_opened(tmp_path: Path, config) -> None:
    missing = Warehouse(tmp_path / "missing", config)
    with pytest.raises(OxyError, match="^refused: .*DROP"):
        run_sql(missing, "drop table sensors")
    with pytest.raises(OxyError, match="no warehouse at"):
        run_sql(missing, "select 1")
    with pytest.raises(OxyError, match="no SQL statement"):
        run_sql(missing, "-- nothing")
    with pytest.raises(OxyError, match="SQL syntax error"):
        run_sql(missing, "selec 1")


_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_WRITES = [
    "create table {name} as select {n} as x",
    "create or replace view sensors as select {n} as x",
    "create temp table {name} (x integer)",
    "insert into sensors (sensor_id) values ('{name}')",
    "update readings set value = {n}",
    "delete from lake_files where rows > {n}",
    "drop table if exists {name}",
    "alter table sensors add column {name} integer",
    "copy (select {n}) to '{path}/{name}.csv'",
    "copy sensors from '{path}/{name}.csv'",
    "attach '{path}/{name}.duckdb' as {name}",
    "detach {name}",
    "install {name}",
    "load {name}",
    "set {name} = {n}",
    "reset {name}",
    "pragma {name}",
    "call {name}()",
    "export database '{path}/{name}'",
    "select {n}; drop table sensors",
    "explain analyze delete from sensors where bucket = {n}",
]
_READS = [
    "select * from {fn}('{path}/{name}.csv')",
    "select * from {fn}('{path}')",
    "with t as (select * from {fn}('{path}/{name}')) select count(*) from t",
    "select count(*) from readings where sensor_id in (select * from {fn}('{path}'))",
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    template=st.sampled_from(_WRITES),
    name=_NAMES,
    n=st.integers(min_value=0, max_value=10**6),
    path=st.sampled_from(["/etc", "/tmp", "..", "lake/readings"]),
)
def test_generated_non_select_statements_are_refused(
    warehouse: Warehouse, template: str, name: str, n: int, path: str
) -> None:
    statement = template.format(name=name, n=n, path=path)
    with warehouse.connect_memory() as con:
        with pytest.raises(OxyError, match="^refused: |^SQL syntax error: "):
            read_only_statement(con, statement)
        # the second layer on its own: wrapped as a subquery, DuckDB cannot parse or run it
        # (file access is off too, so a regression could not touch anything here)
        con.execute("set enable_external_access = false")
        with pytest.raises((OxyError, duckdb.ParserException)):
            _execute(con, statement).fetchall()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    template=st.sampled_from(_READS),
    fn=st.sampled_from(
        ["read_csv", "read_csv_auto", "read_parquet", "read_json", "read_text", "read_blob", "glob"]
    ),
    name=_NAMES,
    where=st.sampled_from(["/etc", "{outside}", "{root}", "{root}/lake/readings", "{root}/.."]),
)
def test_generated_file_reads_are_refused(
    farm: Warehouse, outside: Path, template: str, fn: str, name: str, where: str
) -> None:
    path = where.format(outside=outside, root=farm.root)
    with pytest.raises(OxyError, match="^refused: "):
        run_sql(farm, template.format(fn=fn, name=name, path=path))


# -- CLI -----------------------------------------------------------------------------------
def test_cli_sql_prints_a_table_and_json(farm: Warehouse) -> None:
    runner = CliRunner()
    query = "select customer, count(*) as sensors from sensors group by 1 order by 1"
    result = runner.invoke(oxy, ["--warehouse", str(farm.root), "sql", query])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "customer  sensors\n--------  -------\nfjordras        2\npondco          1\n(2 rows)\n"
    )
    result = runner.invoke(oxy, ["--warehouse", str(farm.root), "--json", "sql", query])
    assert json.loads(result.output) == {
        "columns": ["customer", "sensors"],
        "rows": [{"customer": "fjordras", "sensors": 2}, {"customer": "pondco", "sensors": 1}],
        "truncated": False,
    }


def test_cli_sql_writes_files(farm: Warehouse, tmp_path: Path) -> None:
    target = tmp_path / "readings.parquet"
    result = CliRunner().invoke(
        oxy,
        [
            "--warehouse",
            str(farm.root),
            "sql",
            "select * from readings",
            "--format",
            "parquet",
            "--output",
            str(target),
            "--limit",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 5 rows to {target}\n"
    assert pq.read_table(target).num_rows == 5
    result = CliRunner().invoke(
        oxy, ["--warehouse", str(farm.root), "sql", "select 1 as one", "--format", "csv"]
    )
    assert result.output == "one\n1\n"


def test_cli_sql_errors_are_one_line(farm: Warehouse, tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in [
        (["sql", "select * from nope"], "Error: query failed: Catalog Error: Table with name nope"),
        (["sql", "drop table sensors"], "Error: refused: oxy sql only runs read-only queries"),
        (["sql", "select 1", "--format", "parquet"], "Error: --format parquet needs --output"),
    ]:
        result = runner.invoke(oxy, ["--warehouse", str(farm.root), *args])
        assert result.exit_code == 1
        assert result.output.startswith(message) and result.output.count("\n") == 1
    result = runner.invoke(oxy, ["--warehouse", str(tmp_path / "none"), "sql", "select 1"])
    assert result.exit_code == 1 and "Error: no warehouse at" in result.output


# -- status --------------------------------------------------------------------------------
def test_status_of_a_missing_warehouse(tmp_path: Path, config) -> None:
    wh = Warehouse(tmp_path / "nowhere", config)
    status = status_of(wh)
    assert (status["exists"], status["rows"], status["customers"]) == (False, 0, [])
    assert "no warehouse at" in status["message"]
    result = CliRunner().invoke(oxy, ["--warehouse", str(wh.root), "status"])
    assert result.exit_code == 0
    assert result.output == f"warehouse  {wh.root}\n{status['message']}\n"
    assert not wh.root.exists()  # status does not create a warehouse


def test_status_of_an_empty_warehouse(warehouse: Warehouse) -> None:
    with warehouse.writer():
        pass
    status = status_of(warehouse)
    assert status["exists"] and status["rows"] == 0 and status["sensors"] == 0
    assert status["first_ts"] is None and status["marts"] == [] and status["ingests"] == []
    assert "no readings yet" in status["message"]
    text = render_status(status)
    assert "readings   0 rows" in text and "time span  -" in text


def _log_ingests(wh: Warehouse) -> None:
    with wh.writer() as con:
        tables = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        if not {"ingest_log", "quarantine"} <= tables:
            pytest.skip("ingest_log / quarantine catalog tables are not in this tree")
        for i, (accepted, quarantined) in enumerate([(5, 2), (4, 0), (0, 0)]):
            con.execute(
                "insert into ingest_log by name select $id as ingest_id, 'ras' as source, "
                "$path as path, 'ab' as sha256, 100 as bytes, $read as rows_read, "
                "$accepted as accepted, 0 as duplicates, $q as quarantined, 1 as new_sensors, "
                "$at as started_at, $at as finished_at, 'ok' as status, null as note",
                {
                    "id": f"i{i}",
                    "path": f"/data/export_{i}.csv",
                    "read": accepted + quarantined,
                    "accepted": accepted,
                    "q": quarantined,
                    "at": datetime(2024, 4, 1, 12, i),
                },
            )
        con.execute(
            "insert into quarantine by name select 'i0' as ingest_id, 'ras' as source, "
            "'export_0.csv' as source_file, line, reason, now()::timestamp as quarantined_at "
            "from (values (2, 'sentinel value'), (3, 'unparseable timestamp')) v(line, reason)"
        )


def test_status_summarises_customers_rows_quarantine_ingests_and_marts(farm: Warehouse) -> None:
    _log_ingests(farm)
    status = status_of(farm, last_ingests=2)
    assert status["customers"] == [
        {
            "customer": "fjordras",
            "sensors": 2,
            "rows": 5,
            "first_ts": TS,
            "last_ts": TS.replace(minute=2),
        },
        {
            "customer": "pondco",
            "sensors": 1,
            "rows": 4,
            "first_ts": TS,
            "last_ts": TS.replace(minute=3),
        },
    ]
    assert (status["sensors"], status["rows"]) == (3, 9)
    assert (status["first_ts"], status["last_ts"]) == (TS, TS.replace(minute=3))
    assert status["quarantined"] == 2
    assert status["quarantine_reasons"] == [
        {"reason": "sentinel value", "rows": 1},
        {"reason": "unparseable timestamp", "rows": 1},
    ]
    assert [i["ingest_id"] for i in status["ingests"]] == ["i2", "i1"]  # newest first
    assert [(m["name"], m["rows"], m["files"]) for m in status["marts"]] == [("sensor_means", 3, 1)]
    assert status["message"] is None
    text = render_status(status)
    assert "readings   9 rows" in text
    assert "time span  2024-03-31 00:00 .. 2024-03-31 00:03 UTC" in text
    assert "quarantine 2 rows" in text
    assert "export_2.csv" in text and "export_0.csv" not in text


def test_cli_status_json_is_the_same_summary(farm: Warehouse) -> None:
    _log_ingests(farm)
    result = CliRunner().invoke(oxy, ["--warehouse", str(farm.root), "--json", "status"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["rows"] == 9 and payload["sensors"] == 3
    assert [c["customer"] for c in payload["customers"]] == ["fjordras", "pondco"]
    assert payload["first_ts"] == "2024-03-31 00:00:00"
    assert len(payload["ingests"]) == 3 and payload["quarantined"] == 2
    human = CliRunner().invoke(oxy, ["--warehouse", str(farm.root), "status", "--ingests", "1"])
    assert human.exit_code == 0
    assert "last 1 ingests" in human.output and "sensor_means" in human.output


def test_a_moved_warehouse_is_still_queryable(farm: Warehouse, tmp_path: Path, config) -> None:
    moved = tmp_path / "moved"
    farm.root.rename(moved)  # the catalog's own views still name the old absolute paths
    wh = Warehouse(moved, config)
    assert status_of(wh)["rows"] == 9
    assert run_sql(wh, "select count(*) as n from readings").table.to_pylist() == [{"n": 9}]
    assert run_sql(wh, "select count(*) as n from sensor_means").table.to_pylist() == [{"n": 3}]


@pytest.mark.parametrize("fmt", ["table", "parquet"])
def test_a_runaway_query_is_stopped_after_timeout(
    farm: Warehouse, tmp_path: Path, fmt: str
) -> None:
    from engine.config import Config

    cfg = tmp_path / "oxy.toml"
    cfg.write_text("[query]\ntimeout_s = 0.3\n", encoding="utf-8")
    wh = Warehouse(farm.root, Config.load(cfg))
    target = tmp_path / "out.parquet" if fmt == "parquet" else None
    with pytest.raises(OxyError, match=r"query stopped after 0.3 s \(query.timeout_s\)"):
        run_sql(wh, "select count(*) from range(100000000000)", fmt=fmt, output=target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oxy.toml", "warehouse"]


def test_cli_sql_reads_the_query_from_stdin(farm: Warehouse) -> None:
    result = CliRunner().invoke(
        oxy,
        ["--warehouse", str(farm.root), "sql", "-", "--format", "csv"],
        input="-- from a file\nselect count(*) as n from readings\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output == "n\n9\n"


def test_status_and_sql_after_a_real_ingest_with_bad_rows(tmp_path: Path) -> None:
    from engine.config import Config
    from engine.ingest import ingest_files

    cfg = tmp_path / "sources.toml"
    cfg.write_text(
        '[sources.fjord]\ncustomer = "fjordras"\ntimezone = "Europe/Oslo"\nunit = "mg/L"\n'
        'sensor_columns = ["Tag"]\ntime_column = "Timestamp"\nvalue_column = "Value"\n',
        encoding="utf-8",
    )
    export = tmp_path / "fjord.csv"
    export.write_text(
        "Tag,Timestamp,Value\n"
        "cage-1,2024-05-01T00:00:00Z,8.1\n"
        "cage-1,2024-05-01T00:01:00Z,8.2\n"
        "cage-2,2024-05-01T00:00:00Z,-9999\n"
        "cage-2,not a time,7.0\n"
        "cage-2,2024-05-01T00:02:00Z,7.4\n",
        encoding="utf-8",
    )
    wh = Warehouse(tmp_path / "warehouse", Config.load(cfg))
    (result,) = ingest_files(wh, [export])
    assert (result.rows_read, result.accepted, result.quarantined) == (5, 3, 2)

    status = status_of(wh)
    assert (status["rows"], status["sensors"], status["quarantined"]) == (3, 2, 2)
    assert [c["customer"] for c in status["customers"]] == ["fjordras"]
    assert sum(r["rows"] for r in status["quarantine_reasons"]) == 2
    assert [(i["path"], i["accepted"]) for i in status["ingests"]] == [(str(export), 3)]
    assert "fjord.csv" in render_status(status)
    lines = run_sql(wh, "select line from quarantine order by line").table.column("line")
    assert lines.to_pylist() == [4, 5]  # 1-based CSV lines, header = 1


# -- output only to regular files; CSV and JSON streamed ------------------------------------
def test_output_onto_a_device_a_fifo_or_a_socket_is_refused_and_left_alone(
    farm: Warehouse, tmp_path: Path
) -> None:
    import os
    import socket
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    link = tmp_path / "null-link"
    link.symlink_to("/dev/null")
    try:
        for target, kind in [
            (Path("/dev/null"), "a character device"),
            (Path("/dev/full"), "a character device"),
            (link, "a character device"),
            (fifo, "a FIFO"),
            (sock_path, "a socket"),
        ]:
            for fmt in ("csv", "parquet"):
                with pytest.raises(OxyError, match=f"is {kind}; oxy sql writes regular files only"):
                    run_sql(farm, "select 1 as one", fmt=fmt, output=target)
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISSOCK(os.stat(sock_path).st_mode)
    finally:
        server.close()
    result = CliRunner().invoke(
        oxy,
        ["--warehouse", str(farm.root), "sql", "select 1", "--format", "csv", "-o", "/dev/full"],
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: refused: --output /dev/full is a character device")


@pytest.mark.parametrize(
    "query",
    [
        QUERY,
        "select * from sensors order by sensor_id",  # lists, text
        "select 1 as x where false",  # no row: the header (or an empty array) alone
        "select range as n, 'a,\"b\"' as s from range(150000)",  # several batches, quoting
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_streamed_text_is_byte_for_byte_one_duckdb_copy(
    farm: Warehouse, tmp_path: Path, fmt: str, query: str
) -> None:
    import io

    stream = io.BytesIO()
    result = run_sql(farm, query, fmt=fmt, stream=stream)
    assert result.text is None
    reference = tmp_path / f"ref.{fmt}"
    options = "(format csv, header true)" if fmt == "csv" else "(format json, array true)"
    with sandbox(farm) as con:
        rows = con.sql(query).to_arrow_table()
    with duckdb.connect() as con:
        con.register("rows", rows)
        con.execute(f"copy (select * from rows) to '{reference}' {options}")
    assert stream.getvalue() == reference.read_bytes()
    assert result.rows == rows.num_rows
    target = tmp_path / f"out.{fmt}"
    run_sql(farm, query, fmt=fmt, output=target)
    assert target.read_bytes() == reference.read_bytes()


def test_cli_csv_streams_to_stdout_and_respects_the_limit(farm: Warehouse) -> None:
    result = CliRunner().invoke(
        oxy,
        [
            "--warehouse",
            str(farm.root),
            "sql",
            "select range as n from range(100000)",
            "--format",
            "csv",
            "--limit",
            "70000",
        ],
    )
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "n" and len(lines) == 70001 and lines[-1] == "69999"


# -- never an answer from a silently incomplete lake ----------------------------------------
def test_a_query_reading_a_damaged_table_is_refused_others_answer(
    farm: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    gone = farm.root / "lake/readings/bucket=07/b1.parquet"
    assert gone.is_file()
    gone.unlink()
    with pytest.raises(OxyError) as info:
        run_sql(farm, "select count(*) from readings")
    message = str(info.value)
    assert message.startswith("refused: the answer would be incomplete, 1 file(s)")
    assert "lake/readings/bucket=07/b1.parquet: listed in the catalog but missing" in message
    assert message.endswith("(--allow-incomplete answers without them)")
    # tables without a damaged file still answer; a join that reads readings does not
    assert run_sql(farm, "select count(*) as n from sensors").table.to_pylist() == [{"n": 3}]
    assert run_sql(farm, "select count(*) as n from sensor_means").table.to_pylist() == [{"n": 3}]
    with pytest.raises(OxyError, match="incomplete"):
        run_sql(farm, "select * from sensors s join readings r using (sensor_id)")
    with caplog.at_level("WARNING", logger="oxy"):
        partial = run_sql(farm, "select count(*) as n from readings", allow_incomplete=True)
    assert partial.table.to_pylist() == [{"n": 7}]  # all but tank-02's 2 of 9
    assert "answer without lake/readings/bucket=07/b1.parquet" in caplog.text


def test_a_truncated_lake_file_is_refused_not_a_traceback(farm: Warehouse) -> None:
    victim = farm.root / "lake/readings/bucket=07/b1.parquet"
    victim.write_bytes(victim.read_bytes()[:100])
    result = CliRunner().invoke(
        oxy, ["--warehouse", str(farm.root), "sql", "select * from readings"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bucket=07/b1.parquet: 100 bytes where" in result.output
    result = CliRunner().invoke(
        oxy,
        [
            "--warehouse",
            str(farm.root),
            "sql",
            "select count(*) as n from readings",
            "--allow-incomplete",
        ],
    )
    assert result.exit_code == 0 and result.output.endswith("n\n-\n7\n(1 row)\n")
    assert result.output.startswith("warning: answer without lake/readings/bucket=07/b1.parquet")


def test_status_lists_the_problems_loudly(farm: Warehouse) -> None:
    (farm.marts_dir / "sensor_means" / "data.parquet").unlink()
    status = status_of(farm)
    assert [(p["kind"], p["path"]) for p in status["problems"]] == [
        ("missing", "marts/sensor_means/data.parquet")
    ]
    text = render_status(status)
    assert "PROBLEMS   1: files not as the catalog recorded them" in text
    assert "marts/sensor_means/data.parquet: listed in the catalog but missing" in text
