"""Ingest: customer exports (CSV / Parquet) -> canonical readings in the lake, every row accounted.

One file is one transaction. For each file:

1. refuse it with one line if it is malformed (missing, empty, unreadable, wrong encoding,
   mapped columns absent, corrupt Parquet) -- nothing changes;
2. skip it if the same bytes (sha256) were already ingested for the same source;
3. stream it in record batches (DuckDB ``read_csv``/``read_parquet``, all text), parse and
   validate each batch vectorised (``sql/staging/readings_parsed.sql``), convert naive local
   times with the source's IANA zone in polars (DST gap -> quarantine, DST fold -> the
   ``ingest.ambiguous_local_time`` rule), and hold good rows per lake bucket as integer
   sensor codes, spilling them (and bad rows) to ``.staging/`` past ``ingest.spill_rows``,
   so memory does not grow with the file;
4. per bucket, drop identical duplicates and quarantine conflicting ones (first ingested wins:
   the lake beats the file, the first line beats later lines; :func:`classify_duplicates`),
   comparing only with the lake rows of that bucket in the file's time range and of sensors
   registered before the file (``sql/staging/readings_lake_overlap.sql``; a file of new
   sensors reads nothing), and write the bucket's file sorted by ``(sensor_id, ts)`` under
   ``.staging/`` -- buckets are settled on ``warehouse.threads`` worker threads;
5. in one transaction: register new sensors, publish the bucket files, insert the quarantine
   rows and the ``ingest_log`` row (read = accepted + duplicates + quarantined), commit.

A crash anywhere leaves the warehouse as it was: staged files are swept by the next writer.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import OxyError
from engine.config import TIME_FORMATS, Config, SourceMapping
from engine.progress import bar as progress_bar
from engine.warehouse import READINGS_SCHEMA, StagedFile, Warehouse, sql_rows, sql_text

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
AMBIGUOUS_RULES = ("infer", "earliest", "latest", "quarantine")
_READ_CHUNK = 8 << 20

_QUARANTINE_COLUMNS = {
    "line": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
    "sensor_id": pl.String,
    "raw_time": pl.String,
    "raw_value": pl.String,
    "raw_line": pl.String,
}


@dataclass(frozen=True)
class IngestResult:
    """What one file's ingest did (one ``ingest_log`` row)."""

    ingest_id: str
    source: str
    path: str
    sha256: str
    bytes: int
    rows_read: int
    accepted: int
    duplicates: int
    quarantined: int
    new_sensors: int
    started_at: datetime
    finished_at: datetime
    status: str  # 'ok' | 'skipped'
    note: str | None = None

    def summary(self) -> str:
        """One human line, e.g. ``a.csv: read 10 = 7 accepted + 2 duplicate + 1 quarantined``."""
        counts = (
            f"read {self.rows_read:,} = {self.accepted:,} accepted + "
            f"{self.duplicates:,} duplicate + {self.quarantined:,} quarantined"
        )
        name = Path(self.path).name
        if self.status == "skipped":
            return f"{name}: already ingested ({self.note}); {counts}"
        return f"{name}: {counts}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- public API ---------------------------------------------------------------------------
def ingest_files(
    warehouse: Warehouse,
    paths: Sequence[str | Path],
    *,
    source: str | None = None,
    progress: bool = False,
    on_result: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Ingest files (or folders of exports) into ``warehouse``, one transaction per file.

    Parameters
    ----------
    warehouse
        The target warehouse; its config declares the sources.
    paths
        CSV or Parquet files; a folder stands for its ``NAME.csv|parquet`` files whose
        stem is a declared source (the layout ``oxy demo-data`` writes).
    source
        ``[sources.NAME]`` to apply to every file; by default each file's stem.
    progress
        Show a progress bar (stderr) while reading.
    on_result
        Called after each file commits (e.g. to print its summary at once).

    Returns
    -------
    list[IngestResult]
        One per file, in order.

    Examples
    --------
    >>> ingest_files(wh, ["exports/fjordras.csv"])[0].summary()   # doctest: +SKIP
    'fjordras.csv: read 1,440 = 1,438 accepted + 0 duplicate + 2 quarantined'
    """
    jobs = _plan(warehouse.config, paths, source)
    results = []
    with warehouse.writer() as con:
        for path, mapping in jobs:
            result = ingest_file(warehouse, con, path, mapping, progress=progress)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def ingest_file(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    path: Path,
    mapping: SourceMapping,
    *,
    progress: bool = False,
) -> IngestResult:
    """Ingest one file through the writer connection ``con`` (see the module docstring)."""
    started = _utcnow()
    kind = _file_kind(path)
    size = path.stat().st_size
    if size == 0:
        raise OxyError(f"{path}: empty file")
    ingest_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    same_size = sql_rows(
        con, "ingest/ingest_log_same_size", {"bytes": size, "source": mapping.name}
    )[0][0]
    # The sha256 pass runs beside the scan (hashlib releases the GIL) unless a file of the
    # same size was ingested before: then it runs first, so a repeat is skipped unread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_digest, path)
        digest = pending.result() if same_size else None
        previous = _previous(con, digest, mapping) if digest else []
        if not previous:
            work = warehouse.staging_path(suffix="")
            try:
                scan = _Scan(warehouse, path, kind, mapping, work, pending, progress=progress)
                scan.run()
                digest = pending.result()
                previous = _previous(con, digest, mapping)
                if not previous:
                    return _commit(warehouse, con, scan, ingest_id, started)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    assert digest is not None
    first_id, rows_read, quarantined = previous[0]
    result = IngestResult(
        ingest_id=ingest_id,
        source=mapping.name,
        path=str(path),
        sha256=digest.sha256,
        bytes=digest.size,
        rows_read=rows_read,
        accepted=0,
        duplicates=rows_read - quarantined,
        quarantined=quarantined,
        new_sensors=0,
        started_at=started,
        finished_at=_utcnow(),
        status="skipped",
        note=f"same sha256 as ingest {first_id}",
    )
    con.execute("begin")
    _log(con, result)
    con.execute("commit")
    return result


def _previous(
    con: duckdb.DuckDBPyConnection, digest: _Digest, mapping: SourceMapping
) -> list[tuple[Any, ...]]:
    return sql_rows(
        con, "ingest/ingest_log_same_file", {"sha256": digest.sha256, "source": mapping.name}
    )


# -- planning -----------------------------------------------------------------------------
def _plan(
    config: Config, paths: Sequence[str | Path], source: str | None
) -> list[tuple[Path, SourceMapping]]:
    if not paths:
        raise OxyError("no files given: oxy ingest FILE... [--source NAME]")
    rule = config["ingest"]["ambiguous_local_time"]
    if rule not in AMBIGUOUS_RULES:
        raise OxyError(
            f"ingest.ambiguous_local_time must be one of {AMBIGUOUS_RULES}, not {rule!r}"
        )
    jobs = []
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES
                and (source is not None or p.stem in config.sources)
            )
            if not found:
                raise OxyError(f"{raw}: no CSV or Parquet export named after a declared source")
            jobs += [(p, config.source(source or p.stem)) for p in found]
        else:
            if source is None and path.stem not in config.sources:
                known = ", ".join(sorted(config.sources)) or "none declared (pass --config FILE)"
                raise OxyError(
                    f"{raw}: no --source given and {path.stem!r} is not a declared source; "
                    f"known: {known}"
                )
            jobs.append((path, config.source(source or path.stem)))
    return jobs


def _file_kind(path: Path) -> str:
    if not path.is_file():
        raise OxyError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise OxyError(f"{path}: unknown file type {suffix!r} (expected .csv or .parquet)")


@dataclass(frozen=True)
class _Digest:
    sha256: str
    size: int


def _digest(path: Path) -> _Digest:
    """sha256 and size in one streaming pass."""
    sha = hashlib.sha256()
    size = 0
    buffer = bytearray(_READ_CHUNK)  # reused: a fresh 8 MB chunk per read costs page faults
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(view):
            sha.update(view[:n])
            size += n
    if size == 0:
        raise OxyError(f"{path}: empty file")
    return _Digest(sha.hexdigest(), size)


def _line_count(path: Path) -> int:
    """Physical lines, not counting blank lines at the very end (one streaming pass)."""
    newlines = 0
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            newlines += chunk.count(b"\n")
            tail = (tail + chunk[-4096:])[-4096:]
    stripped = tail.rstrip(b"\r\n")
    trailing = tail[len(stripped) :].count(b"\n")
    return newlines - trailing + (1 if stripped else 0)


# -- reading ------------------------------------------------------------------------------
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _trimmed(expr: str) -> str:
    # trim() copies every string: only call it on text with a space (contains() is cheap)
    return f"(case when contains({expr}, ' ') then trim({expr}) else {expr} end)"


class _Scan:
    """Stream one file: parse, validate, convert times, spill good rows per bucket."""

    def __init__(
        self,
        warehouse: Warehouse,
        path: Path,
        kind: str,
        mapping: SourceMapping,
        work: Path,
        digest: Future[_Digest],
        *,
        progress: bool,
    ) -> None:
        self.warehouse = warehouse
        self.config = warehouse.config
        self.path = path
        self.kind = kind
        self.mapping = mapping
        self.work = work
        self.digest = digest
        self.progress = progress
        self.buckets = int(self.config["warehouse"]["buckets"])
        self.bucket_of: dict[str, int] = {}
        self.code_of: dict[str, int] = {}
        self.parts: dict[int, list[Path]] = {}
        self.held: dict[int, list[pl.DataFrame]] = {}
        self.held_rows = 0
        self.quarantine_parts: list[Path] = []
        self.ambiguous: list[pl.DataFrame] = []
        self.rows_read = 0  # records delivered by the reader (rejected lines come on top)
        self.rejects = pl.DataFrame(schema=_QUARANTINE_COLUMNS)
        self.reject_lines = np.empty(0, dtype=np.int64)
        self._part_no = 0
        self._walked: tuple[np.ndarray, dict[int, int]] | None = None
        self._lines: int | None = None  # physical line count, counted only when needed

    # reading ------------------------------------------------------------------------
    def _reader_sql(self, columns: list[str]) -> tuple[str, dict[str, Any]]:
        m = self.mapping
        missing = [
            c for c in (*m.sensor_columns, m.time_column, m.value_column) if c not in columns
        ]
        if missing:
            raise OxyError(
                f"{self.path}: column(s) {missing} of source {m.name!r} not found "
                f"(file has {columns})"
            )
        # identity parts trimmed (only when they hold a space: trim() copies), then joined
        parts = [f"id_{i}" for i in range(len(m.sensor_columns))]
        trimmed = ", ".join(
            f"{_trimmed(f'cast({_ident(c)} as varchar)')} as {p}"
            for c, p in zip(m.sensor_columns, parts, strict=True)
        )
        sensor_id = parts[0] if len(parts) == 1 else f"concat_ws('|', {', '.join(parts)})"
        id_empty = " or ".join(f"coalesce({p}, '') = ''" for p in parts)
        select = (
            f"select {sensor_id} as sensor_id, ({id_empty}) as id_empty, raw_time, raw_value "
            f"from (select {trimmed}, cast({_ident(m.time_column)} as varchar) as raw_time, "
            f"cast({_ident(m.value_column)} as varchar) as raw_value from {self._source()})"
        )
        query = (
            f"with raw_rows as ({select})\nselect * from (\n{sql_text('staging/readings_parsed')})"
        )
        fmt = m.time_format
        limits = self.config["ingest"][m.unit]
        params = {
            **self._source_params(),
            "time_format": fmt if fmt in TIME_FORMATS else "pattern",
            "pattern": fmt if fmt not in TIME_FORMATS else "%Y",  # unused unless a pattern
            "pattern_has_zone": "%z" in fmt or "%Z" in fmt,
            "local_zone": m.naive_time_zone != "UTC",
            "decimal": m.decimal,
            "sentinels": [float(s) for s in self.config["ingest"]["sentinels"]],
            "min_value": float(limits["min"]),
            "max_value": float(limits["max"]),
        }
        return query, params

    def _source(self) -> str:
        if self.kind == "parquet":
            return "read_parquet($path)"
        return (
            "read_csv($path, all_varchar = true, header = true, delim = $delim, quote = '\"', "
            "escape = '\"', encoding = $encoding, store_rejects = true, auto_detect = true)"
        )

    def _source_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"path": str(self.path)}
        if self.kind == "csv":
            params |= {"delim": self.mapping.delimiter, "encoding": self.mapping.encoding}
        return params

    def run(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        mcon = self.warehouse.connect_memory()
        mcon.execute("set enable_progress_bar = false")
        try:
            try:
                columns = mcon.sql(
                    f"select * from {self._source()} limit 0", params=self._source_params()
                ).columns
            except duckdb.Error as exc:
                raise OxyError(
                    f"{self.path}: cannot read as {self.kind}: {_first_line(exc)}"
                ) from None
            query, params = self._reader_sql(list(columns))
            batch_rows = int(self.config["ingest"]["batch_rows"])
            bar = progress_bar(
                desc=self.path.name, unit="rows", unit_scale=True, enabled=self.progress
            )
            # DuckDB produces batch k+1 while a worker thread converts and processes batch k
            # (both release the GIL); one batch in flight keeps file order and memory bounded
            try:
                with ThreadPoolExecutor(max_workers=1) as worker:
                    taking: Future[None] | None = None
                    reader = mcon.sql(query, params=params).to_arrow_reader(batch_rows)
                    pending: list[pa.RecordBatch] = []
                    rows = 0
                    for batch in reader:
                        pending.append(batch)
                        rows += batch.num_rows
                        bar.update(batch.num_rows)
                        if rows >= batch_rows:
                            if taking is not None:
                                taking.result()
                            taking = worker.submit(self._take_batches, pending)
                            pending, rows = [], 0
                    if taking is not None:
                        taking.result()
                    if pending:
                        self._take_batches(pending)
            except duckdb.Error as exc:
                raise OxyError(
                    f"{self.path}: cannot read as {self.kind}: {_first_line(exc)}"
                ) from None
            finally:
                bar.close()
            if self.kind == "csv":
                self._collect_rejects(mcon)
        finally:
            mcon.close()
        self._resolve_ambiguous()

    def _take_batches(self, batches: list[pa.RecordBatch]) -> None:
        self._take(_frame(batches))

    def _take(self, frame: pl.DataFrame) -> None:
        """Split one parsed batch into good rows (spilled per bucket) and bad rows."""
        start = self.rows_read
        self.rows_read += frame.height
        frame = frame.with_columns(
            ordinal=pl.int_range(start, start + frame.height, dtype=pl.Int64)
        )
        if "reason" not in frame.columns:  # the usual case (see _frame): no bad row, no copy
            good, bad = frame, frame.clear()
        elif frame["reason"].null_count() == frame.height:
            good, bad = frame, frame.clear()
        else:
            bad = frame.filter(pl.col("reason").is_not_null())
            good = frame.filter(pl.col("reason").is_null())
        if bad.height:
            limits = self.config["ingest"][self.mapping.unit]
            bad = bad.with_columns(
                detail=pl.when(pl.col("reason") == "below plausible minimum")
                .then(pl.lit(f"minimum {float(limits['min'])} {self.mapping.unit}"))
                .when(pl.col("reason") == "above plausible maximum")
                .then(pl.lit(f"maximum {float(limits['max'])} {self.mapping.unit}"))
            )
        if self.mapping.naive_time_zone != "UTC":
            good, unresolved = self._localize(good)
            bad = pl.concat([bad, unresolved], how="diagonal_relaxed")
        if bad.height:
            self._spill_quarantine(bad)
        self._spill_good(good)

    def _localize(self, good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Naive wall-clock times -> UTC with the source's zone; gap/fold rows set aside."""
        zone = self.mapping.naive_time_zone
        if not good["is_wall"].any():  # every time carried an offset
            return good, good.clear()
        wall = pl.col("ts")
        utc = (
            wall.dt.replace_time_zone(zone, ambiguous="null", non_existent="null")
            .dt.convert_time_zone("UTC")
            .dt.replace_time_zone(None)
        )
        good = good.with_columns(
            pl.when(pl.col("is_wall")).then(utc).otherwise(wall).alias("ts"),
            wall.alias("wall"),
        )
        failed = good.filter(pl.col("ts").is_null())
        good = good.filter(pl.col("ts").is_not_null())
        if not failed.height:
            return good, failed.clear()

        def instant(rule: str) -> pl.Expr:
            return (
                pl.col("wall")
                .dt.replace_time_zone(zone, ambiguous=rule, non_existent="null")
                .dt.convert_time_zone("UTC")
                .dt.replace_time_zone(None)
            )

        failed = failed.with_columns(earliest=instant("earliest"), latest=instant("latest"))
        gap = failed.filter(pl.col("earliest").is_null()).with_columns(
            reason=pl.lit("nonexistent local time"),
            detail=pl.lit(f"in the spring DST gap of {zone}"),
            raw_value=pl.col("value").cast(pl.String),
        )
        fold = failed.filter(pl.col("earliest").is_not_null())
        if fold.height:
            self.ambiguous.append(fold)
        return good, gap

    def _resolve_ambiguous(self) -> None:
        """Apply ``ingest.ambiguous_local_time`` to the repeated-hour rows of the whole file."""
        if not self.ambiguous:
            return
        rule = self.config["ingest"]["ambiguous_local_time"]
        zone = self.mapping.naive_time_zone
        fold = pl.concat(self.ambiguous, how="diagonal_relaxed").sort("ordinal")
        fold = fold.with_columns(
            occurrence=pl.int_range(1, pl.len() + 1).over("sensor_id", "wall"),
            occurrences=pl.len().over("sensor_id", "wall"),
        )
        if rule == "infer":
            chosen = (
                pl.when((pl.col("occurrence") == 1) & (pl.col("occurrences") >= 2))
                .then(pl.col("earliest"))
                .when(pl.col("occurrence") == 2)
                .then(pl.col("latest"))
            )
        elif rule in ("earliest", "latest"):
            chosen = pl.col(rule)
        else:
            chosen = pl.lit(None, dtype=pl.Datetime("us"))
        fold = fold.with_columns(ts=chosen)
        resolved = fold.filter(pl.col("ts").is_not_null())
        unresolved = fold.filter(pl.col("ts").is_null()).with_columns(
            reason=pl.lit("ambiguous local time"),
            detail=pl.format(
                "in the autumn DST fold of {}: occurrence {} of {} for this sensor (rule {})",
                pl.lit(zone),
                pl.col("occurrence"),
                pl.col("occurrences"),
                pl.lit(rule),
            ),
            raw_value=pl.col("value").cast(pl.String),
        )
        if unresolved.height:
            self._spill_quarantine(unresolved)
        if resolved.height:
            self._spill_good(resolved)

    def _next_part(self, folder: str) -> Path:
        self._part_no += 1
        out = self.work / folder
        out.mkdir(parents=True, exist_ok=True)
        return out / f"part-{self._part_no:06d}.parquet"

    def _spill_good(self, good: pl.DataFrame) -> None:
        """Hold good rows per bucket as (sensor code, ts, value, ordinal); past
        ``ingest.spill_rows`` held rows, write them to ``.staging/`` (memory stays flat)."""
        if not good.height:
            return

        codes = self._codes(good["sensor_id"])
        bucket_by_code = np.array([self.bucket_of[sid] for sid in self.code_of], dtype=np.int32)
        good = good.select(
            sensor_code=pl.Series(codes),
            ts=pl.col("ts").cast(pl.Datetime("us")),
            value="value",
            ordinal="ordinal",
            bucket=pl.Series(bucket_by_code[codes]),
        )
        for (bucket,), part in good.partition_by("bucket", as_dict=True, include_key=False).items():
            self.held.setdefault(int(bucket), []).append(part)
        self.held_rows += good.height
        if self.held_rows > int(self.config["ingest"]["spill_rows"]):
            self.spill()

    def _codes(self, ids: pl.Series) -> np.ndarray:
        """The file's integer code of each sensor id (new ids get the next codes)."""
        distinct = ids.unique()
        names = distinct.cast(pl.String).to_list()
        for sid in names:
            if sid not in self.code_of:  # first seen in this batch
                self.code_of[sid] = len(self.code_of)
                self.bucket_of[sid] = zlib.crc32(sid.encode("utf-8")) % self.buckets
        if ids.dtype == pl.Categorical:  # as _frame reads them: map the few categories
            physical = distinct.to_physical().to_numpy()
            lookup = np.zeros(int(physical.max()) + 1, dtype=np.int32)
            lookup[physical] = [self.code_of[sid] for sid in names]
            return lookup[ids.to_physical().to_numpy()]
        return ids.replace_strict(self.code_of, return_dtype=pl.Int32).to_numpy()

    def spill(self) -> None:
        for bucket, frames in self.held.items():
            path = self._next_part(f"bucket={bucket:02d}")
            pl.concat(frames).write_parquet(path, compression="lz4", statistics=False)
            self.parts.setdefault(bucket, []).append(path)
        self.held, self.held_rows = {}, 0

    def bucket_rows(self) -> Iterable[tuple[int, pl.DataFrame]]:
        """Each bucket's good rows of the whole file (spilled parts, then held rows)."""
        for bucket, frames in self.bucket_frames():
            yield bucket, pl.concat(frames)

    def bucket_frames(self) -> Iterable[tuple[int, list[pl.DataFrame]]]:
        """Each bucket's good rows of the whole file as parts in file order (spilled parts
        read back, then held rows), handed over (the scan lets go of them)."""
        for bucket in sorted(set(self.parts) | set(self.held)):
            frames = [pl.read_parquet(p) for p in self.parts.get(bucket, [])]
            frames += self.held.pop(bucket, [])
            yield bucket, frames

    def _spill_quarantine(self, bad: pl.DataFrame) -> None:
        frame = bad.select(
            "ordinal",
            *[
                (pl.col(c) if c in bad.columns else pl.lit(None)).cast(t).alias(c)
                for c, t in _QUARANTINE_COLUMNS.items()
                if c != "line"
            ],
        )
        path = self._next_part("quarantine")
        frame.write_parquet(path, compression="lz4", statistics=False)
        self.quarantine_parts.append(path)

    def _collect_rejects(self, mcon: duckdb.DuckDBPyConnection) -> None:
        """Lines DuckDB could not split into the header's columns (ragged, bad quoting...)."""
        rows = sql_rows(mcon, "ingest/csv_reject_lines")
        encoding = [r for r in rows if r[1] == "INVALID ENCODING"]
        if encoding:
            raise OxyError(
                f"{self.path}: not valid {self.mapping.encoding} text (line {encoding[0][0]}); "
                "set `encoding` in the source mapping"
            )
        if not rows:
            return
        self.reject_lines = np.array([r[0] for r in rows], dtype=np.int64)
        self.rejects = pl.DataFrame(
            {
                "line": self.reject_lines,
                "reason": ["ragged line" if "COLUMNS" in r[1] else "malformed line" for r in rows],
                "detail": [r[3] for r in rows],
                "sensor_id": [None] * len(rows),
                "raw_time": [None] * len(rows),
                "raw_value": [None] * len(rows),
                "raw_line": [r[2].strip("\r\n") for r in rows],
            },
            schema=_QUARANTINE_COLUMNS,
        )

    # line numbers ---------------------------------------------------------------------
    def lines(self, ordinals: np.ndarray) -> np.ndarray:
        """Where record ``ordinal`` (0-based, in reading order) is in the file.

        Parquet: the row index. CSV: the 1-based physical line (header = line 1). When every
        record is one line and no blank line hides in the file, this is arithmetic on the
        rejected lines; otherwise the file is walked once with Python's csv module.
        """
        ordinals = np.asarray(ordinals, dtype=np.int64)
        if self.kind == "parquet":
            return ordinals
        if self._simple():
            # the k-th good record sits on the k-th line (from 2) that is not rejected
            shifted = self.reject_lines - 2 - np.arange(len(self.reject_lines))
            return ordinals + 2 + np.searchsorted(shifted, ordinals, side="right")
        return self._walk()[0][ordinals]

    def _simple(self) -> bool:
        """Every record is one physical line and no blank line hides in the file."""
        if self._lines is None:
            self._lines = _line_count(self.path)
        return self._lines == 1 + self.rows_read + len(self.reject_lines)

    def _walk(self) -> tuple[np.ndarray, dict[int, int]]:
        """Physical start lines of the good records, and of DuckDB's rejected records
        (DuckDB numbers records, blank lines included, not physical lines)."""
        if self._walked is None:
            rejected = set(self.reject_lines.tolist())
            starts = np.zeros(self.rows_read, dtype=np.int64)
            reject_at: dict[int, int] = {}
            good = 0
            record_no = 1  # the header
            with self.path.open(encoding=self.mapping.encoding, newline="") as fh:
                reader = csv.reader(fh, delimiter=self.mapping.delimiter)
                next(reader, None)
                physical = reader.line_num + 1
                for record in reader:
                    record_no += 1
                    start, physical = physical, reader.line_num + 1
                    if record_no in rejected:
                        reject_at[record_no] = start
                    elif record:
                        if good < self.rows_read:
                            starts[good] = start
                        good += 1
            if good != self.rows_read:
                raise OxyError(
                    f"{self.path}: cannot locate every record's line ({good} of "
                    f"{self.rows_read}); the file's quoting is inconsistent"
                )
            self._walked = (starts, reject_at)
        return self._walked

    def quarantine_frames(self) -> Iterable[pl.DataFrame]:
        """Quarantined rows with their line numbers, part by part."""
        if self.rejects.height:
            if self._simple():
                yield self.rejects
            else:
                reject_at = self._walk()[1]
                yield self.rejects.with_columns(
                    line=pl.col("line").replace_strict(reject_at, default=pl.col("line"))
                )
        for part in self.quarantine_parts:
            frame = pl.read_parquet(part)
            lines = self.lines(frame["ordinal"].to_numpy())
            yield frame.with_columns(line=pl.Series(lines, dtype=pl.Int64)).select(
                list(_QUARANTINE_COLUMNS)
            )

    def sensors(self) -> list[dict[str, Any]]:
        m = self.mapping
        sep = "|" if len(m.sensor_columns) > 1 else m.sensor_separator
        return [
            {
                "sensor_id": sid,
                "customer": m.customer,
                "source": m.name,
                "timezone": m.timezone,
                "unit": m.unit,
                "levels": sid.split(sep) if sep else [sid],
            }
            for sid in sorted(self.bucket_of)
        ]


# -- committing ---------------------------------------------------------------------------
def _commit(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    scan: _Scan,
    ingest_id: str,
    started: datetime,
) -> IngestResult:
    m = scan.mapping
    counts = {"accepted": 0, "duplicate": 0, "conflict": 0}
    staged: list[StagedFile] = []
    con.execute("begin")
    try:
        sensors = scan.sensors()
        ids = sorted(scan.code_of)
        # only sensors registered before this file can have readings in the lake
        known = _known_sensors(con, ids)
        new_sensors = warehouse.register_sensors(con, sensors) if sensors else 0
        # sensor codes -> ranks in sensor_id order, so an integer sort gives the lake's order
        rank_of = {sid: rank for rank, sid in enumerate(ids)}
        rank_by_code = np.zeros(len(scan.code_of), dtype=np.int32)
        for sid, code in scan.code_of.items():
            rank_by_code[code] = rank_of[sid]
        id_by_rank = pl.Series("sensor_id", ids, dtype=pl.String)
        literals = {
            "unit": m.unit,
            "customer": m.customer,
            "source_file": scan.path.name,
            "ingested_at": started,
        }

        def collect(settled: Future[_Settled]) -> None:
            outcome = settled.result()
            for name, n in outcome.counts.items():
                counts["conflict" if name.startswith("conflict") else name] += n
            if outcome.staged is not None:
                staged.append(outcome.staged)
            _insert_quarantine(con, scan, ingest_id, _conflict_rows(scan, outcome.conflicts))

        # Buckets are settled (classified, written) on `threads` workers while this thread
        # reads the next bucket and its lake overlap; at most `threads` buckets are in flight.
        threads = int(warehouse.config["warehouse"]["threads"])
        in_flight: list[Future[_Settled]] = []
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for bucket, parts in scan.bucket_frames():
                in_lake = [sid for sid in known if scan.bucket_of[sid] == bucket]
                lo = min(part["ts"].min() for part in parts)  # type: ignore[type-var]
                hi = max(part["ts"].max() for part in parts)  # type: ignore[type-var]
                existing = _lake_overlap(warehouse, con, bucket, lo, hi, in_lake)
                existing = existing.with_columns(
                    pl.col("sensor_id").replace_strict(rank_of, return_dtype=pl.Int32)
                )
                while len(in_flight) >= max(1, threads):
                    collect(in_flight.pop(0))
                in_flight.append(
                    pool.submit(
                        _settle_bucket,
                        warehouse,
                        parts,
                        rank_by_code,
                        existing,
                        bucket,
                        ingest_id,
                        id_by_rank,
                        literals,
                    )
                )
                del parts
            while in_flight:
                collect(in_flight.pop(0))
        staged.sort(key=lambda f: f.relpath)
        warehouse.publish(con, staged)
        quarantined = counts["conflict"]
        for frame in scan.quarantine_frames():
            quarantined += frame.height
            _insert_quarantine(con, scan, ingest_id, frame)
        rows_read = scan.rows_read + len(scan.reject_lines)
        digest = scan.digest.result()
        result = IngestResult(
            ingest_id=ingest_id,
            source=m.name,
            path=str(scan.path),
            sha256=digest.sha256,
            bytes=digest.size,
            rows_read=rows_read,
            accepted=counts["accepted"],
            duplicates=counts["duplicate"],
            quarantined=quarantined,
            new_sensors=new_sensors,
            started_at=started,
            finished_at=_utcnow(),
            status="ok",
        )
        if result.accepted + result.duplicates + result.quarantined != rows_read:
            raise OxyError(f"internal: {scan.path} row accounting does not add up: {result}")
        _log(con, result)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return result


@dataclass(frozen=True)
class _Settled:
    """One bucket's outcome: counts per outcome, its staged file, its conflicting rows."""

    counts: dict[str, int]
    staged: StagedFile | None
    conflicts: pl.DataFrame


def _settle_bucket(
    warehouse: Warehouse,
    parts: list[pl.DataFrame],
    rank_by_code: np.ndarray,
    existing: pl.DataFrame,
    bucket: int,
    ingest_id: str,
    id_by_rank: pl.Series,
    literals: dict[str, Any],
) -> _Settled:
    """Classify one bucket's rows (``parts`` in file order, sensors as file codes; compared
    as ranks) against the lake's rows and stage its accepted readings; runs on a worker
    thread (polars, numpy and pyarrow release the GIL)."""
    rows = pl.concat(parts)
    parts.clear()
    candidates = rows.select(
        sensor_id=pl.Series(rank_by_code[rows["sensor_code"].to_numpy()]),
        ts="ts",
        value="value",
        ordinal="ordinal",
    )
    del rows
    rows = classify_duplicates(candidates, existing)
    counts = dict(rows.group_by("outcome").len().iter_rows())
    if counts.get("accepted", 0) != rows.height:
        accepted = rows.filter(pl.col("outcome") == "accepted")
    else:  # the usual case: no copy
        accepted = rows
    staged = None
    if accepted.height:
        staged = _stage_bucket(warehouse, accepted, bucket, ingest_id, id_by_rank, literals)
    conflicts = rows.clear()
    if len(counts) > ("accepted" in counts) + ("duplicate" in counts):
        conflicts = rows.filter(pl.col("outcome").str.starts_with("conflict"))
    conflicts = conflicts.with_columns(sensor_id=id_by_rank.gather(conflicts["sensor_id"]))
    return _Settled(counts, staged, conflicts)


def _stage_bucket(
    warehouse: Warehouse,
    accepted: pl.DataFrame,
    bucket: int,
    ingest_id: str,
    id_by_rank: pl.Series,
    literals: dict[str, Any],
) -> StagedFile:
    """Write one bucket's accepted readings (sorted by sensor_id, ts; sensor_id as ranks into
    ``id_by_rank``) under ``.staging/`` with the lake's schema (:data:`READINGS_SCHEMA`).

    Written by pyarrow from dictionary arrays (the sensor ids and the per-file constants are
    never expanded into strings), ``ts`` delta-encoded and values dictionary-encoded (sorted
    minutes, few distinct readings: ~5x smaller files than plain, and cheaper to write), zstd
    level 1, row groups of 122,880 rows with min/max statistics; no Arrow schema is stored,
    so every reader sees plain strings and timestamps.
    """
    rows = accepted.height
    zeros = pa.array(np.zeros(rows, dtype=np.int32))  # the indices of every constant column

    def constant(value: Any, kind: pa.DataType) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(zeros, pa.array([value], kind))

    table = pa.Table.from_arrays(
        [
            pa.DictionaryArray.from_arrays(
                pa.array(accepted["sensor_id"].cast(pl.Int32).to_numpy()),
                id_by_rank.to_arrow().cast(pa.string()),
            ),
            accepted["ts"].to_arrow(),
            accepted["value"].to_arrow(),
            constant(literals["unit"], pa.string()),
            constant(literals["customer"], pa.string()),
            constant(literals["source_file"], pa.string()),
            constant(literals["ingested_at"], pa.timestamp("us")),
        ],
        names=READINGS_SCHEMA.names,
    )
    path = warehouse.staging_path()
    pq.write_table(
        table,
        path,
        row_group_size=122_880,
        compression="zstd",
        compression_level=1,
        use_dictionary=["sensor_id", "value", "unit", "customer", "source_file", "ingested_at"],
        column_encoding={"ts": "DELTA_BINARY_PACKED"},
        store_schema=False,
        sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)],
    )
    return StagedFile(
        staged=path,
        relpath=f"lake/readings/bucket={bucket:02d}/{ingest_id}.parquet",
        kind="readings",
        bucket=bucket,
        rows=rows,
        min_ts=accepted["ts"].min(),  # type: ignore[arg-type]
        max_ts=accepted["ts"].max(),  # type: ignore[arg-type]
    )


def _known_sensors(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    """Which of ``ids`` are registered (the lake holds readings of registered sensors only)."""
    if not ids:
        return set()
    rows = sql_rows(con, "meta/sensors_known", {"ids": ids})
    return {r[0] for r in rows}


def _lake_overlap(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    bucket: int,
    lo: Any,
    hi: Any,
    sensor_ids: list[str],
) -> pl.DataFrame:
    """Committed readings of ``sensor_ids`` in ``bucket`` with ``lo <= ts <= hi`` (files and
    row groups outside it are never read; no sensors, nothing read)."""
    empty = pl.DataFrame(
        schema={"sensor_id": pl.String, "ts": pl.Datetime("us"), "value": pl.Float64}
    )
    if not sensor_ids:
        return empty
    lake = [
        str(warehouse.root / r[0])
        for r in sql_rows(
            con, "ingest/bucket_files_overlapping", {"bucket": bucket, "lo": lo, "hi": hi}
        )
    ]
    if not lake:
        return empty
    table = con.sql(
        sql_text("staging/readings_lake_overlap"),
        params={"lake": lake, "lo": lo, "hi": hi, "sensors": sorted(sensor_ids)},
    ).to_arrow_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("us")))


def classify_duplicates(candidates: pl.DataFrame, existing: pl.DataFrame) -> pl.DataFrame:
    """The outcome of each candidate reading: first ingested wins.

    ``candidates`` has ``sensor_id, ts, value, ordinal`` (file order); ``existing`` the
    committed ``sensor_id, ts, value`` for the same keys. A key already in the lake keeps the
    lake's value; within the file the first row (lowest ordinal) is kept. A later row with
    the same value is a ``duplicate``, with another value a ``conflict_existing`` /
    ``conflict_in_file`` (quarantined, naming ``kept_value``). Result sorted by key.

    Examples
    --------
    >>> from datetime import datetime
    >>> t = datetime(2024, 1, 1)
    >>> c = pl.DataFrame({"sensor_id": ["a", "a", "a"], "ts": [t, t, t],
    ...                   "value": [1.0, 1.0, 2.0], "ordinal": [0, 1, 2]})
    >>> e = pl.DataFrame(schema={"sensor_id": pl.String, "ts": pl.Datetime("us"),
    ...                          "value": pl.Float64})
    >>> classify_duplicates(c, e)["outcome"].to_list()
    ['accepted', 'duplicate', 'conflict_in_file']
    """
    # a stable sort keeps file order (ordinal) within a key
    if not candidates["ordinal"].is_sorted():
        candidates = candidates.sort("ordinal")
    # usually each sensor's times already rise in file order: then a sort by sensor alone
    # (several times cheaper) gives the key order, and no key repeats within the file
    ranked = _by_sensor(candidates)
    same_sensor = pl.col("sensor_id") == pl.col("sensor_id").shift()
    rising = ranked.select(
        (~same_sensor | (pl.col("ts") > pl.col("ts").shift())).fill_null(True).all()
    ).item()
    if rising:
        ranked = ranked.with_columns(
            first=pl.lit(True), first_value="value", kept_ordinal="ordinal"
        )
    else:
        key_start = ~same_sensor | (pl.col("ts") != pl.col("ts").shift())
        ranked = candidates.sort("sensor_id", "ts", maintain_order=True).with_columns(
            first=key_start.fill_null(True)
        )
        ranked = ranked.with_columns(
            first_value=pl.when("first").then("value").forward_fill(),
            kept_ordinal=pl.when("first").then("ordinal").forward_fill(),
        )
    if existing.height:
        joined = ranked.join(
            existing.rename({"value": "existing_value"}),
            on=["sensor_id", "ts"],
            how="left",
            maintain_order="left",
        )
    elif rising:  # every row is new and first of its key
        return ranked.select(
            "sensor_id",
            "ts",
            "value",
            "ordinal",
            outcome=pl.lit("accepted"),
            kept_value="value",
            kept_ordinal="ordinal",
        )
    else:
        joined = ranked.with_columns(existing_value=pl.lit(None, dtype=pl.Float64))
    has_existing = pl.col("existing_value").is_not_null()
    outcome = (
        pl.when(has_existing & (pl.col("value") == pl.col("existing_value")))
        .then(pl.lit("duplicate"))
        .when(has_existing)
        .then(pl.lit("conflict_existing"))
        .when(~pl.col("first") & (pl.col("value") == pl.col("first_value")))
        .then(pl.lit("duplicate"))
        .when(~pl.col("first"))
        .then(pl.lit("conflict_in_file"))
        .otherwise(pl.lit("accepted"))
    )
    return joined.select(
        "sensor_id",
        "ts",
        "value",
        "ordinal",
        outcome=outcome,
        kept_value=pl.coalesce("existing_value", "first_value"),
        kept_ordinal="kept_ordinal",
    )


def _by_sensor(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` stably sorted by ``sensor_id``: a numpy radix sort when the ids are small
    integers (the ingest's sensor ranks), else polars' stable sort."""
    ids = frame["sensor_id"]
    if not ids.dtype.is_integer() or not ids.len():
        return frame.sort("sensor_id", maintain_order=True)
    if ids.is_sorted():
        return frame
    low, high = ids.min(), ids.max()
    if not (0 <= low and high < 1 << 16):  # type: ignore[operator]
        return frame.sort("sensor_id", maintain_order=True)
    order = np.argsort(ids.to_numpy().astype(np.uint16), kind="stable")
    return frame.select(pl.all().gather(pl.Series(order)))


def _conflict_rows(scan: _Scan, conflicts: pl.DataFrame) -> pl.DataFrame:
    """Quarantine rows for conflicting duplicates, naming the kept value and where it is."""
    if not conflicts.height:
        return pl.DataFrame(schema=_QUARANTINE_COLUMNS)
    conflicts = conflicts.sort("ordinal")
    where = "row" if scan.kind == "parquet" else "line"
    return conflicts.with_columns(
        line=pl.Series(scan.lines(conflicts["ordinal"].to_numpy()), dtype=pl.Int64),
        kept_line=pl.Series(scan.lines(conflicts["kept_ordinal"].to_numpy()), dtype=pl.Int64),
    ).select(
        "line",
        reason=pl.lit("conflicting duplicate"),
        detail=pl.when(pl.col("outcome") == "conflict_existing")
        .then(pl.format("kept value {} (already in the warehouse)", "kept_value"))
        .otherwise(
            pl.format("kept value {} (first in file, " + where + " {})", "kept_value", "kept_line")
        ),
        sensor_id="sensor_id",
        raw_time=pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
        raw_value=pl.col("value").cast(pl.String),
        raw_line=pl.lit(None, dtype=pl.String),
    )


def _insert_quarantine(
    con: duckdb.DuckDBPyConnection, scan: _Scan, ingest_id: str, frame: pl.DataFrame
) -> None:
    if not frame.height:
        return
    rows = frame.with_columns(
        ingest_id=pl.lit(ingest_id),
        source=pl.lit(scan.mapping.name),
        source_file=pl.lit(scan.path.name),
        quarantined_at=pl.lit(_utcnow()),
    ).to_arrow()
    con.register("quarantine_rows", rows)
    try:
        sql_rows(con, "ingest/quarantine_insert")
    finally:
        con.unregister("quarantine_rows")


def _log(con: duckdb.DuckDBPyConnection, result: IngestResult) -> None:
    sql_rows(con, "ingest/ingest_log_record", result.to_dict())


def _frame(batches: list[pa.RecordBatch]) -> pl.DataFrame:
    """Record batches as one frame; ``sensor_id`` as a categorical (a file has few distinct
    ids: they are hashed once here instead of copied and looked up row by row)."""
    table = pa.Table.from_batches(batches)
    at = table.schema.get_field_index("sensor_id")
    if at >= 0 and pa.types.is_string(table.schema.field(at).type):
        table = table.set_column(at, "sensor_id", pc.dictionary_encode(table.column(at)))
    # the text kept for bad rows is null in good ones: a column of nulls is left out (polars
    # would still allocate a view per row), and a missing `reason` means no bad row
    empty = [c for c in ("reason", "raw_time", "raw_value") if c in table.column_names]
    table = table.drop_columns([c for c in empty if table.column(c).null_count == len(table)])
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["IngestResult", "classify_duplicates", "ingest_file", "ingest_files"]
