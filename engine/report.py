"""The static report: HTML pages + PNG plots that open in a browser without a server.

``build_report(warehouse, output)`` writes::

    index.html                 fleet overview: monitoring status, stale sensors, sensors
                               ranked by anomaly minutes and by forecast error, production run
    sensor-<slug>.html         one page per sensor (the top ``report.max_sensors``)
    img/*.png                  plots (matplotlib, Agg backend)

Per sensor: actual vs one-step-ahead predicted with the production run's train/valid/test
split markers, residuals, the week-ahead horizon overlay with its interval, and readings
with anomaly events shaded by type. A stage that has not run yet (no scores, no model,
no forecast) is named on the page instead of a plot. Every file is written to a temporary
name in the same folder, then ``os.replace``d, so a reader never sees half a PNG.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine import OxyError  # noqa: E402
from engine.monitor import forecast_errors, parse_interval  # noqa: E402
from engine.registry import (  # noqa: E402
    production_predictions,
    production_run,
    read_meta,
    split_metrics,
)
from engine.warehouse import Warehouse, has_relation, query_frame, sql_text  # noqa: E402

TYPE_COLOURS = {
    "point": "#d62728",
    "collective": "#ff7f0e",
    "contextual": "#9467bd",
    "stuck": "#8c564b",
    "spike": "#e377c2",
    "noise": "#7f7f7f",
    "sensor_fault": "#bcbd22",
    "drift": "#17becf",
    "dropout": "#1f77b4",
    "range": "#2ca02c",
}
SPLIT_KEYS = ("train_start", "train_end", "valid_start", "valid_end", "test_start", "test_end")


@dataclass
class ReportResult:
    """What ``build_report`` wrote."""

    output: Path
    index: Path
    sensor_pages: dict[str, Path] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "index": str(self.index),
            "sensor_pages": {k: str(v) for k, v in self.sensor_pages.items()},
            "images": len(self.images),
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


# -- data -----------------------------------------------------------------------------------


def _split_bounds(meta: dict[str, Any]) -> dict[str, datetime]:
    split = meta.get("split") or {}
    out = {}
    for key in SPLIT_KEYS:
        value = split.get(key, meta.get(key))
        if value:
            ts = datetime.fromisoformat(str(value))
            out[key] = ts.replace(tzinfo=None) if ts.tzinfo is None else ts.replace(tzinfo=None)
    return out


@dataclass
class FleetFacts:
    sensors: pl.DataFrame
    anomaly_minutes: pl.DataFrame | None
    anomaly_note: str
    forecast_error: pl.DataFrame | None
    forecast_note: str
    stale: pl.DataFrame
    monitoring: pl.DataFrame | None
    monitoring_time: datetime | None
    run_id: str | None
    meta: dict[str, Any]


def fleet_facts(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> FleetFacts:
    """Everything the overview page shows, each part None (with a note) when not built yet."""
    sensors = query_frame(con, sql_text("intermediate/int_report_sensors"), {})
    run_id = production_run(warehouse)
    meta = read_meta(warehouse, run_id) if run_id else {}
    if has_relation(con, "anomaly_events"):
        anomaly_minutes = query_frame(con, sql_text("intermediate/int_report_anomaly_minutes"), {})
        anomaly_note = ""
    else:
        anomaly_minutes, anomaly_note = None, "no anomaly scores yet (run `oxy score`)"
    forecast_error, forecast_note = None, ""
    if run_id is None:
        forecast_note = "no production model yet (run `oxy train`)"
    elif not has_relation(con, "forecasts"):
        forecast_note = "no forecasts yet (run `oxy forecast`)"
    else:
        errors = forecast_errors(con, run_id)
        errors = errors.filter(pl.col("scope") != "fleet").rename({"scope": "sensor_id"})
        if errors.height:
            forecast_error = errors.select(
                "sensor_id", pl.col("rmse").alias("forecast_rmse"), "minutes"
            )
        else:
            forecast_note = "no readings have arrived since the latest forecast"
    stale_after = parse_interval(warehouse.config["monitor"]["stale_after"])
    last_seen = query_frame(con, sql_text("intermediate/int_sensor_last_seen"), {})
    stale = last_seen.filter(
        pl.col("last_ts").is_null()
        | (pl.col("fleet_latest_ts") - pl.col("last_ts") > pl.lit(stale_after))
    )
    monitoring, monitoring_time = None, None
    if has_relation(con, "monitoring"):
        latest = query_frame(con, sql_text("intermediate/int_report_latest_monitoring"), {})
        if latest.height:
            monitoring_time = latest["time"][0]
            monitoring = latest.drop("time")
    return FleetFacts(
        sensors,
        anomaly_minutes,
        anomaly_note,
        forecast_error,
        forecast_note,
        stale,
        monitoring,
        monitoring_time,
        run_id,
        meta,
    )


def rank_sensors(facts: FleetFacts) -> pl.DataFrame:
    """Every sensor with its anomaly minutes and forecast error, worst first."""
    ranked = facts.sensors.select("sensor_id", "customer", "unit", "bucket")
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
            forecast_rmse=pl.lit(None, pl.Float64), minutes=pl.lit(None, pl.Int64)
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
        colour = TYPE_COLOURS.get(kind, "#aaaaaa")
        ax.axvspan(
            row["start_ts"],
            row["end_ts"] + timedelta(minutes=1),
            color=colour,
            alpha=0.3,
            label=None if kind in seen else kind,
        )
        seen.add(kind)


def plot_actual_vs_predicted(
    readings: pl.DataFrame, predicted: pl.DataFrame, bounds: dict[str, datetime], unit: str
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot(readings["ts"], readings["value"], lw=0.7, color="#333333", label="actual")
    ax.plot(predicted["ts"], predicted["yhat"], lw=0.7, color="#1f77b4", label="1-step predicted")
    for key, style in (("valid_start", "--"), ("test_start", "-."), ("test_end", ":")):
        if key in bounds:
            ax.axvline(bounds[key], color="#d62728", ls=style, lw=1, label=key.replace("_", " "))
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title("Actual vs predicted (production run), with train/valid/test split")
    ax.legend(loc="upper left", fontsize=8, ncol=5)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_residuals(joined: pl.DataFrame, unit: str) -> plt.Figure:
    residual = joined["value"] - joined["yhat"]
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    ax.plot(joined["ts"], residual, lw=0.6, color="#555555")
    ax.axhline(0, color="#d62728", lw=0.8)
    ax.set_ylabel(f"actual - predicted ({unit})")
    ax.set_title("Residuals")
    hist.hist(residual.drop_nulls().to_numpy(), bins=50, color="#1f77b4")
    hist.set_title("distribution")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_horizon(readings: pl.DataFrame, forecast: pl.DataFrame, unit: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot(readings["ts"], readings["value"], lw=0.7, color="#333333", label="actual")
    ax.fill_between(
        forecast["ts"].to_list(),
        forecast["yhat_lo"].to_numpy(),
        forecast["yhat_hi"].to_numpy(),
        color="#1f77b4",
        alpha=0.25,
        label="interval",
    )
    ax.plot(forecast["ts"], forecast["yhat"], lw=0.8, color="#1f77b4", label="forecast")
    ax.axvline(forecast["origin_ts"][0], color="#d62728", ls="--", lw=1, label="origin")
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title("Week-ahead forecast with its interval")
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_anomalies(readings: pl.DataFrame, events: pl.DataFrame, unit: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot(readings["ts"], readings["value"], lw=0.7, color="#333333", label="actual")
    _shade_events(ax, events)
    ax.set_ylabel(f"DO ({unit})")
    ax.set_title("Readings with anomaly events shaded by type")
    ax.legend(loc="upper left", fontsize=8, ncol=6)
    fig.autofmt_xdate()
    fig.tight_layout()
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
    "img{max-width:100%}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _table(frame: pl.DataFrame, link: Callable[[str], str | None] | None = None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for col, value in row.items():
            text = "" if value is None else (f"{value:.4g}" if isinstance(value, float) else value)
            text = html.escape(str(text))
            target = link(value) if link and col == "sensor_id" else None
            cells.append(
                f"<td><a href='{target}'>{text}</a></td>" if target else f"<td>{text}</td>"
            )
        css = f" class='{row['status']}'" if row.get("status") in ("alert", "warn") else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _img(path: Path, root: Path, alt: str) -> str:
    return f"<p><img src='{path.relative_to(root).as_posix()}' alt='{html.escape(alt)}'></p>"


# -- the build ------------------------------------------------------------------------------


def _sensor_page(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    sensor: dict[str, Any],
    facts: FleetFacts,
    out: Path,
    result: ReportResult,
    cfg: dict[str, Any],
) -> Path:
    sid, unit, name = sensor["sensor_id"], sensor["unit"], slug(sensor["sensor_id"])
    dpi = int(cfg["dpi"])
    paths = [str(p) for p in warehouse.files(con, "readings", sensor["bucket"])]
    parts = [
        f"<p><a href='index.html'>&larr; fleet overview</a> · customer "
        f"{html.escape(str(sensor['customer']))} · unit {html.escape(unit)}</p>"
    ]
    readings = pl.DataFrame(schema={"sensor_id": pl.String, "ts": pl.Datetime, "value": pl.Float64})
    if paths:
        readings = query_frame(
            con,
            sql_text("intermediate/int_report_sensor_readings"),
            {"paths": paths, "sensor_id": sid, "history": cfg["history"]},
        )
    if readings.is_empty():
        parts.append(_note("no readings for this sensor"))
        return write_text(out / f"sensor-{name}.html", _page(f"Sensor {sid}", "".join(parts)))
    img = out / "img"

    # actual vs predicted + residuals
    parts.append("<h2>Actual vs predicted</h2>")
    try:
        predicted, _run_id, why = production_predictions(warehouse, readings)
    except OxyError as exc:  # e.g. a model file that fails its sha256 check
        predicted, why = None, f"the production model cannot be used: {exc}"
    if predicted is None:
        parts.append(_note(why))
    elif predicted.is_empty():
        parts.append(_note("the production model gave no 1-step predictions for this sensor"))
    else:
        bounds = _split_bounds(facts.meta)
        fig = plot_actual_vs_predicted(readings, predicted, bounds, unit)
        result.images.append(save_png(fig, img / f"{name}-actual-vs-predicted.png", dpi))
        parts.append(_img(result.images[-1], out, "actual vs predicted"))
        joined = readings.join(predicted, on=["sensor_id", "ts"], how="inner")
        parts.append("<h2>Residuals</h2>")
        result.images.append(
            save_png(plot_residuals(joined, unit), img / f"{name}-residuals.png", dpi)
        )
        parts.append(_img(result.images[-1], out, "residuals"))

    # week-ahead horizon
    parts.append("<h2>Week-ahead forecast</h2>")
    if facts.run_id is None or not has_relation(con, "forecasts"):
        parts.append(_note(facts.forecast_note or "no forecasts yet (run `oxy forecast`)"))
    else:
        forecast = query_frame(
            con,
            sql_text("intermediate/int_report_sensor_forecast"),
            {"run_id": facts.run_id, "sensor_id": sid},
        )
        if forecast.is_empty():
            parts.append(_note(f"no forecast of run {facts.run_id} for this sensor"))
        else:
            context = parse_interval(cfg["forecast_context"])
            recent = readings.filter(pl.col("ts") > forecast["origin_ts"][0] - context)
            fig = plot_horizon(recent, forecast, unit)
            result.images.append(save_png(fig, img / f"{name}-forecast.png", dpi))
            parts.append(_img(result.images[-1], out, "week-ahead forecast"))

    # anomalies
    parts.append("<h2>Anomalies</h2>")
    if not has_relation(con, "anomaly_events"):
        parts.append(_note(facts.anomaly_note))
    else:
        events = query_frame(
            con,
            sql_text("intermediate/int_report_sensor_events"),
            {"sensor_id": sid, "since": readings["ts"][0]},
        )
        result.images.append(
            save_png(plot_anomalies(readings, events, unit), img / f"{name}-anomalies.png", dpi)
        )
        parts.append(_img(result.images[-1], out, "anomalies"))
        if events.height:
            parts.append(_table(events.sort("peak_severity", descending=True).head(20)))
        else:
            parts.append("<p>no anomaly events in this period</p>")
    return write_text(out / f"sensor-{name}.html", _page(f"Sensor {sid}", "".join(parts)))


def build_report(
    warehouse: Warehouse, output: str | Path | None = None, *, progress: bool = False
) -> ReportResult:
    """Write the HTML report (fleet overview + one page per top sensor) into ``output``.

    Parameters
    ----------
    warehouse
        The warehouse to report on (read only: the report writes nothing into it except
        under ``output`` when that is the default ``<warehouse>/report``).
    output
        Folder for ``index.html``, ``sensor-*.html`` and ``img/*.png``.
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
        facts = fleet_facts(warehouse, con)
        if facts.sensors.is_empty():
            raise OxyError("the warehouse has no sensors yet (run `oxy ingest`)")
        ranked = rank_sensors(facts)
        chosen = ranked.head(int(cfg["max_sensors"]))
        bar = tqdm(
            chosen.iter_rows(named=True),
            total=chosen.height,
            desc="sensor pages",
            unit=" page",
            disable=not progress,
            leave=False,
        )
        for sensor in bar:
            result.sensor_pages[sensor["sensor_id"]] = _sensor_page(
                warehouse, con, sensor, facts, out, result, cfg
            )

    body = []
    body.append("<h2>Production model</h2>")
    if facts.run_id:
        test = split_metrics(facts.meta, "test")
        metrics = ", ".join(f"{k.upper()} {v:.4g}" for k, v in sorted(test.items()))
        body.append(f"<p>run {html.escape(facts.run_id)}: test {html.escape(metrics)}</p>")
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

    body.append("<h2>Stale or silent sensors</h2>")
    if facts.stale.height:
        body.append(_table(facts.stale.select("sensor_id", "last_ts", "fleet_latest_ts")))
    else:
        body.append("<p>none: every sensor reported within monitor.stale_after</p>")

    def link(sensor_id: str) -> str | None:
        page = result.sensor_pages.get(sensor_id)
        return page.name if page else None

    top = int(cfg["ranking_rows"])
    body.append("<h2>Sensors by anomaly minutes</h2>")
    if facts.anomaly_minutes is None:
        body.append(_note(facts.anomaly_note))
    else:
        by_anomaly = ranked.filter(pl.col("anomaly_minutes") > 0).head(top)
        if by_anomaly.height:
            fig = plot_ranking(
                by_anomaly["sensor_id"].to_list(),
                by_anomaly["anomaly_minutes"].cast(pl.Float64).to_list(),
                "Anomaly minutes",
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
            _table(by_error.select("sensor_id", "forecast_rmse", "minutes").head(top), link)
        )

    body.append("<h2>Sensor pages</h2><ul>")
    for sid, page in result.sensor_pages.items():
        body.append(f"<li><a href='{page.name}'>{html.escape(sid)}</a></li>")
    body.append("</ul>")
    omitted = ranked.height - len(result.sensor_pages)
    if omitted:
        result.notes.append(f"{omitted} sensors without a page (report.max_sensors)")
        body.append(_note(f"{omitted} more sensors have no page (raise report.max_sensors)"))
    result.notes += [n for n in (facts.anomaly_note, facts.forecast_note) if n]
    write_text(result.index, _page("oxy report", "".join(body)))
    return result
