"""The detection benchmark's sources: each one a labelled set of DO readings, written as an
export with its source mapping, so that oxy reads it through its own ingest.

* **lro** -- real, technician-labelled: the six Logan River Observatory site-years in
  ``../shared/data/lro`` (one sensor per site, ``lro|<Site>|do``; a label is a run of
  consecutive readings whose ``do_qual`` is not NULL, type ``technician``);
* **semi/...** -- semi-synthetic: clean real backgrounds (LRO ``do_cor`` where ``do_qual`` is
  NULL, lake Mendota at 1 min and subsampled to 5 min, Sparkling and Trout Bog lakes at
  10 min, the fish pond at ~10 min) with anomalies from ``bench/inject.py``, several seeds per
  background, each seed its own customer (``<background>-s<seed>``), so that no detector can
  compare a seed with another copy of the same background;
* **demo-wide/...** -- ``oxy demo-data --anomaly-spread 2`` (the demo generator with every
  anomaly range twice as wide), one source per seed.

Every frame built here carries the water temperature (``temperature_c``, NULL where the data
has none); :func:`write_export` writes it into the export and maps it only when the readings
schema (``engine.warehouse.READINGS_SCHEMA``) has a ``temperature_c`` column (issue 20), and
drops it otherwise. Data is read in place, never copied into the repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
LRO_SITES = ("MainStreet", "Mendon", "TonyGrove")
# plausible water temperature: outside it (the LRO sondes' -9999, the fish pond's stuck 55.353)
# a temperature is missing, not a reading
TEMPERATURE_RANGE_C = (-2.0, 45.0)

FRAME_SCHEMA = {
    "sensor_id": pl.String,
    "ts": pl.Datetime("us"),
    "value": pl.Float64,
    "temperature_c": pl.Float64,
}
LABEL_SCHEMA = {"sensor_id": pl.String, "start": pl.Datetime("us"), "end": pl.Datetime("us")}


# --- the real files ----------------------------------------------------------------------
def _temperature(expr: pl.Expr) -> pl.Expr:
    lo, hi = TEMPERATURE_RANGE_C
    t = expr.cast(pl.Float64, strict=False)
    return pl.when(t.is_between(lo, hi)).then(t).otherwise(None)


def lro_site_year(path: Path, site: str) -> pl.DataFrame:
    """One LRO file as readings: ``sensor_id, ts (UTC), value (do), temperature_c, do_cor,
    labelled`` (``do_qual`` not NULL); rows without a ``do`` are no reading and are left out.

    Times are naive local at a fixed UTC-07:00 (NOTES.md), so UTC = local + 7 h; their format
    differs between files (``2019-01-01 00:00``, ``2020-01-01 00:00:00.000``) and is inferred.
    """
    raw = pl.read_csv(path, infer_schema=False, null_values=["NULL", ""])
    return raw.select(
        pl.lit(f"lro|{site}|do").alias("sensor_id"),
        (pl.col("datetime").str.to_datetime(time_unit="us") + timedelta(hours=7)).alias("ts"),
        pl.col("do").cast(pl.Float64).alias("value"),
        _temperature(pl.col("temp")).alias("temperature_c"),
        pl.col("do_cor").cast(pl.Float64).alias("do_cor"),
        pl.col("do_qual").is_not_null().alias("labelled"),
    ).filter(pl.col("value").is_not_null())


def runs_to_labels(frame: pl.DataFrame, label: str = "technician") -> pl.DataFrame:
    """Each run of consecutive ``labelled`` readings (per sensor, in time order) -> one event
    ``sensor_id, start, end, type`` from its first to its last reading."""
    ordered = frame.sort("sensor_id", "ts")
    runs = ordered.with_columns(
        (
            (pl.col("labelled") != pl.col("labelled").shift(1)).fill_null(True)
            | (pl.col("sensor_id") != pl.col("sensor_id").shift(1)).fill_null(True)
        )
        .cum_sum()
        .alias("run")
    )
    return (
        runs.filter(pl.col("labelled"))
        .group_by("sensor_id", "run")
        .agg(pl.col("ts").min().alias("start"), pl.col("ts").max().alias("end"))
        .sort("sensor_id", "start")
        .select("sensor_id", "start", "end", pl.lit(label).alias("type"))
    )


def lro_files(data: Path) -> list[tuple[str, Path]]:
    """(site, path) of every LRO site-year file, in order."""
    return [(site, p) for site in LRO_SITES for p in sorted(data.glob(f"{site}20*.csv"))]


def lro_real(data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Readings of the six site-years and their technician labels (runs per file)."""
    frames, labels = [], []
    for site, path in lro_files(data):
        frame = lro_site_year(path, site)
        frames.append(frame)
        labels.append(runs_to_labels(frame))  # per file: a run never spans two files
    readings = pl.concat(frames).unique(["sensor_id", "ts"], keep="first").sort("sensor_id", "ts")
    return readings.select(list(FRAME_SCHEMA)), pl.concat(labels)


def calibration_overlap(data: Path) -> dict[str, Any]:
    """Do the MainStreet calibration intervals overlap the MainStreet files at all?"""
    calib = pl.read_csv(data / "MainStreet_do_calib_dates.csv", skip_rows=1, encoding="utf8-lossy")
    calib = calib.select(
        pl.col("start").str.to_datetime("%Y-%m-%d %H:%M"),
        pl.col("end").str.to_datetime("%Y-%m-%d %H:%M"),
    )
    spans = [
        lro_site_year(p, "MainStreet").select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).row(0)
        for site, p in lro_files(data)
        if site == "MainStreet"
    ]
    hours7 = timedelta(hours=7)
    overlapping = [
        (s, e)
        for s, e in calib.iter_rows()
        if any(s + hours7 <= hi and lo <= e + hours7 for lo, hi in spans)
    ]
    return {
        "calibration_intervals": calib.height,
        "calibration_span": (str(calib["start"].min()), str(calib["end"].max())),
        "file_spans": [(str(lo), str(hi)) for lo, hi in spans],
        "overlapping": len(overlapping),
    }


def lro_backgrounds(data: Path) -> pl.DataFrame:
    """Clean LRO series: ``do_cor`` where the technicians left ``do_qual`` NULL."""
    readings = pl.concat([lro_site_year(p, site) for site, p in lro_files(data)])
    clean = readings.filter(~pl.col("labelled") & pl.col("do_cor").is_not_null())
    return (
        clean.select(
            pl.col("sensor_id").str.replace(r"^lro\|", "").str.replace(r"\|do$", "").alias("site"),
            "ts",
            pl.col("do_cor").alias("value"),
            "temperature_c",
        )
        .unique(["site", "ts"], keep="first")
        .sort("site", "ts")
    )


def _doobs(path: Path, time_column: str, value_column: str, fmt: str) -> pl.DataFrame:
    raw = pl.read_csv(path, separator="\t", infer_schema=False, null_values=["NA", "NaN", ""])
    return raw.select(
        pl.col(time_column).str.to_datetime(fmt, time_unit="us").alias("local"),
        pl.col(value_column).cast(pl.Float64).alias("value"),
    ).filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())


def mendota(data: Path) -> pl.DataFrame:
    """Lake Mendota, 1-min DO at 0.5 m with the water temperature at 0.5 m (``mendota.wtr``).

    Naive local times, taken as fixed UTC-06:00 (CST; NOTES.md: unverified)."""
    folder = data / "lake_mendota"
    do = _doobs(folder / "mendota.doobs", "dateTime", "doobs_0.5", "%Y-%m-%d %H:%M")
    wtr = pl.read_csv(folder / "mendota.wtr", separator="\t", infer_schema=False).select(
        pl.col("DateTime").str.to_datetime("%Y-%m-%d %H:%M", time_unit="us").alias("local"),
        _temperature(pl.col("wtr_0.5")).alias("temperature_c"),
    )
    return _local_to_utc(do.join(wtr, on="local", how="left"), 6)


def small_lake(data: Path, name: str) -> pl.DataFrame:
    """Sparkling or Trout Bog lake, 10-min DO (no temperature file was copied)."""
    column = {"sparkling": ("datetime", "doobs_0.5"), "troutbog": ("DateTime", "doobs_0.25")}[name]
    do = _doobs(data / "lake_mendota" / f"{name}.doobs", *column, "%Y-%m-%d %H:%M:%S")
    return _local_to_utc(do.with_columns(pl.lit(None, pl.Float64).alias("temperature_c")), 6)


def fishpond(data: Path) -> pl.DataFrame:
    """The Colombian fish pond: ~10-min DO and water temperature, times in UTC."""
    raw = pl.read_csv(data / "fishpond_buoy" / "waterquality_data.csv", infer_schema=False)
    return (
        raw.select(
            pl.col("received_at")
            .str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us")
            .dt.truncate("1s")
            .alias("ts"),
            pl.col("do").cast(pl.Float64).alias("value"),
            _temperature(pl.col("temp")).alias("temperature_c"),
        )
        .filter(pl.col("value").is_not_null())
        .unique("ts", keep="first")
        .sort("ts")
    )


def _local_to_utc(frame: pl.DataFrame, hours_behind: int) -> pl.DataFrame:
    return (
        frame.select(
            (pl.col("local") + timedelta(hours=hours_behind)).alias("ts"),
            "value",
            "temperature_c",
        )
        .unique("ts", keep="first")
        .sort("ts")
    )


# --- exports and mappings ------------------------------------------------------------
def readings_columns() -> list[str]:
    """The optional per-reading columns the readings schema has today (issue 20 adds them)."""
    from engine.warehouse import READINGS_SCHEMA

    return [c for c in ("temperature_c", "salinity") if c in READINGS_SCHEMA.names]


def write_export(
    folder: Path,
    name: str,
    frame: pl.DataFrame,
    *,
    customer: str,
    timezone: str,
    unit: str = "mg/L",
) -> dict[str, Any]:
    """Write ``frame`` (FRAME_SCHEMA) as ``folder/NAME.csv``; its ``[sources.NAME]`` mapping.

    Times are written as naive UTC ISO (``2024-01-01T00:00:00``), values with full
    precision. ``temperature_c`` (and ``salinity``) are written and mapped when the readings
    schema holds them, left out otherwise.
    """
    extra = readings_columns()
    columns = ["sensor_id", "ts", "value", *[c for c in extra if c in frame.columns]]
    path = folder / f"{name}.csv"
    frame.sort("ts", "sensor_id").select(columns).write_csv(
        path, datetime_format="%Y-%m-%dT%H:%M:%S", float_precision=None
    )
    mapping: dict[str, Any] = {
        "customer": customer,
        "timezone": timezone,
        "unit": unit,
        "sensor_columns": ["sensor_id"],
        "time_column": "ts",
        "value_column": "value",
        "time_format": "iso",
        "naive_time_zone": "UTC",
    }
    if "temperature_c" in columns:
        mapping["temperature_column"] = "temperature_c"  # issue 20's key
    if "salinity" in columns:
        mapping["salinity"] = "salinity"
    return mapping


def sources_toml(mappings: dict[str, dict[str, Any]]) -> str:
    """``[sources.NAME]`` tables for ``mappings`` (values as TOML literals)."""
    lines = []
    for name, mapping in mappings.items():
        lines.append(f"[sources.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in mapping.items()]
        lines.append("")
    return "\n".join(lines)


def write_labels(path: Path, labels: pl.DataFrame) -> None:
    """``sensor_id,start,end,type`` as ``engine.evaluate.read_labels`` reads it."""
    labels.sort("sensor_id", "start").select(
        "sensor_id",
        pl.col("start").dt.strftime("%Y-%m-%dT%H:%M:%S"),
        pl.col("end").dt.strftime("%Y-%m-%dT%H:%M:%S"),
        "type",
    ).write_csv(path)


# --- sources -------------------------------------------------------------------------
@dataclass(frozen=True)
class Built:
    """A source written to disk: exports to ingest, the config declaring them, the labels."""

    exports: list[Path]
    config_path: Path
    labels_path: Path
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """One row of the benchmark: a labelled set of readings scored in its own warehouse.

    ``river`` selects the river thresholds of the QARTOD peer (DO 2-18 mg/L suspect) over the
    generic ones (1-20 mg/L); ``pyhydroqc`` says whether the default run includes PyHydroQC
    (its ARIMA takes ~50 s per long LRO series: not on the 9 semi-synthetic LRO series nor on
    150 one-minute demo sensors unless ``--pyhydroqc all``); ``cadence`` labels the table.
    """

    name: str
    family: str
    kind: str  # "real" | "semi-synthetic" | "demo-wide"
    cadence: str
    build: Callable[[Path], Built]
    river: bool = False
    pyhydroqc: bool = True


def _write_source(
    folder: Path,
    exports: list[tuple[str, pl.DataFrame, str, str]],
    labels: pl.DataFrame,
    notes: dict[str, Any] | None = None,
) -> Built:
    """Exports ``(name, frame, customer, timezone)`` + labels + sources.toml into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    mappings = {}
    paths = []
    for name, frame, customer, timezone in exports:
        mappings[name] = write_export(folder, name, frame, customer=customer, timezone=timezone)
        paths.append(folder / f"{name}.csv")
    config_path = folder / "sources.toml"
    config_path.write_text(sources_toml(mappings), encoding="utf-8")
    labels_path = folder / "labels.csv"
    write_labels(labels_path, labels)
    return Built(paths, config_path, labels_path, notes or {})


def build_lro(folder: Path, data: Path = DATA / "lro") -> Built:
    readings, labels = lro_real(data)
    return _write_source(
        folder,
        [("lro", readings, "lro", "Etc/GMT+7")],
        labels,
        {"calibration": calibration_overlap(data)},
    )


def injected(
    background: pl.DataFrame, sensor_id: str, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One seed's anomalies on one background (``ts, value, temperature_c``)."""
    from bench.inject import inject

    ts = background["ts"].to_numpy()
    values, events = inject(ts, background["value"].to_numpy(), seed=seed)
    frame = background.select(
        pl.lit(sensor_id).alias("sensor_id"),
        "ts",
        pl.Series("value", values),
        "temperature_c",
    )
    labels = pl.DataFrame(
        {
            "sensor_id": pl.Series([sensor_id] * len(events), dtype=pl.String),
            "start": background["ts"].gather([e.first for e in events]),
            "end": background["ts"].gather([e.last for e in events]),
            "type": pl.Series([e.label for e in events], dtype=pl.String),
        }
    )
    return frame, labels


def build_semi(
    folder: Path,
    name: str,
    backgrounds: dict[str, pl.DataFrame],
    seeds: list[int],
    timezone: str,
) -> Built:
    """Seeds x backgrounds (``{sensor part: frame}``), each seed its own customer and export."""
    exports, labels = [], []
    for seed in seeds:
        customer = f"{name}-s{seed}"
        frames = []
        for part, background in backgrounds.items():
            frame, events = injected(background, f"{customer}|{part}|do", seed * 1000 + len(frames))
            frames.append(frame)
            labels.append(events)
        exports.append((customer.replace("-", "_"), pl.concat(frames), customer, timezone))
    return _write_source(folder, exports, pl.concat(labels))


def build_demo_wide(
    folder: Path, *, seed: int, sensors_per_site: int, days: int, spread: float
) -> Built:
    from engine.demo import generate_demo

    summary = generate_demo(
        folder, sensors_per_site=sensors_per_site, days=days, seed=seed, anomaly_spread=spread
    )
    exports = [folder / f for f in summary["files"] if f not in ("labels.csv", "sources.toml")]
    return Built(exports, folder / "sources.toml", folder / "labels.csv", {"rows": summary["rows"]})


def _subsample(frame: pl.DataFrame, minutes: int) -> pl.DataFrame:
    return frame.filter(pl.col("ts").dt.truncate(f"{minutes}m") == pl.col("ts"))


def catalogue(*, quick: bool = False, data: Path = DATA) -> list[Source]:
    """Every source of the benchmark (``quick``: fewer seeds, a smaller demo)."""
    seeds = [1] if quick else [1, 2, 3]
    # backgrounds of a week or two hold few events each: more seeds
    small_seeds = [1, 2] if quick else [1, 2, 3, 4, 5, 6]
    demo_seeds = [21] if quick else [21, 22, 23]
    demo_size = {"sensors_per_site": 4 if quick else 10, "days": 21 if quick else 35}

    def semi(name: str, load: Callable[[], dict[str, pl.DataFrame]], s: list[int], tz: str):
        return lambda folder: build_semi(folder, name, load(), s, tz)

    def lro_bg() -> dict[str, pl.DataFrame]:
        bg = lro_backgrounds(data / "lro")
        return {
            site: part.drop("site") for (site,), part in bg.group_by("site", maintain_order=True)
        }

    sources = [
        Source("lro", "lro", "real", "15 min", lambda f: build_lro(f, data / "lro"), river=True),
        Source(
            "semi/lro-do_cor",
            "semi/lro",
            "semi-synthetic",
            "15 min",
            semi("semi-lro", lro_bg, seeds, "Etc/GMT+7"),
            river=True,
            pyhydroqc=False,
        ),
        Source(
            "semi/mendota-1min",
            "semi/mendota",
            "semi-synthetic",
            "1 min",
            semi("semi-mendota1", lambda: {"mendota": mendota(data)}, small_seeds, "Etc/GMT+6"),
        ),
        Source(
            "semi/mendota-5min",
            "semi/mendota",
            "semi-synthetic",
            "5 min",
            semi(
                "semi-mendota5",
                lambda: {"mendota": _subsample(mendota(data), 5)},
                small_seeds,
                "Etc/GMT+6",
            ),
        ),
        Source(
            "semi/sparkling",
            "semi/sparkling",
            "semi-synthetic",
            "10 min",
            semi(
                "semi-sparkling",
                lambda: {"sparkling": small_lake(data, "sparkling")},
                small_seeds,
                "Etc/GMT+6",
            ),
        ),
        Source(
            "semi/troutbog",
            "semi/troutbog",
            "semi-synthetic",
            "10 min",
            semi(
                "semi-troutbog",
                lambda: {"troutbog": small_lake(data, "troutbog")},
                small_seeds,
                "Etc/GMT+6",
            ),
        ),
        Source(
            "semi/fishpond",
            "semi/fishpond",
            "semi-synthetic",
            "~10 min",
            semi("semi-fishpond", lambda: {"pond": fishpond(data)}, small_seeds, "America/Bogota"),
        ),
    ]
    for seed in demo_seeds:
        sources.append(
            Source(
                f"demo-wide/s{seed}",
                "demo-wide",
                "demo-wide",
                "1 min",
                lambda f, s=seed: build_demo_wide(f, seed=s, spread=2.0, **demo_size),
            )
        )
    return sources
