"""Detection on data the detector was not tuned on: every source a row, oxy beside the seed's
rules and the peers (ioos-qc QARTOD tests, PyHydroQC), leave-one-source-out.

Sources (``bench/sources.py``; how each is built: docs/detection-benchmark.md): the six
technician-labelled LRO site-years; semi-synthetic anomalies (``bench/inject.py``) on clean
real backgrounds at 1, 5, 10 and 15 minutes; the demo generator with every anomaly range
twice as wide. Each source is written as an export, ingested by oxy's own ingest into a
fresh warehouse (once), scored by :func:`run_detector` (the one call into the detector under
test), and every method's flags are scored by ``engine.evaluate.evaluate_flags``.

Readings the ingest quarantined with a reason (sentinels, impossible values) are oxy's
answer for those readings: they count as flagged readings of oxy and of the seed's rules
(which run on the same lake); the peers get them as values and must flag them themselves.

Usage::

    .venv/bin/python bench/detection_suite.py                 # every source, ~10 min
    .venv/bin/python bench/detection_suite.py --quick         # fewer seeds, small demo
    .venv/bin/python bench/detection_suite.py --only lro,semi/mendota-1min --no-write
    .venv/bin/python bench/detection_suite.py --tune grid.toml   # LOSO over a grid
    .venv/bin/python bench/detection_suite.py --tuned-on demo-wide,semi/lro

``--tune PARAMS.toml`` (``[anomaly]`` ``severity_threshold = [0.4, 0.5, 0.6]``): every grid
point rescores every source (warehouses reused: ``Config.with_overrides``); for each held-out
source and family the point with the best pooled F1 on the *other* sources is chosen and the
held-out figure at that point reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from bench.loso import grid_points, leave_out, overrides, pool, read_grid, status  # noqa: E402
from bench.sources import Source, catalogue  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.warehouse import Warehouse  # noqa: E402

OXY, SEED = "oxy", "seed rules"
QARTOD_FAIL, QARTOD_ANY = "ioos-qc fail", "ioos-qc suspect+fail"
PHQ_RULES, PHQ_ARIMA = "PyHydroQC rules", "PyHydroQC rules+ARIMA"
METHODS = (OXY, SEED, QARTOD_FAIL, QARTOD_ANY, PHQ_RULES, PHQ_ARIMA)
TYPES = ("spike", "collective", "contextual", "stuck", "noise", "dropout", "drift")
TYPES += ("level_shift", "technician")
# quarantine reasons that name a reading (a time and a number) the ingest refused
VALUE_REASONS = (
    "sentinel value",
    "negative value",
    "below plausible minimum",
    "above plausible maximum",
)
# the detectors' thresholds were chosen leave-one-family-out over every family
# (bench/tune_detection.py, whose held-out figures are its own RESULTS.md section): the
# defaults themselves are the point best over all of them, so every row is tuned-on
DEFAULT_TUNED_ON = (
    "lro",
    "semi/lro",
    "semi/mendota",
    "semi/sparkling",
    "semi/troutbog",
    "semi/fishpond",
    "demo-wide",
)


# --- the detector under test -----------------------------------------------------------
def run_detector(warehouse: Warehouse) -> pl.DataFrame:
    """Score every reading with the detector under test; ``sensor_id, ts, is_anomaly``.

    The benchmark's only call into the detector: a new detector changes this function (and
    nothing else here). ``warehouse.config`` carries the configuration to score with (the
    defaults, or ``Config.with_overrides`` from :func:`score_sources`).
    """
    from engine.anomaly import score

    score(warehouse, full=True)
    with warehouse.reader() as con:
        return pl.from_arrow(
            con.sql("select sensor_id, ts, is_anomaly from anomaly_scores").to_arrow_table()
        )


# --- sources, built and ingested once ----------------------------------------------------
@dataclass
class Prepared:
    """A source ingested into its own warehouse, reused by every run over it."""

    source: Source
    root: Path
    config_path: Path
    labels: pl.DataFrame
    quarantined: pl.DataFrame  # sensor_id, ts, value, reason: readings the ingest refused
    readings: int
    ingest_s: float
    notes: dict[str, Any] = field(default_factory=dict)

    def warehouse(self, config_overrides: Mapping[str, Any] | None = None) -> Warehouse:
        config = Config.load(self.config_path)
        if config_overrides:
            config = config.with_overrides(config_overrides)
        return Warehouse(self.root / "wh", config)


def prepare(source: Source, base: Path) -> Prepared:
    """Build ``source`` under ``base`` and ingest it through ``engine.ingest``."""
    from engine.evaluate import read_labels
    from engine.ingest import ingest_files

    folder = base / source.name.replace("/", "_")
    built = source.build(folder / "data")
    wh = Warehouse(folder / "wh", Config.load(built.config_path))
    started = time.perf_counter()
    results = ingest_files(wh, built.exports)
    ingest_s = time.perf_counter() - started
    return Prepared(
        source=source,
        root=folder,
        config_path=built.config_path,
        labels=read_labels(built.labels_path),
        quarantined=quarantined_readings(wh),
        readings=sum(r.accepted for r in results),
        ingest_s=ingest_s,
        notes=built.notes,
    )


def quarantined_readings(warehouse: Warehouse) -> pl.DataFrame:
    """Readings the ingest quarantined for their value (``VALUE_REASONS``) whose raw time is
    ISO (every export the suite writes; a demo export in another time format has none)."""
    with warehouse.reader() as con:
        raw = pl.from_arrow(
            con.sql(
                "select sensor_id, raw_time, raw_value, reason from quarantine "
                "where reason in (select unnest($reasons::varchar[]))",
                params={"reasons": list(VALUE_REASONS)},
            ).to_arrow_table()
        )
    if raw.is_empty():
        return pl.DataFrame(
            schema={
                "sensor_id": pl.String,
                "ts": pl.Datetime("us"),
                "value": pl.Float64,
                "reason": pl.String,
            }
        )
    return raw.select(
        "sensor_id",
        pl.col("raw_time").str.to_datetime(time_unit="us", strict=False).alias("ts"),
        pl.col("raw_value").cast(pl.Float64, strict=False).alias("value"),
        "reason",
    ).filter(pl.col("ts").is_not_null() & pl.col("value").is_finite())


# --- evaluation ------------------------------------------------------------------------
def evaluate_frame(flags: pl.DataFrame, labels: pl.DataFrame) -> dict[str, Any]:
    """``engine.evaluate.evaluate_flags`` on ``flags`` (sensor_id, ts, is_anomaly)."""
    import duckdb

    from engine.evaluate import evaluate_flags

    con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB"})
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("eval_flags", flags.select("sensor_id", "ts", "is_anomaly").to_arrow())
        return evaluate_flags(con, labels)
    finally:
        con.close()


def with_quarantine(flags: pl.DataFrame, prepared: Prepared) -> pl.DataFrame:
    """The lake-side flags plus every quarantined reading, flagged (the ingest's answer)."""
    extra = prepared.quarantined.select("sensor_id", "ts", pl.lit(True).alias("is_anomaly"))
    return pl.concat([flags.select("sensor_id", "ts", "is_anomaly"), extra])


def oxy_metrics(
    prepared: Prepared, config_overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], float]:
    wh = prepared.warehouse(config_overrides)
    started = time.perf_counter()
    flags = run_detector(wh)
    seconds = time.perf_counter() - started
    return evaluate_frame(with_quarantine(flags, prepared), prepared.labels), seconds


def seed_metrics(prepared: Prepared) -> tuple[dict[str, Any], float]:
    """The seed's rules (``engine.evaluate``'s implementation, default thresholds)."""
    from engine.evaluate import _seed_flags

    wh = prepared.warehouse()
    started = time.perf_counter()
    with wh.reader() as con:
        _seed_flags(wh, con)
        flags = pl.from_arrow(con.table("eval_flags").to_arrow_table())
    seconds = time.perf_counter() - started
    return evaluate_frame(with_quarantine(flags, prepared), prepared.labels), seconds


def peer_inputs(prepared: Prepared) -> pl.DataFrame:
    """What a peer sees: every reading with a time and a finite number, sentinels included:
    ``sensor_id, ts, value, unit`` sorted by sensor and time."""
    wh = prepared.warehouse()
    with wh.reader() as con:
        lake = pl.from_arrow(
            con.sql(
                "select r.sensor_id, r.ts, r.value, s.unit from readings r "
                "join sensors s using (sensor_id)"
            ).to_arrow_table()
        )
        units = dict(con.execute("select sensor_id, unit from sensors").fetchall())
    extra = prepared.quarantined.select(
        "sensor_id",
        "ts",
        "value",
        pl.col("sensor_id").replace_strict(units, default="mg/L").alias("unit"),
    )
    frame = pl.concat([lake.with_columns(pl.col("ts").cast(pl.Datetime("us"))), extra])
    return frame.unique(["sensor_id", "ts"], keep="first").sort("sensor_id", "ts")


def labelled_readings(inputs: pl.DataFrame, labels: pl.DataFrame) -> int:
    """Readings inside a labelled window (no tolerance): what a perfect detector flags."""
    import duckdb

    con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB"})
    try:
        con.register("r", inputs.select("sensor_id", "ts").to_arrow())
        con.register("l", labels.select("sensor_id", "start_ts", "end_ts").to_arrow())
        return con.execute(
            "select count(*) from r semi join l on r.sensor_id = l.sensor_id "
            "and r.ts between l.start_ts and l.end_ts"
        ).fetchall()[0][0]
    finally:
        con.close()


def _per_sensor(
    inputs: pl.DataFrame, flag: Callable[[str, Any, Any, str, float], dict[str, Any]]
) -> dict[str, pl.DataFrame]:
    """Run ``flag(sensor_id, ts, values, unit, cadence_s)`` per sensor -> a flags frame per
    variant."""
    parts: dict[str, list[pl.DataFrame]] = {}
    for (sensor_id,), part in inputs.group_by("sensor_id", maintain_order=True):
        ts = part["ts"].to_numpy()
        values = part["value"].to_numpy()
        if ts.size < 3:
            continue
        cadence_s = float(part["ts"].diff().dt.total_seconds().median())
        for variant, flags in flag(sensor_id, ts, values, part["unit"][0], cadence_s).items():
            parts.setdefault(variant, []).append(
                part.select("sensor_id", "ts").with_columns(pl.Series("is_anomaly", flags))
            )
    return {variant: pl.concat(frames) for variant, frames in parts.items()}


def qartod_metrics(prepared: Prepared, inputs: pl.DataFrame) -> tuple[dict[str, Any], float]:
    from bench.peers import qartod_config, qartod_flags

    def flag(sensor_id: str, ts: Any, values: Any, unit: str, cadence_s: float) -> dict:
        config = qartod_config(values, cadence_s, unit, prepared.source.river)
        worst = qartod_flags(ts, values, config)
        return {QARTOD_FAIL: worst == 4, QARTOD_ANY: worst >= 3}

    started = time.perf_counter()
    frames = _per_sensor(inputs, flag)
    seconds = time.perf_counter() - started
    return {k: evaluate_frame(v, prepared.labels) for k, v in frames.items()}, seconds


def pyhydroqc_metrics(
    prepared: Prepared, inputs: pl.DataFrame, *, auto_order: bool = False
) -> tuple[dict[str, Any], float]:
    from bench.peers import pyhydroqc_flags

    orders: dict[str, list[int]] = {}  # one auto_arima order per background

    def flag(sensor_id: str, ts: Any, values: Any, unit: str, cadence_s: float) -> dict:
        out = pyhydroqc_flags(sensor_id, ts, values, unit, cadence_s, orders, auto_order)
        return {PHQ_RULES: out["rules"], PHQ_ARIMA: out["rules+arima"]}

    started = time.perf_counter()
    frames = _per_sensor(inputs, flag)
    seconds = time.perf_counter() - started
    return {k: evaluate_frame(v, prepared.labels) for k, v in frames.items()}, seconds


def score_sources(
    prepared: Iterable[Prepared], config_overrides: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """oxy's metrics per source with ``config_overrides`` (``{"anomaly": {"key": value}}``),
    each source rescored in the warehouse it was ingested into (LOSO's unit of work)."""
    out = {}
    for p in prepared:
        metrics, seconds = oxy_metrics(p, config_overrides)
        metrics["wall_s"] = seconds
        out[p.source.name] = metrics
    return out


# --- the tables ------------------------------------------------------------------------
def _f1(m: dict[str, Any] | None) -> str:
    return "–" if m is None else f"{m['f1']:.3f}"


def summary_table(
    rows: list[dict[str, Any]], marks: dict[str, str], pooled: list[tuple[str, dict]]
) -> str:
    """F1 of every method per source, then pooled rows."""
    head = "| source | tuned | cadence | readings | labelled % | events | "
    head += " | ".join(METHODS) + " |"
    lines = [head, "|" + "---|" * (6 + len(METHODS))]
    for r in rows:
        name = r["source"].name
        lines.append(
            f"| {name} | {marks[name]} | {r['source'].cadence} | {r['readings']:,} | "
            f"{100 * r['labelled'] / max(r['readings'], 1):.1f} | "
            f"{r['methods'][OXY]['events']:,} | "
            + " | ".join(_f1(r["methods"].get(m)) for m in METHODS)
            + " |"
        )
    for label, by_method in pooled:
        lines.append(
            f"| **{label}** | | | {by_method[OXY]['readings']:,} | | "
            f"{by_method[OXY]['events']:,} | "
            + " | ".join(_f1(by_method.get(m)) for m in METHODS)
            + " |"
        )
    return "\n".join(lines)


def detail_table(rows: list[tuple[str, str, dict[str, Any], float | None]]) -> str:
    """One line per (source, method): events, recall per type, precision, F1, flagged %."""
    present = [t for t in TYPES if any(t in m["by_type"] for _, _, m, _ in rows)]
    head = (
        "| source | method | events | recall | precision | F1 | flagged % | wall s | "
        + " | ".join(present)
        + " |"
    )
    lines = [head, "|" + "---|" * (8 + len(present))]
    for source, method, m, seconds in rows:
        cells = []
        for t in present:
            b = m["by_type"].get(t)
            cells.append(f"{b['found']}/{b['events']}" if b else "")
        wall = "" if seconds is None else f"{seconds:.1f}"
        lines.append(
            f"| {source} | {method} | {m['events']:,} | {m['recall']:.3f} | "
            f"{m['precision']:.3f} | {m['f1']:.3f} | {100 * m['flagged_fraction']:.2f} | {wall} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def loso_table(rows: list[dict[str, Any]], points: list[dict[str, Any]]) -> str:
    lines = [
        "| held out | chosen on the others | held-out F1 | recall | precision | flagged % "
        "| others' F1 at that point |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, point = r["metrics"], json.dumps(points[r["point"]])
        lines.append(
            f"| {r['held_out']} | `{point}` | {m['f1']:.3f} | {m['recall']:.3f} | "
            f"{m['precision']:.3f} | {100 * m['flagged_fraction']:.2f} | {r['tuned']['f1']:.3f} |"
        )
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------
def _groups(rows: list[dict[str, Any]], marks: dict[str, str]) -> list[tuple[str, list[dict]]]:
    groups = [
        ("real (LRO)", [r for r in rows if r["source"].kind == "real"]),
        ("semi-synthetic", [r for r in rows if r["source"].kind == "semi-synthetic"]),
        ("demo-wide", [r for r in rows if r["source"].kind == "demo-wide"]),
        ("held-out, pooled", [r for r in rows if marks[r["source"].name] == "held-out"]),
        ("all, pooled", rows),
    ]
    return [(label, members) for label, members in groups if members]


def pooled_rows(rows: list[dict[str, Any]], marks: dict[str, str]) -> list[tuple[str, dict]]:
    out = []
    for label, members in _groups(rows, marks):
        by_method = {}
        for method in METHODS:
            ms = [r["methods"][method] for r in members if method in r["methods"]]
            if len(ms) == len(members):  # pooled only where the method ran on every member
                by_method[method] = pool(ms)
        out.append((label, by_method))
    return out


def run_source(p: Prepared, *, pyhydroqc: bool, auto_order: bool = False) -> dict[str, Any]:
    """Every method on one prepared source: ``{"methods": {name: metrics}, "wall": {...}}``."""
    methods, wall = {}, {"ingest": p.ingest_s}
    methods[OXY], wall[OXY] = oxy_metrics(p)
    methods[SEED], wall[SEED] = seed_metrics(p)
    inputs = peer_inputs(p)
    qartod, wall["ioos-qc"] = qartod_metrics(p, inputs)
    methods.update(qartod)
    if pyhydroqc:
        phq, wall["PyHydroQC"] = pyhydroqc_metrics(p, inputs, auto_order=auto_order)
        methods.update(phq)
    return {
        "source": p.source,
        "readings": inputs.height,
        "labelled": labelled_readings(inputs, p.labels),
        "methods": methods,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, a small demo")
    parser.add_argument("--only", help="comma-separated source names (or families) to run")
    parser.add_argument(
        "--tuned-on",
        default=",".join(DEFAULT_TUNED_ON),
        help="sources or families the current defaults were tuned on (default: every family)",
    )
    parser.add_argument("--tune", type=Path, help="TOML grid: leave-one-source-out tuning")
    parser.add_argument(
        "--pyhydroqc",
        choices=("auto", "all", "off"),
        default="auto",
        help="PyHydroQC peer: auto = every source but semi/lro-do_cor and demo-wide (its "
        "ARIMA would add ~10 min and ~1 h), all, off",
    )
    parser.add_argument(
        "--pyhydroqc-auto-order",
        action="store_true",
        help="PyHydroQC's ARIMA order by its own auto_arima search off the LRO sites "
        "(default: 1,1,1; the search takes minutes per series)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only (no RESULTS.md)")
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--keep", type=Path, help="build the warehouses here and keep them")
    args = parser.parse_args()

    from bench.peers import pyhydroqc_available

    sources = catalogue(quick=args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        sources = [s for s in sources if s.name in wanted or s.family in wanted]
    marks = status({s.name: s.family for s in sources}, args.tuned_on.split(","))
    phq_missing = "switched off (`--pyhydroqc off`)" if args.pyhydroqc == "off" else None
    phq_missing = phq_missing or pyhydroqc_available()
    if phq_missing:
        print(f"PyHydroQC peer not run: {phq_missing}")

    base = args.keep or Path(tempfile.mkdtemp(prefix="oxy-detsuite-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepared, rows, details = [], [], []
    try:
        for source in sources:
            t0 = time.perf_counter()
            p = prepare(source, base)
            prepared.append(p)
            use_phq = not phq_missing and (
                args.pyhydroqc == "all" or (source.pyhydroqc and source.kind != "demo-wide")
            )
            row = run_source(p, pyhydroqc=use_phq, auto_order=args.pyhydroqc_auto_order)
            rows.append(row)
            w = row["wall"]
            print(
                f"{source.name}: {row['readings']:,} readings, "
                f"{row['methods'][OXY]['events']} events; ingest {w['ingest']:.1f} s, "
                f"oxy {w[OXY]:.1f} s, seed {w[SEED]:.1f} s, ioos-qc {w['ioos-qc']:.1f} s"
                + (f", PyHydroQC {w['PyHydroQC']:.1f} s" if "PyHydroQC" in w else "")
                + f" (total {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            for method in METHODS:
                if method in row["methods"]:
                    key = {QARTOD_FAIL: "ioos-qc", QARTOD_ANY: None, PHQ_RULES: None}.get(
                        method, "PyHydroQC" if method == PHQ_ARIMA else method
                    )
                    details.append(
                        (source.name, method, row["methods"][method], w.get(key) if key else None)
                    )
        pooled = pooled_rows(rows, marks)
        for label, by_method in pooled:
            for method, m in by_method.items():
                details.append((f"**{label}**", method, m, None))

        loso_text = ""
        if args.tune:
            grid = read_grid(args.tune)
            points = grid_points(grid)
            print(f"tuning: {len(points)} grid points x {len(prepared)} sources")
            by_point = []
            for i, point in enumerate(points):
                by_point.append(score_sources(prepared, overrides(point)))
                f1 = pool(by_point[-1].values())["f1"]
                print(f"  point {i} {json.dumps(point)}: pooled F1 {f1:.3f}", flush=True)
            loso = leave_out(by_point, {p.source.name: p.source.family for p in prepared})
            loso_text = (
                f"\n\n### Leave-one-source-out over `{args.tune.name}`\n\n"
                "Each held-out source (or family) is reported at the grid point with the best "
                "pooled F1 on the other sources.\n\n" + loso_table(loso, points)
            )
        total = time.perf_counter() - started
        text = report(rows, marks, pooled, details, prepared, total, phq_missing) + loso_text
        print()
        print(text)
        if args.json:
            args.json.write_text(
                json.dumps(
                    [
                        {"source": r["source"].name, "wall": r["wall"], "methods": r["methods"]}
                        for r in rows
                    ],
                    indent=1,
                    default=str,
                )
            )
        if not args.no_write:
            from bench.results import write_section

            path = write_section(
                "detection", text, title="Detection on sources it was not tuned on"
            )
            print(f"\nwrote the detection section of {path}")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


def report(
    rows: list[dict[str, Any]],
    marks: dict[str, str],
    pooled: list[tuple[str, dict]],
    details: list[tuple[str, str, dict, float | None]],
    prepared: list[Prepared],
    total_s: float,
    phq_missing: str | None,
) -> str:
    notes = []
    for p in prepared:
        calib = p.notes.get("calibration")
        if calib:
            notes.append(
                f"`MainStreet_do_calib_dates.csv` lists {calib['calibration_intervals']} "
                f"calibration intervals from {calib['calibration_span'][0][:10]} to "
                f"{calib['calibration_span'][1][:10]}; the MainStreet files span 2019-2020: "
                f"{calib['overlapping']} interval(s) overlap them, so it adds no label."
            )
    quarantined = sum(p.quarantined.height for p in prepared)
    return "\n".join(
        [
            "F1 per source (events found when a flagged reading lies in [start − 2 min, "
            "end + 5 min]; drift when ≥ 25 % of its second half is flagged; minute "
            "precision): see docs/detection-benchmark.md. *tuned* says whether today's "
            "defaults were tuned on the source (`--tuned-on`). Readings the ingest "
            f"quarantined with a reason ({quarantined:,} in all) count as flagged for oxy and "
            "the seed's rules; the peers see them as values. *labelled %*: readings inside a "
            "labelled window, what a perfect detector would flag (judge each method's "
            "*flagged %* in the second table against it).",
            "",
            summary_table(rows, marks, pooled),
            "",
            *(notes + [""] if notes else []),
            (
                f"PyHydroQC not run: {phq_missing}."
                if phq_missing
                else "PyHydroQC is not run on semi/lro-do_cor and demo-wide by default "
                "(`--pyhydroqc all`: its ARIMA fit takes ~50 s per LRO site-series, ~10 min for "
                "the 9 semi-synthetic ones, and about an hour for 150 one-minute demo sensors); "
                "pooled rows show it only where it ran on every member."
            ),
            "",
            f"Whole run: {total_s:.0f} s (every source built, ingested once, scored by every "
            "method).",
            "",
            "### Per source and method (found/events per type)",
            "",
            detail_table(details),
        ]
    )


if __name__ == "__main__":
    main()
