"""Benchmark: `oxy ingest` of each demo export against a bare DuckDB copy of the same file.

Uses (or generates once) the demo exports in ``bench/out/demo_<sensors>x<days>/`` (git-ignored;
default 100 sensors x 90 days: seacage.csv 355 MB / 5.1 M rows, pond.csv 252 MB / 5.1 M rows,
ras.parquet 2.6 M rows). For each export, each run in its own process (so that its peak RSS is
its own) and alternating, so that both see the same machine load:

(a) ``engine.ingest.ingest_files`` of the export into a fresh warehouse (sha256, parse and
    validate every field, DST-safe times, dedupe against the lake, sorted bucket files,
    catalog transaction);
(b) the reference: a bare DuckDB ``COPY (SELECT * FROM read_csv(FILE)) TO '...parquet'``
    (``read_parquet`` for Parquet) with the same DuckDB threads and memory limit.

Prints, per export and for all of them, the rows, the best wall time over ``--repeat`` runs
(with that run's CPU seconds, user + sys), rows/s, peak RSS, the Parquet bytes written, the
ratio (a)/(b) and the load average; writes the table to bench/RESULTS.md (section
``ingest``). Targets (issue 20): the largest export <= 1.5x the bare copy of it in wall time;
peak RSS <= 2 GB.

``--fuzz N`` first runs the malformed-export hypothesis tests (tests/test_ingest_fuzz.py) with
N fresh examples each (default 1,000) and reports their outcome in the same section.

    .venv/bin/python bench/bench_ingest.py --repeat 3            # 100 sensors x 90 days
    .venv/bin/python bench/bench_ingest.py --repeat 3 --fuzz 1000
    .venv/bin/python bench/bench_ingest.py --sensors-per-site 2 --days 35 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import write_section  # noqa: E402

TARGET_RATIO = 1.5  # the largest export, wall time against the bare copy
TARGET_RSS_GB = 2.0

INGEST = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from engine.config import Config
from engine.ingest import ingest_files
from engine.warehouse import Warehouse
wh = Warehouse({warehouse!r}, Config.load({config!r}))
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
c0, t0 = cpu(), time.perf_counter()
results = ingest_files(wh, [{export!r}])
wall, cpu_s = time.perf_counter() - t0, cpu() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lake = sum(p.stat().st_size for p in (wh.root / "lake").rglob("*.parquet"))
print(json.dumps({{"rows": sum(r.rows_read for r in results),
                   "accepted": sum(r.accepted for r in results),
                   "wall": wall, "cpu": cpu_s, "rss_mb": rss, "out_mb": lake / 1e6}}))
"""

BARE = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import duckdb
from engine.config import Config
settings = Config.load()["warehouse"]
con = duckdb.connect(config={{"threads": int(settings["threads"]),
                              "memory_limit": str(settings["memory_limit"])}})
path, out = Path({export!r}), Path({out!r})
reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
c0, t0 = cpu(), time.perf_counter()
con.execute(f"copy (select * from {{reader}}($path)) to '{{out}}' (format parquet)",
            {{"path": str(path)}})
wall, cpu_s = time.perf_counter() - t0, cpu() - c0
rows = con.execute("select count(*) from read_parquet($out)", {{"out": str(out)}}).fetchall()[0][0]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"rows": rows, "wall": wall, "cpu": cpu_s, "rss_mb": rss,
                   "out_mb": out.stat().st_size / 1e6}}))
"""


def child(code: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def exports(sensors_per_site: int, days: int) -> Path:
    out = ROOT / "bench" / "out" / f"demo_{5 * sensors_per_site}x{days}"
    if not (out / "sources.toml").is_file():
        from engine.demo import generate_demo

        print(f"generating demo exports into {out} (once) ...", flush=True)
        generate_demo(out, sensors_per_site=sensors_per_site, days=days)
    return out


def export_files(demo: Path) -> list[Path]:
    """The demo's exports, largest first (labels.csv is no export)."""
    files = [
        p for p in demo.iterdir() if p.suffix in (".csv", ".parquet") and p.name != "labels.csv"
    ]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def measure(demo: Path, export: Path, repeat: int, tmp: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"oxy": [], "bare": []}
    for i in range(repeat):
        out = tmp / f"bare{i}.parquet"
        runs["bare"].append(
            child(BARE.format(root=str(ROOT), export=str(export), out=str(out))) | {"load": load()}
        )
        out.unlink(missing_ok=True)
        warehouse = tmp / f"warehouse{i}"
        code = INGEST.format(
            root=str(ROOT),
            warehouse=str(warehouse),
            config=str(demo / "sources.toml"),
            export=str(export),
        )
        runs["oxy"].append(child(code) | {"load": load()})
        shutil.rmtree(warehouse)
    return runs


def fuzz(examples: int) -> str:
    """Run the malformed-export hypothesis tests with ``examples`` fresh examples each."""
    env = os.environ | {"OXY_FUZZ_EXAMPLES": str(examples)}
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_ingest_fuzz.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(done.stdout[-3000:] if done.returncode else f"fuzz: {last}")
    verdict = "passed" if done.returncode == 0 else "**FAILED**"
    return (
        f"Malformed exports (`OXY_FUZZ_EXAMPLES={examples:,} pytest tests/test_ingest_fuzz.py`, "
        f"fresh random examples: {examples:,} CSV files and {examples:,} Parquet files, each "
        f"ingested): {verdict} in {seconds:.0f} s — `{last}`. Asserted for every example: no "
        "traceback (only a one-line refusal that changes nothing), rows read = accepted + "
        "duplicate + quarantined, the lake and the quarantine grow by exactly those counts."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors-per-site", type=int, default=20)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--fuzz", type=int, nargs="?", const=1000, default=0, help="fuzz examples per test"
    )
    parser.add_argument("--no-write", action="store_true", help="print only (no RESULTS.md)")
    args = parser.parse_args()
    notes = []
    if args.fuzz:
        notes.append(fuzz(args.fuzz))
    demo = exports(args.sensors_per_site, args.days)
    files = export_files(demo)
    print(f"exports of {demo.name}, best of {args.repeat} (load {load():.1f} on 2 cores)")
    rows_out = []
    best: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        for export in files:
            runs = measure(demo, export, args.repeat, Path(tmp))
            a = min(runs["oxy"], key=lambda m: m["wall"])
            b = min(runs["bare"], key=lambda m: m["wall"])
            best[export.name] = {"oxy": a, "bare": b}
            ratios = sorted(
                o["wall"] / r["wall"] for o, r in zip(runs["oxy"], runs["bare"], strict=True)
            )
            rss = max(m["rss_mb"] for m in runs["oxy"])
            loads = [m["load"] for m in runs["oxy"] + runs["bare"]]
            line = (
                f"  {export.name:12s} {a['rows']:>11,.0f} rows  oxy {a['wall']:6.2f} s "
                f"(CPU {a['cpu']:5.1f} s, {rss:5.0f} MB)  bare copy {b['wall']:6.2f} s "
                f"(CPU {b['cpu']:5.1f} s, {b['rss_mb']:5.0f} MB)  "
                f"ratio {a['wall'] / b['wall']:.2f}x "
                f"(pairs {ratios[0]:.2f}-{ratios[-1]:.2f}x), CPU {a['cpu'] / b['cpu']:.2f}x  "
                f"load {min(loads):.1f}-{max(loads):.1f}"
            )
            print(line, flush=True)
            size = export.stat().st_size / 1e6
            rows_out.append(
                f"| {export.name} | {size:,.0f} MB | {a['rows']:,.0f} | "
                f"{a['wall']:.2f} s ({a['rows'] / a['wall'] / 1e6:.2f} M rows/s), CPU "
                f"{a['cpu']:.1f} s, {rss:,.0f} MB, lake {a['out_mb']:.0f} MB | "
                f"{b['wall']:.2f} s, CPU {b['cpu']:.1f} s, {b['rss_mb']:,.0f} MB, "
                f"{b['out_mb']:.0f} MB | **{a['wall'] / b['wall']:.2f}x** "
                f"({ratios[0]:.2f}-{ratios[-1]:.2f}x) | {a['cpu'] / b['cpu']:.2f}x | "
                f"{min(loads):.1f}-{max(loads):.1f} |"
            )
    total = {
        k: {f: sum(best[e][k][f] for e in best) for f in ("rows", "wall", "cpu", "out_mb")}
        for k in ("oxy", "bare")
    }
    peak = max(best[e]["oxy"]["rss_mb"] for e in best)
    largest = files[0].name
    ratio = best[largest]["oxy"]["wall"] / best[largest]["bare"]["wall"]
    met = "met" if ratio <= TARGET_RATIO else "**not met**"
    rss_met = "met" if peak / 1024 <= TARGET_RSS_GB else "**not met**"
    a, b = total["oxy"], total["bare"]
    print(
        f"  {'all':12s} {a['rows']:>11,.0f} rows  oxy {a['wall']:6.2f} s (CPU {a['cpu']:5.1f} s)  "
        f"bare copy {b['wall']:6.2f} s (CPU {b['cpu']:5.1f} s)  "
        f"ratio {a['wall'] / b['wall']:.2f}x, "
        f"CPU {a['cpu'] / b['cpu']:.2f}x"
    )
    print(
        f"  target: {largest} <= {TARGET_RATIO}x the bare copy: {ratio:.2f}x, {met}; "
        f"peak RSS <= {TARGET_RSS_GB:.0f} GB: {peak / 1024:.2f} GB, {rss_met}"
    )
    rows_out.append(
        f"| **all** | | {a['rows']:,.0f} | {a['wall']:.2f} s, CPU {a['cpu']:.1f} s | "
        f"{b['wall']:.2f} s, CPU {b['cpu']:.1f} s | **{a['wall'] / b['wall']:.2f}x** | "
        f"{a['cpu'] / b['cpu']:.2f}x | |"
    )
    body = "\n".join(
        [
            f"`oxy ingest` of each export of the demo (`{demo.name}`: `oxy demo-data` with "
            f"{args.sensors_per_site} sensors per site, {args.days} days) into a fresh "
            "warehouse, against a bare DuckDB `COPY (SELECT * FROM read_csv(FILE)) TO "
            "'x.parquet'` of the same file (`read_parquet` for Parquet) with the same DuckDB "
            f"threads and memory limit; each run its own process, the two alternating; best "
            f"wall time of {args.repeat} (its CPU, user + sys), the ratio of the best times "
            "and the range of the paired ratios. The ingest also hashes the file, checks "
            "every field, converts local times, dedupes against the lake and writes sorted, "
            "encoded bucket files in one catalog transaction.",
            "",
            "| export | size | rows | oxy ingest | bare DuckDB COPY | time ratio | CPU ratio "
            "| load (1 min) |",
            "|---|---|---|---|---|---|---|---|",
            *rows_out,
            "",
            f"Target (issue 20): the largest export ({largest}) <= {TARGET_RATIO}x the bare "
            f"copy in wall time: **{ratio:.2f}x**, {met}. Peak RSS <= {TARGET_RSS_GB:.0f} GB: "
            f"{peak / 1024:.2f} GB, {rss_met}. The machine is shared: the load column is the "
            "1-minute load average (2 cores) during each export's runs.",
            *(line for note in notes for line in ("", note)),
        ]
    )
    if not args.no_write:
        print(f"wrote {write_section('ingest', body, title='Ingest against a bare DuckDB copy')}")


if __name__ == "__main__":
    main()
