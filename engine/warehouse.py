"""The warehouse: a folder of Parquet plus a DuckDB catalog (``oxy.duckdb``).

Layout under the root (default ``./warehouse``)::

    oxy.duckdb                      catalog: small tables + views over the Parquet
    lake/readings/bucket=NN/*.parquet   canonical readings, one file per ingest batch and bucket
    marts/<name>/...                Parquet that BI tools read (replaced atomically per file)
    registry/                       model runs (LightGBM text + JSON metadata)
    .staging/                       files being written (outside every reader's glob)
    .lock                           held by the one writer

Rules this module enforces (DESIGN.md, "Reliability and security rules"):

* one writer at a time (``fcntl.flock``; a second writer fails fast with a clear message);
* every connection runs in UTC with explicit ``memory_limit`` and ``threads``;
* Parquet is written under ``.staging/``, its footer and row count checked, then
  ``os.replace``d into place; lake files only become visible to oxy when the catalog
  transaction that lists them commits, and files no committed transaction lists are
  swept when the next writer opens the warehouse.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the catalog (fails clearly while a writer is active)."""
        if not self.exists():
            raise OxyError(
                f"no warehouse at {self.root} (run `oxy ingest` first, or pass --warehouse DIR)"
            )
        try:
            con = duckdb.connect(str(self.db_path), read_only=True, config=self._settings())
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise OxyError(
                    f"warehouse {self.root} is being written by another oxy process; "
                    "retry when it finishes"
                ) from None
            raise OxyError(f"cannot open warehouse {self.db_path}: {exc}") from None
        except duckdb.ConnectionException:
            # This process already holds the read-write connection (DuckDB refuses a second,
            # differently configured connection to the same file in one process).
            raise OxyError(
                f"warehouse {self.root} is being written by this oxy process; "
                "read it after the write finishes"
            ) from None
        try:
            con.execute("set TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The one read-write connection: takes the lock, sweeps orphans, ensures the catalog."""
        fd = self._open_lock()
        try:
            deadline = time.monotonic() + float(self.config["warehouse"]["lock_timeout_s"])
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:  # warehouse.lock_timeout_s: wait a bit
                        time.sleep(0.1)
                        continue
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                    raise OxyError(
                        f"warehouse {self.root} is locked by another oxy writer "
                        f"({holder or 'unknown'}); wait for it to finish"
                    ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            con = duckdb.connect(str(self.db_path), config=self._settings())
            try:
                self._prepare(con)
                self._ensure_catalog(con)
                self._sweep_orphans(con)
                yield con
            finally:
                con.close()
        finally:
            os.close(fd)  # closing the descriptor releases the flock

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
        for path in sorted((SQL_DIR / "catalog").glob("*.sql")):
            con.execute(path.read_text(encoding="utf-8"))
        self.refresh_views(con)
        self.refresh_mart_views(con)

    def files(
        self, con: duckdb.DuckDBPyConnection, kind: str, bucket: int | None = None
    ) -> list[Path]:
        """Absolute paths of the committed files of one kind (optionally one bucket)."""
        rows = sql_rows(con, "meta/lake_file_paths", {"kind": kind, "bucket": bucket})
        return [self.root / r[0] for r in rows]

    def refresh_views(self, con: duckdb.DuckDBPyConnection) -> None:
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
            con.execute(f"create or replace view {kind} as {body}")
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

    def refresh_mart_views(self, con: duckdb.DuckDBPyConnection) -> None:
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
        return self.replace_file(staged, self.resolve(f"marts/{sub}/{filename}"))

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
        then each replaces its output on its own, as :meth:`write_mart` does; an output whose
        key has no row is left as it is (the caller removes it or writes an empty file).
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
                rows.append(self.replace_file(files[0], dest) if files else 0)
            return rows
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _sweep_orphans(self, con: duckdb.DuckDBPyConnection) -> None:
        """Delete staged leftovers and lake files no committed transaction lists."""
        if self.staging_dir.is_dir():
            for p in self.staging_dir.iterdir():
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
        for f in staged:
            check_parquet(f.staged, f.rows)
        for f in staged:
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

    def replace_file(self, staged: Path, dest: Path, expected_rows: int | None = None) -> int:
        """Check a staged Parquet file and atomically replace ``dest`` with it (marts);
        returns its row count."""
        rows = check_parquet(staged, expected_rows)
        dest = self.resolve(dest.relative_to(self.root).as_posix())
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        return rows


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
