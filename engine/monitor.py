"""Monitoring: judge the latest data against each sensor's own history; record and summarise.

``run_monitor`` runs five families of checks and appends one row per check and scope to the
``monitoring`` table (then refreshes the ``monitoring`` mart):

* ``stale`` — per sensor: minutes since its last reading, behind the fleet's latest reading;
  a fleet row says when the whole fleet is silent, or that the data are historical;
* ``anomaly_rate`` and ``severity_median`` — per sensor and fleet, from ``anomaly_scores``;
* ``drift_psi`` — per sensor and fleet: population stability index of the recent window's
  values against the reference window before it (the reference's quantile bins; minutes
  scored anomalous are left out of every reference, so a baseline is normal behaviour);
* ``forecast_rmse`` and ``forecast_mase`` — per sensor and fleet: the production run's latest
  forecast against the readings that arrived since its origin.

**Calibration.** A diel, weather-driven signal moves a lot from one window to the next, and
how much differs from sensor to sensor: fixed thresholds alerted on nearly every healthy
sensor. So each statistic is graded against *the same statistic over the sensor's earlier
windows* (:func:`limits`): the windows of the same length ending ``step``, 2 x ``step``, …
earlier (those that do not overlap the window being judged), at most
``calibration_windows`` of them. Their median and robust spread (1.4826 x MAD, on the scale
that steadies the statistic: square root for rates and PSI, log for errors) give the warn and
alert levels at ``warn_z`` and ``alert_z``; a level is never below the check's floor (e.g.
``psi_alert``), so a sensor whose history is very steady does not alert on a trivial change.
A forecast's error cannot be recomputed for earlier windows (one forecast per sensor is kept),
so its history is what monitoring recorded for the production run while it was fresh (its
first ``calibration_windows`` runs): a model that slowly goes stale is judged against itself
then. With fewer than ``min_calibration_windows`` earlier
windows a check is graded on its floors alone and never above ``warn`` ("uncalibrated").

``stale`` uses the sensor's own cadence: the limit is the largest of ``stale_after``,
``stale_cadence_multiple`` x its usual interval between readings and ``stale_gap_ratio`` x its
usual longest gap of a day (median over its recent days), so a sensor that reports every
15 minutes, or that routinely pauses at night, is not stale for doing what it always does.
When the fleet's latest reading is older than ``historical_after`` before the run, the data
are historical: ``stale`` is recorded, never alerts, and says so.

Windows are relative to the fleet's latest reading ``latest``: recent =
``(latest - recent_window, latest]``, reference = the ``reference_window`` before it.
``as_of`` replays a past day (readings after it are ignored), as ``bench/bench_monitor.py``
does. Checks whose inputs do not exist yet are recorded as ``skipped`` with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from engine import OxyError
from engine.config import Config
from engine.registry import production_run, read_meta, split_metrics
from engine.warehouse import (
    Warehouse,
    has_relation,
    readings_buckets,
    run_sql,
    sql_rows,
    sql_text,
)

STATUSES = ("ok", "warn", "alert", "skipped")
_RANK = {"skipped": 0, "ok": 1, "warn": 2, "alert": 3}
END_OF_TIME = datetime(9999, 12, 31)


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


# -- calibration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Warn and alert levels of one statistic, and what they were derived from."""

    warn: float
    alert: float
    calibrated: bool
    basis: str

    def grade(self, value: float) -> str:
        """``alert`` above the alert level, ``warn`` above the warn level, else ``ok``;
        an uncalibrated check never alerts."""
        if value > self.alert:
            return "alert" if self.calibrated else "warn"
        return "warn" if value > self.warn else "ok"


_SCALES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[float], float]]] = {
    "linear": (lambda x: x, lambda y: y),
    # counts and PSI (a sum of squared departures): the square root steadies their spread
    "sqrt": (lambda x: np.sqrt(np.maximum(x, 0)), lambda y: max(y, 0.0) ** 2),
    # errors: multiplicative
    "log": (lambda x: np.log(np.maximum(x, 1e-12)), math.exp),
}


def limits(
    history: Sequence[float],
    cfg: dict[str, Any],
    *,
    floor_warn: float,
    floor_alert: float,
    scale: str = "linear",
    min_spread: float = 0.0,
    floor_above_median: bool = False,
    fmt: str = ".3g",
) -> Limits:
    """Warn/alert levels of a statistic from its values over the sensor's earlier windows.

    ``median + z x 1.4826 MAD`` of ``history`` at ``warn_z`` / ``alert_z``, computed on the
    ``scale`` that steadies the statistic's spread (``sqrt`` for rates and PSI, ``log`` for
    errors), the spread at least ``min_spread`` (in that scale), each level at least its floor
    (with ``floor_above_median``, the floors are added to the history's median).

    Examples
    --------
    >>> cfg = {"warn_z": 3.0, "alert_z": 5.0, "min_calibration_windows": 5}
    >>> lim = limits([0.1, 0.12, 0.09, 0.11, 0.1, 0.3], cfg, floor_warn=0.1, floor_alert=0.25,
    ...              scale="sqrt", min_spread=0.05)
    >>> lim.calibrated, lim.grade(0.2), lim.grade(2.0)
    (True, 'ok', 'alert')
    >>> limits([0.1], cfg, floor_warn=0.1, floor_alert=0.25).grade(2.0)   # uncalibrated
    'warn'
    """
    values = np.asarray([v for v in history if v is not None and math.isfinite(v)], dtype=float)
    need = int(cfg["min_calibration_windows"])
    if values.size < need:
        return Limits(
            floor_warn,
            floor_alert,
            False,
            f"uncalibrated: {values.size} earlier window(s), need {need}",
        )
    forward, back = _SCALES[scale]
    scaled = forward(values)
    center = float(np.median(scaled))
    spread = max(1.4826 * float(np.median(np.abs(scaled - center))), min_spread)
    warn = back(center + float(cfg["warn_z"]) * spread)
    alert = back(center + float(cfg["alert_z"]) * spread)
    usual = back(center)
    if floor_above_median:
        floor_warn, floor_alert = usual + floor_warn, usual + floor_alert
    basis = f"usual {usual:{fmt}} over {values.size} earlier windows"
    return Limits(max(warn, floor_warn), max(alert, floor_alert), True, basis)


# -- checks ---------------------------------------------------------------------------------


def last_seen(
    con: duckdb.DuckDBPyConnection, cfg: dict[str, Any], as_of: datetime
) -> list[tuple[Any, ...]]:
    """Per sensor: last reading, the fleet's latest, usual interval and longest daily gap."""
    history = parse_interval(cfg["reference_window"])
    return con.execute(
        sql_text("monitor/sensor_last_seen"), {"as_of": as_of, "history": history}
    ).fetchall()


def stale_checks(rows: list[tuple[Any, ...]], cfg: dict[str, Any], now: datetime) -> list[Check]:
    """One ``stale`` check per registered sensor (rows of :func:`last_seen`) and one for the
    fleet.

    A sensor's limit is the largest of ``stale_after``, ``stale_cadence_multiple`` x its usual
    interval and ``stale_gap_ratio`` x its usual longest gap of a day.
    """
    floor = parse_interval(cfg["stale_after"]).total_seconds() / 60
    multiple, gap_ratio = float(cfg["stale_cadence_multiple"]), float(cfg["stale_gap_ratio"])
    fleet_latest = rows[0][3] if rows else None
    checks = []
    historical = None
    if fleet_latest is not None:
        behind_now = (now - fleet_latest).total_seconds() / 60
        if behind_now > parse_interval(cfg["historical_after"]).total_seconds() / 60:
            historical = (
                f"historical data: the fleet's latest reading ({fleet_latest:%Y-%m-%d %H:%M} "
                f"UTC) is {behind_now / 1440:,.0f} days before this run"
            )
            checks.append(Check("fleet", "stale", behind_now, None, "ok", historical))
        elif behind_now > floor:
            checks.append(
                Check(
                    "fleet",
                    "stale",
                    behind_now,
                    floor,
                    "alert",
                    f"the whole fleet is silent: no reading for {behind_now:.0f} min "
                    f"(last {fleet_latest:%Y-%m-%d %H:%M} UTC); is ingest running?",
                )
            )
        else:
            checks.append(
                Check("fleet", "stale", behind_now, floor, "ok", "the fleet's data are current")
            )
    for sensor_id, last_ts, _readings, latest, cadence, usual_gap, _days in rows:
        if last_ts is None:
            status = "ok" if historical else "alert"
            checks.append(Check(sensor_id, "stale", None, floor, status, "silent: no readings"))
            continue
        behind = (latest - last_ts).total_seconds() / 60
        limit = max(floor, multiple * (cadence or 0), gap_ratio * (usual_gap or 0))
        basis = f"limit {limit:.0f} min: usual interval {cadence or 0:.0f} min, usual longest " + (
            f"gap of a day {usual_gap or 0:.0f} min"
        )
        if behind > limit:
            status = "ok" if historical else "alert"
            reason = (
                f"no data for {behind:.0f} min before the fleet's latest reading "
                f"(last {last_ts:%Y-%m-%d %H:%M} UTC; {basis})"
            )
            if historical:
                reason += f"; {historical}"
        else:
            status = "ok"
            reason = f"last reading {behind:.0f} min before the fleet's latest ({basis})"
        checks.append(Check(sensor_id, "stale", behind, limit, status, reason))
    return checks


def _calibration(cfg: dict[str, Any]) -> tuple[timedelta, int, int]:
    """``(step, recent blocks, reference blocks)``; the windows must be whole steps."""
    step = parse_interval(cfg["step"])
    blocks = []
    for key in ("recent_window", "reference_window"):
        ratio = parse_interval(cfg[key]) / step
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise OxyError(
                f"monitor.{key} ({cfg[key]}) must be a whole number of monitor.step ({cfg['step']})"
            )
        blocks.append(round(ratio))
    return step, blocks[0], blocks[1]


def _site_excess(
    by_scope: dict[str, dict[int, tuple[int, float, float]]], sites: dict[str, str | None]
) -> dict[str, dict[int, tuple[float, float] | None]]:
    """Per sensor and window: its anomaly rate and median severity minus the median of its
    site's other sensors in the same window (None: fewer than 2 peers with scores there)."""
    peers: dict[str, list[str]] = {}
    for sensor_id, site in sites.items():
        if site is not None and sensor_id in by_scope:
            peers.setdefault(site, []).append(sensor_id)
    out: dict[str, dict[int, tuple[float, float] | None]] = {}
    for sensor_id, windows in by_scope.items():
        site = sites.get(sensor_id)
        others = [p for p in peers.get(site, []) if p != sensor_id] if site else []
        out[sensor_id] = {}
        for k, (_, rate, median) in windows.items():
            rows = [by_scope[p][k] for p in others if k in by_scope[p]]
            if len(rows) < 2:
                out[sensor_id][k] = None
                continue
            out[sensor_id][k] = (
                rate - float(np.median([r[1] for r in rows])),
                median - float(np.median([r[2] for r in rows])),
            )
    return out


def anomaly_checks(
    con: duckdb.DuckDBPyConnection,
    latest: datetime,
    cfg: dict[str, Any],
    sites: Mapping[str, str | None],
) -> list[Check]:
    """``anomaly_rate`` and ``severity_median`` per sensor and fleet, each against the same
    statistic over the scope's earlier windows.

    A sensor of a site with at least two other scored sensors is judged on its *excess* over
    them (its rate minus their median rate in the same window, likewise severity): weather
    that makes the detector flag a whole site is the site's event, not a fault of each probe;
    a probe that fouls or fails stands out from its peers. The fleet is judged on its rate.
    """
    if not has_relation(con, "anomaly_scores"):
        reason = "anomaly_scores not built yet (run `oxy score`)"
        return [
            Check("fleet", name, None, None, "skipped", reason)
            for name in ("anomaly_rate", "severity_median")
        ]
    step, recent, _ = _calibration(cfg)
    first = recent  # earlier windows that do not overlap the judged one
    origins = first + int(cfg["calibration_windows"]) - 1
    rows = con.execute(
        sql_text("monitor/anomaly_windows"),
        {
            "latest": latest,
            "step": step,
            "recent": parse_interval(cfg["recent_window"]),
            "origins": origins,
        },
    ).fetchall()
    by_scope: dict[str, dict[int, tuple[int, float, float]]] = {}
    for scope, k, minutes, rate, median in rows:
        by_scope.setdefault(scope, {})[int(k)] = (minutes, rate, median)
    excess = _site_excess({s: w for s, w in by_scope.items() if s != "fleet"}, sites)
    floor = float(cfg["anomaly_rate_floor"])
    checks = []
    for scope in sorted(by_scope, key=lambda s: (s != "fleet", s)):
        windows = by_scope[scope]
        if 0 not in windows:
            for name in ("anomaly_rate", "severity_median"):
                checks.append(Check(scope, name, None, None, "skipped", "no recent scores"))
            continue
        _, rate, median = windows[0]
        over = excess.get(scope, {})
        by_peers = over.get(0) is not None
        if by_peers:
            stats = {k: v for k, v in over.items() if v is not None}
            judged_rate, judged_median = stats[0]
            earlier = [stats[k] for k in sorted(stats) if k >= first]
            rate_history = [e[0] for e in earlier]
            median_history = [e[1] for e in earlier]
            peer_rate, peer_median = rate - judged_rate, median - judged_median
            rate_text = f", its site's other sensors {peer_rate:.1%}"
            median_text = f", its site's other sensors {peer_median:.3f}"
        else:
            judged_rate, judged_median = rate, median
            rate_history = [windows[k][1] for k in sorted(windows) if k >= first]
            median_history = [windows[k][2] for k in sorted(windows) if k >= first]
            rate_text = median_text = ""
        label = "excess " if by_peers else ""
        lim = (
            limits(
                rate_history,
                cfg,
                floor_warn=floor,
                floor_alert=2 * floor,
                min_spread=floor / 5,
                fmt=".1%",
            )
            if by_peers
            else limits(
                rate_history,
                cfg,
                floor_warn=floor,
                floor_alert=2 * floor,
                scale="sqrt",
                min_spread=float(cfg["min_sqrt_spread"]),
                fmt=".1%",
            )
        )
        checks.append(
            Check(
                scope,
                "anomaly_rate",
                judged_rate,
                lim.alert,
                lim.grade(judged_rate),
                f"{rate:.1%} of recent minutes anomalous{rate_text} ({label}warn > "
                f"{lim.warn:.1%}, alert > {lim.alert:.1%}; {lim.basis})",
            )
        )
        lim = limits(
            median_history,
            cfg,
            floor_warn=float(cfg["severity_median_warn_delta"]),
            floor_alert=float(cfg["severity_median_alert_delta"]),
            min_spread=float(cfg["severity_min_spread"]),
            floor_above_median=True,
        )
        checks.append(
            Check(
                scope,
                "severity_median",
                judged_median,
                lim.alert,
                lim.grade(judged_median),
                f"recent median severity {median:.3f}{median_text} ({label}warn > "
                f"{lim.warn:.3f}, alert > {lim.alert:.3f}; {lim.basis})",
            )
        )
    return checks


def forecast_checks(
    con: duckdb.DuckDBPyConnection,
    run_id: str | None,
    test_metrics: dict[str, float],
    cfg: dict[str, Any],
    now: datetime,
    as_of: datetime,
    created_at: datetime | None = None,
) -> list[Check]:
    """``forecast_rmse``/``forecast_mase`` of production's latest forecast on arrived minutes,
    against the first values monitoring runs recorded for the same scope since the run was
    created at ``created_at`` (before enough of them exist: against the run's test metric x
    the ratios, never above ``warn``)."""
    names = ("forecast_rmse", "forecast_mase")
    if run_id is None:
        reason = "no production model yet (run `oxy train`)"
        return [Check("fleet", n, None, None, "skipped", reason) for n in names]
    if not has_relation(con, "forecasts"):
        reason = "no forecasts yet (run `oxy forecast`)"
        return [Check("fleet", n, None, None, "skipped", reason) for n in names]
    rows = con.execute(
        sql_text("monitor/forecast_errors"), {"run_id": run_id, "as_of": as_of}
    ).fetchall()
    if not rows or all(r[1] == 0 for r in rows):
        reason = f"no readings have arrived since run {run_id}'s latest forecast"
        return [Check("fleet", n, None, None, "skipped", reason) for n in names]
    history: dict[str, dict[str, list[float]]] = {}
    since = created_at or datetime.min
    if has_relation(con, "monitoring"):
        for name in names:
            for scope, values in con.execute(
                sql_text("monitor/check_history"),
                {
                    "check": name,
                    "since": since,
                    "now": now,
                    "limit": int(cfg["calibration_windows"]),
                },
            ).fetchall():
                history.setdefault(name, {})[scope] = list(values)
    min_minutes = int(cfg["forecast_min_minutes"])
    warn_ratio, alert_ratio = float(cfg["forecast_warn_ratio"]), float(cfg["forecast_alert_ratio"])
    checks = []
    for scope, minutes, rmse, mae, naive_mae in sorted(rows, key=lambda r: (r[0] != "fleet", r)):
        if minutes < min_minutes:
            reason = f"only {minutes} minutes arrived (< {min_minutes})"
            checks += [Check(scope, n, None, None, "skipped", reason) for n in names]
            continue
        mase = mae / naive_mae if naive_mae else None
        for name, value, ref in (
            ("forecast_rmse", rmse, test_metrics.get("rmse")),
            ("forecast_mase", mase, test_metrics.get("mase")),
        ):
            if value is None:
                checks.append(Check(scope, name, None, None, "skipped", "no scale"))
                continue
            earlier = history.get(name, {}).get(scope, [])
            lim = limits(
                earlier,
                cfg,
                floor_warn=0.0,
                floor_alert=0.0,
                scale="log",
                min_spread=float(cfg["min_log_spread"]),
            )
            basis = lim.basis
            if not lim.calibrated and name == "forecast_mase":
                # the arrived minutes' MASE is scaled by the 1-step naive, the test MASE by
                # the seasonal one: not comparable, so it waits for its own history
                why = f"not graded yet ({lim.basis}): the test MASE has another scale"
                checks.append(Check(scope, name, value, None, "ok", why))
                continue
            if not lim.calibrated:
                if ref is None or not math.isfinite(ref) or ref <= 0:
                    why = f"no test metric on the production run; {lim.basis}"
                    checks.append(Check(scope, name, value, None, "skipped", why))
                    continue
                lim = Limits(ref * warn_ratio, ref * alert_ratio, False, lim.basis)
                basis = f"test {ref:.3f} of run {run_id}; {lim.basis}"
            checks.append(
                Check(
                    scope,
                    name,
                    value,
                    lim.alert,
                    lim.grade(value),
                    f"{value:.3f} over {minutes} arrived minutes (warn > {lim.warn:.3f}, "
                    f"alert > {lim.alert:.3f}; {basis})",
                )
            )
    return checks


def psi(reference: np.ndarray, recent: np.ndarray, bins: int) -> tuple[float, np.ndarray]:
    """Population stability index of ``recent`` against ``reference``'s quantile bins.

    Returns the PSI and the recent/reference bin counts (2 x k). The definition that
    ``drift_checks`` computes in SQL (``monitor/drift_bins``, then :func:`psi_of_counts`)
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


def window_counts(
    blocks_all: np.ndarray, blocks_normal: np.ndarray, k: int, recent: int, reference: int
) -> np.ndarray | None:
    """The (recent, reference) bin counts of the window ending ``k`` blocks before the latest:
    every reading of its recent blocks, the unflagged readings of the reference blocks before
    them; None when the history does not reach back that far."""
    if k + recent + reference > blocks_all.shape[0]:
        return None
    return np.vstack(
        [
            blocks_all[k : k + recent].sum(axis=0),
            blocks_normal[k + recent : k + recent + reference].sum(axis=0),
        ]
    )


def drift_checks(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    latest: datetime,
    cfg: dict[str, Any],
    sites: Mapping[str, str | None],
) -> list[Check]:
    """``drift_psi`` per sensor and for the fleet (pooled per-sensor bin counts), each
    against the PSI of the same scope's earlier windows."""
    bins, min_points = int(cfg["psi_bins"]), int(cfg["psi_min_points"])
    step, recent, reference = _calibration(cfg)
    first = recent
    n_blocks = first + int(cfg["calibration_windows"]) - 1 + recent + reference
    reference_end = latest - recent * step
    params = {
        "latest": latest,
        "step": step,
        "blocks": n_blocks,
        "reference_start": reference_end - reference * step,
        "reference_end": reference_end,
        "quantiles": np.linspace(0, 1, bins + 1)[1:-1].tolist(),
    }
    floor_warn, floor_alert = float(cfg["psi_warn"]), float(cfg["psi_alert"])
    scored = has_relation(con, "anomaly_scores")
    checks: list[Check] = []
    pooled: dict[int, np.ndarray] = {}
    judged: dict[str, dict[int, np.ndarray]] = {}
    for bucket in sorted(readings_buckets(con)):  # one bucket at a time: memory stays flat
        paths = [str(p) for p in warehouse.files(con, "readings", bucket)]
        if not paths:
            continue
        if scored:  # baselines are normal behaviour: flagged minutes left out
            since = latest - n_blocks * step
            run_sql(
                con,
                "monitor/flagged_minutes",
                {"since": since, "latest": latest, "bucket": bucket},
                into="flagged_minutes",
            )
        else:
            sql_rows(con, "monitor/flagged_minutes_none")
        rows = sql_rows(con, "monitor/drift_bins", {**params, "paths": paths})
        per_sensor: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for sensor_id, block, bin_index, readings, normal in rows:
            every, unflagged = per_sensor.setdefault(
                sensor_id, (np.zeros((n_blocks, bins)), np.zeros((n_blocks, bins)))
            )
            every[block, bin_index] += readings
            unflagged[block, bin_index] += normal
        for sensor_id, (every, unflagged) in per_sensor.items():
            windows = {}
            for k in (0, *range(first, n_blocks)):
                counts = window_counts(every, unflagged, k, recent, reference)
                if counts is None:
                    break
                if counts[0].sum() >= min_points and counts[1].sum() >= min_points:
                    windows[k] = counts
                    pooled[k] = pooled.get(k, np.zeros((2, bins))) + counts
            current = window_counts(every, unflagged, 0, recent, reference)
            if 0 not in windows:
                n_recent, n_ref = (0, 0) if current is None else map(int, current.sum(axis=1))
                checks.append(
                    Check(
                        sensor_id,
                        "drift_psi",
                        None,
                        None,
                        "skipped",
                        f"too few values ({n_recent} recent, {n_ref} reference; need {min_points})",
                    )
                )
                continue
            judged[sensor_id] = windows
    sql_rows(con, "monitor/flagged_minutes_drop")
    psis = {s: {k: psi_of_counts(c) for k, c in w.items()} for s, w in judged.items()}
    for sensor_id, windows in judged.items():
        peers = [p for p, site in sites.items() if site and site == sites.get(sensor_id)]
        peers = [p for p in peers if p != sensor_id and p in psis]
        checks.append(
            _drift_check(
                sensor_id,
                windows,
                cfg,
                floor_warn,
                floor_alert,
                "values",
                {p: psis[p] for p in peers},
            )
        )
    if 0 not in pooled:
        fleet = Check("fleet", "drift_psi", None, None, "skipped", "no sensor had enough data")
    else:
        fleet = _drift_check(
            "fleet", pooled, cfg, floor_warn, floor_alert, "the fleet's per-sensor bin occupancy"
        )
    return [fleet, *sorted(checks, key=lambda c: c.scope)]


def _drift_check(
    scope: str,
    windows: dict[int, np.ndarray],
    cfg: dict[str, Any],
    floor_warn: float,
    floor_alert: float,
    what: str,
    peers: dict[str, dict[int, float]] | None = None,
) -> Check:
    """One ``drift_psi`` check. With at least two site ``peers`` that have the judged window,
    the calibrated statistic is ``sqrt(PSI)`` minus the peers' median ``sqrt(PSI)`` in the same
    window (weather shifts a whole site's distributions; a fouled probe shifts alone); the
    levels are then turned back into PSI for this window, never below the floors."""
    value = psi_of_counts(windows[0])
    psi = {k: psi_of_counts(c) for k, c in windows.items()}
    peer_root = {
        k: float(np.median([math.sqrt(p[k]) for p in (peers or {}).values() if k in p]))
        for k in psi
        if sum(k in p for p in (peers or {}).values()) >= 2
    }
    n_recent, n_ref = map(int, windows[0].sum(axis=1))
    if 0 in peer_root:
        excess = [math.sqrt(psi[k]) - peer_root[k] for k in sorted(peer_root) if k > 0]
        own = limits(
            excess,
            cfg,
            floor_warn=-math.inf,
            floor_alert=-math.inf,
            min_spread=float(cfg["min_sqrt_spread"]),
        )
        if not own.calibrated:
            own = Limits(0.0, 0.0, False, own.basis)

        def back(level: float) -> float:
            return max(peer_root[0] + level, 0.0) ** 2

        lim = Limits(
            max(back(own.warn), floor_warn),
            max(back(own.alert), floor_alert),
            own.calibrated,
            f"its site's other sensors {peer_root[0] ** 2:.3g}; {own.basis}",
        )
    else:
        earlier = [psi[k] for k in sorted(psi) if k > 0]
        lim = limits(
            earlier,
            cfg,
            floor_warn=floor_warn,
            floor_alert=floor_alert,
            scale="sqrt",
            min_spread=float(cfg["min_sqrt_spread"]),
        )
    return Check(
        scope,
        "drift_psi",
        value,
        lim.alert,
        lim.grade(value),
        f"PSI {value:.3f} of {what}, {n_recent} recent vs {n_ref} reference (warn > "
        f"{lim.warn:.3f}, alert > {lim.alert:.3f}; {lim.basis})",
    )


def sensor_sites(con: duckdb.DuckDBPyConnection, config: Config) -> dict[str, str | None]:
    """sensor_id -> site, as the scorer defines it (``anomaly.site_levels``; None: no site):
    the peers a sensor is judged against are the ones its scores were computed with."""
    result = con.execute(
        sql_text("score/queries#site_sensors"),
        {"site_levels": int(config["anomaly"]["site_levels"])},
    )
    names = [column[0] for column in result.description]
    sensor, site = names.index("sensor_id"), names.index("site")
    return {row[sensor]: row[site] for row in result.fetchall()}


# -- the run --------------------------------------------------------------------------------


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
            "threshold": c.threshold if c.threshold is None or math.isfinite(c.threshold) else None,
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


def run_monitor(
    warehouse: Warehouse, *, now: datetime | None = None, as_of: datetime | None = None
) -> MonitorResult:
    """Run every check, record them in ``monitoring`` and return the result.

    Parameters
    ----------
    warehouse
        The warehouse to check (must have been ingested into).
    now
        The monitoring run's time stamp (default: the current UTC time; ``as_of`` when given).
    as_of
        Judge the warehouse as it was at this time (UTC): readings and forecasts after it
        are ignored (a replay of a past day; default: everything).
    """
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` first)")
    cfg = warehouse.config["monitor"]
    _calibration(cfg)  # a clear error before any work
    time = now or as_of or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    until = as_of or END_OF_TIME
    run_id = production_run(warehouse)
    meta = read_meta(warehouse, run_id) if run_id else {}
    with warehouse.writer() as con:
        seen = last_seen(con, cfg, until)
        fleet_latest = seen[0][3] if seen else None
        if fleet_latest is None:
            reason = "no readings in the warehouse (run `oxy ingest`)"
            checks = [
                Check("fleet", name, None, None, "skipped", reason)
                for name in ("stale", "anomaly_rate", "severity_median", "drift_psi")
            ]
        else:
            checks = stale_checks(seen, cfg, time)
            sites = sensor_sites(con, warehouse.config)
            checks += anomaly_checks(con, fleet_latest, cfg, sites)
            checks += drift_checks(warehouse, con, fleet_latest, cfg, sites)
        created = meta.get("created_at")
        created_at = datetime.fromisoformat(created).replace(tzinfo=None) if created else None
        checks += forecast_checks(
            con, run_id, split_metrics(meta, "test"), cfg, time, until, created_at
        )
        record_checks(warehouse, con, time, checks)
    return MonitorResult(time, checks)
