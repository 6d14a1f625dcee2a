"""Detection on real labelled river DO (Logan River Observatory, 15-min cadence), oxy beside
the seed's rules: the ``lro`` source of ``bench/detection_suite.py`` alone, as ``oxy evaluate``
prints it.

Data: ../shared/data/lro (NOTES.md there; loader and labels in ``bench/sources.py``): naive
local times at fixed UTC-07:00, DO in mg/L, a reading is labelled anomalous when ``do_qual`` is
not NULL; contiguous labelled readings form one event (type ``technician``). The files are
written as an export and ingested by oxy's ingest (values it quarantines, such as 109.8 mg/L,
are not scored). Read in place, never copied into the repository.

Usage::

    .venv/bin/python bench/bench_lro.py [--data DIR] [--output eval_lro.json]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lro"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, help="write the evaluation JSON here")
    args = parser.parse_args()

    from bench.detection_suite import prepare
    from bench.sources import Source, build_lro
    from engine.anomaly import score
    from engine.evaluate import evaluate, render

    base = Path(tempfile.mkdtemp(prefix="oxy-lro-"))
    try:
        source = Source("lro", "lro", "real", "15 min", lambda f: build_lro(f, args.data))
        prepared = prepare(source, base)
        wh = prepared.warehouse()
        started = time.perf_counter()
        summary = score(wh, full=True)
        print(
            f"scored {summary.rows_scored:,} LRO readings in {time.perf_counter() - started:.1f} s"
        )
        labels = prepared.root / "data" / "labels.csv"
        result = evaluate(wh, labels, seed_rules=True, output=args.output)
        print(render(result))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
