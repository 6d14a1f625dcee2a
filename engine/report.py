"""The static report: HTML pages + PNG plots that open in a browser without a server.

``build_report(warehouse, output, sensors=..., start=..., end=..., utc=...)`` writes::

    index.html                 fleet overview: the production run's headline metrics beside
                               the naive baselines they are measured against, the latest
                               monitoring, stale sensors, sensors ranked by anomaly minutes in
                               the window and by forecast error
    sensor-<slug>.html         one page per chosen sensor (``--sensor``, else the worst
                               ``report.max_sensors`` in the window)
    img/*.png                  plots (matplotlib, Agg backend)

The window is ``(start, end]``: by default the ``report.history`` before the fleet's latest
reading. Naive ``start``/``end`` are read in the zone the pages show: each sensor's site zone
(IANA, from ``sensors``), or UTC with ``utc=True``; the fleet ranking reads them in UTC.

Per sensor: readings with its anomaly events shaded by type, actual vs one-step-ahead
predicted with the production run's split markers, residuals, the week-ahead forecast with its
interval, and a table of **every** event in the window, each linked to a plot of its own
(the first ``report.event_plots`` by peak severity get one). Lines break where the readings
have a gap (longer than ``report.gap_factor`` x the sensor's usual interval), so a week without
data is drawn as a week without data. Every time axis names its zone.

A stage that has not run yet (no scores, no model, no forecast) is named on the page instead
of a plot. Every file is written to a temporary name in the same folder, then ``os.replace``d,
so a reader never sees half a PNG.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from engine import OxyError  # noqa: E402
from engine.detectors import COLOURS  # noqa: E402
from engine.monitor import END_OF_TIME, parse_interval  # noqa: E402
from engine.progress import bar as progress_bar  # noqa: E402
from engine.registry import (  # noqa: E402
    production_predictions,
    production_run,
    read_meta,
    split_metrics,
)
from engine.warehouse import Warehouse, has_relation, query_frame, sql_text  # noqa: E402

# Anomaly types get their colour from the detector registry (pages, legends, event tables);
# a type it does not know is drawn grey.
TYPE_COLOURS: dict[str, str] = COLOURS
UNKNOWN_TYPE_COLOUR = "#aaaaaa"
SPLIT_KEYS = ("train_start", "train_end", "valid_start", "valid_end", "test_start", "test_end")
NAIVES = (("naive_day", "naive: same time yesterday"), ("naive_week", "naive: same time last week"))


def type_colour(anomaly_type: str) -> str:
    """The colour of an anomaly type (grey for a type the mapping does not know)."""
    return TYPE_COLOURS.get(anomaly_type, UNKNOWN_TYPE_COLOUR)


@dataclass
class ReportResult:
    """What ``build_report`` wrote."""

    output: Path
    index: Path
    start: datetime | None = None
    end: datetime | None = None
    sensor_pages: dict[str, Path] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    events: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "index": str(self.index),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "sensor_pages": {k: str(v) for k, v in self.sensor_pages.items()},
            "images": len(self.images),
            "events": self.events,
            "notes": self.notes,
        }


def slug(sensor_id: str) -> str:
    """A file-name-safe, unique name for a sensor (readable part + short hash).

    Examples
    --------
    >>> slug("fjord|cage 3/DO")
    'fjord_cage_3_DO-085243d8'
    """
    readable = re.sub(r"[^A-Za-z0-9]+", "_", sensor_id).strip("_")[:40] or "sensor"
    return f"{readable}-{hashlib.sha1(sensor_id.encode('utf-8')).hexdigest()[:8]}"


# -- atomic writes --------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_png(fig: plt.Figure, path: Path, dpi: int) -> Path:
    """Save a figure atomically as PNG and close it."""
    try:
        _atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return path


def write_text(path: Path, text: str) -> Path:
    _atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# -- time -----------------------------------------------------------------------------------


def to_utc(moment: datetime, zone: str) -> datetime:
    """A time given in ``zone`` (naive, or aware in any zone) as naive UTC.

    Examples
    --------
    >>> to_utc(datetime(2024, 7, 1, 12), "Europe/Oslo")
    datetime.datetime(2024, 7, 1, 10, 0)
    """
    aware = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))
    return aware.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def local_text(ts: datetime | None, zone: str) -> str:
    """A naive UTC time shown in ``zone`` (``YYYY-MM-DD HH:MM``)."""
    if ts is None:
        return ""
    return ts.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def with_gaps(frame: pl.DataFrame, gap_factor: float) -> pl.DataFrame:
    """``frame`` (sorted by ts) with a null row inside every gap longer than ``gap_factor`` x
    the median interval, so a plotted line breaks there instead of bridging it.

    Examples
    --------
    >>> f = pl.DataFrame({"ts": [datetime(2024, 1, 1, 0, m) for m in (0, 1, 2, 30, 31)],
    ...                   "value": [1.0, 2, 3, 4, 5]})
    >>> with_gaps(f, 5)["value"].to_list()
    [1.0, 2.0, 3.0, None, 4.0, 5.0]
    """
    if frame.height < 3:
        return frame
    steps = frame["ts"].diff()
    usual = steps.drop_nulls().median()
    if usual is None:
        return frame
    limit = usual * gap_factor  # type: ignore[operator]
    breaks = frame.filter(steps > limit).select(pl.col("ts") - timedelta(microseconds=1))
    if breaks.is_empty():
        return frame
    filler = breaks.with_columns(
        [pl.lit(None, dtype=frame.schema[c]).alias(c) for c in frame.columns if c != "ts"]
    ).select(frame.columns)
    return pl.concat([frame, filler]).sort("ts")


def _margins(fig: plt.Figure) -> None:
    """Fixed margins for the time plots (``tight_layout`` measured every tick label: a third
    of a page's drawing time)."""
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.2, top=0.88, wspace=0.15)


def _time_axis(ax: plt.Axes, zone: str) -> None:
    tz = ZoneInfo(zone)
    locator = mdates.AutoDateLocator(tz=tz)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    ax.set_xlabel(f"time ({zone})")


# -- data -----------------------------------------------------------------------------------


def _split_bounds(meta: dict[str, Any]) -> dict[str, datetime]:
    split = meta.get("split") or {}
    out = {}
    for key in SPLIT_KEYS:
        value = split.get(key, meta.get(key))
        if value:
            out[key] = datetime.fromisoformat(str(value)).replace(tzinfo=None)
    return out


@dataclass
class FleetFacts:
    sensors: pl.DataFrame
    start: datetime
    end: datetime
    anomaly_minutes: pl.DataFrame | None
    anomaly_note: str
    forecast_error: pl.DataFrame | None
    forecast_note: str
    monitoring: pl.DataFrame | None
    monitoring_time: datetime | None
    run_id: str | None
    meta: dict[str, Any]


def fleet_facts(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    start: datetime | None,
    end: datetime | None,
) -> FleetFacts:
    """Everything the overview page shows, each part None (with a note) when not built yet."""
    sensors = query_frame(con, sql_text("report/sensors"), {})
    latest = con.execute(sql_text("meta/readings_span")).fetchall()[0][1]
    if latest is None:
        raise OxyError("the warehouse has no readings yet (run `oxy ingest`)")
    history = parse_interval(warehouse.config["report"]["history"])
    end = end if end is not None else latest
    start = start if start is not None else end - history
    if start >= end:
        raise OxyError(f"report: --from ({start}) must be before --to ({end})")
    run_id = production_run(warehouse)
    meta = read_meta(warehouse, run_id) if run_id else {}
    window = {"start": start, "end": end}
    if has_relation(con, "anomaly_events"):
        anomaly_minutes = query_frame(con, sql_text("report/anomaly_minutes"), window)
        anomaly_note = ""
    else:
        anomaly_minutes, anomaly_note = None, "no anomaly scores yet (run `oxy score`)"
    forecast_error, forecast_note = None, ""
    if run_id is None:
        forecast_note = "no production model yet (run `oxy train`)"
    elif not has_relation(con, "forecasts"):
        forecast_note = "no forecasts yet (run `oxy forecast`)"
    else:
        errors = query_frame(
            con, sql_text("monitor/forecast_errors"), {"run_id": run_id, "as_of": END_OF_TIME}
        )
        errors = errors.filter(pl.col("scope") != "fleet").rename({"scope": "sensor_id"})
        if errors.height:
            forecast_error = errors.select(
                "sensor_id",
                pl.col("rmse").alias("forecast_rmse"),
                pl.col("mae").alias("forecast_mae"),
                pl.col("naive_mae").alias("naive_mae"),
                "minutes",
            )
        else:
            forecast_note = "no readings have arrived since the latest forecast"
    monitoring, monitoring_time = None, None
    if has_relation(con, "monitoring"):
        found = query_frame(con, sql_text("report/latest_monitoring"), {})
        if found.height:
            monitoring_time = found["time"][0]
            monitoring = found.drop("time")
    return FleetFacts(
        sensors,
        start,
        end,
        anomaly_minutes,
        anomaly_note,
        forecast_error,
        forecast_note,
        monitoring,
        monitoring_time,
        run_id,
        meta,
    )


def rank_sensors(facts: FleetFacts) -> pl.DataFrame:
    """Every sensor with its anomaly minutes in the window and forecast error, worst first."""
    ranked = facts.sensors.select("sensor_id", "customer", "timezone", "unit", "bucket")
    if facts.anomaly_minutes is not None:
        ranked = ranked.join(facts.anomaly_minutes, on="sensor_id", how="left")
    else:
        ranked = ranked.with_columns(
            anomaly_minutes=pl.lit(None, pl.Int64), events=pl.lit(None, pl.Int64)
        )
    if facts.forecast_error is not None:
        ranked = ranked.join(facts.forecast_error, on="sensor_id", how="left")
    else:
        ranked = ranked.with_columns(
            forecast_rmse=pl.lit(None, pl.Float64),
            forecast_mae=pl.lit(None, pl.Float64),
            naive_mae=pl.lit(None, pl.Float64),
            minutes=pl.lit(None, pl.Int64),
        )
    return ranked.sort(
        ["anomaly_minutes", "forecast_rmse", "sensor_id"],
        descending=[True, True, False],
        nulls_last=True,
    )


# -- plots ----------------------------------------------------------------------------------


def _shade_events(ax: plt.Axes, events: pl.DataFrame) -> None:
    seen = set()
    for row in events.iter_rows(named=True):
        kind = row["anomaly_type"]
        ax.axvspan(
            row["start_ts"],
            row["end_ts"] + timedelta(minutes=1),
            color=type_colour(kind),
            alpha=0.3,
            label=None if kind in seen else kind,
        )
        seen.add(kind)


def _line(ax: plt.Axes, frame: pl.DataFrame, column: str, gap: float, **style: Any) -> None:
    gapped = with_gaps(frame.select("ts", column), gap)
    ax.plot(gapped["ts"].to_numpy(), gapped[column].to_numpy(), **style)


def plot_actual_vs_predicted(
    readings: pl.DataFrame,
    predicted: pl.DataFrame,
    bounds: dict[str, datetime],
    unit: str,
    zone: str,
    gap: float,
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    _line(ax, readings, "value", gap, lw=0.7, color="#333333", label="actual")
    _line(ax, predicted, "yhat", gap, lw=0.7, color="#1f77b4", label="1-step predicted")
    first, last = readings["ts"].min(), readings["ts"].max()
    for key, style in (("valid_start", "--"), ("test_start", "-."), ("test_end", ":")):
        if key in bounds and first <= bounds[key] <= last:
            ax.axvline(bounds[key], color="#d62728", ls=style, lw=1, label=key.replace("_", " "))
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title("Actual vs predicted (production run), with train/valid/test split")
    ax.legend(loc="upper left", fontsize=8, ncol=5)
    _time_axis(ax, zone)
    _margins(fig)
    return fig


def plot_residuals(joined: pl.DataFrame, unit: str, zone: str, gap: float) -> plt.Figure:
    residual = joined.select("ts", (pl.col("value") - pl.col("yhat")).alias("residual"))
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    _line(ax, residual, "residual", gap, lw=0.6, color="#555555")
    ax.axhline(0, color="#d62728", lw=0.8)
    ax.set_ylabel(f"actual - predicted ({unit})")
    ax.set_title("Residuals")
    _time_axis(ax, zone)
    hist.hist(residual["residual"].drop_nulls().to_numpy(), bins=50, color="#1f77b4")
    hist.set_title("distribution")
    hist.set_xlabel(unit)
    _margins(fig)
    return fig


def plot_horizon(
    readings: pl.DataFrame, forecast: pl.DataFrame, unit: str, zone: str, gap: float
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    if readings.height:
        _line(ax, readings, "value", gap, lw=0.7, color="#333333", label="actual")
    ax.fill_between(
        forecast["ts"].to_numpy(),
        forecast["yhat_lo"].to_numpy(),
        forecast["yhat_hi"].to_numpy(),
        color="#1f77b4",
        alpha=0.25,
        label="interval",
    )
    _line(ax, forecast, "yhat", gap, lw=0.8, color="#1f77b4", label="forecast")
    ax.axvline(forecast["origin_ts"][0], color="#d62728", ls="--", lw=1, label="origin")
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title("Week-ahead forecast with its interval")
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    _time_axis(ax, zone)
    _margins(fig)
    return fig


def plot_anomalies(
    readings: pl.DataFrame, events: pl.DataFrame, unit: str, zone: str, gap: float, title: str
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    _line(ax, readings, "value", gap, lw=0.7, color="#333333", label="actual")
    _shade_events(ax, events)
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncol=6)
    _time_axis(ax, zone)
    _margins(fig)
    return fig


def plot_event(
    readings: pl.DataFrame, event: dict[str, Any], unit: str, zone: str, gap: float
) -> plt.Figure:
    """One event with the readings around it, the event shaded in its type's colour."""
    fig, ax = plt.subplots(figsize=(8, 3))
    if readings.height:
        _line(ax, readings, "value", gap, lw=0.8, color="#333333", label="actual")
    ax.axvspan(
        event["start_ts"],
        event["end_ts"] + timedelta(minutes=1),
        color=type_colour(event["anomaly_type"]),
        alpha=0.3,
        label=event["anomaly_type"],
    )
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title(
        f"{event['anomaly_type']} from {local_text(event['start_ts'], zone)}, "
        f"{event['minutes']} min, peak severity {event['peak_severity']:.2f}"
    )
    ax.legend(loc="upper left", fontsize=8)
    _time_axis(ax, zone)
    _margins(fig)
    return fig


def plot_ranking(labels: list[str], values: list[float], title: str, xlabel: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1], color="#1f77b4")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


# -- HTML -----------------------------------------------------------------------------------

_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    ".alert{background:#f8d0d0}.warn{background:#fbeec2}.note{color:#8a5a00}"
    "img{max-width:100%}.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _table(
    frame: pl.DataFrame,
    link: Callable[[str], str | None] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    names = headers or {}
    head = "".join(f"<th>{html.escape(names.get(c, c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for col, value in row.items():
            text = html.escape(_cell(value))
            target = link(value) if link and col == "sensor_id" else None
            cells.append(
                f"<td><a href='{html.escape(target)}'>{text}</a></td>"
                if target
                else f"<td>{text}</td>"
            )
        css = f" class='{row['status']}'" if row.get("status") in ("alert", "warn") else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _img(path: Path, root: Path, alt: str) -> str:
    return f"<p><img src='{path.relative_to(root).as_posix()}' alt='{html.escape(alt)}'></p>"


def headline_metrics(meta: dict[str, Any]) -> pl.DataFrame | None:
    """The production run's test MAE/RMSE/MASE beside both seasonal naives on the same
    backtest (the baselines MASE is measured against); None without a recorded backtest."""
    week = ((meta.get("metrics") or {}).get("backtest") or {}).get("week")
    if not week or "model" not in week:
        return None
    rows = [("model (production run)", week["model"])]
    rows += [(label, week[key]) for key, label in NAIVES if key in week]
    return pl.DataFrame(
        {
            "forecast": [r[0] for r in rows],
            "MAE": [float(r[1].get("mae", math.nan)) for r in rows],
            "RMSE": [float(r[1].get("rmse", math.nan)) for r in rows],
            "MASE": [float(r[1].get("mase", math.nan)) for r in rows],
        }
    )


# -- the build ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageWindow:
    """The window one sensor page shows: UTC bounds and the zone its axes name."""

    start: datetime
    end: datetime
    zone: str


def _sensor_page(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    sensor: dict[str, Any],
    facts: FleetFacts,
    window: PageWindow,
    out: Path,
    result: ReportResult,
    cfg: dict[str, Any],
) -> Path:
    sid, unit, name, zone = (
        sensor["sensor_id"],
        sensor["unit"],
        slug(sensor["sensor_id"]),
        window.zone,
    )
    dpi, gap = int(cfg["dpi"]), float(cfg["gap_factor"])
    page_path = out / f"sensor-{name}.html"
    paths = [str(p) for p in warehouse.files(con, "readings", sensor["bucket"])]
    parts = [
        f"<p><a href='index.html'>&larr; fleet overview</a> · customer "
        f"{html.escape(str(sensor['customer']))} · unit {html.escape(unit)} · "
        f"{html.escape(local_text(window.start, zone))} to "
        f"{html.escape(local_text(window.end, zone))} ({html.escape(zone)})</p>"
    ]
    around = timedelta(days=1)  # event plots may reach past the page's window
    readings = pl.DataFrame(schema={"sensor_id": pl.String, "ts": pl.Datetime, "value": pl.Float64})
    if paths:
        readings = query_frame(
            con,
            sql_text("report/sensor_readings"),
            {
                "paths": paths,
                "sensor_id": sid,
                "start": window.start - around,
                "end": window.end + around,
            },
        )
    shown = readings.filter(pl.col("ts").is_between(window.start, window.end, closed="right"))
    if shown.is_empty():
        parts.append(_note("no readings for this sensor in this window"))
    img = out / "img"

    events = None
    parts.append("<h2>Readings and anomaly events</h2>")
    if not has_relation(con, "anomaly_events"):
        parts.append(_note(facts.anomaly_note))
    else:
        events = query_frame(
            con,
            sql_text("report/sensor_events"),
            {"sensor_id": sid, "start": window.start, "end": window.end},
        )
    if shown.height:
        fig = plot_anomalies(
            shown,
            events if events is not None else pl.DataFrame(),
            unit,
            zone,
            gap,
            "Readings with anomaly events shaded by type",
        )
        result.images.append(save_png(fig, img / f"{name}-anomalies.png", dpi))
        parts.append(_img(result.images[-1], out, "readings with anomaly events"))

    if events is not None:
        parts.append(_events_table(readings, events, sensor, zone, out, result, cfg))

    if shown.height:
        _model_sections(
            warehouse, con, shown, readings, facts, sensor, zone, out, result, cfg, parts
        )
    return write_text(page_path, _page(f"Sensor {sid}", "".join(parts)))


def _events_table(
    readings: pl.DataFrame,
    events: pl.DataFrame,
    sensor: dict[str, Any],
    zone: str,
    out: Path,
    result: ReportResult,
    cfg: dict[str, Any],
) -> str:
    """Every event of the window, in time order, each linked to its own plot."""
    name, unit = slug(sensor["sensor_id"]), sensor["unit"]
    dpi, gap = int(cfg["dpi"]), float(cfg["gap_factor"])
    if events.is_empty():
        return "<p>no anomaly events in this window</p>"
    limit = int(cfg["event_plots"])
    plotted = set(
        events.with_row_index("i").sort("peak_severity", descending=True).head(limit)["i"]
    )
    rows = []
    for i, event in enumerate(events.iter_rows(named=True)):
        link = "no plot (report.event_plots)"
        if i in plotted:
            pad = min(
                max(timedelta(minutes=3 * int(event["minutes"])), timedelta(hours=2)),
                timedelta(days=1),
            )
            near = readings.filter(
                pl.col("ts").is_between(event["start_ts"] - pad, event["end_ts"] + pad)
            )
            path = save_png(
                plot_event(near, event, unit, zone, gap),
                out / "img" / f"{name}-event-{i + 1:04d}.png",
                dpi,
            )
            result.images.append(path)
            link = f"<a href='{path.relative_to(out).as_posix()}'>plot</a>"
        colour = type_colour(event["anomaly_type"])
        rows.append(
            f"<tr id='event-{i + 1}'><td>{i + 1}</td>"
            f"<td>{html.escape(local_text(event['start_ts'], zone))}</td>"
            f"<td>{html.escape(local_text(event['end_ts'], zone))}</td>"
            f"<td>{event['minutes']}</td>"
            f"<td><span class='swatch' style='background:{colour}'></span>"
            f"{html.escape(event['anomaly_type'])}</td>"
            f"<td>{event['peak_severity']:.2f}</td><td>{event['mean_severity']:.2f}</td>"
            f"<td>{link}</td></tr>"
        )
    result.events += events.height
    head = (
        f"<tr><th>#</th><th>start ({html.escape(zone)})</th><th>end ({html.escape(zone)})</th>"
        "<th>minutes</th><th>type</th><th>peak severity</th><th>mean severity</th>"
        "<th>plot</th></tr>"
    )
    return f"<h2>Anomaly events ({events.height})</h2><table>{head}{''.join(rows)}</table>"


def _model_sections(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    shown: pl.DataFrame,
    readings: pl.DataFrame,
    facts: FleetFacts,
    sensor: dict[str, Any],
    zone: str,
    out: Path,
    result: ReportResult,
    cfg: dict[str, Any],
    parts: list[str],
) -> None:
    sid, unit, name = sensor["sensor_id"], sensor["unit"], slug(sensor["sensor_id"])
    dpi, gap = int(cfg["dpi"]), float(cfg["gap_factor"])
    img = out / "img"
    parts.append("<h2>Actual vs predicted</h2>")
    try:
        predicted, _run_id, why = production_predictions(warehouse, shown)
    except OxyError as exc:  # e.g. a model file that fails its sha256 check
        predicted, why = None, f"the production model cannot be used: {exc}"
    if predicted is None:
        parts.append(_note(why))
    elif predicted.is_empty():
        parts.append(_note("the production model gave no 1-step predictions for this sensor"))
    else:
        bounds = _split_bounds(facts.meta)
        fig = plot_actual_vs_predicted(shown, predicted, bounds, unit, zone, gap)
        result.images.append(save_png(fig, img / f"{name}-actual-vs-predicted.png", dpi))
        parts.append(_img(result.images[-1], out, "actual vs predicted"))
        joined = shown.join(predicted, on=["sensor_id", "ts"], how="inner")
        parts.append("<h2>Residuals</h2>")
        fig = plot_residuals(joined, unit, zone, gap)
        result.images.append(save_png(fig, img / f"{name}-residuals.png", dpi))
        parts.append(_img(result.images[-1], out, "residuals"))

    parts.append("<h2>Week-ahead forecast</h2>")
    if facts.run_id is None or not has_relation(con, "forecasts"):
        parts.append(_note(facts.forecast_note or "no forecasts yet (run `oxy forecast`)"))
        return
    forecast = query_frame(
        con,
        sql_text("report/sensor_forecast"),
        {"run_id": facts.run_id, "sensor_id": sid},
    )
    if forecast.is_empty():
        parts.append(_note(f"no forecast of run {facts.run_id} for this sensor"))
        return
    context = parse_interval(cfg["forecast_context"])
    origin = forecast["origin_ts"][0]
    recent = readings.filter(pl.col("ts").is_between(origin - context, forecast["ts"].max()))
    fig = plot_horizon(recent, forecast, unit, zone, gap)
    result.images.append(save_png(fig, img / f"{name}-forecast.png", dpi))
    parts.append(_img(result.images[-1], out, "week-ahead forecast"))


def build_report(
    warehouse: Warehouse,
    output: str | Path | None = None,
    *,
    sensors: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    utc: bool = False,
    progress: bool = False,
) -> ReportResult:
    """Write the HTML report (fleet overview + one page per chosen sensor) into ``output``.

    Parameters
    ----------
    warehouse
        The warehouse to report on (read only: the report writes nothing into it except
        under ``output`` when that is the default ``<warehouse>/report``).
    output
        Folder for ``index.html``, ``sensor-*.html`` and ``img/*.png``.
    sensors
        The sensors that get a page (default: the worst ``report.max_sensors`` in the window).
    start, end
        The window ``(start, end]`` (default: the ``report.history`` up to the fleet's latest
        reading). Naive times are read in each sensor's site zone, or UTC with ``utc``.
    utc
        Show (and read) times in UTC instead of each site's local time.
    progress
        Show a progress bar (stderr) over the sensor pages.
    """
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` first)")
    cfg = warehouse.config["report"]
    out = Path(output) if output else warehouse.root / "report"
    (out / "img").mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    result = ReportResult(out, out / "index.html")
    dpi = int(cfg["dpi"])
    with warehouse.reader() as con:
        facts = fleet_facts(
            warehouse,
            con,
            to_utc(start, "UTC") if start else None,
            to_utc(end, "UTC") if end else None,
        )
        if facts.sensors.is_empty():
            raise OxyError("the warehouse has no sensors yet (run `oxy ingest`)")
        result.start, result.end = facts.start, facts.end
        ranked = rank_sensors(facts)
        if sensors:
            unknown = sorted(set(sensors) - set(ranked["sensor_id"]))
            if unknown:
                raise OxyError(f"unknown sensor(s): {', '.join(unknown)}")
            order = {s: i for i, s in enumerate(dict.fromkeys(sensors))}
            chosen = ranked.filter(pl.col("sensor_id").is_in(list(order))).sort(
                pl.col("sensor_id").replace_strict(order, return_dtype=pl.Int64)
            )
        else:
            chosen = ranked.head(int(cfg["max_sensors"]))
        pages = progress_bar(
            chosen.iter_rows(named=True),
            total=chosen.height,
            desc="report",
            unit="page",
            enabled=progress,
        )
        for sensor in pages:
            zone = "UTC" if utc else sensor["timezone"]
            window = PageWindow(
                to_utc(start, zone) if start else facts.start,
                to_utc(end, zone) if end else facts.end,
                zone,
            )
            result.sensor_pages[sensor["sensor_id"]] = _sensor_page(
                warehouse, con, sensor, facts, window, out, result, cfg
            )

    body = [
        f"<p>Window {facts.start:%Y-%m-%d %H:%M} to {facts.end:%Y-%m-%d %H:%M} UTC; sensor "
        f"pages show {'UTC' if utc else 'each site’s local time'}.</p>"
    ]
    body.append("<h2>Production model</h2>")
    if facts.run_id:
        body.append(
            f"<p>run {html.escape(facts.run_id)}, week-ahead backtest on its test days:</p>"
        )
        headline = headline_metrics(facts.meta)
        if headline is not None:
            body.append(_table(headline))
            body.append(
                "<p>MASE = the model's mean absolute error over the seasonal naive's scale: "
                "below 1 beats the naive it is measured against.</p>"
            )
        else:
            test = split_metrics(facts.meta, "test")
            metrics = ", ".join(f"{k.upper()} {v:.4g}" for k, v in sorted(test.items()))
            body.append(f"<p>test {html.escape(metrics)}</p>")
            body.append(_note("this run recorded no naive baseline to compare with"))
    else:
        body.append(_note("no production model yet (run `oxy train`)"))

    body.append("<h2>Latest monitoring</h2>")
    if facts.monitoring is None:
        body.append(_note("monitoring has not run yet (run `oxy monitor`)"))
    else:
        counts = facts.monitoring.group_by("status").len().sort("status")
        summary = ", ".join(f"{n} {s}" for s, n in counts.iter_rows())
        body.append(f"<p>{facts.monitoring_time:%Y-%m-%d %H:%M} UTC: {html.escape(summary)}</p>")
        flagged = facts.monitoring.filter(pl.col("status").is_in(["alert", "warn"]))
        body.append(_table(flagged) if flagged.height else "<p>no warnings or alerts</p>")

    def link(sensor_id: str) -> str | None:
        page = result.sensor_pages.get(sensor_id)
        return page.name if page else None

    body.append("<h2>Stale or silent sensors</h2>")
    if facts.monitoring is None:
        body.append(_note("monitoring has not run yet (run `oxy monitor`)"))
    else:
        stale = facts.monitoring.filter(
            (pl.col("check") == "stale") & (pl.col("status") == "alert")
        ).select(pl.col("scope").alias("sensor_id"), pl.col("value").alias("minutes"), "reason")
        body.append(_table(stale, link) if stale.height else "<p>none in the latest monitoring</p>")

    top = int(cfg["ranking_rows"])
    body.append("<h2>Sensors by anomaly minutes in the window</h2>")
    if facts.anomaly_minutes is None:
        body.append(_note(facts.anomaly_note))
    else:
        by_anomaly = ranked.filter(pl.col("anomaly_minutes") > 0).head(top)
        if by_anomaly.height:
            fig = plot_ranking(
                by_anomaly["sensor_id"].to_list(),
                by_anomaly["anomaly_minutes"].cast(pl.Float64).to_list(),
                "Anomaly minutes in the window",
                "minutes",
            )
            result.images.append(save_png(fig, out / "img" / "fleet-anomaly-minutes.png", dpi))
            body.append(_img(result.images[-1], out, "sensors by anomaly minutes"))
        body.append(_table(ranked.select("sensor_id", "anomaly_minutes", "events").head(top), link))

    body.append("<h2>Sensors by forecast error</h2>")
    if facts.forecast_error is None:
        body.append(_note(facts.forecast_note))
    else:
        by_error = ranked.filter(pl.col("forecast_rmse").is_not_null()).sort(
            "forecast_rmse", descending=True
        )
        fig = plot_ranking(
            by_error["sensor_id"].head(top).to_list(),
            by_error["forecast_rmse"].head(top).to_list(),
            "Forecast RMSE on arrived minutes",
            "RMSE",
        )
        result.images.append(save_png(fig, out / "img" / "fleet-forecast-error.png", dpi))
        body.append(_img(result.images[-1], out, "sensors by forecast error"))
        body.append(
            "<p>Each sensor's latest forecast on the minutes that have arrived since its "
            "origin; its MAE beside the naive MAE (the previous reading) the monitor's "
            "forecast MASE is measured against.</p>"
        )
        body.append(
            _table(
                by_error.select(
                    "sensor_id", "forecast_rmse", "forecast_mae", "naive_mae", "minutes"
                ).head(top),
                link,
                {
                    "forecast_rmse": "RMSE",
                    "forecast_mae": "MAE",
                    "naive_mae": "naive MAE (previous reading)",
                    "minutes": "arrived minutes",
                },
            )
        )

    body.append("<h2>Sensor pages</h2><ul>")
    for sid, page in result.sensor_pages.items():
        body.append(f"<li><a href='{html.escape(page.name)}'>{html.escape(sid)}</a></li>")
    body.append("</ul>")
    omitted = ranked.height - len(result.sensor_pages)
    if omitted and not sensors:
        result.notes.append(f"{omitted} sensors without a page (report.max_sensors)")
        body.append(
            _note(
                f"{omitted} more sensors have no page (raise report.max_sensors, or name them "
                "with --sensor)"
            )
        )
    result.notes += [n for n in (facts.anomaly_note, facts.forecast_note) if n]
    write_text(result.index, _page("oxy report", "".join(body)))
    return result
