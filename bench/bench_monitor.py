"""Benchmark: how often `oxy monitor` cries wolf on healthy data, and how soon it catches real
problems; then its run time against a bare scan of the same windows.

**Alert rates.** Each source is loaded into a warehouse, scored by ``oxy score``, then replayed
day by day: ``run_monitor(as_of=<midnight UTC>)`` judges the warehouse as it was at the end of
each day, exactly as a nightly run would (readings after ``as_of`` are ignored). After every
run a stand-in production forecast is written (the seasonal naive: each sensor's last day,
repeated), so the forecast checks run too. A *healthy sensor-day* is one whose judged window
(``monitor.recent_window``) holds no labelled minute and in whose last day the sensor sent at
least 90 % of its usual readings (a real outage is a real problem, not a false alarm). The
table gives, per source, the fraction of healthy sensor-days with an alert and with a warning
(targets: <= 1 % alerts, <= 5 % warnings) and which checks raised them.

**Injected problems.** The same data again with episodes of three real problems, each on its
own sensor and start day, 10 days long, spaced apart:

* *stopped* — the sensor sends nothing (then resumes);
* *fouled* — the probe reads low, worse every day (-3 % of its level per day, then cleaned);
* *model stale* — production's forecast for the sensor stops learning: it repeats the profile of
  the day before the episode instead of the latest day.

For each kind: episodes caught (an alert on that sensor during the episode) and how many nightly
runs after the first one that could see it the first alert came (0 = the first run after the
start; a warning counts in the second column).

Sources: ``demo`` (oxy's own generator, labelled; the calibration defaults were chosen on it),
``weather`` (this script's independent generator: 24 sensors at 4 sites sharing day-to-day
weather, healthy throughout), and the real sets in ../shared/data (lro: 3 rivers, 15-min,
technician labels; lake_mendota and fishpond_buoy are shorter than one calibration needs and
are listed as such). LRO was not looked at while choosing the defaults: it is the held-out
figure.

**Run time.** As before: a fleet of N sensors x D days scored, then in separate processes (a)
``run_monitor`` and (b) one DuckDB query of per-sensor counts, means and deciles of the same
windows — the least work any drift check must do. Prints wall time, peak RSS and the ratio.

    .venv/bin/python bench/bench_monitor.py                 # all of it, writes bench/RESULTS.md
    .venv/bin/python bench/bench_monitor.py --only demo     # one source, no timing, no write
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DATA = ROOT.parent / "shared" / "data"
EPISODE_DAYS = 10
CACHE = ROOT / "bench" / "out"
CONFIG_PATH: Path | None = None  # --config: try other [monitor] settings (no RESULTS.md write)
DAY = timedelta(days=1)
KINDS = ("stopped", "fouled", "model stale")


# -- sources --------------------------------------------------------------------------------


@dataclass
class Source:
    """Canonical readings (sensor_id, ts, value), sensors (sensor_id, timezone) and labels."""

    name: str
    readings: pl.DataFrame
    timezones: dict[str, str]
    labels: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(
            schema={"sensor_id": pl.String, "start": pl.Datetime("us"), "end": pl.Datetime("us")}
        )
    )
    note: str = ""


def demo_source(sensors_per_site: int, days: int) -> Source:
    from engine.demo import simulate

    data = simulate(sensors_per_site=sensors_per_site, days=days, seed=11, clean_days=7)
    return Source(
        "demo",
        data.readings.select("sensor_id", "ts", "value"),
        dict(zip(data.sensors["sensor_id"], data.sensors["timezone"], strict=True)),
        data.labels.select("sensor_id", "start", "end"),
        "oxy's generator (injected anomalies labelled); defaults chosen on it",
    )


def weather_source(days: int, seed: int = 3) -> Source:
    """24 sensors at 4 sites: a diel cycle whose level and amplitude move with each site's
    day-to-day weather (AR(1)), a slow seasonal decline, sensor noise. Healthy throughout."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * 1440)
    start = datetime(2025, 6, 1)
    ts = pl.datetime_range(start, start + timedelta(minutes=int(minutes[-1])), "1m", eager=True)
    frames = []
    for site in range(4):
        level = np.zeros(days)
        amp = np.zeros(days)
        for d in range(1, days):
            level[d] = 0.7 * level[d - 1] + rng.normal(0, 0.3)
            amp[d] = 0.6 * amp[d - 1] + rng.normal(0, 0.15)
        daily_level = np.repeat(level, 1440)
        daily_amp = np.repeat(np.clip(1 + amp, 0.3, None), 1440)
        for s in range(6):
            base = rng.uniform(6, 10)
            own_amp = rng.uniform(0.5, 2.0)
            phase = rng.uniform(-0.5, 0.5)
            value = (
                base
                - 0.01 * minutes / 1440
                + daily_level * rng.uniform(0.7, 1.3)
                + own_amp * daily_amp * np.sin(2 * np.pi * (minutes / 1440 - 0.3) + phase)
                + rng.normal(0, rng.uniform(0.03, 0.15), minutes.size)
            )
            frames.append(
                pl.DataFrame({"sensor_id": f"site{site}|do{s}", "ts": ts, "value": value})
            )
    readings = pl.concat(frames)
    zones = {sid: "UTC" for sid in readings["sensor_id"].unique()}
    return Source(
        "weather",
        readings,
        zones,
        note="this script's generator, healthy throughout; site peers added after its first run",
    )


def lro_source() -> Source | None:
    folder = DATA / "lro"
    if not folder.is_dir():
        return None
    readings, labels = [], []
    for path in sorted(folder.glob("*20*.csv")):
        site = path.stem[:-4]
        raw = pl.read_csv(path, infer_schema=False, null_values=["NULL", ""])
        frame = raw.select(
            pl.lit(f"lro|{site}|do").alias("sensor_id"),
            (pl.col("datetime").str.to_datetime(time_unit="us") + timedelta(hours=7)).alias("ts"),
            pl.col("do").cast(pl.Float64).alias("value"),
            pl.col("do_qual").is_not_null().alias("labelled"),
        ).filter(pl.col("value").is_not_null())
        readings.append(frame)
    frame = pl.concat(readings).unique(["sensor_id", "ts"], keep="first").sort("sensor_id", "ts")
    runs = frame.with_columns(
        (pl.col("labelled") != pl.col("labelled").shift(1).over("sensor_id"))
        .fill_null(True)
        .cum_sum()
        .alias("run")
    ).filter(pl.col("labelled"))
    labels = runs.group_by("sensor_id", "run").agg(
        pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end")
    )
    zones = {sid: "Etc/GMT+7" for sid in frame["sensor_id"].unique()}
    return Source(
        "lro",
        frame.select("sensor_id", "ts", "value"),
        zones,
        labels.select("sensor_id", "start", "end"),
        "real rivers, 15-min, technician labels; held out",
    )


def short_real_sets() -> list[tuple[str, str]]:
    """Real sets too short for one calibrated judgement, with their span."""
    out = []
    for name, path, column in (
        ("lake_mendota", DATA / "lake_mendota" / "mendota.doobs", "dateTime"),
        ("fishpond_buoy", DATA / "fishpond_buoy" / "waterquality_data.csv", "received_at"),
    ):
        if not path.exists():
            continue
        sep = "\t" if path.suffix == ".doobs" else ","
        ts = pl.read_csv(path, separator=sep, infer_schema=False)[column].str.to_datetime(
            time_unit="us", strict=False, time_zone=None if sep == "\t" else "UTC"
        )
        out.append((name, f"{(ts.max() - ts.min()).total_seconds() / 86400:.1f} days"))
    return out


# -- injections -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    kind: str
    sensor_id: str
    start: datetime  # midnight UTC
    end: datetime


def plan_episodes(source: Source, first_day: datetime, last_day: datetime) -> list[Episode]:
    """Episodes of each kind, round robin over the sensors, starting on staggered days in the
    judgeable span and spaced so that a sensor has at most one at a time (and recovers); an
    episode is kept only where its sensor sent data on every one of its days."""
    sensors = sorted(source.timezones)
    days_with_data = {
        (sid, day)
        for sid, day in source.readings.select("sensor_id", pl.col("ts").dt.truncate("1d"))
        .unique()
        .iter_rows()
    }
    span_days = (last_day - first_day).days - EPISODE_DAYS
    if span_days < 1:
        return []
    episodes = []
    slots = max(1, span_days // (EPISODE_DAYS + 20) + 1)  # per sensor: episodes 30 days apart
    rng = np.random.default_rng(0)
    i = 0
    for slot in range(slots):
        for sensor in sensors:
            offset = slot * (EPISODE_DAYS + 20) + int(rng.integers(0, 7))
            if offset > span_days:
                continue
            start = first_day + offset * DAY
            if any((sensor, start + d * DAY) not in days_with_data for d in range(EPISODE_DAYS)):
                continue
            episodes.append(Episode(KINDS[i % 3], sensor, start, start + EPISODE_DAYS * DAY))
            i += 1
    return episodes


def inject(readings: pl.DataFrame, episodes: list[Episode]) -> pl.DataFrame:
    """The readings with stopped and fouled episodes applied (model stale is in the forecasts)."""
    for e in episodes:
        inside = (
            (pl.col("sensor_id") == e.sensor_id)
            & (pl.col("ts") >= e.start)
            & (pl.col("ts") < e.end)
        )
        if e.kind == "stopped":
            readings = readings.filter(~inside)
        elif e.kind == "fouled":
            days_in = (pl.col("ts") - e.start).dt.total_seconds() / 86400
            readings = readings.with_columns(
                value=pl.when(inside)
                .then(pl.col("value") * (1 - 0.03 * days_in))
                .otherwise(pl.col("value"))
            )
    return readings


# -- the replay -----------------------------------------------------------------------------


def load(root: Path, source: Source, readings: pl.DataFrame) -> object:
    from engine import anomaly
    from engine.config import Config
    from engine.warehouse import Warehouse, canonical_readings

    wh = Warehouse(root, Config.load(CONFIG_PATH))
    frame = readings.with_columns(
        unit=pl.lit("mg/L"),
        customer=pl.lit(source.name),
        source_file=pl.lit(f"{source.name}.parquet"),
        ingested_at=pl.lit(datetime(2024, 1, 1)),
    )
    with wh.writer() as con:
        wh.register_sensors(
            con,
            [
                {
                    "sensor_id": sid,
                    "customer": source.name,
                    "source": source.name,
                    "timezone": source.timezones[sid],
                    "unit": "mg/L",
                    "levels": sid.split("|"),
                }
                for sid in sorted(source.timezones)
            ],
        )
        con.register("batch_readings", canonical_readings(frame))
        con.execute("begin")
        wh.publish(con, wh.stage_readings(con, source.name))
        con.execute("commit")
        con.unregister("batch_readings")
    anomaly.score(wh, full=True)
    return wh


def stand_in_run(wh: object, readings: pl.DataFrame, first_day: datetime) -> None:
    """A production run whose test metrics are the seasonal naive's over the week before the
    replay starts (what the stand-in forecasts are)."""
    from engine.registry import record_run

    week = readings.filter(pl.col("ts").is_between(first_day - 7 * DAY, first_day, "left"))
    naive = week.join(
        week.with_columns(pl.col("ts") + DAY).rename({"value": "yhat"}), on=["sensor_id", "ts"]
    )
    err = (naive["value"] - naive["yhat"]).to_numpy()
    folder = wh.registry_dir / "runs" / "naive"  # type: ignore[attr-defined]
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "run_id": "naive",
        "created_at": first_day.isoformat(),
        "params": {},
        "metrics": {
            "test": {
                "mae": float(np.mean(np.abs(err))),
                "rmse": float(np.sqrt(np.mean(err**2))),
                "mase": 1.0,
            }
        },
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    record_run(wh, "naive", meta)


def write_forecast(
    wh: object, readings: pl.DataFrame, origin: datetime, frozen: dict[str, datetime]
) -> None:
    """The stand-in forecast from ``origin``: each sensor's last day repeated one day ahead (a
    sensor in a model-stale episode repeats the day before the episode instead)."""
    last_day = readings.filter(pl.col("ts").is_between(origin - DAY, origin, "right"))
    parts = [
        last_day.filter(~pl.col("sensor_id").is_in(list(frozen))).with_columns(pl.col("ts") + DAY)
    ]
    for sensor_id, since in frozen.items():
        day_before = readings.filter(
            (pl.col("sensor_id") == sensor_id)
            & pl.col("ts").is_between(since - DAY, since, "right")
        )
        parts.append(day_before.with_columns(pl.col("ts") + (origin - since) + DAY))
    frame = pl.concat(parts).select(
        pl.lit("naive").alias("run_id"),
        "sensor_id",
        pl.lit(origin).cast(pl.Datetime("us")).alias("origin_ts"),
        "ts",
        ((pl.col("ts") - origin).dt.total_minutes()).alias("horizon_min"),
        pl.col("value").alias("yhat"),
        (pl.col("value") - 1).alias("yhat_lo"),
        (pl.col("value") + 1).alias("yhat_hi"),
    )
    with wh.writer() as con:  # type: ignore[attr-defined]
        con.register("stand_in_forecast", frame.to_arrow())
        wh.write_mart(con, "forecasts", "select * from stand_in_forecast")  # type: ignore[attr-defined]
        con.unregister("stand_in_forecast")
        wh.refresh_mart_views(con)  # type: ignore[attr-defined]


def replay(
    wh: object,
    readings: pl.DataFrame,
    first_day: datetime,
    last_day: datetime,
    frozen_at: Callable[[datetime], dict[str, datetime]],
) -> pl.DataFrame:
    """Nightly monitor runs from ``first_day`` to ``last_day``; every check of every run."""
    from engine.monitor import run_monitor

    stand_in_run(wh, readings, first_day)
    write_forecast(wh, readings, first_day - DAY, frozen_at(first_day - DAY))
    rows = []
    # nights after a day in which no sensor sent anything (a long outage of the whole source,
    # e.g. LRO between its 2019 and 2020 files) are not replayed: nobody runs the loop then
    live = set(readings.select((pl.col("ts").dt.truncate("1d") + DAY).unique())["ts"].to_list())
    day = first_day - DAY
    while day < last_day:
        day += DAY
        if day not in live:
            continue
        result = run_monitor(wh, as_of=day)
        rows += [
            {"time": day, "scope": c.scope, "check": c.check, "status": c.status}
            for c in result.checks
        ]
        write_forecast(wh, readings, day, frozen_at(day))
    return pl.DataFrame(rows)


def judgeable(readings: pl.DataFrame, config: object) -> tuple[datetime, datetime]:
    """First and last nightly run with a full calibration history behind it."""
    from engine.monitor import parse_interval

    cfg = config["monitor"]  # type: ignore[index]
    need = (
        parse_interval(cfg["recent_window"])
        + parse_interval(cfg["reference_window"])
        + int(cfg["min_calibration_windows"]) * parse_interval(cfg["step"])
    )
    first = readings["ts"].min() + need
    first = datetime(first.year, first.month, first.day) + DAY
    last = readings["ts"].max()
    return first, datetime(last.year, last.month, last.day)


# -- figures --------------------------------------------------------------------------------


def healthy_days(
    source: Source, readings: pl.DataFrame, checks: pl.DataFrame, recent: timedelta
) -> pl.DataFrame:
    """Per sensor and run: worst status and the checks that raised it, on healthy days only."""
    sensor_rows = checks.filter(pl.col("scope") != "fleet").rename({"scope": "sensor_id"})
    runs = sensor_rows.select("sensor_id", "time").unique()
    # labelled minutes in the judged window
    labelled = runs.join(source.labels, on="sensor_id", how="inner").filter(
        (pl.col("start") <= pl.col("time")) & (pl.col("end") > pl.col("time") - recent)
    )
    # coverage of the last day against the sensor's usual readings per day
    per_day = (
        readings.with_columns(time=pl.col("ts").dt.truncate("1d") + DAY)
        .group_by("sensor_id", "time")
        .len()
    )
    usual = per_day.group_by("sensor_id").agg(pl.col("len").median().alias("usual"))
    covered = per_day.join(usual, on="sensor_id").filter(pl.col("len") >= 0.9 * pl.col("usual"))
    healthy = runs.join(labelled.select("sensor_id", "time"), on=["sensor_id", "time"], how="anti")
    healthy = healthy.join(covered.select("sensor_id", "time"), on=["sensor_id", "time"])
    rank = {"skipped": 0, "ok": 1, "warn": 2, "alert": 3}
    graded = sensor_rows.join(healthy, on=["sensor_id", "time"]).with_columns(
        rank=pl.col("status").replace_strict(rank, return_dtype=pl.Int8)
    )
    return graded


def rates(graded: pl.DataFrame) -> dict[str, object]:
    worst = graded.group_by("sensor_id", "time").agg(pl.col("rank").max())
    n = worst.height
    alerts = graded.filter(pl.col("status") == "alert")["check"].value_counts(sort=True)
    warns = graded.filter(pl.col("status") == "warn")["check"].value_counts(sort=True)
    return {
        "sensor_days": n,
        "alert": float((worst["rank"] == 3).mean()) if n else math.nan,
        "warn": float((worst["rank"] >= 2).mean()) if n else math.nan,
        "alert_checks": ", ".join(f"{c} {k}" for c, k in alerts.iter_rows()) or "-",
        "warn_checks": ", ".join(f"{c} {k}" for c, k in warns.iter_rows()) or "-",
    }


def caught(episodes: list[Episode], checks: pl.DataFrame) -> dict[str, dict[str, object]]:
    out = {}
    for kind in KINDS:
        mine = [e for e in episodes if e.kind == kind]
        alert_late, warn_late = [], []
        for e in mine:
            during = checks.filter(
                (pl.col("scope") == e.sensor_id)
                & (pl.col("time") > e.start)
                & (pl.col("time") <= e.end)
            )
            for statuses, late in ((("alert",), alert_late), (("warn", "alert"), warn_late)):
                hit = during.filter(pl.col("status").is_in(statuses))
                if hit.height:
                    # 0 = the first nightly run after the start (the soonest possible)
                    late.append((hit["time"].min() - e.start).total_seconds() / 86400 - 1)
        out[kind] = {"episodes": len(mine), "alert": alert_late, "warn": warn_late}
    return out


def _late(values: list[float], n: int) -> str:
    if not n:
        return "-"
    if not values:
        return f"0/{n}"
    return f"{len(values)}/{n}, {np.median(values):.0f} d late (max {max(values):.0f})"


# -- the timing part (unchanged reference) -------------------------------------------------

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
        con.execute("set enable_progress_bar = false")
        checks = len(con.execute(
            "with w as (select max(ts) as latest from readings) "
            "select sensor_id, ts > latest - interval 3 day as recent, count(*), avg(value), "
            "quantile_cont(value, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) "
            "from readings, w where ts > latest - interval 17 days group by all"
        ).fetchall())
wall = time.perf_counter() - t0
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({{"checks": checks, "wall": wall, "rss_mb": rss}}))
"""


def timing(root: Path, sensors: int, days: int) -> tuple[str, dict[str, dict[str, float]]]:
    source = weather_source(days)
    ids = sorted(source.timezones)
    extra = []
    i = 0
    while len(ids) + len(extra) < sensors:  # more sensors: copies of the weather fleet
        i += 1
        extra.append(source.readings.with_columns(pl.col("sensor_id") + f"#{i}"))
    readings = pl.concat([source.readings, *extra]).filter(
        pl.col("sensor_id").is_in(
            sorted(set(pl.concat([source.readings, *extra])["sensor_id"]))[:sensors]
        )
    )
    zones = {sid: "UTC" for sid in readings["sensor_id"].unique()}
    load(root, Source("timing", readings, zones), readings)
    out = {}
    for mode in ("monitor", "bare"):
        code = CHILD.format(root=str(ROOT), wh=str(root), mode=mode)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        # the last JSON line (DuckDB may draw a progress line of its own)
        line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
        out[mode] = json.loads(line)
    return f"{sensors} sensors x {days} days = {readings.height:,} rows", out


# -- main -----------------------------------------------------------------------------------


def evaluate_source(source: Source, base: Path) -> dict[str, object]:
    from engine.config import Config
    from engine.monitor import parse_interval

    config = Config.load(CONFIG_PATH)
    recent = parse_interval(config["monitor"]["recent_window"])
    first, last = judgeable(source.readings, config)
    started = time.perf_counter()
    wh = load(base / f"{source.name}-healthy", source, source.readings)
    checks = replay(wh, source.readings, first, last, lambda _: {})
    graded = healthy_days(source, source.readings, checks, recent)
    healthy = rates(graded)
    episodes = plan_episodes(source, first, last)
    injected = inject(source.readings, episodes)
    wh2 = load(base / f"{source.name}-injected", source, injected)

    def frozen_at(day: datetime) -> dict[str, datetime]:
        return {
            e.sensor_id: e.start
            for e in episodes
            if e.kind == "model stale" and e.start <= day < e.end
        }

    injected_checks = replay(wh2, injected, first, last, frozen_at)
    found = caught(episodes, injected_checks)
    shutil.rmtree(base / f"{source.name}-healthy", ignore_errors=True)
    shutil.rmtree(base / f"{source.name}-injected", ignore_errors=True)
    return {
        "source": source.name,
        "note": source.note,
        "sensors": len(source.timezones),
        "rows": source.readings.height,
        "runs": f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}",
        "healthy": healthy,
        "caught": found,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["demo", "weather", "lro"], help="one source, no write")
    parser.add_argument("--demo-sensors-per-site", type=int, default=4)
    parser.add_argument("--days", type=int, default=60, help="days of the synthetic sources")
    parser.add_argument("--sensors", type=int, default=100, help="timing fleet")
    parser.add_argument("--timing-days", type=int, default=21)
    parser.add_argument("--config", type=Path, help="a TOML with other settings (no write)")
    parser.add_argument(
        "--reuse", action="store_true", help="the sources' figures of the last run (bench/out/)"
    )
    args = parser.parse_args()
    global CONFIG_PATH
    CONFIG_PATH = args.config
    base = Path(tempfile.mkdtemp(prefix="oxy-bench-monitor-"))
    started = time.perf_counter()
    try:
        makers: dict[str, Callable[[], Source | None]] = {
            "demo": lambda: demo_source(args.demo_sensors_per_site, args.days),
            "weather": lambda: weather_source(args.days),
            "lro": lro_source,
        }
        names = [args.only] if args.only else list(makers)
        results = []
        if args.reuse:  # the sources' figures of an earlier run (bench/out/), fresh timing
            results = [json.loads((CACHE / f"monitor-{n}.json").read_text()) for n in names]
            names = []
        for name in names:
            source = makers[name]()
            if source is None:
                print(f"{name}: data not found, skipped")
                continue
            result = evaluate_source(source, base)
            results.append(result)
            CACHE.mkdir(parents=True, exist_ok=True)
            (CACHE / f"monitor-{name}.json").write_text(json.dumps(result, default=str))
            h = result["healthy"]
            print(
                f"{name}: {result['sensors']} sensors, {result['rows']:,} rows, runs "
                f"{result['runs']} ({result['seconds']:.0f} s): {h['sensor_days']} healthy "
                f"sensor-days, alert {h['alert']:.2%} ({h['alert_checks']}), warn or alert "
                f"{h['warn']:.2%} ({h['warn_checks']})"
            )
            for kind, c in result["caught"].items():
                print(
                    f"  {kind:12} alert {_late(c['alert'], c['episodes'])}; "
                    f"warn or alert {_late(c['warn'], c['episodes'])}"
                )
        short = short_real_sets()
        for name, span in short:
            print(f"{name}: {span} of data, shorter than one calibrated judgement (not replayed)")
        if args.only or args.config:
            return
        load_avg = os.getloadavg()[0]
        shape, timed = timing(base / "timing", args.sensors, args.timing_days)
        m, b = timed["monitor"], timed["bare"]
        print(f"timing: {shape}; load {load_avg:.1f}")
        print(
            f"  run_monitor {m['wall']:.2f} s, {m['rss_mb']:.0f} MB; bare scan {b['wall']:.2f} s, "
            f"{b['rss_mb']:.0f} MB; ratio {m['wall'] / b['wall']:.1f}x time, "
            f"{m['rss_mb'] / b['rss_mb']:.2f}x RSS"
        )
        write(results, short, shape, timed, time.perf_counter() - started)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write(
    results: list[dict[str, object]],
    short: list[tuple[str, str]],
    shape: str,
    timed: dict[str, dict[str, float]],
    seconds: float,
) -> None:
    from results import write_section

    from engine.config import Config

    cfg = Config.load()["monitor"]
    lines = [
        f"Nightly runs replayed with the default `[monitor]` (recent {cfg['recent_window']}, "
        f"reference {cfg['reference_window']}, up to {cfg['calibration_windows']} earlier windows, "
        f"warn_z {cfg['warn_z']}, alert_z {cfg['alert_z']}); whole benchmark {seconds:.0f} s.",
        "",
        "| source | sensors | runs | healthy sensor-days | alert (target <= 1 %) | warn or alert "
        "(<= 5 %) | alerts by check | warnings by check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        h = r["healthy"]
        lines.append(
            f"| {r['source']} ({r['note']}) | {r['sensors']} | {r['runs']} | {h['sensor_days']} | "
            f"{h['alert']:.2%} | {h['warn']:.2%} | {h['alert_checks']} | {h['warn_checks']} |"
        )
    for name, span in short:
        lines.append(
            f"| {name} (real) | - | - | {span} of data: shorter than one calibrated "
            "judgement | - | - | - | - |"
        )
    lines += [
        "",
        f"Injected problems ({EPISODE_DAYS}-day episodes): episodes caught by an alert on their "
        "sensor during the episode, and how many nightly runs after the first one that could "
        "see it the first alert came (0 = that first run); then the same for a warning or "
        "alert. LRO is the held-out source; the weather fleet's first replay led to judging "
        "sensors against their site peers, so its figures are not held out.",
        "",
        "| source | " + " | ".join(KINDS) + " |",
        "|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for kind in KINDS:
            c = r["caught"][kind]
            cells.append(
                f"alert {_late(c['alert'], c['episodes'])}; warn {_late(c['warn'], c['episodes'])}"
            )
        lines.append(f"| {r['source']} | " + " | ".join(cells) + " |")
    m, b = timed["monitor"], timed["bare"]
    lines += [
        "",
        f"Run time ({shape}, each in its own process): `run_monitor` {m['wall']:.2f} s, peak RSS "
        f"{m['rss_mb']:.0f} MB; one DuckDB scan of per-sensor counts, means and deciles of the "
        f"same 17 days {b['wall']:.2f} s, {b['rss_mb']:.0f} MB: **{m['wall'] / b['wall']:.1f}x** "
        f"the bare scan in time, {m['rss_mb'] / b['rss_mb']:.2f}x in memory.",
    ]
    path = write_section(
        "monitor", "\n".join(lines), title="Monitoring: false alarms, catches, run time"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
