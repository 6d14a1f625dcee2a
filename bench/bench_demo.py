"""Benchmark: `oxy demo-data` at fleet scale against a bare dump of the same rows.

Runs, each in its own process (so peak RSS is its own):
(a) ``engine.demo.generate_demo`` — the three exports (interleaved, formatted times,
    Parquet + CSV), labels and mappings, written a week at a time;
(b) the reference: ``engine.demo.simulate`` of the same fleet in memory, then one polars
    ``write_csv`` of the canonical readings — the least work that gets these rows on disk.
Prints rows, wall time, rows/s, peak RSS and the ratio (a) / (b).

    .venv/bin/python bench/bench_demo.py --sensors-per-site 20 --days 90   # 100 sensors, ~13 M rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from engine.demo import generate_demo, simulate
n, days, out = {n}, {days}, Path({out!r})
t0 = time.perf_counter()
if {mode!r} == "demo":
    rows = generate_demo(out, sensors_per_site=n, days=days)["rows"]
else:
    readings = simulate(sensors_per_site=n, days=days).readings
    readings.write_csv(out / "readings.csv")
    rows = readings.height
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"rows": rows, "wall": wall, "rss_mb": rss}}))
"""


def run(mode: str, n: int, days: int, out: Path) -> dict[str, float]:
    out.mkdir()
    code = CHILD.format(root=str(ROOT), n=n, days=days, out=str(out), mode=mode)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors-per-site", type=int, default=20)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = run("demo", args.sensors_per_site, args.days, Path(tmp) / "demo")
        bare = run("bare", args.sensors_per_site, args.days, Path(tmp) / "bare")
    sensors = 5 * args.sensors_per_site
    print(f"demo-data: {sensors} sensors x {args.days} days = {demo['rows']:,} rows")
    for name, m in (("generate_demo (3 exports)", demo), ("reference: simulate+write_csv", bare)):
        print(
            f"  {name:32s} {m['wall']:6.2f} s  {m['rows'] / m['wall'] / 1e6:5.2f} M rows/s  "
            f"peak RSS {m['rss_mb']:6.0f} MB"
        )
    print(
        f"  ratio to reference: time {demo['wall'] / bare['wall']:.2f}x, "
        f"peak RSS {demo['rss_mb'] / bare['rss_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
