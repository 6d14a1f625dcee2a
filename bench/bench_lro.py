"""Detection on real labelled river DO (Logan River Observatory, 15-min cadence), oxy beside
the seed's rules.

Data: ../shared/data/lro (NOTES.md there): naive local times at fixed UTC-07:00, DO in mg/L,
a reading is labelled anomalous when ``do_qual`` is not NULL; contiguous labelled readings
form one event (type ``technician``). Read in place, never copied into the repository.

Usage::

    .venv/bin/python bench/bench_lro.py [--data DIR] [--output eval_lro.json]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lro"
SITES = ("MainStreet", "Mendon", "TonyGrove")


def load(root: Path, data: Path) -> Path:
    """Readings of every site file into a fresh warehouse; labels CSV written beside it."""
    import polars as pl

    from engine.config import Config
    from engine.warehouse import Warehouse, canonical_readings

    wh = Warehouse(root, Config.load())
    readings, labels = [], []
    for site in SITES:
        for path in sorted(data.glob(f"{site}20*.csv")):
            raw = pl.read_csv(path, infer_schema=False, null_values=["NULL", ""])
            frame = raw.select(
                pl.lit(f"lro|{site}|do").alias("sensor_id"),
                (pl.col("datetime").str.to_datetime(time_unit="us") + timedelta(hours=7)).alias(
                    "ts"
                ),
                pl.col("do").cast(pl.Float64).alias("value"),
                pl.col("do_qual").is_not_null().alias("labelled"),
            ).filter(pl.col("value").is_not_null())
            readings.append(frame)
            events = (
                frame.with_columns(
                    (pl.col("labelled") != pl.col("labelled").shift(1))
                    .fill_null(True)
                    .cum_sum()
                    .alias("run")
                )
                .filter(pl.col("labelled"))
                .group_by("sensor_id", "run")
                .agg(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"))
            )
            labels.append(
                events.select("sensor_id", "start", "end", pl.lit("technician").alias("type"))
            )
    frame = pl.concat(readings).unique(["sensor_id", "ts"], keep="first").sort("sensor_id", "ts")
    frame = frame.with_columns(
        pl.lit("mg/L").alias("unit"),
        pl.lit("lro").alias("customer"),
        pl.lit("lro.csv").alias("source_file"),
        pl.lit(datetime(2024, 1, 1)).alias("ingested_at"),
    )
    with wh.writer() as con:
        wh.register_sensors(
            con,
            [
                {
                    "sensor_id": s,
                    "customer": "lro",
                    "source": "lro",
                    "timezone": "Etc/GMT+7",
                    "unit": "mg/L",
                    "levels": s.split("|"),
                }
                for s in frame["sensor_id"].unique().to_list()
            ],
        )
        con.register("batch_readings", canonical_readings(frame))
        con.execute("begin")
        wh.publish(con, wh.stage_readings(con, "lro"))
        con.execute("commit")
    labels_path = root.parent / "lro_labels.csv"
    pl.concat(labels).sort("sensor_id", "start").with_columns(
        pl.col("start").dt.strftime("%Y-%m-%dT%H:%M:%S"),
        pl.col("end").dt.strftime("%Y-%m-%dT%H:%M:%S"),
    ).write_csv(labels_path)
    return labels_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, help="write the evaluation JSON here")
    args = parser.parse_args()

    from engine.anomaly import score
    from engine.config import Config
    from engine.evaluate import evaluate, render
    from engine.warehouse import Warehouse

    base = Path(tempfile.mkdtemp(prefix="oxy-lro-"))
    try:
        labels = load(base / "wh", args.data)
        wh = Warehouse(base / "wh", Config.load())
        started = time.perf_counter()
        summary = score(wh, full=True)
        print(
            f"scored {summary.rows_scored:,} LRO readings in {time.perf_counter() - started:.1f} s"
        )
        result = evaluate(wh, labels, seed_rules=True, output=args.output)
        print(render(result))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
