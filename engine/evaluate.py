"""Evaluation of the anomaly flags against labelled events, ours beside the seed's rules.

Definitions (README "Anomaly scoring"):

* an event is **found** when a flagged reading of its sensor lies in
  ``[start - lead, end + lag]`` (2 min / 5 min); a ``drift`` event when at least
  ``drift_fraction`` (a quarter) of the readings in the second half of its window are flagged;
* **recall** = found events / events, per type and over all events;
* **minute precision** = flagged readings inside a labelled window (same tolerance) / flagged
  readings; **F1** = 2 P R / (P + R) with R the recall over all events;
* **flagged fraction** = flagged readings / scored readings.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from engine import OxyError
from engine.anomaly import QUARTER_US, pack, zone_local_hours
from engine.config import Config
from engine.detectors import DETECTOR_NAMES
from engine.warehouse import Warehouse, bind, query_frame, sql_rows, sql_text

LEAD = "2 minutes"
LAG = "5 minutes"
DRIFT_FRACTION = 0.25
# the label types an evaluation knows: the detectors' names (engine.detectors), and a level
# shift, which the collective and contextual detectors share
LABEL_TYPES = (*DETECTOR_NAMES, "level_shift")


def read_labels(path: str | Path) -> pl.DataFrame:
    """Labelled events from a CSV with ``sensor_id,start,end,type`` (times naive UTC)."""
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise OxyError(f"cannot read labels {path}: {exc}") from None
    missing = {"sensor_id", "start", "end", "type"} - set(raw.columns)
    if missing:
        raise OxyError(f"labels {path} lack column(s) {sorted(missing)}")
    try:
        labels = raw.select(
            pl.col("sensor_id"),
            pl.col("start").str.to_datetime(time_unit="us").dt.replace_time_zone(None),
            pl.col("end").str.to_datetime(time_unit="us").dt.replace_time_zone(None),
            pl.col("type").str.strip_chars().str.to_lowercase(),
        )
    except pl.exceptions.PolarsError as exc:
        raise OxyError(f"labels {path}: unreadable start/end time ({exc})") from None
    bad = labels.filter(pl.col("end") < pl.col("start")).height
    if bad:
        raise OxyError(f"labels {path}: {bad} event(s) end before they start")
    return labels.rename({"start": "start_ts", "end": "end_ts"}).with_row_index("event_id")


def metrics(events: pl.DataFrame, totals: dict[str, int]) -> dict[str, Any]:
    """Recall per type and overall, minute precision, F1 and flagged fraction.

    ``events`` has one row per labelled event (``type``, ``found``); ``totals`` holds
    ``readings``, ``flagged`` and ``flagged_inside``.

    Examples
    --------
    >>> ev = pl.DataFrame({"type": ["spike", "spike", "drift"], "found": [True, False, True]})
    >>> m = metrics(ev, {"readings": 100, "flagged": 4, "flagged_inside": 3})
    >>> m["by_type"]["spike"]["recall"], m["precision"], round(m["f1"], 4)
    (0.5, 0.75, 0.7059)
    """
    by_type = {}
    for kind, group in sorted(events.group_by("type"), key=lambda g: str(g[0][0])):
        found = int(group["found"].sum())
        by_type[str(kind[0])] = {
            "events": group.height,
            "found": found,
            "recall": found / group.height,
        }
    n_events = events.height
    recall = float(events["found"].sum()) / n_events if n_events else 0.0
    flagged = totals["flagged"]
    precision = totals["flagged_inside"] / flagged if flagged else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "events": n_events,
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "readings": totals["readings"],
        "flagged": flagged,
        "flagged_inside": totals["flagged_inside"],
        "flagged_fraction": flagged / totals["readings"] if totals["readings"] else 0.0,
        "by_type": by_type,
    }


def evaluate_flags(
    con: duckdb.DuckDBPyConnection,
    labels: pl.DataFrame,
    *,
    lead: str = LEAD,
    lag: str = LAG,
    drift_fraction: float = DRIFT_FRACTION,
) -> dict[str, Any]:
    """Evaluate the relation ``eval_flags`` (sensor_id, ts, is_anomaly) against ``labels``."""
    con.register("eval_labels", labels.to_arrow())
    try:
        params = {"lead": lead, "lag": lag, "drift_fraction": drift_fraction}
        q_events = sql_text("intermediate/int_evaluation_events")
        events = pl.from_arrow(con.sql(q_events, params=bind(q_events, params)).to_arrow_table())
        q_minutes = sql_text("intermediate/int_evaluation_minutes")
        row = con.execute(q_minutes, bind(q_minutes, params)).fetchall()[0]
    finally:
        con.unregister("eval_labels")
    result = metrics(events, {"readings": row[0], "flagged": row[1], "flagged_inside": row[2]})
    result["missed"] = (
        events.filter(~pl.col("found"))
        .join(labels, on=["event_id", "sensor_id", "type"])
        .select("sensor_id", "start_ts", "end_ts", "type")
        .head(20)
        .to_dicts()
    )
    return result


# -- the seed's rules (for comparison only) ----------------------------------------------------


def seed_params(config: Config) -> dict[str, Any]:
    """The bound parameters of ``int_seed_scores``: ``[anomaly.seed]`` (the seed's thresholds,
    unchanged) and the flag threshold."""
    seed = config["anomaly"]["seed"]
    return {**seed, "severity_threshold": config["anomaly"]["severity_threshold"]}


def _interval(con: duckdb.DuckDBPyConnection, text: str) -> timedelta:
    try:
        value = sql_rows(con, "meta/interval", {"text": text})[0][0]
    except duckdb.Error:
        raise OxyError(f"[anomaly.seed] {text!r} is not a duration such as '60 minutes'") from None
    return value


def _seed_key(raw: pl.DataFrame, longest: int) -> pl.DataFrame:
    """One row per (sensor, ts) of ``raw`` (sensor_rank, ts, value, ingested_at), sorted on an
    integer ``key``: microseconds since the first reading plus the sensor's rank times a stride
    longer than the span and every window, so that one ``rolling_*_by`` over the whole frame
    never reaches into a neighbouring sensor. The first ingested non-null value wins."""
    us = pl.col("ts").dt.epoch("us")
    first, last = raw.select(us.min().alias("first"), us.max().alias("last")).row(0)
    first, last = first or 0, last or 0
    stride = (last - first) + 2 * longest + 1
    rank = pl.col("sensor_rank").cast(pl.Int64)
    raw = raw.with_columns(key=(us - first) + rank * stride).sort("key")
    repeated = pl.col("key") == pl.col("key").shift(1)
    if raw.select(repeated.any()).item():
        raw = raw.sort("key", pl.col("value").is_null(), "ingested_at")
        raw = raw.filter(~repeated.fill_null(False))
    return raw.drop("ingested_at").with_columns(pl.col("key").set_sorted())


def seed_windows(con: duckdb.DuckDBPyConnection, files: list[str], config: Config) -> pl.DataFrame:
    """``seed_windows``: the readings of ``files`` with the windows of the seed's rules (the
    input of ``int_seed_scores``): the sensor's number and id, local hour, steps to the
    neighbours, the point, stuck and noise window stds, point z and the collective window's
    mean point z (polars ``rolling_*_by`` over time windows)."""
    a = config["anomaly"]["seed"]
    windows = {
        key: _interval(con, a[key]) // timedelta(microseconds=1)
        for key in ("point_window", "stuck_window", "noise_window", "collective_window")
    }

    def size(key: str) -> str:
        return f"{windows[key]}i"

    sensors = query_frame(con, sql_text("intermediate/int_seed_sensors"))
    con.register("seed_sensors", sensors)
    try:
        raw = query_frame(con, sql_text("intermediate/int_seed_readings"), {"files": files})
    finally:
        con.unregister("seed_sensors")
    frame = _seed_key(raw, max(windows.values()))
    row = frame["sensor_rank"] - 1
    zones = sensors["timezone"].drop_nulls().unique().sort()
    zone_of_row = sensors["timezone"].rank("dense") - 1  # sorted like ``zones``; null stays
    frame = frame.with_columns(
        sensor_id=sensors["sensor_id"].cast(pl.Categorical).gather(row),
        local_hour=zone_local_hours(
            con, frame["ts"], zone_of_row.gather(row), zones.to_list(), QUARTER_US
        ),
    )
    same = pl.col("sensor_rank") == pl.col("sensor_rank").shift(1)
    same_next = pl.col("sensor_rank") == pl.col("sensor_rank").shift(-1)
    value, ts, key = pl.col("value"), pl.col("ts"), pl.col("key")
    gap = _interval(con, a["spike_gap"])
    point = size("point_window")
    # a flat window has no spread at all (a sliding std may leave a hair above zero): flat
    # when the reading before the run of equal values that ends here lies outside the window
    run_start = ~(same & (value == value.shift(1))).fill_null(False)
    before_run = pl.when(run_start).then(key.shift(1).fill_null(key - 2 * windows["point_window"]))
    frame = frame.with_columns(
        step=pl.when(same & (ts.shift(1) >= ts - gap)).then(value - value.shift(1)),
        next_step=pl.when(same_next & (ts.shift(-1) <= ts + gap)).then(value.shift(-1) - value),
        point_mean=value.rolling_mean_by("key", point),
        point_std=value.rolling_std_by("key", point),
        point_flat=before_run.forward_fill() <= key - windows["point_window"],
        noise_std=value.rolling_std_by("key", size("noise_window")),
    ).with_columns(
        point_std=pl.when(pl.col("point_std").is_not_null() & pl.col("point_flat"))
        .then(0.0)
        .otherwise(pl.col("point_std"))
    )
    stuck = size("stuck_window")
    frame = frame.with_columns(
        stuck_std=value.rolling_std_by("key", stuck) if stuck != point else pl.col("point_std"),
        point_z=pl.when(pl.col("point_std") != 0).then(
            (value - pl.col("point_mean")).abs() / pl.col("point_std")
        ),
    )
    # the mean of the window's point z, over the readings that have one
    frame = frame.with_columns(
        collective_z=pl.col("point_z").rolling_mean_by("key", size("collective_window"))
    )
    return frame.select(
        "sensor_rank",
        "sensor_id",
        "ts",
        "value",
        "local_hour",
        "step",
        "next_step",
        "point_std",
        "stuck_std",
        "noise_std",
        "point_z",
        "collective_z",
    )


def _seed_flags(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> None:
    """``eval_flags`` from the seed's rules on all readings, buckets together while they hold
    about ``[anomaly.run] chunk_rows`` readings (memory stays bounded)."""
    params = seed_params(warehouse.config)
    limit = int(warehouse.config["anomaly"]["run"]["chunk_rows"])
    sql_rows(con, "evaluate/eval_flags_create")
    query = sql_text("intermediate/int_seed_scores")
    buckets: dict[int, tuple[list[str], int]] = {}
    for bucket, path, rows in sql_rows(con, "evaluate/readings_bucket_files"):
        files, total = buckets.get(bucket, ([], 0))
        buckets[bucket] = ([*files, str(warehouse.root / path)], total + rows)
    bucket_files = [files for files, _ in buckets.values()]
    for group in pack(bucket_files, [rows for _, rows in buckets.values()], limit):
        files = [f for bucket in group for f in bucket]
        con.register("seed_windows", seed_windows(con, files, warehouse.config))
        try:
            con.execute(
                f"insert into eval_flags select sensor_id, ts, is_anomaly from ({query})",
                bind(query, params),
            )
        finally:
            con.unregister("seed_windows")


def evaluate(
    warehouse: Warehouse,
    labels_path: str | Path,
    *,
    seed_rules: bool = False,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``anomaly_scores`` (and optionally the seed's rules) against labelled events.

    Parameters
    ----------
    warehouse
        A scored warehouse (run ``oxy score`` first).
    labels_path
        CSV ``sensor_id,start,end,type`` (naive UTC), like the demo's ``labels.csv``.
    seed_rules
        Also run the seed's detectors unchanged (default thresholds) on the same readings.
    output
        Write the result as JSON here (atomically).

    Examples
    --------
    >>> result = evaluate(Warehouse("warehouse"), "demo_data/labels.csv")  # doctest: +SKIP
    >>> result["ours"]["f1"]                                                # doctest: +SKIP
    """
    labels = read_labels(labels_path)
    threshold = float(warehouse.config["anomaly"]["severity_threshold"])
    with warehouse.reader() as con:
        if "anomaly_scores" not in warehouse.mart_names():
            raise OxyError("no anomaly_scores yet: run `oxy score` first")
        con.execute(
            "create or replace temp table eval_flags as "
            + sql_text("intermediate/int_evaluation_flags")
        )
        known = {r[0] for r in con.table("eval_flags").select("sensor_id").distinct().fetchall()}
        unknown = sorted(set(labels["sensor_id"].unique().to_list()) - known)
        ours = evaluate_flags(con, labels)
        seed = None
        if seed_rules:
            _seed_flags(warehouse, con)
            seed = evaluate_flags(con, labels)
    result = {
        "labels": str(labels_path),
        "severity_threshold": threshold,
        "lead": LEAD,
        "lag": LAG,
        "drift_fraction": DRIFT_FRACTION,
        "unscored_label_sensors": unknown,
        "ours": ours,
        "seed_rules": seed,
    }
    if output is not None:
        write_json(Path(output), result)
    return result


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def render(result: dict[str, Any]) -> str:
    """A plain-text table: recall per type, precision, F1 and flagged fraction."""
    ours, seed = result["ours"], result["seed_rules"]
    types = sorted(set(ours["by_type"]) | set(seed["by_type"] if seed else ()))
    head = f"{'metric':<22}{'oxy':>10}" + (f"{'seed rules':>12}" if seed else "")
    lines = [head, "-" * len(head)]

    def row(name: str, a: Any, b: Any = None, fmt: str = "{:.3f}") -> None:
        text = f"{name:<22}{fmt.format(a) if a is not None else '-':>10}"
        if seed:
            text += f"{fmt.format(b) if b is not None else '-':>12}"
        lines.append(text)

    for kind in types:
        a = ours["by_type"].get(kind)
        b = seed["by_type"].get(kind) if seed else None
        n = (a or b)["events"]
        row(
            f"recall {kind} ({n})",
            a["recall"] if a else None,
            b["recall"] if b else None,
        )
    for key in ("recall", "precision", "f1", "flagged_fraction"):
        row(key.replace("_", " "), ours[key], seed[key] if seed else None)
    row("flagged readings", ours["flagged"], seed["flagged"] if seed else None, "{:d}")
    return "\n".join(lines)
