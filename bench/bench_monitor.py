"""Benchmark: `oxy monitor` on a scored fleet against a bare scan of the same windows.

Setup (not timed): a warehouse of N sensors x D days of minute readings, scored by
``oxy score``. Then, each in its own process (so peak RSS is its own):
(a) ``engine.monitor.run_monitor`` — stale, anomaly-rate/severity, PSI drift per sensor and
    fleet, the table + mart write;
(b) the reference: one DuckDB query over the ``readings`` view computing, per sensor, the
    count, mean and deciles of the recent and reference windows — the least work any drift
    check must do.
Prints rows, wall time, peak RSS and the ratio (a) / (b).

    .venv/bin/python bench/bench_monitor.py --sensors 100 --days 14   # ~2 M rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from engine.warehouse import Warehouse
wh = Warehouse({wh!r})
t0 = time.perf_counter()
if {mode!r} == "monitor":
    from engine.monitor import run_monitor
    checks = len(run_monitor(wh).checks)
else:
    with wh.reader() as con:
        checks = len(con.execute(
            "with w as (select max(ts) as latest from readings) "
            "select sensor_id, ts > latest - interval 1 day as recent, count(*), avg(value), "
            "quantile_cont(value, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) "
            "from readings, w where ts > latest - interval 8 days group by all"
        ).fetchall())
wall = time.perf_counter() - t0
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({{"checks": checks, "wall": wall, "rss_mb": rss}}))
"""


def build(root: Path, sensors: int, days: int) -> int:
    import numpy as np
    import polars as pl

    from engine import anomaly
    from engine.warehouse import Warehouse, canonical_readings

    wh = Warehouse(root)
    rng = np.random.default_rng(0)
    minutes = np.arange(days * 1440)
    start = datetime(2024, 3, 1)
    ts = pl.Series([start + timedelta(minutes=int(m)) for m in minutes])
    frames = []
    for i in range(sensors):
        value = 8 + np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.1, minutes.size)
        if i % 10 == 0:  # a tenth of the fleet drifts on the last day
            value[-1440:] += 2
        frames.append(pl.DataFrame({"sensor_id": f"s{i:04d}", "ts": ts, "value": value}))
    readings = pl.concat(frames).with_columns(
        unit=pl.lit("mg/L"),
        customer=pl.lit("bench"),
        source_file=pl.lit("bench"),
        ingested_at=pl.lit(datetime(2024, 4, 1)),
    )
    with wh.writer() as con:
        ids = readings["sensor_id"].unique().sort().to_list()
        wh.register_sensors(
            con,
            [
                {
                    "sensor_id": s,
                    "customer": "bench",
                    "source": "bench",
                    "timezone": "UTC",
                    "unit": "mg/L",
                    "levels": [s],
                }
                for s in ids
            ],
        )
        con.register("batch_readings", canonical_readings(readings))
        con.execute("begin")
        wh.publish(con, wh.stage_readings(con, "bench"))
        con.execute("commit")
    anomaly.score(wh)
    return readings.height


def run(mode: str, wh: Path) -> dict[str, float]:
    code = CHILD.format(root=str(ROOT), wh=str(wh), mode=mode)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--days", type=int, default=14)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wh = Path(tmp) / "wh"
        t0 = time.perf_counter()
        rows = build(wh, args.sensors, args.days)
        setup = time.perf_counter() - t0
        monitor = run("monitor", wh)
        bare = run("bare", wh)
    print(f"monitor: {args.sensors} sensors x {args.days} days = {rows:,} rows")
    print(f"  setup (load + oxy score, not timed below): {setup:.1f} s")
    for name, m in (("run_monitor", monitor), ("reference: one windowed scan", bare)):
        print(f"  {name:30} {m['wall']:7.2f} s  peak RSS {m['rss_mb']:7.0f} MB")
    print(f"  monitor checks written: {monitor['checks']:,}")
    print(
        f"  ratio monitor / reference: time {monitor['wall'] / bare['wall']:.2f}x, "
        f"RSS {monitor['rss_mb'] / bare['rss_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
