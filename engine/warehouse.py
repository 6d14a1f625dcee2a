"""The warehouse: a folder of Parquet plus a DuckDB catalog (``oxy.duckdb``).

Layout under the root (default ``./warehouse``)::

    oxy.duckdb                      catalog: small tables + views over the Parquet
    lake/readings/bucket=NN/*.parquet   canonical readings, one file per ingest batch and bucket
    marts/<name>/...                Parquet that BI tools read (replaced atomically per file)
    registry/                       model runs (LightGBM text + JSON metadata)
    .staging/                       files being written (outside every reader's glob)
    .staging/journal-<id>/          the mart files one open transaction replaced (undo journal)
    .lock                           held by the one writer

Rules this module enforces (DESIGN.md, "Reliability and security rules"):

* one writer at a time (``fcntl.flock``); a second writer waits up to
  ``warehouse.lock_timeout_s`` for it, then fails with one line;
* readers hold the catalog only while they copy it into memory (:meth:`Warehouse.reader`); a
  writer that finds it held waits for them (same timeout), a reader waits for a writer;
* every connection runs in UTC with explicit ``memory_limit`` and ``threads``;
* Parquet is written under ``.staging/``, its footer and row count checked, then
  ``os.replace``d into place; lake files only become visible to oxy when the catalog
  transaction that lists them commits, and files no committed transaction lists are
  swept when the next writer opens the warehouse;
* the catalog records every file's size and row count when it is written (``lake_files``,
  ``mart_files``): :meth:`Warehouse.check_files` finds a file that is missing, truncated or
  changed, and every writer runs that check before it writes (a lake problem refuses it);
* mart files replaced or removed inside a transaction are journalled (hard links of the
  files as they were): when the transaction rolls back, fails or is killed, the marts are put
  back as its last commit left them (:class:`_Journal`); a failed write on a full disk is one
  line, ``no space left on …``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine import OxyError
from engine.config import Config

_PKG_SQL = Path(__file__).with_name("sql")
SQL_DIR = _PKG_SQL if _PKG_SQL.is_dir() else Path(__file__).resolve().parent.parent / "sql"
# files one partitioned COPY keeps open (each buffers a row group: 40 files of 32k-row groups
# of anomaly_scores held ~0.4 GB; 8 hold ~0.1 GB, and each COPY pays one pass of its query)
MART_OPEN_FILES = 8

READINGS_SCHEMA = pa.schema(
    [
        ("sensor_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("customer", pa.string()),
        ("source_file", pa.string()),
        ("ingested_at", pa.timestamp("us")),
        # optional (null when the source maps none; lake files written before them lack them)
        ("temperature_c", pa.float64()),  # water temperature, degC
        ("salinity", pa.float64()),  # PSU (g/kg)
    ]
)

# Arrow schemas of the file-backed kinds, so that their views exist (empty) before any file.
KIND_SCHEMAS: dict[str, pa.Schema] = {"readings": READINGS_SCHEMA}


log = logging.getLogger("oxy")


@functools.cache
def sql_text(name: str) -> str:
    """The text of ``sql/<name>.sql`` (e.g. ``"marts/anomaly_scores"``), read once; or, for
    ``"<file>#<block>"``, the block headed ``-- name: <block>`` in ``sql/<file>.sql`` (a stage's
    small bookkeeping queries live in one file of named blocks)."""
    file, _, block = name.partition("#")
    path = SQL_DIR / f"{file}.sql"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OxyError(f"internal: SQL file {path} is missing from the installation") from None
    if not block:
        return text
    blocks = named_blocks(text)
    if block not in blocks:
        raise OxyError(f"internal: no query named {block!r} in {path}")
    return blocks[block]


_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.M)


def named_blocks(text: str) -> dict[str, str]:
    """The ``-- name: NAME`` blocks of a SQL file: each runs to the next name line."""
    marks = list(_NAME.finditer(text))
    return {
        m.group(1): text[
            m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)
        ].strip()
        for i, m in enumerate(marks)
    }


_PARAM = re.compile(r"\$([a-z_][a-z0-9_]*)")


def bind(query: str, params: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``params`` that ``query`` names (DuckDB refuses unused names)."""
    code = "\n".join(line.split("--", 1)[0] for line in query.splitlines())
    names = set(_PARAM.findall(code))
    missing = names - params.keys()
    if missing:
        raise OxyError(f"internal: SQL parameter(s) {sorted(missing)} not configured")
    return {k: params[k] for k in names}


def sql_rows(
    con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run ``sql/<name>.sql`` with the parameters it names (from ``params``); its rows."""
    query = sql_text(name)
    return con.execute(query, bind(query, params or {})).fetchall()


def run_sql(
    con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any], *, into: str
) -> None:
    """Materialise ``sql/<name>.sql`` as the temp table ``into``."""
    query = sql_text(name)
    con.execute(f"create or replace temp table {into} as {query}", bind(query, params))


def query_frame(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Run ``query`` (text from :func:`sql_text`) with bound ``params`` into a polars frame."""
    frame = pl.from_arrow(con.sql(query, params=params or {}).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def has_relation(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the open database holds a table or view ``name`` (a mart view, a temp table)."""
    return bool(con.execute(sql_text("meta/relation_exists"), {"name": name}).fetchall()[0][0])


def readings_buckets(con: duckdb.DuckDBPyConnection) -> list[int]:
    """The lake buckets that hold readings, in order."""
    return [int(r[0]) for r in con.execute(sql_text("meta/readings_buckets")).fetchall()]


def sensor_timezones(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """``sensor_id -> IANA time zone`` of every registered sensor."""
    return dict(con.execute(sql_text("meta/sensor_timezones")).fetchall())


def lake_view_sql(kind: str, listing: str) -> str:
    """The body of the view over one file-backed kind's files (``listing``: quoted paths,
    comma-separated; may be empty).

    A kind with a schema (:data:`KIND_SCHEMAS`) always shows its columns, in order: its
    files are read by name (``union_by_name``) after an empty typed relation, so a column
    newer than some files (``temperature_c``) reads as null there, and exists even when no
    file holds it yet. The empty relation costs nothing (the optimizer removes it).
    """
    schema = KIND_SCHEMAS.get(kind)
    files = (
        f"select * from read_parquet([{listing}], union_by_name = true, hive_partitioning = false)"
        if listing
        else None
    )
    if schema is None:
        if files is None:
            raise OxyError(f"internal: no files and no schema for {kind!r}")
        return files
    cols = ", ".join(f"cast(null as {_duck_type(f.type)}) as {f.name}" for f in schema)
    empty = f"select {cols} where false"
    return empty if files is None else f"{empty} union all by name {files}"


def canonical_readings(frame: pl.DataFrame) -> pa.Table:
    """``frame`` (at least ``sensor_id, ts, value, unit, customer, source_file, ingested_at``)
    as an Arrow table of :data:`READINGS_SCHEMA`: the optional columns it lacks are null.

    Examples
    --------
    >>> from datetime import datetime
    >>> frame = pl.DataFrame({"sensor_id": ["a"], "ts": [datetime(2024, 1, 1)], "value": [7.0],
    ...     "unit": ["mg/L"], "customer": ["c"], "source_file": ["f.csv"],
    ...     "ingested_at": [datetime(2024, 1, 2)]})
    >>> canonical_readings(frame).column_names[-2:]
    ['temperature_c', 'salinity']
    """
    missing = [
        pl.lit(None, dtype=pl.Float64).alias(f.name)
        for f in READINGS_SCHEMA
        if f.name not in frame.columns and pa.types.is_floating(f.type)
    ]
    return (
        frame.with_columns(missing).select(READINGS_SCHEMA.names).to_arrow().cast(READINGS_SCHEMA)
    )


def bucket_of(sensor_id: str, buckets: int) -> int:
    """Stable partition bucket of a sensor (crc32, independent of process and version)."""
    return zlib.crc32(sensor_id.encode("utf-8")) % buckets


def quote_literal(text: str) -> str:
    """A SQL string literal; only for paths oxy generated itself (view DDL takes no params)."""
    return "'" + text.replace("'", "''") + "'"


# The command that writes each mart again (a problem with one of its files names it).
MART_REPAIRS: dict[str, str] = {
    "anomaly_scores": "oxy score (it rescores the span of a missing or damaged file)",
    "anomaly_events": "oxy score (it rescores the bucket of a missing or damaged file)",
    "forecasts": "oxy forecast",
    "forecast_status": "oxy forecast",
    "monitoring": "oxy monitor",
    "model_runs": "oxy train (model_runs is rewritten by every train, promote and rollback)",
}
_SCORED_MARTS = ("anomaly_scores", "anomaly_events")  # `oxy score` rescores their damage
_SPAN_COLUMNS = ("ts", "start_ts", "origin_ts", "time")  # a mart file's time span comes from these


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the warehouse, as :meth:`Warehouse.check_files` and ``oxy check``
    report it.

    ``kind``: ``missing`` (a listed file is gone), ``truncated`` (shorter than recorded),
    ``changed`` (another size than recorded), ``unreadable`` (no valid Parquet footer),
    ``rows`` (another row count than recorded), ``unlisted`` (a file in a mart folder that no
    write recorded), ``bookkeeping`` (tables that disagree), ``interrupted`` (a writer was
    killed: the next writer undoes its unfinished step), ``registry`` (a model run or the
    production pointer). ``area``: ``lake``, ``mart``, ``registry`` or ``catalog``. ``path`` is
    relative to the warehouse root; ``table`` the lake kind or mart it belongs to; ``bucket``,
    ``min_ts``/``max_ts`` and ``rows`` what the catalog recorded for it (the span a rescoring
    must cover); ``repair`` the command that repairs it.
    """

    kind: str
    area: str
    path: str
    table: str
    detail: str
    repair: str
    bucket: int | None = None
    min_ts: datetime | None = None
    max_ts: datetime | None = None
    rows: int | None = None

    @property
    def blocks_writers(self) -> bool:
        """Lake problems: a writer would build on readings that are not there."""
        return self.area == "lake"

    def line(self) -> str:
        where = f"{self.table}, bucket {self.bucket}" if self.bucket is not None else self.table
        return f"{self.path or self.table}: {self.detail} ({where}); repair: {self.repair}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StagedFile:
    """A Parquet file written under ``.staging/``, waiting to be published."""

    staged: Path
    relpath: str  # final location relative to the warehouse root
    kind: str
    bucket: int | None
    rows: int
    min_ts: datetime | None = None
    max_ts: datetime | None = None


class Warehouse:
    """Paths, connections, the writer lock and atomic file publication for one warehouse.

    Examples
    --------
    >>> wh = Warehouse("warehouse")                       # doctest: +SKIP
    >>> with wh.writer() as con:                          # doctest: +SKIP
    ...     con.execute("select count(*) from readings").fetchall()
    """

    def __init__(self, root: str | Path, config: Config | None = None) -> None:
        self.root = Path(root).resolve()
        self.config = config if config is not None else Config.load()
        self.db_path = self.root / "oxy.duckdb"
        self.lake_dir = self.root / "lake"
        self.marts_dir = self.root / "marts"
        self.registry_dir = self.root / "registry"
        self.staging_dir = self.root / ".staging"
        self.lock_path = self.root / ".lock"
        # what the cheap check found when the last reader or writer opened the warehouse
        self.problems: list[Problem] = []
        # per connection (id -> (connection, journal)): the open transaction's mart journal
        self._journals: dict[int, tuple[duckdb.DuckDBPyConnection, _Journal]] = {}
        self._settled: list[_Journal] = []  # committed journals whose discard waits on a commit
        self._missing_at_open: set[str] = set()
        self._writer_con: duckdb.DuckDBPyConnection | None = None  # while writer() is open

    def __getstate__(self) -> dict[str, Any]:
        """What a copy sent to a cluster worker keeps: paths and config, not this process's
        open writer connection and journals (a worker never writes the catalog)."""
        state = self.__dict__.copy()
        state.update(_writer_con=None, _journals={}, _settled=[], _missing_at_open=set())
        return state

    # -- connections -----------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        cfg = self.config["warehouse"]
        return {"memory_limit": str(cfg["memory_limit"]), "threads": int(cfg["threads"])}

    def connect_memory(self, **settings: Any) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the warehouse's limits, UTC and temp dir.

        ``settings`` are extra DuckDB settings given at connect time (they override the
        warehouse's), e.g. the query sandbox's ``python_enable_replacements=False``.
        """
        con = duckdb.connect(":memory:", config={**self._settings(), **settings})
        self._prepare(con)
        return con

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("set TimeZone = 'UTC'")
        if self.root.is_dir():
            tmp = self.staging_dir / "duckdb_tmp"
            try:
                tmp.mkdir(parents=True, exist_ok=True)
            except OSError:  # a read-only warehouse: a reader spills to the system's temp
                tmp = Path(tempfile.gettempdir()) / f"oxy-duckdb-{os.getuid()}"
                tmp.mkdir(parents=True, exist_ok=True)
            con.execute("set temp_directory = ?", [str(tmp)])

    def exists(self) -> bool:
        return self.db_path.is_file()

    @property
    def lock_timeout(self) -> float:
        """``warehouse.lock_timeout_s``: how long a writer waits for the lock or for readers,
        and a reader for a writer."""
        return float(self.config["warehouse"]["lock_timeout_s"])

    def _holder(self) -> str:
        """Who holds the writer lock, as the holder wrote it (``pid N: oxy score``)."""
        try:
            with self.lock_path.open("rb") as fh:
                return fh.read(200).decode("utf-8", "replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def _wait_for_catalog(self, attempt: Any, *, writing: bool) -> Any:
        """``attempt()`` (an open of the catalog) again while another process holds it, up to
        ``warehouse.lock_timeout_s``; then one line saying who holds it."""
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return attempt()
            except duckdb.IOException as exc:
                message = str(exc)
                if "lock" not in message.lower():
                    raise OxyError(
                        f"cannot open warehouse {self.db_path}: {_one_line(exc)}"
                    ) from None
                if time.monotonic() < deadline:
                    time.sleep(_POLL_S)
                    continue
                waited = f"waited {self.lock_timeout:g} s (warehouse.lock_timeout_s)"
                if writing:
                    pid = re.search(r"PID (\d+)", message)
                    who = f"pid {pid.group(1)}" if pid else "another process"
                    raise OxyError(
                        f"warehouse {self.root} is being read by {who}; {waited}: retry when "
                        "it finishes, or raise warehouse.lock_timeout_s"
                    ) from None
                raise OxyError(
                    f"warehouse {self.root} is being written by another oxy process "
                    f"({self._holder()}); {waited}: retry when it finishes"
                ) from None
            except (duckdb.ConnectionException, duckdb.Error) as exc:
                if writing or not _same_process_holds(exc):
                    raise OxyError(
                        f"cannot open warehouse {self.db_path}: {_one_line(exc)}"
                    ) from None
                # This process already holds the read-write connection (DuckDB refuses a
                # second, differently configured connection to the same file in one process).
                raise OxyError(
                    f"warehouse {self.root} is being written by this oxy process; "
                    "read it after the write finishes"
                ) from None

    @contextlib.contextmanager
    def visit_catalog(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the catalog itself, to hold only while copying from it
        (a writer waits while it is open). Waits for a writer as :meth:`reader` does."""
        if not self.exists():
            raise OxyError(
                f"no warehouse at {self.root} (run `oxy ingest` first, or pass --warehouse DIR)"
            )
        con = self._wait_for_catalog(
            lambda: duckdb.connect(str(self.db_path), read_only=True, config=self._settings()),
            writing=False,
        )
        try:
            con.execute("set TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def reader(self, *, check: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory copy of the catalog (tables and views) to read the warehouse through.

        The catalog file is held only while it is copied (``COPY FROM DATABASE``), so no
        writer waits for a long reader; a reader waits up to ``warehouse.lock_timeout_s`` for a
        writer. Unless ``check`` is false, the copy is checked (:meth:`check_files`, cheap): each
        problem is logged as a warning on the ``oxy`` logger (the CLI prints it) and kept in
        :attr:`problems`.
        """
        if not self.exists():
            raise OxyError(
                f"no warehouse at {self.root} (run `oxy ingest` first, or pass --warehouse DIR)"
            )
        con = self.connect_memory()
        try:
            catalog = quote_literal(str(self.db_path))
            self._wait_for_catalog(
                lambda: con.execute(f"attach {catalog} as oxy_catalog (read_only)"),
                writing=False,
            )
            try:
                con.execute("copy from database oxy_catalog to memory")
            finally:
                con.execute("detach oxy_catalog")
            # views over files under this root (a warehouse moved or copied elsewhere reads
            # its own files, not those of the path it was written at); a view over a damaged
            # file stays as copied (the check below names the file)
            self.refresh_views(con, keep_broken=True)
            self.refresh_mart_views(con, keep_broken=True)
            if check:
                self.problems = self.check_files(con)
                for problem in self.problems:
                    log.warning(problem.line())
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def writer(self, *, allow_problems: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The one read-write connection.

        Takes the writer lock and the catalog (waiting up to ``warehouse.lock_timeout_s`` for
        another writer or for readers copying it), ensures the catalog, undoes what a killed
        writer left unfinished, sweeps orphans and runs the cheap check: a problem with the
        lake refuses the writer (unless ``allow_problems``, for the commands that repair it),
        others are logged as warnings and kept in :attr:`problems`.

        A failure inside (an error, Ctrl-C) rolls the open transaction back and puts its mart
        files back as they were; a full disk is one line, ``no space left on …``.
        """
        fd = self._open_lock()
        try:
            self._take_lock(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {_command()}".encode(), 0)
            try:
                con = self._wait_for_catalog(
                    lambda: duckdb.connect(str(self.db_path), config=self._settings()),
                    writing=True,
                )
            except duckdb.Error as exc:
                raise _no_space_error(exc, self.root) or exc from None
            failed = False
            try:
                self._prepare(con)
                self._ensure_catalog(con)
                self._recover_journals(con)
                self._sweep_orphans(con)
                self._check_at_open(con, allow_problems)
                self._writer_con = con
                yield con
            except BaseException as exc:
                failed = True
                con = self._abandon(con)
                full = _no_space_error(exc, self.root)
                if full is not None:
                    raise full from None
                raise
            finally:
                self._writer_con = None
                if not failed:
                    self._settle(con)
                with contextlib.suppress(duckdb.Error):
                    con.close()
                self._journals.clear()
                self._settled.clear()
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _take_lock(self, fd: int) -> None:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() < deadline:  # warehouse.lock_timeout_s: wait a bit
                    time.sleep(_POLL_S)
                    continue
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                raise OxyError(
                    f"warehouse {self.root} is locked by another oxy writer "
                    f"({holder or 'unknown'}); waited {self.lock_timeout:g} s "
                    "(warehouse.lock_timeout_s): wait for it to finish"
                ) from None

    def _check_at_open(self, con: duckdb.DuckDBPyConnection, allow_problems: bool) -> None:
        """The cheap check every writer runs before it writes (see :meth:`writer`)."""
        self.problems = self.check_files(con)
        self._missing_at_open = {p.path for p in self.problems if p.kind == "missing"}
        blocking = [p for p in self.problems if p.blocks_writers]
        if blocking and not allow_problems:
            shown = "\n  ".join(p.line() for p in blocking[:20])
            more = f"\n  ... and {len(blocking) - 20} more" if len(blocking) > 20 else ""
            raise OxyError(
                f"warehouse {self.root}: {len(blocking)} lake file(s) are not as the catalog "
                f"recorded them, so nothing was written (see `oxy check`):\n  {shown}{more}"
            )
        for problem in self.problems:
            log.warning(problem.line())

    def require_writable(self) -> None:
        """Fail fast, before any work, where a writing command could not write the root
        (or create it): a read-only mount, a folder another uid owns."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
            return
        if probe.is_dir() and os.statvfs(probe).f_flag & os.ST_RDONLY:
            raise self._not_writable("Read-only file system")
        raise self._not_writable("Permission denied" if probe.is_dir() else "Not a directory")

    def _not_writable(self, reason: str | None) -> OxyError:
        return OxyError(
            f"warehouse {self.root} is not writable by uid {os.getuid()} ({reason}): this "
            "command writes to it; make it writable or mount it read-write "
            "(`oxy sql` and `oxy status` only read)"
        )

    def _open_lock(self) -> int:
        """The lock file's descriptor, creating the root; a clear error where it cannot be
        written (a read-only mount, a folder another uid owns, a path under a file)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._not_writable(exc.strerror) from None

    # -- catalog ---------------------------------------------------------------------
    def _ensure_catalog(self, con: duckdb.DuckDBPyConnection) -> None:
        before = {r[0] for r in sql_rows(con, "meta/catalog_tables")}
        for path in sorted((SQL_DIR / "catalog").glob("*.sql")):
            con.execute(path.read_text(encoding="utf-8"))
        if not sql_rows(con, "integrity#lake_files_have_bytes")[0][0]:
            sql_rows(con, "integrity#lake_files_add_bytes")  # a catalog of an older oxy
        self._record_lake_sizes(con)
        if "mart_files" not in before:
            self._adopt_marts(con)
        self.refresh_views(con)
        self.refresh_mart_views(con)

    def _record_lake_sizes(self, con: duckdb.DuckDBPyConnection) -> None:
        """Record the size of lake files an older oxy listed without one (when the file is
        there with the row count it was listed with: a damaged file stays a problem)."""
        for path, rows in sql_rows(con, "integrity#lake_files_without_bytes"):
            file = self.root / path
            try:
                if pq.read_metadata(file).num_rows == rows:
                    sql_rows(
                        con,
                        "integrity#lake_file_bytes",
                        {"path": path, "bytes": file.stat().st_size},
                    )
            except (OSError, pa.ArrowInvalid):
                continue

    def _adopt_marts(self, con: duckdb.DuckDBPyConnection) -> None:
        """List the mart files an older oxy wrote (before ``mart_files`` existed)."""
        if self.marts_dir.is_dir():
            for file in sorted(self.marts_dir.rglob("*.parquet")):
                with contextlib.suppress(OxyError):
                    self._record_mart_file(con, file, check_parquet(file))

    def files(
        self, con: duckdb.DuckDBPyConnection, kind: str, bucket: int | None = None
    ) -> list[Path]:
        """Absolute paths of the committed files of one kind (optionally one bucket)."""
        rows = sql_rows(con, "meta/lake_file_paths", {"kind": kind, "bucket": bucket})
        return [self.root / r[0] for r in rows]

    def refresh_views(self, con: duckdb.DuckDBPyConnection, *, keep_broken: bool = False) -> None:
        """(Re)create one view per file-backed kind over exactly its committed files.

        Each view carries a digest of its definition as its comment; a view whose files did
        not change is kept (creating one over a fleet's lake files took 0.04-0.09 s, at every
        writer)."""
        kinds = {r[0] for r in sql_rows(con, "meta/lake_kinds")}
        tags = {name: comment for name, _, comment in sql_rows(con, "meta/catalog_views")}
        for kind in sorted(kinds | set(KIND_SCHEMAS)):
            paths = self.files(con, kind)
            body = lake_view_sql(kind, ", ".join(quote_literal(str(p)) for p in paths))
            tag = "oxy:" + hashlib.sha256(body.encode()).hexdigest()[:32]
            if tags.get(kind) == tag:
                continue
            try:
                con.execute(f"create or replace view {kind} as {body}")
            except duckdb.Error:
                if not keep_broken:
                    raise
                continue
            con.execute(f"comment on view {kind} is {quote_literal(tag)}")

    def mart_names(self) -> list[str]:
        """Marts that exist on disk (folders under ``marts/`` holding Parquet)."""
        if not self.marts_dir.is_dir():
            return []
        return sorted(
            d.name for d in self.marts_dir.iterdir() if d.is_dir() and any(d.rglob("*.parquet"))
        )

    def mart_glob(self, name: str) -> str:
        return str(self.marts_dir / name / "**" / "*.parquet")

    def refresh_mart_views(
        self, con: duckdb.DuckDBPyConnection, *, keep_broken: bool = False
    ) -> None:
        """One catalog view per mart, over its folder (files there are only ever complete).

        A mart that mirrors a catalog table of the same name (``model_runs``,
        ``monitoring``) gets no view: inside oxy the table is the source of truth. A view
        already over the mart's folder is kept: DuckDB binds it again at every query (new
        files, new columns), while creating it reads the footer of every file (0.1 s for a
        fleet's ``anomaly_scores``, at every writer).
        """
        tables = {r[0] for r in sql_rows(con, "meta/catalog_tables")}
        views = {name: sql for name, sql, _ in sql_rows(con, "meta/catalog_views")}
        for name in self.mart_names():
            if name in tables or quote_literal(self.mart_glob(name)) in views.get(name, ""):
                continue
            try:
                self.mart_view(con, name)
            except duckdb.Error:
                if not keep_broken:
                    raise

    def mart_view(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        """The view ``name`` over the mart's folder (in any connection: the catalog's, or a
        cluster worker's in-memory one)."""
        con.execute(
            f"create or replace view {name} as select * from read_parquet("
            f"{quote_literal(self.mart_glob(name))}, hive_partitioning = true, "
            "union_by_name = true)"
        )

    def write_mart(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        query: str,
        params: dict[str, Any] | None = None,
        *,
        partition: str | None = None,
        filename: str = "data.parquet",
        row_group_size: int | None = None,
    ) -> int:
        """Write ``query``'s result as ``marts/<name>/[<partition>/]<filename>``, atomically.

        ``partition`` is a hive folder such as ``"bucket=07"``: rewriting one partition
        leaves the others untouched, and a reader globbing the mart always sees complete
        files (old or new, never half-written). ``row_group_size``: smaller row groups for a
        small file let DuckDB write it with every thread (a file of one row group takes one).
        Returns the row count.
        """
        staged = self.staging_path()
        con.execute(
            f"copy ({query}) to {quote_literal(str(staged))} (format parquet, compression zstd"
            + (f", row_group_size {int(row_group_size)})" if row_group_size else ")"),
            params or {},
        )
        sub = f"{name}/{partition}" if partition else name
        return self.replace_file(staged, self.resolve(f"marts/{sub}/{filename}"), None, con)

    def write_mart_files(
        self,
        con: duckdb.DuckDBPyConnection,
        query: str,
        params: dict[str, Any],
        key: str,
        outputs: list[Path],
        *,
        keys: list[int] | None = None,
        row_group_size: int | None = None,
        open_files: int = MART_OPEN_FILES,
    ) -> list[int]:
        """Write ``query``'s rows to several mart files in one pass, each file atomically.

        The query's integer column ``key`` says which file a row goes to: ``outputs[i]`` gets
        the rows whose key is ``keys[i]`` (default: ``i``; ascending), without the key column.
        The files are staged by partitioned COPYs of at most ``open_files`` keys each (a
        partitioned write holds a row group per open file: memory grows with their number),
        then each replaces its output on its own, as :meth:`write_mart` does (journalled and
        recorded through ``con``); an output whose key has no row is left as it is (the caller
        removes it with :meth:`remove_mart_path` or writes an empty file).
        Returns the row count per output.
        """
        values = keys if keys is not None else list(range(len(outputs)))
        if values != sorted(values) or len(values) != len(outputs):
            raise OxyError("internal: write_mart_files needs one ascending key per output")
        options = (
            f"format parquet, compression zstd, partition_by ({key}), write_partition_columns false"
        )
        if row_group_size:
            options += f", row_group_size {int(row_group_size)}"
        bounded = f"select * from ({query}) where {key} between $oxy_key_first and $oxy_key_last"
        staged = self.staging_path(suffix="")
        try:
            for i in range(0, len(values), open_files):
                group = values[i : i + open_files]
                bounds = {"oxy_key_first": group[0], "oxy_key_last": group[-1]}
                con.execute(
                    f"copy ({bounded}) to {quote_literal(str(staged))} "
                    f"({options}, overwrite_or_ignore true)",
                    {**params, **bounds},
                )
            rows = []
            for value, dest in zip(values, outputs, strict=True):
                files = sorted((staged / f"{key}={value}").glob("*.parquet"))
                if len(files) > 1:
                    raise OxyError(f"internal: {len(files)} staged files for {dest.name}")
                rows.append(self.replace_file(files[0], dest, None, con) if files else 0)
            return rows
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _sweep_orphans(self, con: duckdb.DuckDBPyConnection) -> None:
        """Delete staged leftovers and lake files no committed transaction lists."""
        if self.staging_dir.is_dir():
            for p in self.staging_dir.iterdir():
                if p.name.startswith(_JOURNAL_PREFIX):
                    continue  # _recover_journals settled every one it could read
                if p.is_dir() and p.name != "duckdb_tmp":
                    shutil.rmtree(p, ignore_errors=True)
                elif p.is_file():
                    p.unlink(missing_ok=True)
        if self.lake_dir.is_dir():
            known = {r[0] for r in sql_rows(con, "meta/lake_all_paths")}
            for p in self.lake_dir.rglob("*.parquet"):
                if p.relative_to(self.root).as_posix() not in known:
                    p.unlink(missing_ok=True)

    # -- atomic files ----------------------------------------------------------------
    def staging_path(self, suffix: str = ".parquet") -> Path:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        return self.staging_dir / f"{uuid.uuid4().hex}{suffix}"

    def resolve(self, relpath: str) -> Path:
        """``root / relpath``, refusing anything that would land outside the root."""
        path = (self.root / relpath).resolve()
        if not path.is_relative_to(self.root):
            raise OxyError(f"internal: path {relpath!r} escapes the warehouse root")
        return path

    def publish(self, con: duckdb.DuckDBPyConnection, staged: Sequence[StagedFile]) -> None:
        """Move checked staged files into the lake and list them in ``lake_files``.

        Call inside the caller's transaction: the rows of ``lake_files`` (and so the
        files' visibility through the catalog views) commit with the caller's other
        changes. A crash before the commit leaves renamed files nobody lists; the next
        writer sweeps them.
        """
        sizes = []
        for f in staged:
            check_parquet(f.staged, f.rows)
            sizes.append(f.staged.stat().st_size)
        for f, size in zip(staged, sizes, strict=True):
            final = self.resolve(f.relpath)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f.staged, final)
            sql_rows(
                con,
                "meta/lake_file_record",
                {
                    "kind": f.kind,
                    "path": f.relpath,
                    "bucket": f.bucket,
                    "rows": f.rows,
                    "bytes": size,
                    "min_ts": f.min_ts,
                    "max_ts": f.max_ts,
                },
            )
        self.refresh_views(con)

    def register_sensors(
        self, con: duckdb.DuckDBPyConnection, sensors: Sequence[dict[str, Any]]
    ) -> int:
        """Add sensors not yet known (``sensor_id, customer, source, timezone, unit, levels``).

        The partition bucket is assigned here, once, from the sensor id. Returns how many
        sensors were new. Known sensors keep their first registration.
        """
        buckets = int(self.config["warehouse"]["buckets"])
        before = sql_rows(con, "meta/sensor_count")[0][0]
        first: dict[str, dict[str, Any]] = {}
        for sensor in sensors:
            first.setdefault(sensor["sensor_id"], sensor)
        columns = ("sensor_id", "customer", "source", "timezone", "unit", "levels")
        if first:  # one statement for all (one insert per sensor costs ~2 ms each)
            sql_rows(
                con,
                "meta/sensors_register",
                {
                    **{c: [s[c] for s in first.values()] for c in columns},
                    "bucket": [bucket_of(sid, buckets) for sid in first],
                },
            )
        return sql_rows(con, "meta/sensor_count")[0][0] - before

    def stage_readings(self, con: duckdb.DuckDBPyConnection, batch_id: str) -> list[StagedFile]:
        """Write the relation ``batch_readings`` (canonical columns) as one sorted Parquet
        file per bucket under ``.staging/``; publish the result with :meth:`publish`.

        Every sensor in the batch must be registered first (:meth:`register_sensors`).
        """
        stats = sql_rows(con, "meta/batch_bucket_stats")
        total = sql_rows(con, "meta/batch_count")[0][0]
        if sum(r[1] for r in stats) != total:
            raise OxyError("internal: batch has readings of unregistered sensors")
        if not stats:
            return []
        out_dir = self.staging_path(suffix="")
        query = sql_text("staging/readings_by_bucket")
        con.execute(
            f"copy ({query}) to {quote_literal(str(out_dir))} "
            "(format parquet, partition_by (bucket), compression zstd, row_group_size 122880)"
        )
        staged = []
        for bucket, rows, min_ts, max_ts in stats:
            files = sorted((out_dir / f"bucket={bucket}").glob("*.parquet"))
            if len(files) != 1:
                raise OxyError(f"internal: expected one staged file for bucket {bucket}")
            flat = self.staging_path()
            os.replace(files[0], flat)
            staged.append(
                StagedFile(
                    staged=flat,
                    relpath=f"lake/readings/bucket={bucket:02d}/{batch_id}.parquet",
                    kind="readings",
                    bucket=bucket,
                    rows=rows,
                    min_ts=min_ts,
                    max_ts=max_ts,
                )
            )
        shutil.rmtree(out_dir, ignore_errors=True)
        return staged

    def replace_file(
        self,
        staged: Path,
        dest: Path,
        expected_rows: int | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> int:
        """Check a staged Parquet file and atomically replace ``dest`` with it (marts);
        returns its row count.

        A mart file is journalled and recorded in ``mart_files`` (size, rows, bucket, time
        span) in the transaction of the writer's connection (``con``, as :meth:`write_mart`
        and :meth:`write_mart_files` pass it; by default the connection of this warehouse's
        open :meth:`writer`, as the scorer's polars writes call it): if that transaction does
        not commit, the file as it was comes back (:class:`_Journal`). Outside a transaction
        the replacement and its record commit together on their own. Without a writer (or
        for a file outside ``marts/``) the file is only replaced atomically.
        """
        rows = check_parquet(staged, expected_rows)
        con = con if con is not None else self._writer_con
        dest = self.resolve(dest.relative_to(self.root).as_posix())
        dest.parent.mkdir(parents=True, exist_ok=True)
        rel = dest.relative_to(self.root).as_posix()
        if con is None or not rel.startswith("marts/"):
            os.replace(staged, dest)
            return rows
        record = self._mart_record(staged, rel, rows)
        self._change_marts(con, [rel], lambda: os.replace(staged, dest), record=record)
        return rows

    def remove_mart_path(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        """Remove a mart file or folder (e.g. a bucket's partition), journalled and forgotten
        by ``mart_files`` in ``con``'s transaction, as :meth:`replace_file` replaces one."""
        target = self.resolve(Path(path).resolve().relative_to(self.root).as_posix())
        rel = target.relative_to(self.root).as_posix()
        if not rel.startswith("marts/"):
            raise OxyError(f"internal: {rel} is not a mart path")
        if not target.exists():
            return
        files = (
            [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        )
        rels = [f.relative_to(self.root).as_posix() for f in files]

        def remove() -> None:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()

        self._change_marts(con, rels, remove, forget=rels)

    def forget_damaged_scores(self, con: duckdb.DuckDBPyConnection) -> list[Problem]:
        """Make the next scoring write again what the check at :meth:`writer` open found
        missing or damaged in ``anomaly_scores`` and ``anomaly_events``; returns those problems.

        The scorer's watermark (``score_files``) forgets the lake files of the damaged file's
        bucket whose readings overlap its recorded time span (an events file: every lake
        file of its bucket), so the scorer takes their readings for new and rescores the
        span; a damaged file still on disk is removed, and its ``mart_files`` row is
        forgotten (the rescoring records the file it writes). One transaction: a kill before
        its commit leaves the damage for the next run to find again.
        """
        damaged = [
            p
            for p in self.problems
            if p.area == "mart"
            and p.table in _SCORED_MARTS
            and p.kind in {"missing", "truncated", "changed", "unreadable", "rows"}
        ]
        if not damaged:
            return []
        con.execute("begin")
        try:
            for p in damaged:
                whole = p.table == "anomaly_events" or p.min_ts is None or p.max_ts is None
                sql_rows(
                    con,
                    "integrity#score_files_forget_overlapping",
                    {
                        "bucket": p.bucket,
                        "min_ts": None if whole else p.min_ts,
                        "max_ts": None if whole else p.max_ts,
                    },
                )
                if (self.root / p.path).exists():
                    self.remove_mart_path(con, self.root / p.path)
            sql_rows(con, "integrity#mart_files_forget", {"paths": [p.path for p in damaged]})
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        gone = {p.path for p in damaged}
        self._missing_at_open -= gone
        self.problems = [p for p in self.problems if p.path not in gone]
        log.warning(
            f"rescoring the spans of {len(damaged)} missing or damaged anomaly mart file(s)"
        )
        return damaged

    # -- the mart journal ----------------------------------------------------------------
    def _change_marts(
        self,
        con: duckdb.DuckDBPyConnection,
        rels: list[str],
        change: Any,
        *,
        record: dict[str, Any] | None = None,
        forget: list[str] | None = None,
    ) -> None:
        """Apply ``change()`` (a replacement or removal of the mart files ``rels``) so that it
        stands exactly when ``con``'s transaction commits, with its ``mart_files`` rows."""
        txid = _explicit_txid(con)
        held = self._journals.get(id(con))
        if held is not None and held[1].txid != txid:  # its transaction is over
            del self._journals[id(con)]
            self._resolve(con, held[1])
        if txid is None:  # autocommit: this change is a transaction of its own
            journal = self._open_journal(con, None, rels)
            try:
                change()
                con.execute("begin")
                try:
                    self._bookkeep(con, record, forget)
                    sql_rows(con, "integrity#mart_journal_open", {"jid": journal.jid})
                    con.execute("commit")
                except BaseException:
                    con.execute("rollback")
                    raise
            except BaseException:
                self._restore(journal)
                raise
            self._discard(con, journal)
            return
        if id(con) not in self._journals:
            self._settle_previous(con)
            self._journals[id(con)] = (con, self._open_journal(con, txid, None))
        change()
        self._bookkeep(con, record, forget)

    def _bookkeep(
        self,
        con: duckdb.DuckDBPyConnection,
        record: dict[str, Any] | None,
        forget: list[str] | None,
    ) -> None:
        if record is not None:
            sql_rows(con, "integrity#mart_file_record", record)
        if forget:
            sql_rows(con, "integrity#mart_files_forget", {"paths": forget})

    def _mart_record(self, file: Path, rel: str, rows: int) -> dict[str, Any]:
        """The ``mart_files`` row of a (staged) mart file that will live at ``rel``."""
        min_ts = max_ts = None
        with contextlib.suppress(OSError, pa.ArrowInvalid, ValueError, TypeError):
            min_ts, max_ts = _time_span(pq.read_metadata(file))
        parts = rel.split("/")
        bucket = next(
            (int(p.split("=", 1)[1]) for p in parts if re.fullmatch(r"bucket=\d+", p)), None
        )
        return {
            "mart": parts[1],
            "path": rel,
            "bucket": bucket,
            "rows": rows,
            "bytes": file.stat().st_size,
            "min_ts": min_ts,
            "max_ts": max_ts,
        }

    def _record_mart_file(self, con: duckdb.DuckDBPyConnection, file: Path, rows: int) -> None:
        rel = file.relative_to(self.root).as_posix()
        sql_rows(con, "integrity#mart_file_record", self._mart_record(file, rel, rows))

    def _mart_files_now(self) -> set[str]:
        """Every file under ``marts/``, relative to the root."""
        if not self.marts_dir.is_dir():
            return set()
        return {p.relative_to(self.root).as_posix() for p in _walk_files(self.marts_dir)}

    def _open_journal(
        self, con: duckdb.DuckDBPyConnection, txid: int | None, rels: list[str] | None
    ) -> _Journal:
        """A journal holding (hard links of) the mart files as they are now: ``rels``, or for a
        transaction every mart file (its writer may also remove files on its own)."""
        journal = _Journal(uuid.uuid4().hex[:16], txid, rels, self.staging_dir)
        snapshot = journal.folder / "snap"
        snapshot.mkdir(parents=True)
        saved = rels if rels is not None else sorted(self._mart_files_now())
        for rel in saved:
            source = self.root / rel
            if source.is_file():
                _link(source, snapshot / rel)
        journal.write_meta()
        if txid is not None:
            sql_rows(con, "integrity#mart_journal_open", {"jid": journal.jid})
        return journal

    def _committed(self, con: duckdb.DuckDBPyConnection, journal: _Journal) -> bool:
        return bool(sql_rows(con, "integrity#mart_journal_committed", {"jid": journal.jid})[0][0])

    def _resolve(self, con: duckdb.DuckDBPyConnection, journal: _Journal) -> None:
        """A journal whose transaction is over: kept if it committed, else undone."""
        if self._committed(con, journal):
            self._reconcile(con, journal)
        else:
            self._restore(journal)

    def _reconcile(self, con: duckdb.DuckDBPyConnection, journal: _Journal) -> None:
        """A committed transaction's journal: forget the rows of the files it removed on its
        own, close the journal in ``con``'s transaction, and discard it once that commits."""
        saved = journal.saved()
        gone = sorted(rel for rel in saved if not (self.root / rel).exists())
        if gone:
            sql_rows(con, "integrity#mart_files_forget", {"paths": gone})
        sql_rows(con, "integrity#mart_journal_close", {"jid": journal.jid})
        txid = _explicit_txid(con)
        if txid is None:
            journal.remove()
        else:
            journal.closed_in = txid
            if journal not in self._settled:
                self._settled.append(journal)

    def _settle_previous(self, con: duckdb.DuckDBPyConnection) -> None:
        """Discard the settled journals whose closing committed (in an earlier transaction);
        close again those whose closing was rolled back."""
        txid = _explicit_txid(con)
        for journal in list(self._settled):
            if txid is not None and journal.closed_in == txid:
                continue
            self._settled.remove(journal)
            if self._committed(con, journal):
                self._reconcile(con, journal)
            else:
                journal.remove()

    def _discard(self, con: duckdb.DuckDBPyConnection, journal: _Journal) -> None:
        sql_rows(con, "integrity#mart_journal_close", {"jid": journal.jid})
        journal.remove()

    def _restore(self, journal: _Journal) -> None:
        """Put the mart files of ``journal`` back as they were when it opened."""
        snapshot = journal.folder / "snap"
        saved = journal.saved()
        if journal.rels is None:
            current = self._mart_files_now()
        else:
            current = {rel for rel in journal.rels if (self.root / rel).exists()}
        for rel in sorted(current - saved):
            (self.root / rel).unlink(missing_ok=True)
        for rel in sorted(saved):
            dest, source = self.root / rel, snapshot / rel
            if dest.exists() and os.path.samefile(dest, source):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
        if journal.rels is None and self.marts_dir.is_dir():
            _remove_empty_dirs(self.marts_dir)
        journal.remove()

    def _recover_journals(self, con: duckdb.DuckDBPyConnection) -> None:
        """At writer open: settle what a killed writer left (kept if its transaction
        committed, else undone) and forget markers of journals no longer on disk."""
        found = _Journal.on_disk(self.staging_dir)
        for journal in found:
            if journal is None:
                continue
            if self._committed(con, journal):
                self._reconcile(con, journal)
            else:
                self._restore(journal)
        for folder in self.staging_dir.glob(f"{_JOURNAL_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)  # unreadable: opened, nothing changed yet
        sql_rows(con, "integrity#mart_journal_clear")

    def _abandon(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """After a failure inside :meth:`writer`: roll back, undo the open transactions' mart
        changes. A connection DuckDB invalidated is opened again to learn what committed;
        when even that fails, the next writer settles the journals."""
        with contextlib.suppress(duckdb.Error):
            con.execute("rollback")
        journals = [j for _, j in self._journals.values()]
        self._journals.clear()
        try:
            self._settle_all(con, journals)
        except duckdb.Error:
            with contextlib.suppress(duckdb.Error):
                con.close()
            try:
                con = duckdb.connect(str(self.db_path), config=self._settings())
                self._settle_all(con, journals)
            except duckdb.Error:
                pass
        return con

    def _settle(self, con: duckdb.DuckDBPyConnection) -> None:
        """At a writer's normal end: settle every journal; forget the rows of mart files that
        this writer's own code removed outside the journal (present at open, gone now)."""
        journals = [j for _, j in self._journals.values()]
        self._journals.clear()
        with contextlib.suppress(duckdb.TransactionException):
            con.execute("rollback")  # a transaction the caller left open ends as close() ends it
        self._settle_all(con, journals)
        listed = [r[0] for r in sql_rows(con, "integrity#mart_file_paths")]
        gone = [
            p for p in listed if p not in self._missing_at_open and not (self.root / p).exists()
        ]
        if gone:
            sql_rows(con, "integrity#mart_files_forget", {"paths": gone})

    def _settle_all(self, con: duckdb.DuckDBPyConnection, journals: list[_Journal]) -> None:
        for journal in journals:
            self._resolve(con, journal)
        self._settle_previous(con)

    # -- integrity -------------------------------------------------------------------
    def check_files(self, con: duckdb.DuckDBPyConnection, *, deep: bool = False) -> list[Problem]:
        """Every file the catalog in ``con`` lists, against what it recorded when the file was
        written: missing, truncated or changed (size), and with ``deep`` also an unreadable
        footer or another row count; mart files no write recorded; and, with ``deep``, the
        ``anomaly_scores`` rows against the readings of the lake files scored.

        Cheap without ``deep`` (one ``stat`` per file): every writer runs it before it
        writes, every reader after it copies the catalog. The scorer finds here the
        ``anomaly_scores`` files to write again (``table``, ``bucket``, ``min_ts``/``max_ts``).

        Examples
        --------
        >>> with wh.reader() as con:                          # doctest: +SKIP
        ...     [p.line() for p in wh.check_files(con, deep=True)]
        """
        problems: list[Problem] = []
        tables = {r[0] for r in sql_rows(con, "meta/catalog_tables")}
        pending = [j for j in _Journal.on_disk(self.staging_dir) if j is not None]
        covered = set().union(*(j.touched(self.root) for j in pending)) if pending else set()
        if "lake_files" in tables:
            rows = sql_rows(con, "integrity#lake_files_listed")
            found = []
            for kind, path, bucket, nrows, nbytes, min_ts, max_ts in rows:
                state = _file_state(self.root / path, nrows, nbytes, deep)
                if state is not None:
                    found.append((state, kind, path, bucket, nrows, min_ts, max_ts))
            repairs = self._lake_repairs(con, [f[2] for f in found], tables)
            for (kind_, detail), kind, path, bucket, nrows, min_ts, max_ts in found:
                problems.append(
                    Problem(
                        kind_,
                        "lake",
                        path,
                        kind,
                        detail,
                        repairs[path],
                        bucket,
                        min_ts,
                        max_ts,
                        nrows,
                    )
                )
        if "mart_files" in tables:
            listed = set()
            for mart, path, bucket, nrows, nbytes, min_ts, max_ts in sql_rows(
                con, "integrity#mart_files_listed"
            ):
                listed.add(path)
                state = (
                    None if path in covered else _file_state(self.root / path, nrows, nbytes, deep)
                )
                if state is not None:
                    problems.append(
                        Problem(
                            state[0],
                            "mart",
                            path,
                            mart,
                            state[1],
                            _mart_repair(mart),
                            bucket,
                            min_ts,
                            max_ts,
                            nrows,
                        )
                    )
            for path in sorted(self._mart_files_now() - listed - covered):
                if path.endswith(".parquet"):
                    mart = path.split("/")[1]
                    problems.append(
                        Problem(
                            "unlisted",
                            "mart",
                            path,
                            mart,
                            "in the mart's folder, but no write recorded it",
                            f"remove it, then {_mart_repair(mart, rebuild=True)}",
                        )
                    )
            if deep and {"score_files", "lake_files"} <= tables:
                problems += self._score_bookkeeping(con)
        if pending:
            problems.append(
                Problem(
                    "interrupted",
                    "catalog",
                    ".staging",
                    "marts",
                    f"{len(pending)} "
                    "unfinished write(s) of a writer that was stopped: its mart files are "
                    "put back as its last commit left them when the next writer opens",
                    "run any writer command, e.g. `oxy score`",
                )
            )
        return problems

    def _lake_repairs(
        self, con: duckdb.DuckDBPyConnection, paths: list[str], tables: set[str]
    ) -> dict[str, str]:
        """Per damaged lake file: forget the ingest that wrote it, then ingest its source file
        again (``oxy forget`` removes its rows, quarantine and log entry)."""
        ids = {path: Path(path).stem for path in paths}
        sources: dict[str, tuple[str, str]] = {}
        if ids and "ingest_log" in tables:
            for ingest_id, path, source in sql_rows(
                con, "integrity#ingest_sources", {"ids": sorted(set(ids.values()))}
            ):
                sources[ingest_id] = (path, source)
        repairs = {}
        config = f"--config {shlex.quote(str(self.config.path))} " if self.config.path else ""
        for path, ingest_id in ids.items():
            if ingest_id in sources:
                file, source = sources[ingest_id]
                repairs[path] = (
                    f"`oxy forget {ingest_id}`, then ingest its source file again: "
                    f"`oxy {config}ingest {shlex.quote(file)} --source {shlex.quote(source)}`"
                )
            else:
                repairs[path] = f"`oxy forget {ingest_id}` (the ingest that wrote it)"
        return repairs

    def _score_bookkeeping(self, con: duckdb.DuckDBPyConnection) -> list[Problem]:
        """``anomaly_scores`` holds one row per reading of the lake files ``score_files`` lists
        (when none of those is gone from the lake: then the next score removes its rows)."""
        scores, readings, gone = sql_rows(con, "integrity#scores_against_lake")[0]
        if gone or not scores or scores == readings:
            return []
        return [
            Problem(
                "bookkeeping",
                "mart",
                "marts/anomaly_scores",
                "anomaly_scores",
                f"{scores:,} score rows for {readings:,} readings of the lake files scored",
                _mart_repair("anomaly_scores", rebuild=True),
                rows=readings,
            )
        ]

    # -- the seam of a cluster run (engine.cluster: a StagedWarehouse overrides these) ------
    def remove_file(self, path: Path) -> None:
        """Remove a published mart file (gone: nothing to do); inside an open :meth:`writer`
        journalled and forgotten by ``mart_files`` in its transaction (:meth:`remove_mart_path`)."""
        if self._writer_con is None:
            path.unlink(missing_ok=True)
        else:
            self.remove_mart_path(self._writer_con, path)

    def remove_tree(self, folder: Path) -> None:
        """Remove a published mart folder and everything in it, as :meth:`remove_file`."""
        if self._writer_con is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            self.remove_mart_path(self._writer_con, folder)

    def current(self, path: Path) -> Path:
        """Where the current content of the published ``path`` is read from (itself here;
        a :class:`StagedWarehouse` reads what it staged for it)."""
        return path

    def sweep_units(self) -> None:
        """Remove what cluster workers staged (:class:`StagedWarehouse` folders) once the
        writer applied it or gave up; the writer's lock keeps any other run's away."""
        if self.staging_dir.is_dir():
            for unit in self.staging_dir.glob("unit-*"):
                shutil.rmtree(unit, ignore_errors=True)


@dataclass(frozen=True)
class FileOp:
    """One deferred publication step: ``replace`` a published file (``dest``, relative to the
    root) by a checked staged file of ``rows`` rows, or ``remove`` a file or ``remove_tree`` a
    folder (``dest``)."""

    kind: str  # 'replace' | 'remove' | 'remove_tree'
    dest: str
    staged: str | None = None
    rows: int | None = None


class StagedWarehouse(Warehouse):
    """A warehouse whose mart writes stay under ``.staging/`` until the writer applies them.

    A worker of a cluster run (:mod:`engine.cluster`) writes through one: every
    :meth:`replace_file`, :meth:`remove_file` and :meth:`remove_tree` is recorded in
    :attr:`ops` instead of done, and :meth:`current` points a later read of a replaced file at
    its staged copy. The client, the one writer, replays the ops in order with
    :func:`apply_file_ops` inside the transaction that records them, so published files and
    the catalog change together, as in the embedded engine. A worker never opens the catalog.
    """

    def __init__(self, root: str | Path, config: Config | None = None) -> None:
        super().__init__(root, config)
        self.unit_dir = self.staging_dir / f"unit-{uuid.uuid4().hex}"
        self.ops: list[FileOp] = []
        self._staged_for: dict[Path, Path] = {}

    def replace_file(
        self,
        staged: Path,
        dest: Path,
        expected_rows: int | None = None,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> int:
        """Check ``staged`` and keep it under this unit's folder as the new ``dest`` (an op to
        apply; ``con``, a worker's in-memory connection, has no catalog to record it in)."""
        rows = check_parquet(staged, expected_rows)
        dest = self.resolve(dest.relative_to(self.root).as_posix())
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        kept = self.unit_dir / f"{uuid.uuid4().hex}.parquet"
        os.replace(staged, kept)  # out of a caller's temporary folder, which it removes
        self._staged_for[dest] = kept
        self.ops.append(FileOp("replace", self._relative(dest), str(kept), rows))
        return rows

    def remove_file(self, path: Path) -> None:
        self._staged_for.pop(path, None)
        self.ops.append(FileOp("remove", self._relative(path)))

    def remove_tree(self, folder: Path) -> None:
        self._staged_for = {
            p: s for p, s in self._staged_for.items() if not p.is_relative_to(folder)
        }
        self.ops.append(FileOp("remove_tree", self._relative(folder)))

    def current(self, path: Path) -> Path:
        return self._staged_for.get(path, path)

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        super()._prepare(con)
        # workers may share one file system: each spills into its own folder
        tmp = self.unit_dir / "duckdb_tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        con.execute("set temp_directory = ?", [str(tmp)])

    def _relative(self, path: Path) -> str:
        relpath = path.relative_to(self.root).as_posix()
        return self.resolve(relpath).relative_to(self.root).as_posix()


def apply_file_ops(
    warehouse: Warehouse, con: duckdb.DuckDBPyConnection, ops: Sequence[FileOp]
) -> int:
    """Replay a :class:`StagedWarehouse`'s ops on the published warehouse, in order, through
    the writer connection ``con`` (inside the transaction that records the rest of the run):
    each replacement and removal is journalled and recorded in ``mart_files`` (size, rows,
    bucket, time span) as the embedded engine's writes are, so ``oxy check`` finds a cluster
    run's files as it finds any other. Every staged file is checked (footer, row count)
    before anything moves. Returns the files replaced."""
    for op in ops:
        if op.kind == "replace":
            assert op.staged is not None
            check_parquet(Path(op.staged), op.rows)
    replaced = 0
    for op in ops:
        dest = warehouse.resolve(op.dest)
        if op.kind == "replace":
            assert op.staged is not None
            warehouse.replace_file(Path(op.staged), dest, op.rows, con)
            replaced += 1
        elif op.kind in ("remove", "remove_tree"):
            warehouse.remove_mart_path(con, dest)
        else:
            raise OxyError(f"internal: unknown file op {op.kind!r}")
    return replaced


def check_parquet(path: Path, expected_rows: int | None = None) -> int:
    """Read a Parquet footer and return its row count; raise if unreadable or short."""
    try:
        rows = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        raise OxyError(f"internal: staged file {path.name} is not valid Parquet: {exc}") from None
    if expected_rows is not None and rows != expected_rows:
        raise OxyError(
            f"internal: staged file {path.name} has {rows} rows, expected {expected_rows}"
        )
    return rows


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "varchar"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_boolean(t):
        return "boolean"
    raise TypeError(f"no DuckDB type for {t}")


# -- helpers of the journal and the checks ---------------------------------------------------
_POLL_S = 0.05  # how often a waiting reader or writer tries the catalog again
_JOURNAL_PREFIX = "journal-"


@dataclass
class _Journal:
    """The mart files of one transaction as they were before it (``.staging/journal-<jid>/``).

    ``snap/`` holds hard links of the files (of ``rels``, or for a transaction of every mart
    file: its writer may remove files on its own); ``meta.json`` is written last, so a folder
    without it was never used. The catalog table ``mart_journal`` gets the journal's ``jid`` in
    the same transaction as the ``mart_files`` rows: a committed ``jid`` keeps the new files,
    an absent one puts the snapshot back (:meth:`Warehouse._resolve`).
    """

    jid: str
    txid: int | None
    rels: list[str] | None
    staging: Path
    closed_in: int | None = None  # the transaction that closed it (after its own committed)

    @property
    def folder(self) -> Path:
        return self.staging / f"{_JOURNAL_PREFIX}{self.jid}"

    def write_meta(self) -> None:
        meta = self.folder / "meta.json"
        with meta.open("w", encoding="utf-8") as fh:
            json.dump({"jid": self.jid, "rels": self.rels}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_path(self.folder)

    def saved(self) -> set[str]:
        snapshot = self.folder / "snap"
        if not snapshot.is_dir():
            return set()
        return {p.relative_to(snapshot).as_posix() for p in _walk_files(snapshot)}

    def touched(self, root: Path) -> set[str]:
        """The mart files this journal may have changed (for a check while it is pending)."""
        if self.rels is not None:
            return set(self.rels)
        marts = root / "marts"
        now = (
            {p.relative_to(root).as_posix() for p in _walk_files(marts)}
            if marts.is_dir()
            else set()
        )
        return now | self.saved()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @classmethod
    def on_disk(cls, staging: Path) -> list[_Journal | None]:
        """The journals under ``staging`` (None for a folder without a readable meta.json)."""
        found: list[_Journal | None] = []
        for folder in sorted(staging.glob(f"{_JOURNAL_PREFIX}*")) if staging.is_dir() else []:
            try:
                meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
                rels = meta["rels"]
                found.append(cls(str(meta["jid"]), None, list(rels) if rels else rels, staging))
            except (OSError, ValueError, KeyError, TypeError):
                found.append(None)
        return found


def _explicit_txid(con: duckdb.DuckDBPyConnection) -> int | None:
    """The id of the explicit transaction ``con`` is in (``begin`` … ``commit``), or None in
    autocommit (where every statement gets a transaction, and so a new id, of its own)."""
    first = con.execute("select txid_current()").fetchall()[0][0]
    second = con.execute("select txid_current()").fetchall()[0][0]
    return int(first) if first == second else None


def _walk_files(folder: Path) -> Iterator[Path]:
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_files(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links: a copy keeps the old bytes too
        shutil.copy2(source, target)


def _remove_empty_dirs(folder: Path) -> None:
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            _remove_empty_dirs(Path(entry.path))
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: its entries, after a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_state(path: Path, rows: int, size: int | None, deep: bool) -> tuple[str, str] | None:
    """``(kind, detail)`` of a listed file that is not as recorded, or None when it is."""
    try:
        found = path.stat().st_size
    except FileNotFoundError:
        return "missing", "listed in the catalog but missing"
    except OSError as exc:
        return "unreadable", f"cannot be read ({exc.strerror or exc})"
    if size is not None and found != size:
        kind = "truncated" if found < size else "changed"
        return kind, f"{found:,} bytes where {size:,} were written"
    if deep or size is None:
        try:
            counted = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            return "unreadable", f"not valid Parquet ({_one_line(exc)})"
        if counted != rows:
            return "rows", f"{counted:,} rows where {rows:,} were written"
    return None


def _time_span(meta: pq.FileMetaData) -> tuple[Any, Any]:
    """Earliest and latest value of the file's time column (from its footer statistics)."""
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    column = next((names.index(c) for c in _SPAN_COLUMNS if c in names), None)
    if column is None or meta.num_row_groups == 0:
        return None, None
    lows, highs = [], []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lows.append(stats.min)
        highs.append(stats.max)
    low, high = min(lows), max(highs)
    return (low, high) if isinstance(low, datetime) and isinstance(high, datetime) else (None, None)


def _mart_repair(mart: str, *, rebuild: bool = False) -> str:
    """The command that repairs a file of ``mart``; ``rebuild``: one that writes all of it
    (a stray file or rows that disagree with the lake: no span to rescore is known)."""
    if rebuild and mart in _SCORED_MARTS:
        return "oxy score --full"
    return MART_REPAIRS.get(mart, f"the oxy command that writes the {mart} mart")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:2])


def _same_process_holds(exc: BaseException) -> bool:
    message = str(exc).lower()
    return any(
        hint in message
        for hint in ("different configuration", "already attached", "unique file handle")
    )


def _command() -> str:
    """This process's command, for the lock file (`oxy score`, `pytest …`)."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(args)[:150]


def _no_space_error(exc: BaseException, root: Path) -> OxyError | None:
    """One line for a failure that a full disk caused (anywhere in the exception's chain:
    a failed rollback must not hide the ENOSPC that caused it), else None."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        full = isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or "no space left on device" in str(current).lower():
            where = getattr(current, "filename", None) or root
            return OxyError(
                f"no space left on {_mount_point(Path(where))}: nothing was changed by the "
                "failed step (free some space and run the command again)"
            )
        current = current.__cause__ or current.__context__
    return None


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path
