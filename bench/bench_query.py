"""Benchmark: the cost of `oxy sql`'s sandbox against a bare read-only DuckDB connection.

Builds a temporary warehouse of synthetic minute readings (``--sensors`` x ``--days``), then
runs the same queries (a) through ``engine.query.run_sql`` (catalog copy, views, lock-down,
query) and (b) on a plain ``read_only=True`` connection to the catalog (the reference: what
an analyst would do without the sandbox). Prints wall times, the ratio, and peak RSS.

    .venv/bin/python bench/bench_query.py --sensors 50 --days 30
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import Config  # noqa: E402
from engine.query import run_sql  # noqa: E402
from engine.warehouse import READINGS_SCHEMA, Warehouse  # noqa: E402

QUERIES = {
    "rows per customer (join)": (
        "select s.customer, count(*) as readings, avg(r.value) as mean_do "
        "from readings r join sensors s using (sensor_id) group by all order by all"
    ),
    "hourly means, one day": (
        "select sensor_id, time_bucket(interval 1 hour, ts) as hour, avg(value) as mean_do "
        "from readings where ts >= timestamp '2024-10-05' and ts < timestamp '2024-10-06' "
        "group by all order by all"
    ),
    "first 50 rows": "select * from readings limit 50",
    "sensors table": "select customer, count(*) from sensors group by all",
}


def build(root: Path, sensors: int, days: int) -> int:
    wh = Warehouse(root, Config.load())
    with wh.writer() as con:
        ids = [f"site-{i % 5}|cage-{i:03d}|do" for i in range(sensors)]
        wh.register_sensors(
            con,
            [
                {
                    "sensor_id": s,
                    "customer": f"customer-{i % 3}",
                    "source": "bench",
                    "timezone": "Europe/Oslo",
                    "unit": "mg/L",
                    "levels": s.split("|"),
                }
                for i, s in enumerate(ids)
            ],
        )
        con.execute(
            "create temp table batch_readings as "
            "select sensor_id, timestamp '2024-10-01' + to_minutes(m) as ts, "
            "8 + sin(m / 229.0) + 0.1 * random() as value, 'mg/L' as unit, "
            "'customer-' || (hash(sensor_id) % 3)::varchar as customer, "
            "'bench.csv' as source_file, timestamp '2024-12-01' as ingested_at "
            "from unnest($ids) t(sensor_id), range($minutes) r(m)",
            {"ids": ids, "minutes": days * 1440},
        )
        con.execute("begin")
        wh.publish(con, wh.stage_readings(con, "bench"))
        con.execute("commit")
        rows = con.execute("select count(*) from readings").fetchall()[0][0]
    assert [f.name for f in READINGS_SCHEMA] == [
        r[0]
        for r in duckdb.connect(str(root / "oxy.duckdb"), read_only=True)
        .execute("describe readings")
        .fetchall()
    ]
    return rows


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        print(build(args.build_only, args.sensors, args.days))
        return
    with tempfile.TemporaryDirectory(prefix="oxy-bench-query-") as tmp:
        root = Path(tmp) / "warehouse"
        start = time.perf_counter()
        # built in a child process, so that the peak RSS below is the queries' own
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--sensors",
                str(args.sensors),
                "--days",
                str(args.days),
                "--build-only",
                str(root),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = int(child.stdout.strip())
        print(
            f"warehouse: {rows:,} readings, {args.sensors} sensors, {args.days} days "
            f"(built in {time.perf_counter() - start:.1f} s)"
        )
        wh = Warehouse(root, Config.load())
        print(f"{'query':28s} {'oxy sql':>9s} {'bare ro':>9s} {'ratio':>6s}")
        for name, sql in QUERIES.items():
            sandboxed = best_of(lambda sql=sql: run_sql(wh, sql, limit=10_000))

            def bare(sql: str = sql) -> None:
                with duckdb.connect(str(wh.db_path), read_only=True) as con:
                    con.execute("set TimeZone = 'UTC'")
                    con.execute(sql).fetchall()

            reference = best_of(bare)
            print(f"{name:28s} {sandboxed:8.3f}s {reference:8.3f}s {sandboxed / reference:5.1f}x")
        out = Path(tmp) / "all.parquet"
        export = best_of(
            lambda: run_sql(wh, "select * from readings", fmt="parquet", output=out), repeat=1
        )

        def bare_copy() -> None:
            with duckdb.connect(str(wh.db_path), read_only=True) as con:
                con.execute(f"copy (select * from readings) to '{Path(tmp) / 'ref.parquet'}'")

        reference = best_of(bare_copy, repeat=1)
        print(
            f"{'export all to parquet':28s} {export:8.3f}s {reference:8.3f}s "
            f"{export / reference:5.1f}x"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the queries and exports {peak:.0f} MB (query.memory_limit 1GB)")


if __name__ == "__main__":
    main()
