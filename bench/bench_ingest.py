"""Benchmark: `oxy ingest` of the demo exports against a bare DuckDB copy of the same files.

Uses (or generates once) the demo exports in ``bench/out/demo_<sensors>x<days>/`` (git-ignored;
default 100 sensors x 90 days, ~13 M rows). Runs, each in its own process so that its peak
RSS is its own, and alternating so both see the same machine load:

(a) ``engine.ingest.ingest_files`` of every export into a fresh warehouse (parse, validate,
    DST-safe times, dedupe against the lake, sorted bucket files, catalog transaction);
(b) the reference: for each export, a bare DuckDB
    ``COPY (SELECT * FROM read_csv(...)) TO '...parquet'`` (``read_parquet`` for Parquet)
    with the same DuckDB threads and memory limit.

Prints rows, best wall time over ``--repeat`` runs (and that run's CPU seconds, user + sys),
rows/s, peak RSS, Parquet bytes written and the ratios (a)/(b).
Targets: ratio <= 2, peak RSS <= 2 GB.

    .venv/bin/python bench/bench_ingest.py                          # 100 sensors x 90 days
    .venv/bin/python bench/bench_ingest.py --sensors-per-site 2 --days 35 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

INGEST = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from engine.config import Config
from engine.ingest import ingest_files
from engine.warehouse import Warehouse
wh = Warehouse({warehouse!r}, Config.load({config!r}))
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
c0, t0 = cpu(), time.perf_counter()
results = ingest_files(wh, [{exports!r}])
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
rows = 0
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
c0, t0 = cpu(), time.perf_counter()
for i, path in enumerate(sorted(Path({exports!r}).glob("*.*"))):
    reader = {{".csv": "read_csv", ".parquet": "read_parquet"}}.get(path.suffix)
    if reader is None or path.name == "labels.csv":
        continue
    out = Path({out!r}) / f"{{i}}.parquet"
    con.execute(f"copy (select * from {{reader}}('{{path}}')) to '{{out}}' (format parquet)")
    rows += con.execute(f"select count(*) from read_parquet('{{out}}')").fetchall()[0][0]
wall, cpu_s = time.perf_counter() - t0, cpu() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = sum(p.stat().st_size for p in Path({out!r}).glob("*.parquet"))
print(json.dumps({{"rows": rows, "wall": wall, "cpu": cpu_s, "rss_mb": rss,
                   "out_mb": out / 1e6}}))
"""


def child(code: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def exports(sensors_per_site: int, days: int) -> Path:
    out = ROOT / "bench" / "out" / f"demo_{5 * sensors_per_site}x{days}"
    if not (out / "sources.toml").is_file():
        sys.path.insert(0, str(ROOT))
        from engine.demo import generate_demo

        print(f"generating demo exports into {out} (once) ...", flush=True)
        generate_demo(out, sensors_per_site=sensors_per_site, days=days)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors-per-site", type=int, default=20)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    demo = exports(args.sensors_per_site, args.days)
    ours: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"bare{i}"
            out.mkdir()
            bare.append(child(BARE.format(root=str(ROOT), exports=str(demo), out=str(out))))
            shutil.rmtree(out)
            warehouse = Path(tmp) / f"warehouse{i}"
            code = INGEST.format(
                root=str(ROOT),
                warehouse=str(warehouse),
                config=str(demo / "sources.toml"),
                exports=str(demo),
            )
            ours.append(child(code))
            shutil.rmtree(warehouse)
    a = min(ours, key=lambda m: m["wall"])
    b = min(bare, key=lambda m: m["wall"])
    rss_a = max(m["rss_mb"] for m in ours)
    rss_b = max(m["rss_mb"] for m in bare)
    sizes = sum(p.stat().st_size for p in demo.glob("*.*") if p.name != "labels.csv")
    print(
        f"ingest of {demo.name}: {a['rows']:,.0f} rows ({a['accepted']:,.0f} accepted), "
        f"{sizes / 1e6:,.0f} MB, best of {args.repeat}"
    )
    for name, m, rss in (
        ("oxy ingest (all exports)", a, rss_a),
        ("reference: bare DuckDB COPY", b, rss_b),
    ):
        print(
            f"  {name:30s} {m['wall']:6.2f} s  {m['rows'] / m['wall'] / 1e6:5.2f} M rows/s  "
            f"CPU {m['cpu']:5.1f} s  peak RSS {rss:6.0f} MB  Parquet written {m['out_mb']:4.0f} MB"
        )
    print(
        f"  ratio to reference: time {a['wall'] / b['wall']:.2f}x (target <= 2), "
        f"CPU {a['cpu'] / b['cpu']:.2f}x, "
        f"peak RSS {rss_a / rss_b:.2f}x ({rss_a / 1024:.2f} GB, target <= 2 GB)"
    )


if __name__ == "__main__":
    main()
