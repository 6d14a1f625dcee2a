"""Ingest: customer exports (CSV / Parquet) -> canonical readings in the lake, every row accounted.

One file is one transaction. For each file:

1. refuse it with one line if it is malformed (missing, empty, unreadable, wrong encoding,
   mapped columns absent, corrupt Parquet) -- nothing changes;
2. skip it if the same bytes (sha256) were already ingested for the same source;
3. stream it in record batches (DuckDB ``read_csv`` with the mapping's dialect -- header
   found by :mod:`engine.ingest_read`, never sniffed -- or ``read_parquet``; all text), build
   raw reading rows from the mapping (identity from columns, a constant or a template; one or
   several time columns; one or many value columns), parse and validate each batch
   vectorised (``sql/staging/readings_parsed.sql``: time formats tried in turn, implausible
   times, units converted to mg/L or %sat), convert naive local times with the source's IANA
   zone in polars (DST gap -> quarantine, DST fold -> the ``ingest.ambiguous_local_time``
   rule), and hold good rows per lake bucket as integer sensor codes, spilling them (and bad
   rows) to ``.staging/`` past ``ingest.spill_rows``, so memory does not grow with the file;
   a CSV with mixed line endings is read again from a normalised copy, and one whose stray
   quote swallows the lines after it is read again without quote handling;
4. per bucket, drop identical duplicates and quarantine conflicting ones (first ingested wins:
   the lake beats the file, the first line beats later lines; :func:`classify_duplicates`),
   comparing only with the lake rows of that bucket in the file's time range and of sensors
   registered before the file (``sql/staging/readings_lake_overlap.sql``; a file of new
   sensors reads nothing), and write the bucket's file sorted by ``(sensor_id, ts)`` under
   ``.staging/`` -- buckets are settled on ``warehouse.threads`` worker threads;
5. refuse the file when more than ``ingest.max_bad_fraction`` of its rows (not counting exact
   duplicates of lake rows) would be quarantined, unless told to accept it;
6. in one transaction: register new sensors, publish the bucket files, insert the quarantine
   rows and the ``ingest_log`` row (read = accepted + duplicates + quarantined), commit.

A crash anywhere leaves the warehouse as it was: staged files are swept by the next writer.
A dry run does steps 1-5 on a read-only connection and writes nothing. :func:`forget` undoes
one ingest in one transaction; :func:`source_summaries` lists what each source delivered.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import shutil
import tempfile
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import OxyError
from engine.config import Config, SourceMapping
from engine.ingest_read import (
    CsvLayout,
    csv_layout,
    mixed_line_breaks,
    na_values,
    parse_params,
    raw_rows,
)
from engine.progress import bar as progress_bar
from engine.warehouse import (
    READINGS_SCHEMA,
    SQL_DIR,
    StagedFile,
    Warehouse,
    bind,
    sql_rows,
    sql_text,
)

if TYPE_CHECKING:
    from engine.cluster import Executor

AMBIGUOUS_RULES = ("infer", "earliest", "latest", "quarantine")
_READ_CHUNK = 8 << 20
_RAW_LINE_CHARS = 2000  # of a line that could not be split, kept in quarantine.raw_line
_BOOK = "ingest/bookkeeping#"
_OPTIONAL = ("temperature_c", "salinity")  # reading columns a mapping may leave out

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
class IngestPreview:
    """What a dry run found beyond the counts: the rows as they would land, new sensors,
    and the refusal the bad-fraction guard would give (``None``: it would commit)."""

    first_rows: list[dict[str, Any]]
    new_sensors: list[dict[str, Any]]
    known_sensors: int
    refusal: str | None


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
    status: str  # 'ok' | 'skipped' | 'dry-run'
    note: str | None = None
    source_unit: str | None = None
    unit_factor: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)  # quarantined rows by reason
    preview: IngestPreview | None = None

    def summary(self) -> str:
        """One human line, e.g. ``a.csv: read 10 = 7 accepted + 2 duplicate + 1 quarantined``."""
        counts = (
            f"read {self.rows_read:,} = {self.accepted:,} accepted + "
            f"{self.duplicates:,} duplicate + {self.quarantined:,} quarantined"
        )
        name = Path(self.path).name
        if self.status == "skipped":
            return f"{name}: already ingested ({self.note}); {counts}"
        if self.status == "dry-run":
            return f"{name} (dry run, nothing written): {counts}"
        return f"{name}: {counts}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ForgetResult:
    """What ``oxy forget`` removed."""

    ingest_ids: list[str]
    paths: list[str]
    files: int
    readings: int
    quarantined: int
    sensors_affected: int
    sensors_removed: list[str]  # left without readings, never scored: unregistered
    sensors_emptied: list[str]  # left without readings, scored: registered until rescored
    later_ingests: list[str]  # ingests after it that reported duplicates or conflicts

    def summary(self) -> list[str]:
        lines = [
            f"forgot ingest {i} ({Path(p).name})"
            for i, p in zip(self.ingest_ids, self.paths, strict=True)
        ]
        lines.append(
            f"  removed {self.readings:,} readings in {self.files} lake file(s), "
            f"{self.quarantined:,} quarantine rows, {len(self.ingest_ids)} ingest_log "
            f"entr{'y' if len(self.ingest_ids) == 1 else 'ies'}"
            + (
                f" and {len(self.sensors_removed)} sensor(s) left without readings"
                if self.sensors_removed
                else ""
            )
        )
        lines.append(
            f"  {self.sensors_affected} sensor(s) affected: the next `oxy score` rescores them"
            + (
                f" ({len(self.sensors_emptied)} left without readings stay registered; "
                "their scores go with that run)"
                if self.sensors_emptied
                else ""
            )
        )
        if self.later_ingests:
            lines.append(
                "  note: later ingests reported duplicates or conflicts and may have lost rows "
                f"to it: {', '.join(self.later_ingests)} (forget and re-ingest them to restore)"
            )
        return lines

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
    dry_run: bool = False,
    accept_bad: bool = False,
    executor: Executor | None = None,
) -> list[IngestResult]:
    """Ingest files (or folders of exports) into ``warehouse``, one transaction per file.

    Parameters
    ----------
    warehouse
        The target warehouse; its config declares the sources.
    paths
        Export files; a folder stands for its files whose stem is a declared source (the
        layout ``oxy demo-data`` writes), or every export in it with ``source``.
    source
        ``[sources.NAME]`` to apply to every file; by default each file's stem.
    progress
        Show a progress bar (stderr) while reading.
    on_result
        Called after each file commits (e.g. to print its summary at once).
    dry_run
        Parse and classify every file against the warehouse as it is, write nothing; each
        result has status ``dry-run`` and a :class:`IngestPreview`.
    accept_bad
        Commit a file even when more than ``ingest.max_bad_fraction`` of its rows would be
        quarantined.
    executor
        Parse, validate and stage the files on a cluster's workers in parallel
        (:class:`engine.cluster.DaskExecutor`, :func:`scan_file`); each file is then committed
        here, in order, as without it (the duplicate rule compares with earlier files).

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
    connection = _dry_run_connection(warehouse) if dry_run else warehouse.writer()
    with connection as con:
        if executor is not None and len(jobs) > 1 and not dry_run:
            scans = executor.map(
                scan_file, [(warehouse, path, mapping) for path, mapping in jobs], label="ingest"
            )
        else:  # a dry run reads each file here: it stages nothing a worker could hand over
            scans = [None] * len(jobs)
        try:
            for (path, mapping), scanned in zip(jobs, scans, strict=True):
                if scanned is None:
                    result = ingest_file(
                        warehouse,
                        con,
                        path,
                        mapping,
                        progress=progress,
                        dry_run=dry_run,
                        accept_bad=accept_bad,
                    )
                else:
                    result = commit_scan(warehouse, con, scanned, accept_bad=accept_bad)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:  # the scans of files a failing file stopped
            for scanned in scans:
                if scanned is not None and scanned.work is not None:
                    shutil.rmtree(scanned.work, ignore_errors=True)
    return results


@dataclass(frozen=True)
class _Resolved:
    """A digest already computed (a scan made on a cluster worker), as a done future."""

    value: _Digest

    def result(self) -> _Digest:
        return self.value


@dataclass(frozen=True)
class ScannedFile:
    """What :func:`scan_file` returns: the scan with every good row spilled under
    ``.staging/`` (or the file's one-line error), and when it started."""

    scan: _Scan | None
    started: datetime
    error: OxyError | None = None
    work: Path | None = None  # the scan's staging folder, removed once committed


def scan_file(warehouse: Warehouse, path: Path, mapping: SourceMapping) -> ScannedFile:
    """Steps 1 and 3 of the module docstring for one file, on a cluster worker: hash, parse,
    validate and convert it, spilling its rows under ``.staging/`` (nothing is committed;
    :func:`commit_scan` does that on the client). A malformed file gives its error, raised
    when its turn to commit comes, as the embedded ingest raises it."""
    started = _utcnow()
    try:
        kind = _file_kind(path, mapping)
        if path.stat().st_size == 0:
            raise OxyError(f"{path}: empty file")
        digest = _digest(path)
        work = warehouse.staging_path(suffix="")
        try:
            scan = read_export(warehouse, path, kind, mapping, work, _Resolved(digest))
            scan.spill()
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return ScannedFile(scan, started, work=work)
    except OxyError as exc:
        return ScannedFile(None, started, exc)


def commit_scan(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    scanned: ScannedFile,
    *,
    accept_bad: bool = False,
) -> IngestResult:
    """Commit a file :func:`scan_file` scanned on a worker (steps 2, 4 and 5 of the module
    docstring) through the writer connection ``con``."""
    if scanned.error is not None or scanned.scan is None:
        raise scanned.error or OxyError("internal: a scan without a result")
    scan = scanned.scan
    # the file's ingest time (ingested_at, which orders "first ingested wins") is when its
    # commit starts here, so files keep the order of the command line, as embedded
    started = max(_utcnow(), scanned.started)
    ingest_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    try:
        digest = scan.digest.result()
        previous = _previous(con, digest, scan.mapping)
        if not previous:
            return _commit(warehouse, con, scan, ingest_id, started, accept_bad=accept_bad)
        return _skipped(con, ingest_id, scan.mapping, scan.path, digest, previous, started)
    finally:
        shutil.rmtree(scanned.work or scan.work, ignore_errors=True)


def ingest_file(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    path: Path,
    mapping: SourceMapping,
    *,
    progress: bool = False,
    dry_run: bool = False,
    accept_bad: bool = False,
) -> IngestResult:
    """Ingest one file through the writer connection ``con`` (see the module docstring)."""
    started = _utcnow()
    kind = _file_kind(path, mapping)
    size = path.stat().st_size
    if size == 0:
        raise OxyError(f"{path}: empty file")
    ingest_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    same_size = sql_rows(
        con, _BOOK + "ingest_log_same_size", {"bytes": size, "source": mapping.name}
    )[0][0]
    # The sha256 pass runs beside the scan (hashlib releases the GIL) unless a file of the
    # same size was ingested before: then it runs first, so a repeat is skipped unread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_digest, path)
        digest = pending.result() if same_size else None
        previous = _previous(con, digest, mapping) if digest else []
        if not previous:
            work = Path(tempfile.mkdtemp()) if dry_run else warehouse.staging_path(suffix="")
            try:
                scan = read_export(warehouse, path, kind, mapping, work, pending, progress=progress)
                digest = pending.result()
                previous = _previous(con, digest, mapping)
                if not previous:
                    return _commit(
                        warehouse,
                        con,
                        scan,
                        ingest_id,
                        started,
                        dry_run=dry_run,
                        accept_bad=accept_bad,
                    )
            finally:
                shutil.rmtree(work, ignore_errors=True)
    assert digest is not None
    return _skipped(con, ingest_id, mapping, path, digest, previous, started, dry_run=dry_run)


def _skipped(
    con: duckdb.DuckDBPyConnection,
    ingest_id: str,
    mapping: SourceMapping,
    path: Path,
    digest: _Digest,
    previous: list[tuple[Any, ...]],
    started: datetime,
    *,
    dry_run: bool = False,
) -> IngestResult:
    """Log a file whose bytes were ingested before for the same source (nothing else; a dry
    run logs nothing)."""
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
        source_unit=mapping.unit,
        unit_factor=mapping.unit_factor,
    )
    if not dry_run:
        con.execute("begin")
        _log(con, result)
        con.execute("commit")
    return result


def _previous(
    con: duckdb.DuckDBPyConnection, digest: _Digest, mapping: SourceMapping
) -> list[tuple[Any, ...]]:
    return sql_rows(
        con, _BOOK + "ingest_log_same_file", {"sha256": digest.sha256, "source": mapping.name}
    )


@contextlib.contextmanager
def _dry_run_connection(warehouse: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only view of the warehouse as it is (an empty catalog when there is none)."""
    if warehouse.exists():
        with warehouse.reader() as con:
            yield con
        return
    con = duckdb.connect(":memory:")
    try:
        con.execute("set TimeZone = 'UTC'")
        for file in sorted((SQL_DIR / "catalog").glob("*.sql")):
            con.execute(file.read_text(encoding="utf-8"))
        yield con
    finally:
        con.close()


# -- planning -----------------------------------------------------------------------------
def _plan(
    config: Config, paths: Sequence[str | Path], source: str | None
) -> list[tuple[Path, SourceMapping]]:
    if not paths:
        raise OxyError("no files given: oxy ingest FILE... [--source NAME]")
    ingest = config["ingest"]
    rule = ingest["ambiguous_local_time"]
    if rule not in AMBIGUOUS_RULES:
        raise OxyError(
            f"ingest.ambiguous_local_time must be one of {AMBIGUOUS_RULES}, not {rule!r}"
        )
    fraction = ingest["max_bad_fraction"]
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not (0 <= fraction <= 1)
    ):
        raise OxyError(f"ingest.max_bad_fraction must be a number in 0..1, not {fraction!r}")
    jobs = []
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_dir():
            found = []
            for p in sorted(path.iterdir()):
                name = source if source is not None else p.stem
                if p.is_file() and name in config.sources:
                    if config.sources[name].file_format(p.suffix) is not None:
                        found.append(p)
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


def _file_kind(path: Path, mapping: SourceMapping | None = None) -> str:
    if not path.is_file():
        raise OxyError(f"{path}: no such file")
    if mapping is None:
        mapping = SourceMapping("", "", "UTC", "mg/L", ("x",), "t", "v")
    kind = mapping.file_format(path.suffix)
    if kind is None:
        raise OxyError(
            f"{path}: unknown file type {path.suffix.lower()!r} (expected .csv or .parquet; "
            f'set format = "csv" or "parquet" in [sources.{mapping.name or "NAME"}])'
        )
    return kind


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


def _normalised_copy(path: Path, work: Path) -> Path:
    """A copy of ``path`` with every line break as ``\\n`` (CRLF and lone CR too), so that a
    file whose lines end differently reads with one dialect; line numbers are kept."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"normalised{path.suffix}"
    carry = b""
    with path.open("rb") as src, out.open("wb") as dst:
        while chunk := src.read(_READ_CHUNK):
            chunk = carry + chunk
            carry = b"\r" if chunk.endswith(b"\r") else b""
            if carry:
                chunk = chunk[:-1]
            dst.write(chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        if carry:
            dst.write(b"\n")
    return out


# -- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ReadOptions:
    """How a file is read: from itself or a normalised copy; with or without quotes."""

    read_path: Path | None = None  # a normalised copy (mixed line endings)
    unquote: bool = False  # a stray quote swallowed lines: read without quote handling


class _Retry(Exception):
    """The file must be read again with other options (raised before anything is kept)."""

    def __init__(self, options: _ReadOptions, *, normalise: bool = False) -> None:
        super().__init__("retry")
        self.options = options
        self.normalise = normalise  # read a copy with one kind of line break


def read_export(
    warehouse: Warehouse,
    path: Path,
    kind: str,
    mapping: SourceMapping,
    work: Path,
    digest: Future[_Digest] | _Resolved,
    *,
    progress: bool = False,
) -> _Scan:
    """Read one export into a finished :class:`_Scan` (reading again, from a normalised
    copy or without quote handling, when the first way cannot split the file)."""
    options = _ReadOptions()
    for attempt in range(3):
        scan = _Scan(
            warehouse,
            path,
            kind,
            mapping,
            work / f"read{attempt}",
            digest,
            progress=progress,
            options=options,
        )
        try:
            scan.run()
            return scan
        except _Retry as retry:
            shutil.rmtree(scan.work, ignore_errors=True)
            options = retry.options
            if retry.normalise:
                options = replace(options, read_path=_normalised_copy(path, work / "copy"))
    raise OxyError(f"{path}: cannot be split into records with the mapping's dialect")


class _Scan:
    """Stream one file: parse, validate, convert times, spill good rows per bucket."""

    def __init__(
        self,
        warehouse: Warehouse,
        path: Path,
        kind: str,
        mapping: SourceMapping,
        work: Path,
        digest: Future[_Digest] | _Resolved,
        *,
        progress: bool = False,
        options: _ReadOptions | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.config = warehouse.config
        self.path = path
        self.kind = kind
        self.mapping = mapping
        self.work = work
        self.digest = digest
        self.progress = progress
        self.options = options or _ReadOptions()
        self.read_path = self.options.read_path or path
        self.quote = "" if self.options.unquote else mapping.quote
        self.layout: CsvLayout | None = None
        self.header_line = 1 if kind == "csv" else 0
        self.width = 1  # readings per record (a wide file's value columns)
        self.carried = [  # optional reading columns this mapping fills per row
            c
            for c, mapped in (
                ("temperature_c", mapping.temperature_column is not None),
                ("salinity", isinstance(mapping.salinity, str)),
            )
            if mapped
        ]
        self.started = _utcnow()
        self.buckets = int(self.config["warehouse"]["buckets"])
        self.bucket_of: dict[str, int] = {}
        self.code_of: dict[str, int] = {}
        self.parts: dict[int, list[Path]] = {}
        self.held: dict[int, list[pl.DataFrame]] = {}
        self.held_rows = 0
        self.quarantine_parts: list[Path] = []
        self.ambiguous: list[pl.DataFrame] = []
        self.rows_read = 0  # readings delivered by the reader (rejected lines come on top)
        self.epoch_hints: Counter[str] = Counter()  # implausible epochs that fit another unit
        self._missing_ids = set(na_values(mapping, self.config))
        self.id_parts = False  # ids arrive as raw parts (set with the reader's SQL)
        self._normal: dict[str | None, str | None] = {}  # id as parsed -> sensor id
        self._invalid: dict[str | None, str | None] = {}  # id as parsed -> why it is none
        self.rejects = pl.DataFrame(schema=_QUARANTINE_COLUMNS)
        self.reject_lines = np.empty(0, dtype=np.int64)
        self._part_no = 0
        self._walked: tuple[np.ndarray, dict[int, int]] | None = None
        self._lines: int | None = None  # physical line count, counted only when needed

    # reading ------------------------------------------------------------------------
    def _reader_sql(
        self, columns: list[str], types: list[str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        rows = raw_rows(
            self.mapping,
            columns,
            self.path,
            self._source(),
            positional=self.kind == "csv",
            unquote=self.options.unquote,
            types=types,
        )
        self.width = rows.width
        self.id_parts = rows.parts
        query = (
            f"with raw_rows as ({rows.select})\n"
            f"select * from (\n{sql_text('staging/readings_parsed')})"
        )
        params = {
            **self._source_params(),
            **rows.params,
            **parse_params(self.mapping, self.config, self.kind, self.started),
        }
        return query, bind(query, params)

    def _source(self) -> str:
        if self.kind == "parquet":
            return "read_parquet($path)"
        return (
            "read_csv($path, columns = $columns, header = false, skip = $skip, "
            "auto_detect = false, delim = $delim, quote = $quote, escape = $quote, "
            "encoding = $encoding, comment = $comment, store_rejects = true)"
        )

    def _source_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"path": str(self.read_path)}
        if self.kind == "csv":
            assert self.layout is not None
            m = self.mapping
            params |= {
                "columns": {f"c{i}": "VARCHAR" for i in range(len(self.layout.columns))},
                "skip": self.layout.skip,
                "delim": m.delimiter,
                "quote": self.quote,
                "encoding": m.encoding,
                "comment": m.comment or "",
            }
        return params

    def run(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        mcon = self.warehouse.connect_memory()
        mcon.execute("set enable_progress_bar = false")
        try:
            if self.kind == "csv":
                if self.options.read_path is None and mixed_line_breaks(self.path):
                    raise _Retry(self.options, normalise=True)
                self.layout = csv_layout(self.read_path, self.mapping, quote=self.quote)
                self.header_line = self.layout.header_line
                columns = self.layout.columns
            else:
                try:
                    schema = mcon.sql(
                        "select * from read_parquet($path) limit 0",
                        params={"path": str(self.path)},
                    )
                    columns, types = list(schema.columns), [str(t) for t in schema.types]
                except duckdb.Error as exc:
                    raise OxyError(
                        f"{self.path}: cannot read as {self.kind}: {_first_line(exc)}"
                    ) from None
            query, params = self._reader_sql(columns, types if self.kind == "parquet" else None)
            self._stream(mcon, query, params)
            if self.kind == "csv":
                self._collect_rejects(mcon)
        finally:
            mcon.close()
        self._resolve_ambiguous()
        self._check_epoch_unit()

    def _stream(self, mcon: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any]) -> None:
        batch_rows = int(self.config["ingest"]["batch_rows"])
        bar = progress_bar(desc=self.path.name, unit="rows", unit_scale=True, enabled=self.progress)
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
        except (duckdb.Error, pa.ArrowException) as exc:
            message = _first_line(exc)
            if (
                self.kind == "csv"
                and "state machine reached an invalid state" in str(exc)
                and self.options.read_path is None
            ):  # mixed line endings: read a copy with one kind of line break
                raise _Retry(self.options, normalise=True) from None
            raise OxyError(f"{self.path}: cannot read as {self.kind}: {message}") from None
        finally:
            bar.close()

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
            unit = self.mapping.canonical_unit
            limits = self.config["ingest"][unit]
            detail = pl.col("detail") if "detail" in bad.columns else pl.lit(None, pl.String)
            bad = bad.with_columns(
                detail=pl.when(pl.col("reason") == "below plausible minimum")
                .then(pl.lit(f"minimum {float(limits['min'])} {unit}"))
                .when(pl.col("reason") == "above plausible maximum")
                .then(pl.lit(f"maximum {float(limits['max'])} {unit}"))
                .otherwise(detail)
            )
            hints = bad.filter(pl.col("detail").str.starts_with("looks like epoch_"))
            if hints.height:
                self.epoch_hints.update(dict(hints["detail"].value_counts().iter_rows()))
        good, invalid = self._valid_ids(good)
        if invalid.height:
            bad = pl.concat([bad, invalid], how="diagonal_relaxed")
        if self.mapping.naive_time_zone != "UTC":
            good, unresolved = self._localize(good)
            bad = pl.concat([bad, unresolved], how="diagonal_relaxed")
        if bad.height:
            self._spill_quarantine(bad)
        self._spill_good(good)

    def _valid_ids(self, good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Set aside rows without a usable sensor id (see :meth:`_identity`), per distinct id."""
        names = good["sensor_id"].unique().cast(pl.String).to_list()
        reasons: dict[str | None, str] = {}
        for name in names:
            if name not in self._normal:
                self._normal[name], self._invalid[name] = self._identity(name)
            why = self._invalid[name]
            if why:
                reasons[name] = why
        if not reasons:
            return good, good.clear()
        raw = pl.col("sensor_id").cast(pl.String)
        named = {n: r for n, r in reasons.items() if n is not None}
        invalid = raw.is_in(list(named)).fill_null(False)
        if None in reasons:
            invalid = invalid | raw.is_null()
        rows = good.filter(invalid).with_columns(
            reason=raw.replace_strict(named, default=pl.lit("empty sensor identity")),
            detail=pl.when(
                raw.replace_strict(named, default=None) == "invalid sensor identity"
            ).then(pl.lit("the id holds a control character")),
            raw_time=pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.f"),
            raw_value=pl.col("value").cast(pl.String),
        )
        return good.filter(~invalid), rows

    def _identity(self, raw: str | None) -> tuple[str | None, str | None]:
        """(sensor id, None) or (None, reason) for one id as the parse gave it.

        Identity columns arrive as raw parts joined with chr(31): each is trimmed and must be
        neither empty nor one of ``na_values``; they are joined with ``|``. Any id holding a
        control character (a NUL, a quoted line break) is invalid: an id is a name people
        type and read.
        """
        if raw is None:
            return None, "empty sensor identity"
        parts = [p.strip() for p in raw.split("\x1f")] if self.id_parts else [raw]
        if any(not p or p in self._missing_ids for p in parts):
            return None, "empty sensor identity"
        sensor_id = "|".join(parts)
        if any(ord(c) < 32 or c == "\x7f" for c in sensor_id):
            return None, "invalid sensor identity"
        return sensor_id, None

    def _check_epoch_unit(self) -> None:
        """Refuse an epoch column most of whose values fit another unit than the mapping's."""
        total = sum(self.epoch_hints.values())
        if not total or total * 2 <= self.rows_read:
            return
        hint, _ = self.epoch_hints.most_common(1)[0]
        unit = hint.removeprefix("looks like ")
        formats = ", ".join(f for f in self.mapping.time_formats)
        fix = (
            f'set time_format = "{unit}" in [sources.{self.mapping.name}]'
            if unit != "epoch_ns"
            else "oxy reads epoch_s, epoch_ms and epoch_us"
        )
        raise OxyError(
            f"{self.path}: {total:,} of {self.rows_read:,} times are implausible as {formats} "
            f"but look like {unit} ({fix}); nothing committed"
        )

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
        """Hold good rows per bucket as (sensor code, ts, value, ordinal, [temperature_c,
        salinity]); past ``ingest.spill_rows`` held rows, write them to ``.staging/`` (memory
        stays flat)."""
        if not good.height:
            return

        codes = self._codes(good["sensor_id"])
        bucket_by_code = np.array([self.bucket_of[sid] for sid in self.code_of], dtype=np.int32)
        carried = {
            c: pl.col(c) if c in good.columns else pl.lit(None, dtype=pl.Float64)
            for c in self.carried
        }
        good = good.select(
            sensor_code=pl.Series(codes),
            ts=pl.col("ts").cast(pl.Datetime("us")),
            value="value",
            ordinal="ordinal",
            bucket=pl.Series(bucket_by_code[codes]),
            **carried,
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
        normal = {}
        for raw in names:
            if raw not in self._normal:
                self._normal[raw], self._invalid[raw] = self._identity(raw)
            sid = self._normal[raw]
            assert sid is not None, "rows without an identity were set aside"
            normal[raw] = sid
            if sid not in self.code_of:  # first seen in this batch
                self.code_of[sid] = len(self.code_of)
                self.bucket_of[sid] = zlib.crc32(sid.encode("utf-8")) % self.buckets
        if ids.dtype == pl.Categorical:  # as _frame reads them: map the few categories
            physical = distinct.to_physical().to_numpy()
            lookup = np.zeros(int(physical.max()) + 1, dtype=np.int32)
            lookup[physical] = [self.code_of[normal[raw]] for raw in names]
            return lookup[ids.to_physical().to_numpy()]
        codes = {raw: self.code_of[sid] for raw, sid in normal.items()}
        return ids.cast(pl.String).replace_strict(codes, return_dtype=pl.Int32).to_numpy()

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
        if self.id_parts and "sensor_id" in bad.columns:  # identity parts as one readable id
            bad = bad.with_columns(
                pl.col("sensor_id")
                .cast(pl.String)
                .str.split("\x1f")
                .list.eval(pl.element().str.strip_chars())
                .list.join("|")
            )
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
        """Lines DuckDB could not split into the header's columns (ragged, bad quoting, too
        long); a stray quote that swallowed the lines after it reads the file again."""
        rows = sql_rows(mcon, _BOOK + "csv_reject_lines")
        encoding = [r for r in rows if r[1] == "INVALID ENCODING"]
        if encoding:
            raise OxyError(
                f"{self.path}: not valid {self.mapping.encoding} text (line {encoding[0][0]}); "
                "set `encoding` in the source mapping"
            )
        if not rows:
            return
        swallowed = [r for r in rows if r[1] == "UNQUOTED VALUE" and "\n" in r[2].rstrip("\r\n")]
        if swallowed and self.quote:
            raise _Retry(replace(self.options, unquote=True))

        def reason(error: str) -> str:
            if "COLUMNS" in error:
                return "ragged line"
            if error == "LINE SIZE OVER MAXIMUM":
                return "line too long"
            return "malformed line"

        def cut(line: str) -> str:
            line = line.strip("\r\n")
            return line if len(line) <= _RAW_LINE_CHARS else line[:_RAW_LINE_CHARS] + "\u2026"

        self.reject_lines = np.array([r[0] for r in rows], dtype=np.int64)
        self.rejects = pl.DataFrame(
            {
                "line": self.reject_lines,
                "reason": [reason(r[1]) for r in rows],
                "detail": [r[3] for r in rows],
                "sensor_id": [None] * len(rows),
                "raw_time": [None] * len(rows),
                "raw_value": [None] * len(rows),
                "raw_line": [cut(r[2]) for r in rows],
            },
            schema=_QUARANTINE_COLUMNS,
        )

    # line numbers ---------------------------------------------------------------------
    def lines(self, ordinals: np.ndarray) -> np.ndarray:
        """Where reading ``ordinal`` (0-based, in reading order) is in the file.

        Parquet: the row index. CSV: the 1-based physical line. A wide file gives ``width``
        readings per record. When every record is one line and no comment or blank line hides
        in the data, this is arithmetic on the rejected lines; otherwise the file is walked
        once with Python's csv module.
        """
        records = np.asarray(ordinals, dtype=np.int64) // self.width
        if self.kind == "parquet":
            return records
        first = self.header_line + 1  # the first data line
        if self._simple():
            # the k-th good record sits on the k-th line (from `first`) that is not rejected
            shifted = self.reject_lines - first - np.arange(len(self.reject_lines))
            return records + first + np.searchsorted(shifted, records, side="right")
        return self._walk()[0][records]

    def _simple(self) -> bool:
        """Every record is one physical line and no comment or blank line hides in the data."""
        if self._lines is None:
            self._lines = _line_count(self.read_path)
        records = self.rows_read // self.width
        return self._lines == self.header_line + records + len(self.reject_lines)

    def _walk(self) -> tuple[np.ndarray, dict[int, int]]:
        """Physical start lines of the good records, and of DuckDB's rejected records.

        DuckDB numbers a record by its first physical line minus the extra lines of the
        records before it that spanned several (quoted line breaks); comment and blank lines
        count as lines.
        """
        if self._walked is None:
            rejected = set(self.reject_lines.tolist())
            records = self.rows_read // self.width
            starts = np.zeros(records, dtype=np.int64)
            reject_at: dict[int, int] = {}
            good = 0
            extra = 0
            physical: deque[int] = deque()
            comment = self.mapping.comment
            dialect: dict[str, Any] = {"delimiter": self.mapping.delimiter}
            if self.quote:
                dialect["quotechar"] = self.quote
            else:
                dialect["quoting"] = csv.QUOTE_NONE
            with self.read_path.open(encoding=self.mapping.encoding, newline="") as fh:
                for _ in range(self.header_line):
                    fh.readline()

                def feed() -> Iterator[str]:
                    number = self.header_line
                    for text in fh:
                        number += 1
                        if comment is not None and text.startswith(comment):
                            continue
                        physical.append(number)
                        yield text

                csv.field_size_limit((1 << 31) - 1)  # a line of megabytes is one field
                reader = csv.reader(feed(), **dialect)
                consumed = 0
                for record in _records(reader, self.path):
                    spanned = reader.line_num - consumed
                    consumed = reader.line_num
                    start = physical.popleft()
                    for _ in range(spanned - 1):
                        physical.popleft()
                    number = start - extra
                    extra += spanned - 1
                    if number in rejected:
                        reject_at[number] = start
                    elif record:
                        if good < records:
                            starts[good] = start
                        good += 1
            if good != records:
                raise OxyError(
                    f"{self.path}: cannot locate every record's line ({good} of "
                    f"{records}); the file's quoting is inconsistent"
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
        return [
            {
                "sensor_id": sid,
                "customer": m.customer,
                "source": m.name,
                "timezone": m.timezone,
                "unit": m.canonical_unit,
                "levels": m.levels(sid),
            }
            for sid in sorted(self.bucket_of)
        ]


def _records(reader: Any, path: Path) -> Iterator[list[str]]:
    """A csv reader's records, its errors as one clear line."""
    try:
        yield from reader
    except csv.Error as exc:
        raise OxyError(f"{path}: cannot locate every record's line ({exc})") from None


# -- committing ---------------------------------------------------------------------------
def _commit(
    warehouse: Warehouse,
    con: duckdb.DuckDBPyConnection,
    scan: _Scan,
    ingest_id: str,
    started: datetime,
    *,
    dry_run: bool = False,
    accept_bad: bool = False,
) -> IngestResult:
    m = scan.mapping
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    staged: list[StagedFile] = []
    previews: list[pl.DataFrame] = []
    preview_rows = int(warehouse.config["ingest"]["preview_rows"]) if dry_run else 0
    if not dry_run:
        con.execute("begin")
    try:
        sensors = scan.sensors()
        ids = sorted(scan.code_of)
        # only sensors registered before this file can have readings in the lake
        known = _known_sensors(con, ids)
        if dry_run:
            new_sensors = len(ids) - len(known)
        else:
            new_sensors = warehouse.register_sensors(con, sensors) if sensors else 0
        # sensor codes -> ranks in sensor_id order, so an integer sort gives the lake's order
        rank_of = {sid: rank for rank, sid in enumerate(ids)}
        rank_by_code = np.zeros(len(scan.code_of), dtype=np.int32)
        for sid, code in scan.code_of.items():
            rank_by_code[code] = rank_of[sid]
        id_by_rank = pl.Series("sensor_id", ids, dtype=pl.String)
        literals = {
            "unit": m.canonical_unit,
            "customer": m.customer,
            "source_file": scan.path.name,
            "ingested_at": started,
            "salinity": m.salinity if isinstance(m.salinity, float) else None,
        }

        def quarantine(frame: pl.DataFrame) -> None:
            if not frame.height:
                return
            reasons.update(dict(frame["reason"].value_counts().iter_rows()))
            if not dry_run:
                _insert_quarantine(con, scan, ingest_id, frame)

        def collect(settled: Future[_Settled]) -> None:
            outcome = settled.result()
            counts.update(outcome.counts)
            if outcome.staged is not None:
                staged.append(outcome.staged)
            if outcome.preview is not None:
                previews.append(outcome.preview)
            quarantine(_conflict_rows(scan, outcome.conflicts))

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
                        stage=not dry_run,
                        preview_rows=preview_rows,
                    )
                )
                del parts
            while in_flight:
                collect(in_flight.pop(0))
        for frame in scan.quarantine_frames():
            quarantine(frame)
        rows_read = scan.rows_read + len(scan.reject_lines)
        digest = scan.digest.result()
        accepted = counts["accepted"]
        duplicates = counts["duplicate"] + counts["duplicate_existing"]
        quarantined = sum(reasons.values())
        if accepted + duplicates + quarantined != rows_read:
            raise OxyError(
                f"internal: {scan.path} row accounting does not add up: read {rows_read} != "
                f"{accepted} + {duplicates} + {quarantined}"
            )
        refusal = _bad_fraction(
            warehouse.config, scan, rows_read - counts["duplicate_existing"], reasons
        )
        if refusal and not accept_bad and not dry_run:
            raise OxyError(refusal)
        result = IngestResult(
            ingest_id=ingest_id,
            source=m.name,
            path=str(scan.path),
            sha256=digest.sha256,
            bytes=digest.size,
            rows_read=rows_read,
            accepted=accepted,
            duplicates=duplicates,
            quarantined=quarantined,
            new_sensors=new_sensors,
            started_at=started,
            finished_at=_utcnow(),
            status="dry-run" if dry_run else "ok",
            note=(refusal.split(": ", 1)[1] if refusal and accept_bad else None),
            source_unit=m.unit,
            unit_factor=m.unit_factor,
            reasons=dict(reasons.most_common()),
        )
        if dry_run:
            return replace(
                result, preview=_preview(scan, sensors, known, previews, literals, refusal)
            )
        staged.sort(key=lambda f: f.relpath)
        warehouse.publish(con, staged)
        _log(con, result)
        con.execute("commit")
    except BaseException:
        if not dry_run:
            con.execute("rollback")
        for f in staged:
            f.staged.unlink(missing_ok=True)
        raise
    return result


def _bad_fraction(config: Config, scan: _Scan, rows: int, reasons: Counter[str]) -> str | None:
    """The refusal of a file of which more than ``ingest.max_bad_fraction`` of ``rows`` (its
    rows less the exact duplicates of lake rows) would be quarantined (None: it passes)."""
    limit = float(config["ingest"]["max_bad_fraction"])
    bad = sum(reasons.values())
    if rows <= 0 or bad <= limit * rows:
        return None
    top = ", ".join(f"{reason} {n:,}" for reason, n in reasons.most_common(3))
    name = scan.mapping.name
    return (
        f"{scan.path}: nothing committed: {bad:,} of {rows:,} rows ({bad / rows:.0%}) would be "
        f"quarantined, more than ingest.max_bad_fraction = {limit:g} ({top}); check "
        f"[sources.{name}] with `oxy ingest --dry-run FILE --source {name}`, or pass "
        "--accept-bad to commit it anyway"
    )


def _preview(
    scan: _Scan,
    sensors: list[dict[str, Any]],
    known: set[str],
    previews: list[pl.DataFrame],
    literals: dict[str, Any],
    refusal: str | None,
) -> IngestPreview:
    n = int(scan.config["ingest"]["preview_rows"])
    first: list[dict[str, Any]] = []
    if previews:
        rows = pl.concat(previews, how="diagonal_relaxed").sort("ordinal").head(n)
        for row in rows.iter_rows(named=True):
            first.append(
                {
                    "sensor_id": row["sensor_id"],
                    "ts": row["ts"],
                    "value": row["value"],
                    "unit": literals["unit"],
                    "temperature_c": row.get("temperature_c"),
                    "salinity": row.get("salinity", literals["salinity"]),
                }
            )
    new = [
        {
            "sensor_id": s["sensor_id"],
            "levels": s["levels"],
            "bucket": scan.bucket_of[s["sensor_id"]],
        }
        for s in sensors
        if s["sensor_id"] not in known
    ]
    return IngestPreview(
        first_rows=first, new_sensors=new, known_sensors=len(known), refusal=refusal
    )


@dataclass(frozen=True)
class _Settled:
    """One bucket's outcome: counts per outcome, its staged file, its conflicting rows, and
    (dry run) its first accepted rows."""

    counts: dict[str, int]
    staged: StagedFile | None
    conflicts: pl.DataFrame
    preview: pl.DataFrame | None = None


def _settle_bucket(
    warehouse: Warehouse,
    parts: list[pl.DataFrame],
    rank_by_code: np.ndarray,
    existing: pl.DataFrame,
    bucket: int,
    ingest_id: str,
    id_by_rank: pl.Series,
    literals: dict[str, Any],
    *,
    stage: bool = True,
    preview_rows: int = 0,
) -> _Settled:
    """Classify one bucket's rows (``parts`` in file order, sensors as file codes; compared
    as ranks) against the lake's rows and stage its accepted readings; runs on a worker
    thread (polars, numpy and pyarrow release the GIL)."""
    rows = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
    parts.clear()
    carried = [c for c in _OPTIONAL if c in rows.columns]
    candidates = rows.select(
        pl.Series("sensor_id", rank_by_code[rows["sensor_code"].to_numpy()]),
        "ts",
        "value",
        "ordinal",
        *carried,
    )
    del rows
    rows = classify_duplicates(candidates, existing)
    counts = dict(rows.group_by("outcome").len().iter_rows())
    if counts.get("accepted", 0) != rows.height:
        accepted = rows.filter(pl.col("outcome") == "accepted")
    else:  # the usual case: no copy
        accepted = rows
    staged = None
    if accepted.height and stage:
        staged = _stage_bucket(warehouse, accepted, bucket, ingest_id, id_by_rank, literals)
    preview = None
    if preview_rows and accepted.height:
        preview = accepted.sort("ordinal").head(preview_rows)
        preview = preview.with_columns(sensor_id=id_by_rank.gather(preview["sensor_id"]))
    conflicts = rows.clear()
    plain = ("accepted", "duplicate", "duplicate_existing")
    if any(k not in plain for k in counts):
        conflicts = rows.filter(pl.col("outcome").str.starts_with("conflict"))
    conflicts = conflicts.with_columns(sensor_id=id_by_rank.gather(conflicts["sensor_id"]))
    counts = {("conflict" if k.startswith("conflict") else k): n for k, n in counts.items()}
    return _Settled(counts, staged, conflicts, preview)


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
    so every reader sees plain strings, timestamps and doubles. Temperature and salinity are
    the rows' own, a source's constant, or null.
    """
    rows = accepted.height
    zeros = pa.array(np.zeros(rows, dtype=np.int32))  # the indices of every constant column

    def constant(value: Any, kind: pa.DataType) -> pa.Array:
        if value is None:
            return pa.nulls(rows, kind)
        return pa.DictionaryArray.from_arrays(zeros, pa.array([value], kind))

    def optional(name: str) -> pa.Array:
        if name in accepted.columns:
            return accepted[name].to_arrow()
        return constant(literals.get(name), pa.float64())

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
            optional("temperature_c"),
            optional("salinity"),
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
        use_dictionary=[
            "sensor_id",
            "value",
            "unit",
            "customer",
            "source_file",
            "ingested_at",
            "salinity",
        ],
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
            con, _BOOK + "bucket_files_overlapping", {"bucket": bucket, "lo": lo, "hi": hi}
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

    ``candidates`` has ``sensor_id, ts, value, ordinal`` (file order; any further columns
    ride along); ``existing`` the committed ``sensor_id, ts, value`` for the same keys. A key
    already in the lake keeps the lake's value; within the file the first row (lowest
    ordinal) is kept. A later row with the same value is a ``duplicate`` (of an earlier row
    of the file) or ``duplicate_existing`` (of a lake row); with another value a
    ``conflict_in_file`` / ``conflict_existing`` (quarantined, naming ``kept_value``).
    Result sorted by key.

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
    payload = [c for c in candidates.columns if c not in ("sensor_id", "ts", "value", "ordinal")]
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
            pl.lit("accepted").alias("outcome"),
            pl.col("value").alias("kept_value"),
            pl.col("ordinal").alias("kept_ordinal"),
            *payload,
        )
    else:
        joined = ranked.with_columns(existing_value=pl.lit(None, dtype=pl.Float64))
    has_existing = pl.col("existing_value").is_not_null()
    outcome = (
        pl.when(has_existing & (pl.col("value") == pl.col("existing_value")))
        .then(pl.lit("duplicate_existing"))
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
        outcome.alias("outcome"),
        pl.coalesce("existing_value", "first_value").alias("kept_value"),
        "kept_ordinal",
        *payload,
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
        sql_rows(con, _BOOK + "quarantine_insert")
    finally:
        con.unregister("quarantine_rows")


def _log(con: duckdb.DuckDBPyConnection, result: IngestResult) -> None:
    sql_rows(con, _BOOK + "ingest_log_record", result.to_dict())


def _frame(batches: list[pa.RecordBatch]) -> pl.DataFrame:
    """Record batches as one frame; ``sensor_id`` as a categorical (a file has few distinct
    ids: they are hashed once here instead of copied and looked up row by row)."""
    table = pa.Table.from_batches(batches)
    at = table.schema.get_field_index("sensor_id")
    if at >= 0 and pa.types.is_string(table.schema.field(at).type):
        table = table.set_column(at, "sensor_id", pc.dictionary_encode(table.column(at)))
    # the text kept for bad rows is null in good ones: a column of nulls is left out (polars
    # would still allocate a view per row), and a missing `reason` means no bad row
    empty = [
        c
        for c in ("reason", "detail", "raw_time", "raw_value", *_OPTIONAL)
        if c in table.column_names and table.column(c).null_count == len(table)
    ]
    table = table.drop_columns(empty)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if "ts_us" in frame.columns:  # the parse keeps times as epoch microseconds
        frame = frame.rename({"ts_us": "ts"}).with_columns(pl.col("ts").cast(pl.Datetime("us")))
    return frame


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- forgetting ---------------------------------------------------------------------------
def forget(
    warehouse: Warehouse, *, ingest_id: str | None = None, path: str | Path | None = None
) -> ForgetResult:
    """Remove one ingest -- its lake files, quarantine rows and ``ingest_log`` entry (with the
    skipped repeats of the same file) -- in one transaction.

    ``path`` forgets every successful ingest of that file. The next ``oxy score`` notices the
    vanished lake files and rescores the registered sensors of their buckets from the first
    removed reading (scores of removed readings go too). A sensor left without readings is
    unregistered when none of its removed readings was scored; otherwise it stays registered,
    so that run clears its scores.

    Examples
    --------
    >>> forget(wh, ingest_id="20241101T020000-1a2b3c4d").summary()[0]   # doctest: +SKIP
    'forgot ingest 20241101T020000-1a2b3c4d (march.csv)'
    """
    if (ingest_id is None) == (path is None):
        raise OxyError("forget: give an INGEST_ID or --file PATH (see `oxy status`)")
    if not warehouse.exists():
        raise OxyError(f"no warehouse at {warehouse.root}: nothing to forget")
    with warehouse.writer() as con:
        if ingest_id is not None:
            entries = sql_rows(con, _BOOK + "ingest_log_entry", {"ingest_id": ingest_id})
            what = f"ingest {ingest_id!r}"
        else:
            resolved = str(Path(path).resolve())  # type: ignore[arg-type]
            entries = sql_rows(con, _BOOK + "ingest_log_by_path", {"path": resolved})
            what = f"ingest of {resolved}"
        if not entries:
            latest = sql_rows(con, _BOOK + "ingest_log_latest", {"n": 5})
            listed = ", ".join(f"{i} ({Path(p).name})" for i, p in latest) or "none"
            raise OxyError(f"no {what} in the ingest_log; latest ingests: {listed}")
        ids = [e[0] for e in entries]
        repeats = [r[0] for r in sql_rows(con, _BOOK + "forget_repeats", {"ids": ids})]
        files = [
            row for i in ids for row in sql_rows(con, _BOOK + "forget_files", {"ingest_id": i})
        ]
        paths = [f[0] for f in files]
        scored = {r[0] for r in sql_rows(con, _BOOK + "forget_scored_files", {"paths": paths})}
        in_file = {p: _file_sensors(con, [str(warehouse.root / p)], None) for p in paths}
        affected = set().union(*in_file.values())
        # a sensor whose removed readings were scored stays registered: the next `oxy score`
        # rescores the registered sensors of a bucket whose files vanished, clearing its scores
        was_scored = set().union(*(in_file[p] for p in paths if p in scored))
        every = list(dict.fromkeys(ids + repeats))
        quarantined = sql_rows(con, _BOOK + "forget_quarantine_count", {"ids": every})[0][0]
        later = sql_rows(
            con,
            _BOOK + "forget_later_overlaps",
            {"started_at": min(e[5] for e in entries), "ids": every},
        )
        con.execute("begin")
        try:
            sql_rows(con, _BOOK + "forget_delete_files", {"paths": paths})
            sql_rows(con, _BOOK + "forget_delete_quarantine", {"ids": every})
            sql_rows(con, _BOOK + "forget_delete_log", {"ids": every})
            buckets = sorted({f[1] for f in files})
            remaining = [
                str(p) for b in buckets for p in warehouse.files(con, "readings", bucket=b)
            ]
            kept = _file_sensors(con, remaining, affected) if remaining else set()
            empty = affected - kept
            gone = sorted(empty - was_scored)
            if gone:
                sql_rows(con, _BOOK + "forget_delete_sensors", {"ids": gone})
            warehouse.refresh_views(con)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        for p in paths:  # after the commit: a crash before it leaves them listed and whole
            (warehouse.root / p).unlink(missing_ok=True)
    return ForgetResult(
        ingest_ids=ids,
        paths=[e[2] for e in entries],
        files=len(files),
        readings=sum(int(f[2]) for f in files),
        quarantined=int(quarantined),
        sensors_affected=len(affected),
        sensors_removed=gone,
        sensors_emptied=sorted(empty & was_scored),
        later_ingests=[f"{i} ({Path(p).name})" for i, p in later],
    )


def _file_sensors(
    con: duckdb.DuckDBPyConnection, files: list[str], among: set[str] | None
) -> set[str]:
    """Distinct sensor ids in lake ``files`` (limited to ``among`` when given)."""
    if not files:
        return set()
    query = sql_text("staging/readings_sensors")
    params: dict[str, Any] = {"files": files, "sensors": sorted(among or [])}
    if among is None:
        query = "select distinct sensor_id from read_parquet($files)"
        params = {"files": files}
    return {r[0] for r in con.execute(query, params).fetchall()}


# -- sources ------------------------------------------------------------------------------
def source_summaries(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Each configured source (and any other the warehouse has ingested) with what it
    delivered: files, readings, quarantined rows, sensors (first delivered by it), last
    ingest.

    Examples
    --------
    >>> source_summaries(wh)[0]["readings"]   # doctest: +SKIP
    199598
    """
    delivered: dict[str, dict[str, Any]] = {}
    if warehouse.exists():
        with warehouse.reader() as con:
            result = con.execute(sql_text("ingest/sources"))
            names = [d[0] for d in result.description]
            delivered = {row[0]: dict(zip(names, row, strict=True)) for row in result.fetchall()}
    out = []
    config = warehouse.config
    for name in sorted(set(config.sources) | set(delivered)):
        mapping = config.sources.get(name)
        found = delivered.get(name, {})
        out.append(
            {
                "source": name,
                "configured": mapping is not None,
                "customer": mapping.customer if mapping else None,
                "unit": mapping.unit if mapping else None,
                "files": int(found.get("files", 0)),
                "readings": int(found.get("readings", 0)),
                "quarantined": int(found.get("quarantined", 0)),
                "sensors": int(found.get("sensors", 0)),
                "last_ingest": found.get("last_ingest"),
            }
        )
    return out


__all__ = [
    "ForgetResult",
    "IngestPreview",
    "IngestResult",
    "classify_duplicates",
    "commit_scan",
    "forget",
    "ingest_file",
    "ingest_files",
    "read_export",
    "scan_file",
    "source_summaries",
]
