"""Querying the warehouse: read-only SQL in a sandbox (`oxy sql`) and a summary (`oxy status`).

A ``read_only`` DuckDB connection is not a sandbox (DESIGN.md, "Reliability and security
rules"): it still reads any file (``read_csv('/etc/passwd')``, ``read_blob`` of the catalog)
and writes anywhere (``COPY … TO``). So a user's query runs in an in-memory DuckDB that

1. holds copies of the catalog's tables, taken through a brief read-only connection, and
   views over exactly the Parquet files the catalog lists (lake) or that exist (marts);
2. is then locked down, in this order: ``allowed_paths`` set to exactly those files,
   ``enable_external_access = false``, extension autoload/autoinstall and community
   extensions off, memory/thread limits (given at connect), ``lock_configuration = true``;
3. has Python replacement scans disabled at connect, so no Python object is reachable;
4. only ever receives one statement, which must be select-like (checked with DuckDB's
   own parser): everything else is refused before it reaches the sandbox, which refuses
   file access, ``ATTACH``, ``INSTALL``/``LOAD`` and ``SET`` on its own anyway;
5. runs that statement as the subquery of ``select * from (…)``, handed to DuckDB as one
   parsed statement: ``allowed_paths`` permits *writing* the listed files too (``COPY …
   TO … (use_tmp_file false)``), so DuckDB itself must only ever be given a query.

The copied tables live only in memory, so nothing a query does can change the warehouse.

Before the query runs, the snapshot is checked against what the catalog recorded of each file
(``Warehouse.check_files``): a query that reads a table with a missing, truncated or changed
file is refused (``allow_incomplete`` answers anyway, without those files, and says so), so
``oxy sql`` never answers from a silently incomplete lake. CSV and JSON stream to their
destination a batch at a time (memory stays within ``query.memory_limit``); ``--output`` only
ever replaces a regular file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from engine import OxyError
from engine.warehouse import KIND_SCHEMAS, Problem, Warehouse, lake_view_sql, sql_rows, sql_text

FORMATS = ("table", "csv", "json", "parquet")
SELECT_LIKE = "SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT, EXPLAIN"
_COPY_FORMAT = {
    "csv": "(format csv, header true)",
    "json": "(format json, array true)",
    "parquet": "(format parquet, compression zstd)",
}
_BATCH_ROWS = 65_536
_SOURCE = "oxy_catalog_copy"  # name of the transient Arrow source while copying a table
# problems that make a table's answer wrong (a query reading it is refused); the others
# (an unlisted file, an interrupted write, bookkeeping) are warnings
_WRONG_ANSWER = ("missing", "truncated", "changed", "unreadable", "rows")
log = logging.getLogger("oxy")


@dataclass(frozen=True)
class QueryOutput:
    """What ``oxy sql`` produced.

    ``table`` holds the rows for printing (``--format table``); ``text`` holds CSV/JSON
    destined for stdout; ``output`` is the file written (``--output``). ``rows`` counts the
    rows returned or written and ``truncated`` says more rows existed beyond ``limit``.
    """

    fmt: str
    rows: int
    truncated: bool = False
    table: pa.Table | None = None
    text: str | None = None
    output: Path | None = None
    limit: int | None = None


# -- statement check ---------------------------------------------------------------------
def read_only_statement(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The single select-like statement in ``sql``, or a clear one-line refusal.

    Accepted: SELECT / WITH / FROM / VALUES / DESCRIBE / SHOW / SUMMARIZE / PIVOT /
    UNPIVOT, and EXPLAIN [ANALYZE] of one of those. DuckDB's parser decides the kind.
    """
    try:
        statements = con.extract_statements(sql)
        kinds = [s.type.name for s in statements]
    except duckdb.Error as exc:
        raise OxyError(f"SQL syntax error: {_one_line(exc)}") from None
    except ValueError:  # a statement kind the Python client cannot even name
        raise OxyError(_refusal("such")) from None
    if not statements:
        raise OxyError("no SQL statement given")
    if len(statements) > 1:
        raise OxyError(
            "refused: oxy sql runs exactly one statement at a time (remove the `;`-separated rest)"
        )
    statement = statements[0]
    text = statement.query.strip().rstrip(";").strip()
    kind = kinds[0]
    if kind == "SELECT":
        return text
    if kind == "MULTI" and re.match(r"(un)?pivot\b", _strip_comments(text), re.IGNORECASE):
        return text  # PIVOT's dynamic columns make it a MULTI statement
    if kind == "EXPLAIN":
        match = re.match(r"explain\s+(analy[sz]e\s+)?(.*)", _strip_comments(text), re.I | re.S)
        if match:
            read_only_statement(con, match.group(2))
            return text
    raise OxyError(_refusal(kind))


def _refusal(kind: str) -> str:
    return (
        f"refused: oxy sql only runs read-only queries ({SELECT_LIKE}); "
        f"{kind} statements are not allowed"
    )


def _strip_comments(text: str) -> str:
    return re.sub(r"^(\s*(--[^\n]*\n|/\*.*?\*/))*\s*", "", text, flags=re.S)


def _one_line(exc: BaseException) -> str:
    """DuckDB's message without its multi-line caret context."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


# -- the sandbox -------------------------------------------------------------------------
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _inside(warehouse: Warehouse, path: Path) -> Path | None:
    """``path`` with symlinks resolved, or None when it lies outside the warehouse."""
    real = path.resolve()
    return real if real.is_relative_to(warehouse.root) and real.is_file() else None


@dataclass
class _Snapshot:
    """What the sandbox is built from, read from the catalog in one short visit."""

    lake: dict[str, list[Path]] = field(default_factory=dict)
    marts: dict[str, list[Path]] = field(default_factory=dict)
    views: list[tuple[str, str]] = field(default_factory=list)  # other catalog views
    problems: list[Problem] = field(default_factory=list)  # the files not as recorded


def _copy_catalog(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> _Snapshot:
    """Copy every base table of the catalog into ``con``; note file lists and other views;
    check the files against the copy (a damaged file is left out of the views)."""
    snapshot = _Snapshot()
    with warehouse.visit_catalog() as catalog:
        tables = [r[0] for r in sql_rows(catalog, "meta/catalog_tables")]
        for table in tables:
            source = catalog.sql(f"select * from {_ident(table)}").to_arrow_reader(_BATCH_ROWS)
            con.register(_SOURCE, source)
            try:
                con.execute(f"create table {_ident(table)} as select * from {_SOURCE}")
            finally:
                con.unregister(_SOURCE)
        kinds = set(KIND_SCHEMAS)
        if "lake_files" in tables:
            kinds |= {r[0] for r in sql_rows(catalog, "meta/lake_kinds")}
        for kind in sorted(kinds - set(tables)):
            listed = warehouse.files(catalog, kind) if "lake_files" in tables else []
            snapshot.lake[kind] = [p for p in (_inside(warehouse, f) for f in listed) if p]
        taken = set(tables) | set(snapshot.lake)
        for name in warehouse.mart_names():
            if name not in taken:
                found = sorted((warehouse.marts_dir / name).rglob("*.parquet"))
                files = [p for p in (_inside(warehouse, f) for f in found) if p]
                if files:
                    snapshot.marts[name] = files
        taken |= set(snapshot.marts)
        snapshot.views = [
            (name, sql)
            for name, sql, _comment in sql_rows(catalog, "meta/catalog_views")
            if name not in taken
        ]
    snapshot.problems = warehouse.check_files(con)
    damaged = {
        (warehouse.root / p.path).resolve() for p in snapshot.problems if p.kind in _WRONG_ANSWER
    }
    for files in (*snapshot.lake.values(), *snapshot.marts.values()):
        files[:] = [f for f in files if f not in damaged]  # read_parquet would fail on them
    return snapshot


def _create_file_views(con: duckdb.DuckDBPyConnection, snapshot: _Snapshot) -> None:
    for kind, files in snapshot.lake.items():
        if files or kind in KIND_SCHEMAS:  # columns newer than some files read as null there
            body = lake_view_sql(kind, _inline("$files", files)[1:-1] if files else "")
            con.execute(f"create view {_ident(kind)} as {body}")
    for name, files in snapshot.marts.items():
        body = "select * from read_parquet($files, union_by_name = true, hive_partitioning = true)"
        con.execute(f"create view {_ident(name)} as {_inline(body, files)}")


def _inline(body: str, files: list[Path]) -> str:
    """View DDL takes no parameters: inline a list of oxy's own (resolved) paths."""
    listing = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
    return body.replace("$files", f"[{listing}]")


def _lock_down(con: duckdb.DuckDBPyConnection, snapshot: _Snapshot) -> None:
    """Restrict the sandbox to the snapshot's files, then freeze its configuration."""
    allowed = sorted(
        {str(p) for files in (*snapshot.lake.values(), *snapshot.marts.values()) for p in files}
    )
    con.execute("set allowed_paths = $paths", {"paths": allowed})
    con.execute("set allowed_directories = $dirs", {"dirs": []})
    con.execute("set enable_external_access = false")
    con.execute("set autoload_known_extensions = false")
    con.execute("set autoinstall_known_extensions = false")
    con.execute("set allow_community_extensions = false")
    con.execute("set allow_persistent_secrets = false")
    con.execute("set lock_configuration = true")
    state = dict(sql_rows(con, "meta/sandbox_settings"))
    expected = {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "python_enable_replacements": "false",
    }
    if state != expected:
        raise OxyError(f"internal: the query sandbox could not be locked down ({state})")


def _recreate_views(con: duckdb.DuckDBPyConnection, views: list[tuple[str, str]]) -> None:
    """Recreate the catalog's other (pure SQL) views, inside the locked sandbox."""
    pending = list(views)
    while pending:
        failed = []
        for name, sql in pending:
            try:
                (statement,) = con.extract_statements(sql)
                if statement.type.name != "CREATE":  # only ever `create view`
                    continue
                con.execute(statement)
            except (duckdb.Error, ValueError):
                failed.append((name, sql))
        if len(failed) == len(pending):
            return  # views over things the sandbox does not hold stay absent
        pending = failed


def _new_sandbox(warehouse: Warehouse) -> duckdb.DuckDBPyConnection:
    cfg = warehouse.config["query"]
    return warehouse.connect_memory(
        memory_limit=str(cfg["memory_limit"]),
        threads=int(cfg["threads"]),
        python_enable_replacements=False,
    )


def _fill_and_lock(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> _Snapshot:
    snapshot = _copy_catalog(warehouse, con)
    _create_file_views(con, snapshot)
    _lock_down(con, snapshot)
    _recreate_views(con, snapshot.views)
    return snapshot


def _table_names(con: duckdb.DuckDBPyConnection, statement: str) -> set[str] | None:
    """The tables and views ``statement`` names (parsed in the empty sandbox, before anything
    is bound), or None when DuckDB cannot tell."""
    try:
        return {n.lower() for n in con.get_table_names(statement)}
    except duckdb.Error:
        return None


def _relevant_problems(names: set[str] | None, snapshot: _Snapshot) -> list[Problem]:
    """The problems with files of the tables named ``names`` (every problem when the statement
    reads a view of the catalog's, whose inputs it does not name, or could not be parsed)."""
    wrong = [p for p in snapshot.problems if p.kind in _WRONG_ANSWER]
    if not wrong or names is None or names & {name.lower() for name, _ in snapshot.views}:
        return wrong
    return [p for p in wrong if p.table.lower() in names]


@contextlib.contextmanager
def sandbox(warehouse: Warehouse) -> Iterator[duckdb.DuckDBPyConnection]:
    """A locked-down in-memory DuckDB holding the warehouse's tables and views (see module).

    Untrusted SQL must go through :func:`run_sql` (statement check + subquery wrapping):
    the connection alone still lets ``COPY`` write the Parquet files it may read.

    Examples
    --------
    >>> with sandbox(Warehouse("warehouse")) as con:      # doctest: +SKIP
    ...     con.sql("select count(*) from readings").fetchall()
    """
    with contextlib.closing(_new_sandbox(warehouse)) as con:
        snapshot = _fill_and_lock(warehouse, con)
        for problem in snapshot.problems:
            log.warning(problem.line())
        yield con


def _execute(con: duckdb.DuckDBPyConnection, statement: str) -> duckdb.DuckDBPyRelation:
    """Run ``statement`` as the subquery of a SELECT, so DuckDB itself can only run a query.

    The sandbox allows reading exactly the warehouse's Parquet files, but DuckDB's
    ``allowed_paths`` would also let ``COPY … TO`` (``use_tmp_file false``) overwrite them.
    Wrapped as ``select * from (…)`` and handed over as one parsed statement, anything but
    a query is a syntax error, whatever the check in :func:`read_only_statement` decided.
    The function's scope holds nothing worth naming in a query (replacement scans are off).
    """
    text = _strip_comments(statement)
    explain = re.match(r"explain\s+(analy[sz]e\s+)?", text, re.IGNORECASE)
    prefix, inner = (explain.group(0), text[explain.end() :]) if explain else ("", statement)
    parsed = con.extract_statements(f"{prefix}select * from (\n{inner}\n)")
    kinds = {"EXPLAIN"} if explain else {"SELECT", "MULTI"}  # MULTI: PIVOT's expansion
    if len(parsed) != 1 or parsed[0].type.name not in kinds:
        raise OxyError(_refusal("such"))
    return con.sql(parsed[0])


@contextlib.contextmanager
def _duck_errors() -> Iterator[None]:
    try:
        yield
    except duckdb.PermissionException as exc:
        raise OxyError(
            f"refused: the query tried to reach outside the warehouse ({_one_line(exc)})"
        ) from None
    except duckdb.Error as exc:
        message = _one_line(exc)
        if "configuration has been locked" in message:
            raise OxyError(f"refused: settings cannot be changed in oxy sql ({message})") from None
        raise OxyError(f"query failed: {message}") from None


@contextlib.contextmanager
def _time_limit(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    """Interrupt the sandbox's query after ``seconds`` (``query.timeout_s``; 0 = no limit)."""
    if seconds <= 0:
        yield
        return
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        yield
    except (duckdb.Error, pa.ArrowException):
        if fired.is_set():
            raise OxyError(
                f"query stopped after {seconds:g} s (query.timeout_s): narrow it with a "
                "where clause or --limit, or raise the limit in --config"
            ) from None
        raise
    finally:
        timer.cancel()


def _check_output(warehouse: Warehouse, fmt: str, output: Path | None) -> Path | None:
    if fmt not in FORMATS:
        raise OxyError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output is None:
        if fmt == "parquet":
            raise OxyError("--format parquet needs --output PATH")
        return None
    if fmt == "table":
        raise OxyError("--output needs --format csv, json or parquet")
    target = Path(output).expanduser().resolve()
    if target.is_relative_to(warehouse.root):
        raise OxyError(f"refused: --output {output} is inside the warehouse; write it elsewhere")
    if not target.parent.is_dir():
        raise OxyError(f"--output directory {target.parent} does not exist")
    if target.is_dir():
        raise OxyError(f"--output {output} is a directory")
    _refuse_special(output, target)
    return target


def _refuse_special(output: Path, target: Path) -> None:
    """Refuse an ``--output`` that exists and is not a regular file (``os.replace`` would put
    a file in place of a device, a FIFO or a socket)."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OxyError(f"--output {output}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kinds = {
            stat.S_ISFIFO: "a FIFO",
            stat.S_ISCHR: "a character device",
            stat.S_ISBLK: "a block device",
            stat.S_ISSOCK: "a socket",
        }
        kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
        raise OxyError(
            f"refused: --output {output} is {kind}; oxy sql writes regular files only "
            "(to stream the rows, leave --output out and redirect stdout)"
        )


def run_sql(
    warehouse: Warehouse,
    sql: str,
    *,
    fmt: str = "table",
    output: Path | None = None,
    limit: int | None = None,
    stream: BinaryIO | None = None,
    allow_incomplete: bool = False,
) -> QueryOutput:
    """Run one read-only statement over the warehouse in the sandbox and deliver its rows.

    Parameters
    ----------
    warehouse
        The warehouse to query (its catalog is held only while the sandbox copies it).
    sql
        One select-like statement; anything else is refused with an ``OxyError``.
    fmt
        ``"table"`` (rows returned for printing; at most ``query.table_rows`` unless
        ``limit`` is given), ``"csv"`` / ``"json"`` (to ``stream``, to a file with ``output``,
        or else returned as ``text``) or ``"parquet"`` (needs ``output``).
    output
        File to write, atomically (staged next to it, then renamed). Must lie outside
        the warehouse and be a regular file if it exists.
    limit
        At most this many rows.
    stream
        Binary stream that CSV / JSON without ``output`` are written to a batch at a time
        (``oxy sql`` gives stdout: memory stays within ``query.memory_limit``).
    allow_incomplete
        Answer although a file of a table the query reads is missing or damaged (those files
        are left out, and each problem is logged as a warning); by default that is refused.

    Examples
    --------
    >>> run_sql(wh, "select customer, count(*) from sensors group by all")  # doctest: +SKIP
    """
    if limit is not None and limit < 0:
        raise OxyError("--limit must be zero or more")
    target = _check_output(warehouse, fmt, output)
    if fmt == "table" and limit is None:
        limit = int(warehouse.config["query"]["table_rows"])
    with contextlib.closing(_new_sandbox(warehouse)) as con:
        statement = read_only_statement(con, sql)  # refuse before touching the warehouse
        names = _table_names(con, statement)
        snapshot = _fill_and_lock(warehouse, con)
        problems = _relevant_problems(names, snapshot)
        if problems and not allow_incomplete:
            raise OxyError(_incomplete_refusal(problems))
        for problem in problems:
            log.warning(f"answer without {problem.line()}")
        timeout = float(warehouse.config["query"]["timeout_s"])
        with _duck_errors(), _time_limit(con, timeout):
            relation = _execute(con, statement)
            reader = relation.to_arrow_reader(_BATCH_ROWS)
            if fmt == "table":
                table, truncated = _take(reader, limit)
                return QueryOutput(fmt, table.num_rows, truncated, table=table, limit=limit)
            if target is not None:
                rows = _write_file(warehouse, reader, fmt, target, limit)
                return QueryOutput(fmt, rows, output=target, limit=limit)
            if stream is not None:
                rows = _stream_text(warehouse, reader, fmt, stream, limit)
                return QueryOutput(fmt, rows, limit=limit)
            buffer = io.BytesIO()
            rows = _stream_text(warehouse, reader, fmt, buffer, limit)
            return QueryOutput(fmt, rows, text=buffer.getvalue().decode("utf-8"), limit=limit)


def _incomplete_refusal(problems: list[Problem]) -> str:
    shown = "\n  ".join(p.line() for p in problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    return (
        f"refused: the answer would be incomplete, {len(problems)} file(s) of the tables it "
        f"reads are not as the catalog recorded them (see `oxy check`):\n  {shown}{more}\n"
        "(--allow-incomplete answers without them)"
    )


def _take(reader: pa.RecordBatchReader, limit: int | None) -> tuple[pa.Table, bool]:
    """Up to ``limit`` rows, and whether more existed."""
    batches: list[pa.RecordBatch] = []
    seen = 0
    for batch in reader:
        batches.append(batch)
        seen += batch.num_rows
        if limit is not None and seen > limit:
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if limit is not None and table.num_rows > limit:
        return table.slice(0, limit), True
    return table, False


def _batches(reader: pa.RecordBatchReader, limit: int | None) -> Iterator[pa.RecordBatch]:
    """The reader's batches, cut at ``limit`` rows."""
    left = limit
    for batch in reader:
        if left is not None:
            if left <= 0:
                return
            batch = batch.slice(0, left)
            left -= batch.num_rows
        yield batch


def _stream_text(
    warehouse: Warehouse,
    reader: pa.RecordBatchReader,
    fmt: str,
    out: BinaryIO,
    limit: int | None,
) -> int:
    """Write ``reader``'s rows to ``out`` as CSV (with a header) or as one JSON array, a batch
    at a time: DuckDB formats each batch (the same text one COPY of the whole result writes)
    into a scratch file that is appended to ``out`` and emptied again. Returns the rows."""
    writer = _trusted(warehouse)  # holds nothing but one batch of the result
    rows = 0
    with tempfile.TemporaryDirectory(prefix="oxy-sql-") as tmp:
        scratch = Path(tmp) / f"batch.{fmt}"
        try:
            if fmt == "json":
                out.write(b"[\n\t")
            first = True
            for batch in _chain_empty(_batches(reader, limit), reader.schema):
                writer.register("query_batch", pa.Table.from_batches([batch], schema=reader.schema))
                options = (
                    f"(format csv, header {'true' if first else 'false'})"
                    if fmt == "csv"
                    else "(format json)"
                )
                writer.execute(
                    f"copy (select * from query_batch) to $path {options}", {"path": str(scratch)}
                )
                writer.unregister("query_batch")
                if fmt == "json" and batch.num_rows:
                    if not first and rows:
                        out.write(b",\n\t")
                    _copy_json_lines(scratch, out)
                elif fmt == "csv":
                    with scratch.open("rb") as fh:
                        shutil.copyfileobj(fh, out)
                rows += batch.num_rows
                first = False
            if fmt == "json":
                out.write(b"\n]\n")
            out.flush()
        finally:
            writer.close()
    return rows


def _chain_empty(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``batches``, or one empty batch when there is none (a CSV still gets its header)."""
    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        yield pa.RecordBatch.from_pylist([], schema=schema)


def _copy_json_lines(scratch: Path, out: BinaryIO) -> None:
    """Newline-delimited JSON rows as the inside of DuckDB's JSON array (`,\n\t` between)."""
    with scratch.open("rb") as fh:
        previous: bytes | None = None
        for line in fh:
            if previous is not None:
                out.write(previous + b",\n\t")
            previous = line.rstrip(b"\n")
        if previous is not None:
            out.write(previous)


def _trusted(warehouse: Warehouse) -> duckdb.DuckDBPyConnection:
    """A plain in-memory DuckDB (``query`` limits) that formats the result's rows."""
    cfg = warehouse.config["query"]
    return warehouse.connect_memory(
        memory_limit=str(cfg["memory_limit"]), threads=int(cfg["threads"])
    )


def _write_file(
    warehouse: Warehouse, reader: pa.RecordBatchReader, fmt: str, target: Path, limit: int | None
) -> int:
    """Stream ``reader`` into ``target`` (staged beside it, then ``os.replace``d)."""
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if fmt == "parquet":
            writer = _trusted(warehouse)  # trusted: holds nothing but the result stream
            try:
                writer.register("query_result", reader)
                clip = "" if limit is None else f" limit {int(limit)}"
                rows = writer.execute(
                    f"copy (select * from query_result{clip}) to $path {_COPY_FORMAT[fmt]}",
                    {"path": str(staged)},
                ).fetchall()[0][0]
            finally:
                writer.close()
            pq.read_metadata(staged)  # a complete footer before it becomes visible
        else:
            with staged.open("xb") as fh:
                rows = _stream_text(warehouse, reader, fmt, fh, limit)
                os.fsync(fh.fileno())
        _refuse_special(target, target)  # it may have become one while the query ran
        os.replace(staged, target)
        return int(rows)
    except OSError as exc:
        raise OxyError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        staged.unlink(missing_ok=True)


# -- rendering ---------------------------------------------------------------------------
def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def render_table(result: QueryOutput, *, column_width: int = 40) -> str:
    """Aligned text table of ``result.table``: numbers right-aligned, long values cut."""
    table = result.table
    if table is None:
        return ""
    names = table.column_names
    numeric = [
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in table.schema.types
    ]
    body = [[_cell(v, column_width) for v in row.values()] for row in table.to_pylist()]
    heads = [_cell(n, column_width) for n in names]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    plural = "row" if result.rows == 1 else "rows"
    if result.truncated:
        out.append(
            f"({result.rows} {plural} shown; more exist: raise --limit, or write them all "
            "with --format csv --output FILE)"
        )
    else:
        out.append(f"({result.rows} {plural})")
    return "\n".join(out)


def table_payload(result: QueryOutput) -> dict[str, Any]:
    """``--json`` form of a printed table."""
    table = result.table
    return {
        "columns": table.column_names if table is not None else [],
        "rows": table.to_pylist() if table is not None else [],
        "truncated": result.truncated,
    }


# -- status ------------------------------------------------------------------------------
_LOG_TIME_COLUMNS = ("finished_at", "ingested_at", "started_at", "created_at", "time")


def warehouse_status(warehouse: Warehouse, *, last_ingests: int | None = None) -> dict[str, Any]:
    """A summary of the warehouse: customers, sensors, rows, time span, quarantine, ingests, marts.

    Works on a missing or empty warehouse (``exists`` false / zero rows, with a ``message``)
    and on catalogs that do not have ``ingest_log`` or ``quarantine`` yet (``None``).

    Examples
    --------
    >>> warehouse_status(Warehouse("warehouse"))["rows"]   # doctest: +SKIP
    1440
    """
    if last_ingests is None:
        last_ingests = int(warehouse.config["query"]["status_ingests"])
    status: dict[str, Any] = {
        "warehouse": str(warehouse.root),
        "exists": warehouse.exists(),
        "customers": [],
        "sensors": 0,
        "rows": 0,
        "first_ts": None,
        "last_ts": None,
        "quarantined": None,
        "quarantine_reasons": [],
        "ingests": [],
        "marts": [],
        "problems": [],
        "message": None,
    }
    if not status["exists"]:
        status["message"] = (
            f"no warehouse at {warehouse.root} yet: run `oxy ingest FILE --source NAME` "
            "(or `make demo`), or pass --warehouse DIR"
        )
        return status
    # The sandbox, not the catalog's own views: it holds the catalog only for the copy and
    # reads the lake by paths under the current root (a moved warehouse still works). Files
    # that are not as the catalog recorded them are left out, and listed under "problems".
    with contextlib.closing(_new_sandbox(warehouse)) as con, _duck_errors():
        snapshot = _fill_and_lock(warehouse, con)
        status["problems"] = [p.to_dict() for p in snapshot.problems]
        relations = {
            r[0]: set(r[1]) for r in con.execute(sql_text("status/relation_columns")).fetchall()
        }
        status["customers"] = _customers(con, relations)
        status["sensors"] = sum(c["sensors"] for c in status["customers"])
        status["rows"] = sum(c["rows"] for c in status["customers"])
        spans = [c for c in status["customers"] if c["first_ts"] is not None]
        if spans:
            status["first_ts"] = min(c["first_ts"] for c in spans)
            status["last_ts"] = max(c["last_ts"] for c in spans)
        if "quarantine" in relations:
            status["quarantined"] = con.execute(sql_text("status/quarantine_rows")).fetchall()[0][0]
            if "reason" in relations["quarantine"]:
                status["quarantine_reasons"] = [
                    {"reason": reason, "rows": rows}
                    for reason, rows in con.execute(
                        sql_text("status/quarantine_reasons")
                    ).fetchall()
                ]
        if "ingest_log" in relations and last_ingests > 0:
            status["ingests"] = _last_ingests(con, relations["ingest_log"], last_ingests)
    status["marts"] = _marts(warehouse)
    if status["rows"] == 0:
        status["message"] = (
            "the warehouse holds no readings yet: run `oxy ingest FILE --source NAME`"
        )
    return status


def _customers(
    con: duckdb.DuckDBPyConnection, relations: dict[str, set[str]]
) -> list[dict[str, Any]]:
    customers: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return customers.setdefault(
            name, {"customer": name, "sensors": 0, "rows": 0, "first_ts": None, "last_ts": None}
        )

    if {"customer", "sensor_id"} <= relations.get("sensors", set()):
        for customer, sensors in con.execute(sql_text("status/sensors_per_customer")).fetchall():
            entry(customer)["sensors"] = sensors
    if {"customer", "ts"} <= relations.get("readings", set()):
        for customer, rows, first_ts, last_ts in con.execute(
            sql_text("status/readings_per_customer")
        ).fetchall():
            entry(customer).update(rows=rows, first_ts=first_ts, last_ts=last_ts)
    return [customers[k] for k in sorted(customers, key=str)]


def _last_ingests(
    con: duckdb.DuckDBPyConnection, columns: set[str], limit: int
) -> list[dict[str, Any]]:
    order = next((c for c in _LOG_TIME_COLUMNS if c in columns), None)
    by = f"{_ident(order)} desc nulls last" if order else "rowid desc"
    result = con.execute(f"select * from ingest_log order by {by} limit $n", {"n": limit})
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _marts(warehouse: Warehouse) -> list[dict[str, Any]]:
    marts = []
    for name in warehouse.mart_names():
        files = sorted((warehouse.marts_dir / name).rglob("*.parquet"))
        rows = 0
        for f in files:
            with contextlib.suppress(OSError, pa.ArrowInvalid):
                rows += pq.read_metadata(f).num_rows
        updated = max(f.stat().st_mtime for f in files)
        marts.append(
            {
                "name": name,
                "rows": rows,
                "files": len(files),
                "updated": datetime.fromtimestamp(updated, tz=UTC).replace(tzinfo=None),
            }
        )
    return marts


def render_status(status: dict[str, Any], *, column_width: int = 40) -> str:
    """The human form of :func:`warehouse_status`."""
    lines = [f"warehouse  {status['warehouse']}"]
    if not status["exists"]:
        return "\n".join([*lines, status["message"]])
    span = (
        f"{status['first_ts']:%Y-%m-%d %H:%M} .. {status['last_ts']:%Y-%m-%d %H:%M} UTC"
        if status["first_ts"] is not None
        else "-"
    )
    quarantined = "-" if status["quarantined"] is None else f"{status['quarantined']:,}"
    problems = status.get("problems") or []
    if problems:
        lines.append(
            f"PROBLEMS   {len(problems)}: files not as the catalog recorded them; the figures "
            "below leave them out (see `oxy check`)"
        )
        lines += [f"  {Problem(**p).line()}" for p in problems[:20]]
        if len(problems) > 20:
            lines.append(f"  ... and {len(problems) - 20} more")
    lines += [
        f"customers  {len(status['customers'])}",
        f"sensors    {status['sensors']:,}",
        f"readings   {status['rows']:,} rows",
        f"time span  {span}",
        f"quarantine {quarantined} rows",
    ]
    if status["message"]:
        lines.append(status["message"])
    if status["customers"]:
        lines += ["", "per customer"]
        lines.append(_render_records(status["customers"], column_width))
    if status["quarantine_reasons"]:
        lines += ["", "quarantine reasons"]
        lines.append(_render_records(status["quarantine_reasons"], column_width))
    if status["ingests"]:
        lines += ["", f"last {len(status['ingests'])} ingests"]
        shown = [_ingest_summary(r) for r in status["ingests"]]
        lines.append(_render_records(shown, column_width))
    lines += ["", "marts" if status["marts"] else "marts      none yet"]
    if status["marts"]:
        lines.append(_render_records([_to_seconds(m) for m in status["marts"]], column_width))
    return "\n".join(lines)


_INGEST_COLUMNS = (
    "ingest_id",  # what `oxy forget` takes
    "finished_at",
    "source",
    "path",
    "rows_read",
    "accepted",
    "duplicates",
    "quarantined",
    "status",
)


def _ingest_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The columns of an ``ingest_log`` row worth a line on screen (all, if none known)."""
    picked = {k: row[k] for k in _INGEST_COLUMNS if k in row}
    if "path" in picked and picked["path"]:
        picked["path"] = Path(str(picked["path"])).name
    return _to_seconds(picked or {k: v for k, v in row.items() if "sha" not in k.lower()})


def _to_seconds(record: dict[str, Any]) -> dict[str, Any]:
    """Timestamps cut to whole seconds, for display."""
    return {
        k: v.replace(microsecond=0) if isinstance(v, datetime) else v for k, v in record.items()
    }


def _render_records(records: list[dict[str, Any]], column_width: int) -> str:
    table = pa.Table.from_pylist(records)
    text = render_table(
        QueryOutput("table", table.num_rows, table=table), column_width=column_width
    )
    return "\n".join(text.splitlines()[:-1])  # without the "(N rows)" footer
