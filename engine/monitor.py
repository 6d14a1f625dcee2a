"""Monitoring: compare recent data with the production baseline, record and summarise.

``run_monitor`` runs five families of checks and appends one row per check and scope to
the ``monitoring`` table (then refreshes the ``monitoring`` mart):

* ``stale`` — per sensor: minutes since its last reading, relative to the fleet's latest
  timestamp; alert past ``monitor.stale_after``;
* ``anomaly_rate`` and ``severity_median`` — per sensor and fleet, from ``anomaly_scores``:
  the recent window compared with the reference window;
* ``forecast_rmse`` and ``forecast_mase`` — per sensor and fleet: the production run's
  latest forecast against the readings that arrived since its origin, compared with the
  run's test metrics (MASE as :mod:`engine.metrics` defines it, with the scale
  ``oxy forecast`` stored in ``forecast_status``);
* ``drift_psi`` — per sensor and fleet: population stability index of the value
  distribution, recent window vs reference window (reference deciles per sensor; reference
  minutes flagged anomalous are left out, so the baseline is normal behaviour).

Windows: recent = ``(latest - recent_window, latest]`` where ``latest`` is the fleet's
latest reading; reference = the ``reference_window`` before the recent window, ending no
later than the production run's test end when there is one (the data the model was
judged on). Checks whose inputs do not exist yet are recorded as ``skipped`` with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl

from engine import OxyError
from engine.registry import production_run, read_meta, split_metrics, test_window
from engine.warehouse import (
    Warehouse,
    has_relation,
    query_frame,
    readings_buckets,
    run_sql,
    sql_rows,
    sql_text,
)

STATUSES = ("ok", "warn", "alert", "skipped")
_RANK = {"skipped": 0, "ok": 1, "warn": 2, "alert": 3}


@dataclass(frozen=True)
class Check:
    """One monitoring result row (``time`` is filled in when recorded)."""

    scope: str
    check: str
    value: float | None
    threshold: float | None
    status: str
    reason: str


@dataclass(frozen=True)
class MonitorResult:
    """What one ``oxy monitor`` run found."""

    time: datetime
    checks: list[Check]

    @property
    def status(self) -> str:
        """The worst status over all checks (``alert`` > ``warn`` > ``ok`` > ``skipped``)."""
        return max((c.status for c in self.checks), key=_RANK.__getitem__, default="skipped")

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(timespec="seconds"),
            "status": self.status,
            "counts": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }


def parse_interval(text: str) -> timedelta:
    """``"2 hours"``/``"1 day"``/``"90 minutes"`` -> timedelta (clear error otherwise).

    Examples
    --------
    >>> parse_interval("2 hours")
    datetime.timedelta(seconds=7200)
    """
    units = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}
    try:
        amount, unit = str(text).split()
        seconds = units[unit.lower().rstrip("s")]
        return timedelta(seconds=float(amount) * seconds)
    except (ValueError, KeyError):
        raise OxyError(
            f"monitor: cannot read interval {text!r} (use e.g. '90 minutes', '2 hours', '1 day')"
        ) from None


def _grade(value: float, warn: float, alert: float) -> str:
    if value > alert:
        return "alert"
    if value > warn:
        return "warn"
    return "ok"


# -- checks ---------------------------------------------------------------------------------


def stale_checks(con: duckdb.DuckDBPyConnection, stale_after: timedelta) -> list[Check]:
    """One ``stale`` check per registered sensor: minutes behind the fleet's latest reading."""
    rows = con.execute(sql_text("intermediate/int_sensor_last_seen")).fetchall()
    limit = stale_after.total_seconds() / 60
    checks = []
    for sensor_id, last_ts, _readings, fleet_latest in rows:
        if last_ts is None:
            checks.append(Check(sensor_id, "stale", None, limit, "alert", "silent: no readings"))
            continue
        behind = (fleet_latest - last_ts).total_seconds() / 60
        status = "alert" if behind > limit else "ok"
        reason = (
            f"no data for {behind:.0f} min (last {last_ts:%Y-%m-%d %H:%M} UTC)"
            if status == "alert"
            else f"last reading {behind:.0f} min before the fleet's latest"
        )
        checks.append(Check(sensor_id, "stale", behind, limit, status, reason))
    return checks


def anomaly_checks(
    con: duckdb.DuckDBPyConnection, windows: dict[str, datetime], cfg: dict[str, Any]
) -> list[Check]:
    """``anomaly_rate`` and ``severity_median`` per sensor and fleet, recent vs reference."""
    if not has_relation(con, "anomaly_scores"):
        reason = "anomaly_scores not built yet (run `oxy score`)"
        return [
            Check("fleet", name, None, None, "skipped", reason)
            for name in ("anomaly_rate", "severity_median")
        ]
    rows = con.execute(sql_text("intermediate/int_monitor_anomaly_windows"), windows).fetchall()
    by_scope: dict[str, dict[str, tuple[int, float, float]]] = {}
    for scope, period, minutes, rate, median in rows:
        by_scope.setdefault(scope, {})[period] = (minutes, rate, median)
    floor = float(cfg["anomaly_rate_floor"])
    checks = []
    for scope in sorted(by_scope, key=lambda s: (s != "fleet", s)):
        periods = by_scope[scope]
        if "recent" not in periods:
            for name in ("anomaly_rate", "severity_median"):
                checks.append(Check(scope, name, None, None, "skipped", "no recent scores"))
            continue
        _, rate, median = periods["recent"]
        ref = periods.get("reference")
        ref_rate = ref[1] if ref else 0.0
        ref_median = ref[2] if ref else 0.0
        basis = "reference" if ref else "no reference window: absolute floor"
        warn = max(ref_rate * float(cfg["anomaly_rate_warn_ratio"]), floor)
        alert = max(ref_rate * float(cfg["anomaly_rate_alert_ratio"]), floor * 2)
        status = _grade(rate, warn, alert)
        checks.append(
            Check(
                scope,
                "anomaly_rate",
                rate,
                alert,
                status,
                f"{rate:.1%} of recent minutes anomalous vs {ref_rate:.1%} ({basis})",
            )
        )
        warn_m = ref_median + float(cfg["severity_median_warn_delta"])
        alert_m = ref_median + float(cfg["severity_median_alert_delta"])
        status = _grade(median, warn_m, alert_m)
        checks.append(
            Check(
                scope,
                "severity_median",
                median,
                alert_m,
                status,
                f"recent median severity {median:.3f} vs {ref_median:.3f} ({basis})",
            )
        )
    return checks


def forecast_errors(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """``scope, minutes, rmse, mae, mase`` of run ``run_id``'s latest forecast of each sensor
    on the minutes that arrived since its origin, and for the fleet (``scope = 'fleet'``).

    MASE uses each sensor's scale stored in ``forecast_status.mase_scale`` (null without one).
    """
    scales: list[tuple[str, float]] = []
    if has_relation(con, "forecast_status"):
        try:
            scales = con.execute(
                sql_text("intermediate/int_monitor_forecast_scales"), {"run_id": run_id}
            ).fetchall()
        except duckdb.BinderException:  # a forecast_status mart from before mase_scale
            scales = []
    return query_frame(
        con,
        sql_text("intermediate/int_monitor_forecast_errors"),
        {
            "run_id": run_id,
            "scale_sensors": [s for s, _ in scales],
            "scale_values": [float(v) for _, v in scales],
        },
    )


def forecast_checks(
    con: duckdb.DuckDBPyConnection,
    run_id: str | None,
    test_metrics: dict[str, float],
    cfg: dict[str, Any],
) -> list[Check]:
    """``forecast_rmse``/``forecast_mase`` of production's latest forecast on arrived minutes."""
    names = ("forecast_rmse", "forecast_mase")
    if run_id is None:
        reason = "no production model yet (run `oxy train`)"
        return [Check("fleet", n, None, None, "skipped", reason) for n in names]
    if not has_relation(con, "forecasts"):
        reason = "no forecasts yet (run `oxy forecast`)"
        return [Check("fleet", n, None, None, "skipped", reason) for n in names]
    rows = forecast_errors(con, run_id).rows()
    if not rows or all(r[1] == 0 for r in rows):
        reason = f"no readings have arrived since run {run_id}'s latest forecast"
        return [Check("fleet", n, None, None, "skipped", reason) for n in names]
    min_minutes = int(cfg["forecast_min_minutes"])
    warn_ratio, alert_ratio = float(cfg["forecast_warn_ratio"]), float(cfg["forecast_alert_ratio"])
    checks = []
    for scope, minutes, rmse, _mae, mase in sorted(rows, key=lambda r: (r[0] != "fleet", r)):
        if minutes < min_minutes:
            reason = f"only {minutes} minutes arrived (< {min_minutes})"
            checks += [Check(scope, n, None, None, "skipped", reason) for n in names]
            continue
        for name, value, ref in (
            ("forecast_rmse", rmse, test_metrics.get("rmse")),
            ("forecast_mase", mase, test_metrics.get("mase")),
        ):
            if value is None or ref is None or not math.isfinite(ref) or ref <= 0:
                why = (
                    "no test metric on the production run"
                    if value is not None
                    else "no MASE scale in forecast_status (run `oxy forecast`)"
                )
                checks.append(Check(scope, name, value, None, "skipped", why))
                continue
            status = _grade(value, ref * warn_ratio, ref * alert_ratio)
            checks.append(
                Check(
                    scope,
                    name,
                    value,
                    ref * alert_ratio,
                    status,
                    f"{value:.3f} over {minutes} arrived minutes vs test {ref:.3f} (run {run_id})",
                )
            )
    return checks


def psi(reference: np.ndarray, recent: np.ndarray, bins: int) -> tuple[float, np.ndarray]:
    """Population stability index of ``recent`` against ``reference``'s quantile bins.

    Returns the PSI and the recent/reference bin counts (2 x k). The definition that
    ``drift_checks`` computes in SQL (``int_monitor_drift_bins``, then :func:`psi_of_counts`)
    for whole buckets at once; tests hold the two equal.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=5000)
    >>> round(psi(ref, rng.normal(size=5000), 10)[0], 2) < 0.02
    True
    >>> psi(ref, rng.normal(2, 1, size=5000), 10)[0] > 1
    True
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins)
    new_counts = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=bins)
    counts = np.vstack([new_counts, ref_counts]).astype(float)
    return psi_of_counts(counts), counts


def psi_of_counts(counts: np.ndarray) -> float:
    """PSI from a 2 x k array of (recent, reference) bin counts (empty bins smoothed)."""
    eps = 1e-4
    recent = np.maximum(counts[0] / max(counts[0].sum(), 1), eps)
    reference = np.maximum(counts[1] / max(counts[1].sum(), 1), eps)
    return float(np.sum((recent - reference) * np.log(recent / reference)))


def drift_checks(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    windows: dict[str, datetime],
    cfg: dict[str, Any],
) -> list[Check]:
    """``drift_psi`` per sensor and for the fleet (pooled per-sensor decile counts)."""
    bins, min_points = int(cfg["psi_bins"]), int(cfg["psi_min_points"])
    warn, alert = float(cfg["psi_warn"]), float(cfg["psi_alert"])
    buckets = readings_buckets(con)
    checks: list[Check] = []
    pooled = np.zeros((2, bins))
    quantiles = np.linspace(0, 1, bins + 1)[1:-1].tolist()
    scored = has_relation(con, "anomaly_scores")
    for bucket in sorted(buckets):  # one bucket at a time: memory stays flat
        paths = [str(p) for p in warehouse.files(con, "readings", bucket)]
        if not paths:
            continue
        if scored:  # the baseline is normal behaviour: anomalous reference minutes left out
            run_sql(
                con,
                "intermediate/int_monitor_reference_anomalies",
                {
                    "reference_start": windows["reference_start"],
                    "reference_end": windows["reference_end"],
                    "bucket": bucket,
                },
                into="reference_anomalies",
            )
        else:
            sql_rows(con, "meta/reference_anomalies_none")
        rows = sql_rows(
            con,
            "intermediate/int_monitor_drift_bins",
            {**windows, "paths": paths, "quantiles": quantiles},
        )
        per_sensor: dict[str, np.ndarray] = {}
        for sensor_id, is_recent, bin_index, readings in rows:
            counts = per_sensor.setdefault(sensor_id, np.zeros((2, bins)))
            counts[0 if is_recent else 1, bin_index] += readings
        for sensor_id, counts in per_sensor.items():
            n_recent, n_reference = int(counts[0].sum()), int(counts[1].sum())
            if n_recent < min_points or n_reference < min_points:
                checks.append(
                    Check(
                        sensor_id,
                        "drift_psi",
                        None,
                        alert,
                        "skipped",
                        f"too few values ({n_recent} recent, {n_reference} reference; "
                        f"need {min_points})",
                    )
                )
                continue
            value = psi_of_counts(counts)
            pooled += counts
            checks.append(
                Check(
                    sensor_id,
                    "drift_psi",
                    value,
                    alert,
                    _grade(value, warn, alert),
                    f"PSI {value:.3f} over {n_recent} recent vs {n_reference} reference",
                )
            )
    sql_rows(con, "meta/reference_anomalies_drop")
    if pooled.sum() == 0:
        fleet = Check("fleet", "drift_psi", None, alert, "skipped", "no sensor had enough data")
    else:
        value = psi_of_counts(pooled)
        fleet = Check(
            "fleet",
            "drift_psi",
            value,
            alert,
            _grade(value, warn, alert),
            f"PSI {value:.3f} of the fleet's per-sensor decile occupancy",
        )
    return [fleet, *sorted(checks, key=lambda c: c.scope)]


# -- the run --------------------------------------------------------------------------------


def monitor_windows(
    latest: datetime, cfg: dict[str, Any], production_test_end: datetime | None
) -> dict[str, datetime]:
    """Bounds of the recent and reference windows (all naive UTC)."""
    recent_start = latest - parse_interval(cfg["recent_window"])
    reference_end = recent_start
    if production_test_end is not None and production_test_end < recent_start:
        reference_end = production_test_end
    return {
        "latest": latest,
        "recent_start": recent_start,
        "reference_end": reference_end,
        "reference_start": reference_end - parse_interval(cfg["reference_window"]),
    }


def record_checks(
    warehouse: Warehouse, con: duckdb.DuckDBPyConnection, time: datetime, checks: Iterable[Check]
) -> int:
    """Append checks to ``monitoring`` (one transaction) and refresh the monitoring mart."""
    rows = [
        {
            "time": time,
            "scope": c.scope,
            "check": c.check,
            "value": c.value if c.value is None or math.isfinite(c.value) else None,
            "threshold": c.threshold,
            "status": c.status,
            "reason": c.reason,
        }
        for c in checks
    ]
    con.execute("begin")
    try:
        if rows:
            con.executemany(
                'insert into monitoring (time, scope, "check", value, threshold, status, reason) '
                "values ($time, $scope, $check, $value, $threshold, $status, $reason)",
                rows,
            )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    warehouse.write_mart(con, "monitoring", sql_text("marts/monitoring"))
    return len(rows)


def run_monitor(warehouse: Warehouse, *, now: datetime | None = None) -> MonitorResult:
    """Run every check, record them in ``monitoring`` and return the result.

    Parameters
    ----------
    warehouse
        The warehouse to check (must have been ingested into).
    now
        The monitoring run's time stamp (default: the current UTC time).
    """
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` first)")
    cfg = warehouse.config["monitor"]
    time = now or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    run_id = production_run(warehouse)
    meta = read_meta(warehouse, run_id) if run_id else {}
    window = test_window(meta) if meta else None
    with warehouse.writer() as con:
        latest = con.execute(sql_text("meta/readings_span")).fetchall()[0][1]
        checks: list[Check] = []
        if latest is None:
            reason = "no readings in the warehouse (run `oxy ingest`)"
            checks = [
                Check("fleet", name, None, None, "skipped", reason)
                for name in ("stale", "anomaly_rate", "severity_median", "drift_psi")
            ]
        else:
            windows = monitor_windows(latest, cfg, window[1] if window else None)
            checks += stale_checks(con, parse_interval(cfg["stale_after"]))
            checks += anomaly_checks(con, windows, cfg)
            checks += drift_checks(warehouse, con, windows, cfg)
        checks += forecast_checks(con, run_id, split_metrics(meta, "test"), cfg)
        record_checks(warehouse, con, time, checks)
    return MonitorResult(time, checks)
