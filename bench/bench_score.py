"""Benchmark `oxy score`: full and incremental scoring, against references measured in the run.

Targets (issue 21): a full `oxy score --full` of the readings of
`oxy demo-data big --sensors-per-site 20 --days 90` (100 sensors, ~12.8 M readings) at least
5x faster than a pandas implementation of the seed's rules on the same rows, with peak RSS
<= 1.5 GB; one new day for 100 sensors <= 1 s; 200 sensors x 365 days (~105 M readings) with
peak RSS <= 2 GB (``--big``). References in the same run: the pandas seed rules, a bare DuckDB
Parquet copy of the readings, and polars writing the finished ``anomaly_scores`` rows (the
output's own floor).

Every measured step runs in its own subprocess so that its peak RSS is its own. The figures go
to bench/RESULTS.md (section "score").

Usage::

    .venv/bin/python bench/bench_score.py                 # 100 sensors x 90 days
    .venv/bin/python bench/bench_score.py --pairs 3       # 3 pandas / oxy full-run pairs
    .venv/bin/python bench/bench_score.py --big           # + 200 sensors x 365 days (RSS)
    .venv/bin/python bench/bench_score.py --only-big      # just the 200 x 365 RSS run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START = datetime(2024, 1, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stage(wh: Any, con: Any, frame: Any, batch: str) -> None:
    from engine.warehouse import canonical_readings

    con.register("batch_readings", canonical_readings(frame))
    con.execute("begin")
    wh.publish(con, wh.stage_readings(con, batch))
    con.execute("commit")
    con.unregister("batch_readings")


def demo_warehouse(root: Path, sensors_per_site: int, days: int) -> tuple[int, int]:
    """The readings of ``oxy demo-data big --sensors-per-site N --days D`` in a warehouse: all
    but the last day as the first batches (one per export), scored; the last day as a new
    batch, not scored. Returns (readings, readings of the last day)."""
    import polars as pl

    from engine.anomaly import score
    from engine.config import Config
    from engine.demo import simulate
    from engine.warehouse import Warehouse

    demo = simulate(sensors_per_site=sensors_per_site, days=days, seed=7)
    wh = Warehouse(root, Config.load())
    mappings = demo.sources
    sensors = [
        {
            "sensor_id": row["sensor_id"],
            "customer": row["customer"],
            "source": row["source"],
            "timezone": row["timezone"],
            "unit": row["unit"],
            "levels": row["sensor_id"].split(mappings[row["source"]].sensor_separator),
        }
        for row in demo.sensors.iter_rows(named=True)
    ]
    readings = demo.readings.with_columns(
        source_file=pl.lit("demo.csv"), ingested_at=pl.lit(datetime(2025, 1, 1))
    )
    last_day = demo.start + timedelta(days=days - 1)
    with wh.writer() as con:
        wh.register_sensors(con, sensors)
        for (customer,), part in readings.filter(pl.col("ts") < last_day).group_by("customer"):
            _stage(wh, con, part.sort("sensor_id", "ts"), f"base-{customer}")
    score(wh)
    new = readings.filter(pl.col("ts") >= last_day).sort("sensor_id", "ts")
    with wh.writer() as con:
        _stage(wh, con, new, "last-day")
    return readings.height, new.height


def generate(root: Path, sensors: int, days: int, batch_days: int = 30) -> int:
    """Synthetic minute readings (diel cycle, noise, 0.2 % missing minutes) as lake batches:
    the 200 x 365 memory run (cheaper to make than the demo's physics)."""
    import numpy as np
    import pyarrow as pa

    from engine.config import Config
    from engine.warehouse import READINGS_SCHEMA, Warehouse

    wh = Warehouse(root, Config.load())
    rng = np.random.default_rng(0)
    ids = [f"bench|site{i // 10:02d}|probe{i % 10}" for i in range(sensors)]
    rows = 0
    with wh.writer() as con:
        wh.register_sensors(
            con,
            [
                {
                    "sensor_id": s,
                    "customer": "bench",
                    "source": "bench",
                    "timezone": "Europe/Oslo",
                    "unit": "mg/L",
                    "levels": s.split("|"),
                }
                for s in ids
            ],
        )
        for first_day in range(0, days, batch_days):
            span = min(batch_days, days - first_day)
            minutes = np.arange(first_day * 1440, (first_day + span) * 1440)
            for chunk in range(0, sensors, 25):
                parts = []
                for s in ids[chunk : chunk + 25]:
                    keep = rng.random(minutes.size) > 0.002
                    m = minutes[keep]
                    value = 8 + 1.5 * np.sin(2 * np.pi * (m / 1440 - 0.3))
                    value = np.round(value + rng.normal(0, 0.04, m.size), 2)
                    parts.append(
                        pa.table(
                            {
                                "sensor_id": pa.array([s] * m.size),
                                "ts": pa.array(
                                    np.datetime64(START, "us") + m.astype("timedelta64[m]")
                                ),
                                "value": pa.array(value),
                                "unit": pa.array(["mg/L"] * m.size),
                                "customer": pa.array(["bench"] * m.size),
                                "source_file": pa.array(["bench.csv"] * m.size),
                                "ingested_at": pa.array(
                                    [datetime(2025, 1, 1)] * m.size, type=pa.timestamp("us")
                                ),
                                "temperature_c": pa.nulls(m.size, pa.float64()),
                                "salinity": pa.nulls(m.size, pa.float64()),
                            }
                        )
                    )
                batch = pa.concat_tables(parts).cast(READINGS_SCHEMA)
                rows += batch.num_rows
                con.register("batch_readings", batch)
                con.execute("begin")
                wh.publish(con, wh.stage_readings(con, f"d{first_day:03d}-s{chunk:03d}"))
                con.execute("commit")
                con.unregister("batch_readings")
    return rows


# engine functions timed per stage by phase_score: (module, function) -> label
STAGES: dict[tuple[str, str], str] = {
    ("anomaly", "site_stage"): "sites",
    ("anomaly", "lake_paths"): "read",
    ("anomaly", "read_lake"): "read",
    ("detectors", "minute_features"): "minute features",
    ("detectors", "hourly_statistics"): "hourly statistics",
    ("detectors", "baselines"): "baselines",
    ("detectors", "score_inputs"): "inputs",
    ("detectors", "detector_scores"): "scores",
    ("anomaly", "_store_hourly"): "store hours",
    ("anomaly", "_write_scores"): "write scores",
    ("anomaly", "_write_events"): "write events",
}


def _timed_stages(seconds: dict[str, float]) -> None:
    """Wrap the stages of ``engine.anomaly.score`` so that each adds its wall time (the
    site stage's own reads count as sites)."""
    import engine.anomaly as anomaly
    import engine.detectors as detectors

    modules = {"anomaly": anomaly, "detectors": detectors}
    active: list[str] = []

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if active:  # nested in a timed stage: its time is the outer stage's
                return fn(*args, **kwargs)
            active.append(label)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                active.pop()
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started

        return wrapper

    for (module, name), label in STAGES.items():
        setattr(modules[module], name, timed(label, getattr(modules[module], name)))


def phase_score(root: Path, full: bool) -> dict:
    from engine.anomaly import score
    from engine.config import Config
    from engine.warehouse import Warehouse

    stages: dict[str, float] = {}
    _timed_stages(stages)
    started = time.perf_counter()
    summary = score(Warehouse(root, Config.load()), full=full)
    seconds = time.perf_counter() - started
    stages["other"] = seconds - sum(stages.values())
    return {
        "seconds": seconds,
        "rows": summary.rows_scored,
        "anomalies": summary.anomalies,
        "rss_mb": peak_rss_mb(),
        "stages": stages,
    }


def phase_copy(root: Path) -> dict:
    """A bare DuckDB Parquet copy of the readings (read the lake, write one file)."""
    from engine.config import Config
    from engine.warehouse import Warehouse

    wh = Warehouse(root, Config.load())
    out = Path(tempfile.mkdtemp()) / "copy.parquet"
    with wh.reader() as con:
        files = [str(p) for p in wh.files(con, "readings")]
        started = time.perf_counter()
        con.execute(
            f"copy (select * from read_parquet({files!r})) to '{out}' "
            "(format parquet, compression zstd)"
        )
        seconds = time.perf_counter() - started
    shutil.rmtree(out.parent)
    return {"seconds": seconds, "rss_mb": peak_rss_mb()}


def phase_write_floor(root: Path) -> dict:
    """The output's own floor: polars reading the finished ``anomaly_scores`` rows and
    writing them as one zstd Parquet file."""
    import polars as pl

    files = sorted((root / "marts" / "anomaly_scores").glob("bucket=*/month=*/*.parquet"))
    frame = pl.read_parquet(files, hive_partitioning=False)
    out = Path(tempfile.mkdtemp()) / "scores.parquet"
    started = time.perf_counter()
    frame.write_parquet(out, compression="zstd", row_group_size=32_768)
    seconds = time.perf_counter() - started
    shutil.rmtree(out.parent)
    return {"seconds": seconds, "rows": frame.height, "rss_mb": peak_rss_mb()}


def phase_pandas(root: Path) -> dict:
    """The seed's rules with pandas groupby-rolling (time windows), same rows."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from engine.config import Config
    from engine.warehouse import Warehouse

    wh = Warehouse(root, Config.load())
    with wh.reader() as con:
        files = [str(p) for p in wh.files(con, "readings")]
    started = time.perf_counter()
    df = pd.concat(
        [pq.read_table(f, columns=["sensor_id", "ts", "value"]).to_pandas() for f in files]
    )
    df = df.sort_values(["sensor_id", "ts"]).reset_index(drop=True)
    g = df.set_index("ts").groupby("sensor_id")["value"]
    mean60 = g.rolling("60min").mean().to_numpy()
    std60 = g.rolling("60min").std().to_numpy()
    std15 = g.rolling("15min").std().to_numpy()
    z = np.abs(df["value"].to_numpy() - mean60) / np.where(std60 > 0, std60, np.nan)
    df["absz"] = z
    coll = df.set_index("ts").groupby("sensor_id")["absz"].rolling("120min").mean().to_numpy()
    local = df["ts"].dt.tz_localize("UTC").dt.tz_convert("Europe/Oslo").dt.hour
    by_hour = df.groupby([df["sensor_id"], local])["value"]
    ctx = np.abs(df["value"] - by_hour.transform("mean")) / by_hour.transform("std")
    df["std60"] = std60
    typical = df.groupby("sensor_id")["std60"].transform("median").to_numpy()
    step = df.groupby("sensor_id")["value"].diff().to_numpy()
    next_step = -df.groupby("sensor_id")["value"].diff(-1).to_numpy()

    def scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.nan_to_num(np.clip((x - lo) / (hi - lo), 0, 1))

    severity = np.maximum.reduce(
        [
            scale(z, 2, 5),
            scale(coll, 1, 3),
            scale(ctx.to_numpy(), 2, 4),
            (std60 < 0.1 * typical).astype(float),
            (
                (np.sign(step) * np.sign(next_step) < 0)
                & (np.minimum(np.abs(step), np.abs(next_step)) > 3 * typical)
            ).astype(float),
            (std15 > 1.5 * typical).astype(float),
        ]
    )
    flagged = int((severity >= 0.5).sum())
    return {
        "seconds": time.perf_counter() - started,
        "rows": len(df),
        "flagged": flagged,
        "rss_mb": peak_rss_mb(),
    }


def phase_setup(root: Path, sensors_per_site: int, days: int) -> dict:
    started = time.perf_counter()
    rows, last = demo_warehouse(root, sensors_per_site, days)
    return {"rows": rows, "last_day": last, "seconds": time.perf_counter() - started}


def phase_generate(root: Path, sensors: int, days: int) -> dict:
    started = time.perf_counter()
    return {"rows": generate(root, sensors, days), "seconds": time.perf_counter() - started}


def run_phase(name: str, root: Path, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--root", str(root), *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_line(result: dict) -> str:
    stages = result["stages"]
    order = [*dict.fromkeys(STAGES.values()), "other"]
    return ", ".join(f"{label} {stages.get(label, 0.0):.2f}" for label in order)


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def run_main(root: Path, args: argparse.Namespace, table: list[str], notes: list[str]) -> None:
    setup = run_phase(
        "setup", root, "--sensors-per-site", str(args.sensors_per_site), "--days", str(args.days)
    )
    sensors = 5 * args.sensors_per_site
    print(
        f"data: the readings of `oxy demo-data big --sensors-per-site {args.sensors_per_site} "
        f"--days {args.days}`: {sensors} sensors, {setup['rows']:,} readings (set up and the "
        f"first {args.days - 1} days scored in {setup['seconds']:.0f} s)"
    )
    inc = run_phase("score", root)
    print(
        f"incremental, one new day: {inc['seconds']:.2f} s, peak RSS {inc['rss_mb']:.0f} MB "
        f"({setup['last_day']:,} new readings, {inc['rows']:,} rescored; load {load()})"
    )
    print(f"    where the time goes (s): {stage_line(inc)}")
    pairs = []
    for pair in range(1, args.pairs + 1):
        full = run_phase("score", root, "--full")
        pandas = run_phase("pandas", root)
        pairs.append((full, pandas))
        print(
            f"pair {pair}: oxy score --full {full['seconds']:.2f} s (peak RSS "
            f"{full['rss_mb']:.0f} MB, {full['rows']:,} rows, {full['anomalies']:,} anomalous); "
            f"pandas seed rules {pandas['seconds']:.2f} s ({pandas['rss_mb']:.0f} MB) -> "
            f"{pandas['seconds'] / full['seconds']:.2f}x (load {load()})"
        )
        print(f"    where the time goes (s): {stage_line(full)}")
    copy = run_phase("copy", root)
    floor = run_phase("write_floor", root)
    ratios = sorted(p["seconds"] / f["seconds"] for f, p in pairs)
    median = ratios[len(ratios) // 2]
    full = min((f for f, _ in pairs), key=lambda f: f["seconds"])
    peak = max(f["rss_mb"] for f, _ in pairs)
    print(
        f"bare DuckDB copy of the readings {copy['seconds']:.2f} s; polars writing the "
        f"{floor['rows']:,} scored rows {floor['seconds']:.2f} s"
    )
    table += [
        f"| full `oxy score --full`, {sensors} sensors x {args.days} days "
        f"({setup['rows']:,} readings) | {full['seconds']:.1f} s (best of {len(pairs)}), "
        f"peak RSS {peak:.0f} MB | pandas seed rules {min(p['seconds'] for _, p in pairs):.1f} s:"
        f" **{median:.2f}x** faster (median of {len(pairs)} pairs, "
        f"{ratios[0]:.2f}-{ratios[-1]:.2f}x) | >= 5x, <= 1500 MB |",
        f"| ... where the time goes (s) | {stage_line(full)} | bare DuckDB copy of the readings "
        f"{copy['seconds']:.1f} s; polars writing the scored rows {floor['seconds']:.1f} s | |",
        f"| incremental: one new day for {sensors} sensors ({setup['last_day']:,} readings) | "
        f"{inc['seconds']:.2f} s, peak RSS {inc['rss_mb']:.0f} MB | ({stage_line(inc)}) | <= 1 s |",
    ]
    notes.append(f"load average during the run: {load()} (2 cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors-per-site", type=int, default=20)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--pairs", type=int, default=3, help="oxy / pandas full runs, paired")
    parser.add_argument("--big", action="store_true", help="also 200 sensors x 365 days (RSS)")
    parser.add_argument("--only-big", action="store_true", help="only 200 sensors x 365 days")
    parser.add_argument("--no-write", action="store_true", help="print only (no RESULTS.md)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sensors", type=int, default=200, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = {
            "setup": lambda: phase_setup(args.root, args.sensors_per_site, args.days),
            "generate": lambda: phase_generate(args.root, args.sensors, args.days),
            "score": lambda: phase_score(args.root, args.full),
            "copy": lambda: phase_copy(args.root),
            "write_floor": lambda: phase_write_floor(args.root),
            "pandas": lambda: phase_pandas(args.root),
        }[args.phase]()
        print(json.dumps(result))
        return

    table = ["| run | oxy | reference | target |", "|---|---|---|---|"]
    notes: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="oxy-bench-"))
    try:
        root = base / "wh"
        if not args.only_big:
            run_main(root, args, table, notes)
        if args.big or args.only_big:
            shutil.rmtree(root, ignore_errors=True)
            gen = run_phase("generate", root, "--sensors", "200", "--days", "365")
            big = run_phase("score", root, "--full")
            print(
                f"200 sensors x 365 days ({gen['rows']:,} readings): oxy score --full "
                f"{big['seconds']:.0f} s, peak RSS {big['rss_mb']:.0f} MB (load {load()})"
            )
            table.append(
                f"| 200 sensors x 365 days ({gen['rows']:,} synthetic readings) | "
                f"{big['seconds']:.0f} s, peak RSS **{big['rss_mb']:.0f} MB** | | <= 2000 MB |"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if not args.no_write:
        from bench.results import write_section

        body = "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes)
        write_section("score", body, title="Anomaly scoring: speed and memory")


if __name__ == "__main__":
    main()
