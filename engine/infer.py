"""Batch inference: score a new export and add 1-step-ahead predictions, outside the warehouse.

``infer_file(warehouse, path, source, output)``:

1. parses and validates the file with the ingest module's streaming parser (same source
   mapping, same quarantine rules); duplicate keys in the file keep the first row (the
   ingest rule), and every rejected row is counted and written beside the output
   (``<output stem>.quarantine.csv``), never dropped silently;
2. scores known sensors with ``engine.anomaly.score_readings``: window context and
   hour-of-day baselines come from the warehouse's history, nothing is re-fitted;
3. scores sensors the warehouse has never seen from the file alone (a scratch warehouse in
   a temporary folder, scored like ``oxy score``); their ``note`` says so;
4. adds ``yhat_1step`` from the production model (``engine.forecast.one_step_predictions``);
5. writes Parquet or CSV atomically (temp file + ``os.replace``).

Nothing is written into the warehouse.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from engine import OxyError
from engine.registry import production_predictions
from engine.warehouse import Warehouse, canonical_readings, sensor_timezones

NOTE_NEW = "new sensor: scored from this file alone (no warehouse history)"
OUTPUT_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class InferResult:
    """What one ``oxy infer`` run read and wrote."""

    output: str
    rows_read: int
    rows_written: int
    duplicates: int
    quarantined: int
    quarantine_file: str | None
    known_sensors: int
    new_sensors: int
    anomalies: int
    production_run: str | None
    predictions: int
    prediction_note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- parsing (the ingest module's parser) ---------------------------------------------------


def parse_export(
    warehouse: Warehouse, path: Path, source: str, work: Path
) -> tuple[pl.DataFrame, pl.DataFrame, int, int]:
    """Parse and validate one export exactly as ``oxy ingest`` would, without committing.

    Returns ``(readings, quarantine, rows_read, duplicates)``: readings are canonical
    ``sensor_id, ts, value`` (first row per key), quarantine the rejected rows with their
    line and reason (in-file conflicting duplicates included).
    """
    from engine import ingest

    mapping = warehouse.config.source(source)
    if not path.is_file():
        raise OxyError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise OxyError(f"{path}: empty file")
    digest: Future[Any] = Future()
    digest.set_result(ingest._digest(path))
    scan = ingest.read_export(
        warehouse, path, ingest._file_kind(path, mapping), mapping, work, digest
    )
    schema = {"sensor_id": pl.String, "ts": pl.Datetime("us"), "value": pl.Float64}
    id_of = {code: sid for sid, code in getattr(scan, "code_of", {}).items()}
    frames = []
    for _bucket, rows in scan.bucket_rows():
        if "sensor_code" in rows.columns:  # the scan holds sensors as integer codes
            rows = rows.with_columns(
                sensor_id=pl.col("sensor_code").replace_strict(id_of, return_dtype=pl.String)
            )
        frames.append(rows.select(*schema, "ordinal"))
    candidates = (
        pl.concat(frames) if frames else pl.DataFrame(schema={**schema, "ordinal": pl.Int64})
    )
    outcome = ingest.classify_duplicates(candidates, pl.DataFrame(schema=schema))
    readings = outcome.filter(pl.col("outcome") == "accepted").select(*schema)
    duplicates = outcome.filter(pl.col("outcome") == "duplicate").height
    quarantine = [f for f in scan.quarantine_frames()]
    conflicts = outcome.filter(pl.col("outcome") == "conflict_in_file")
    if conflicts.height:
        quarantine.append(ingest._conflict_rows(scan, conflicts))
    rejected = (
        pl.concat(quarantine, how="diagonal_relaxed").sort("line")
        if quarantine
        else pl.DataFrame(schema={"line": pl.Int64, "reason": pl.String})
    )
    return readings, rejected, scan.rows_read + len(scan.reject_lines), duplicates


# -- scoring --------------------------------------------------------------------------------


def _known_sensors(warehouse: Warehouse, sensor_ids: list[str]) -> set[str]:
    if not warehouse.exists() or not sensor_ids:
        return set()
    with warehouse.reader() as con:
        known = sensor_timezones(con)
    return {sid for sid in sensor_ids if sid in known}


def score_new_sensors(
    warehouse: Warehouse, readings: pl.DataFrame, source: str, scratch_root: Path
) -> pl.DataFrame:
    """Anomaly scores of sensors without history, from their own readings only.

    A scratch warehouse (same configuration) under ``scratch_root`` receives the readings
    and is scored like ``oxy score``; the real warehouse is not touched.
    """
    from engine import anomaly

    mapping = warehouse.config.source(source)
    scratch = Warehouse(scratch_root / "scratch", warehouse.config)
    frame = readings.with_columns(
        unit=pl.lit(mapping.canonical_unit),
        customer=pl.lit(mapping.customer),
        source_file=pl.lit("infer"),
        ingested_at=pl.lit(datetime.now(UTC).replace(tzinfo=None), dtype=pl.Datetime("us")),
    )
    with scratch.writer() as con:
        scratch.register_sensors(
            con,
            [
                {
                    "sensor_id": sid,
                    "customer": mapping.customer,
                    "source": mapping.name,
                    "timezone": mapping.timezone,
                    "unit": mapping.canonical_unit,
                    "levels": mapping.levels(sid),
                }
                for sid in frame["sensor_id"].unique().sort().to_list()
            ],
        )
        con.register("batch_readings", canonical_readings(frame))
        con.execute("begin")
        scratch.publish(con, scratch.stage_readings(con, "infer"))
        con.execute("commit")
        con.unregister("batch_readings")
    anomaly.score(scratch)
    with scratch.reader() as con:
        scored = pl.from_arrow(con.table("anomaly_scores").order("sensor_id, ts").to_arrow_table())
    return scored.select(list(anomaly.SCORE_COLUMNS))


# -- output ---------------------------------------------------------------------------------


def write_frame(frame: pl.DataFrame, output: Path) -> None:
    """Write Parquet or CSV (by suffix) to a temporary name beside ``output``, then rename."""
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise OxyError(f"{output}: output must end in .parquet or .csv")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex}.tmp")
    try:
        if suffix == ".parquet":
            frame.write_parquet(tmp, compression="zstd")
        else:
            frame.write_csv(tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def infer_file(
    warehouse: Warehouse, path: str | Path, source: str, output: str | Path
) -> InferResult:
    """Score one export against the warehouse and write the result to ``output``.

    Parameters
    ----------
    warehouse
        Provides history, baselines, the production model and the source mappings.
    path
        The export (CSV or Parquet) in the format of ``[sources.<source>]``.
    source
        The source mapping name.
    output
        ``.parquet`` or ``.csv`` file to write (replaced atomically).

    Returns
    -------
    InferResult
        Counts, the production run used and where quarantined rows went.
    """
    from engine import anomaly

    path, output = Path(path), Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise OxyError(f"{output}: output must end in .parquet or .csv")
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root} (run `oxy ingest` and `oxy score`)")
    scratch_root = Path(tempfile.mkdtemp(prefix="oxy-infer-"))
    try:
        readings, rejected, rows_read, duplicates = parse_export(
            warehouse, path, source, scratch_root / "parse"
        )
        sensor_ids = readings["sensor_id"].unique().sort().to_list()
        known = _known_sensors(warehouse, sensor_ids)
        parts = []
        old = readings.filter(pl.col("sensor_id").is_in(sorted(known)))
        if old.height:
            parts.append(
                anomaly.score_readings(warehouse, old).with_columns(
                    note=pl.lit(None, dtype=pl.String)
                )
            )
        new = readings.filter(~pl.col("sensor_id").is_in(sorted(known)))
        if new.height:
            parts.append(
                score_new_sensors(warehouse, new, source, scratch_root).with_columns(
                    note=pl.lit(NOTE_NEW)
                )
            )
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)
    columns = [c for c in anomaly.SCORE_COLUMNS if c != "prev_ts"]
    if parts:
        scored = pl.concat([p.select(*columns, "note") for p in parts], how="vertical_relaxed")
    else:
        scored = pl.DataFrame(schema={**anomaly.SCORE_COLUMNS, "note": pl.String}).select(
            *columns, "note"
        )
    predicted, run_id, prediction_note = production_predictions(warehouse, readings)
    if predicted is not None:
        predicted = predicted.rename({"yhat": "yhat_1step"})
        scored = scored.join(predicted, on=["sensor_id", "ts"], how="left")
    else:
        scored = scored.with_columns(yhat_1step=pl.lit(None, dtype=pl.Float64))
    scored = scored.sort("sensor_id", "ts")
    write_frame(scored, output)
    quarantine_file = None
    if rejected.height:
        quarantine_path = output.with_name(f"{output.stem}.quarantine.csv")
        write_frame(rejected, quarantine_path)
        quarantine_file = str(quarantine_path)
    return InferResult(
        output=str(output),
        rows_read=rows_read,
        rows_written=scored.height,
        duplicates=duplicates,
        quarantined=rejected.height,
        quarantine_file=quarantine_file,
        known_sensors=len(known),
        new_sensors=len(sensor_ids) - len(known),
        anomalies=int(scored["is_anomaly"].sum() or 0),
        production_run=run_id,
        predictions=int(scored["yhat_1step"].is_not_null().sum()),
        prediction_note=prediction_note,
    )
