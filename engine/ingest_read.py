"""Reading one export with its source mapping: the file's layout and the SQL that turns its
columns into raw reading rows (``sensor_id, id_empty, raw_time, time_num, time_us, raw_value,
value_num, raw_temperature, raw_salinity``) for ``sql/staging/readings_parsed.sql``.

The dialect comes from the mapping, never from sniffing: a CSV file's header is found by
skipping ``skip_rows`` lines, comment lines and blank lines; DuckDB then reads every field as
text with that delimiter and quote, the columns named by position (``c0``, ``c1`` ...), so a
stray quote or an odd line near the top cannot change how the rest is read. Identifiers
that reach SQL text are column positions or quoted Parquet names; every value (template
literals, the file stem, column names a wide file puts into sensor ids) is a bound parameter.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine import OxyError
from engine.config import Config, SourceMapping, time_range

_FIELD = re.compile(r"\{([^{}]*)\}")
_RESERVED = ("stem", "file", "column")
# a pattern that can match no real timestamp, for an unused list of strftime patterns
_NO_PATTERN = "%Y-%m-%d oxy-unused %H"
_MAX_OFFSET_US = 14 * 3600 * 1_000_000  # real UTC offsets lie within -12:00 .. +14:00
_EPOCH_US = {"epoch_s": 1e6, "epoch_ms": 1e3, "epoch_us": 1.0}
_EPOCH = datetime(1970, 1, 1)
# format kinds as the parse SQL numbers them (sql/staging/readings_parsed.sql)
_KIND_CODES = {"typed": 0, "iso": 1, "epoch": 2, "excel": 3, "zoned": 4, "naive": 5}
_NUMBER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
}


@dataclass(frozen=True)
class CsvLayout:
    """Where a CSV file's data starts (from the mapping, not sniffed)."""

    columns: list[str]  # header names (stripped; a BOM removed)
    header_line: int  # 1-based physical line of the header
    skip: int  # lines DuckDB skips to reach the first data line (its count: comment lines not)


def mixed_line_breaks(path: Path, sample: int = 1 << 20) -> bool:
    """Whether the first ``sample`` bytes break lines in more than one way (a lone CR, or
    CRLF beside LF): such a file is read from a normalised copy."""
    with path.open("rb") as fh:
        head = fh.read(sample)
    crlf = head.count(b"\r\n")
    return head.count(b"\r") != crlf or (crlf and head.count(b"\n") != crlf)


def csv_layout(path: Path, mapping: SourceMapping, *, quote: str) -> CsvLayout:
    """Find the header: skip ``skip_rows`` lines, then comment and blank lines.

    Only the lines up to the header are decoded (a bad byte further down is the reader's to
    report, with its line). Raises a one-line :class:`OxyError` when those lines are not
    valid text in the mapping's encoding or the file ends before a header.
    """
    codec = codecs.lookup(mapping.encoding).name
    comment = mapping.comment
    counted = 0  # lines DuckDB counts for `skip` (with a comment prefix set, not comment lines)
    line_no = 0
    wide = codec.startswith(("utf-16", "utf-32"))  # lines cannot be split as bytes

    def lines() -> Iterator[str]:
        if wide:
            with path.open(encoding=mapping.encoding, newline="") as text:
                yield from text
            return
        with path.open("rb") as raw:
            for chunk in raw:
                yield chunk.decode(codec)

    try:
        for line in lines():
            line_no += 1
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            is_comment = comment is not None and line.startswith(comment)
            if not is_comment:
                counted += 1
            if line_no <= mapping.skip_rows or is_comment or not line.strip("\r\n\t "):
                continue
            break
        else:
            raise OxyError(
                f"{path}: no header line after {line_no} line(s) (skip_rows = "
                f"{mapping.skip_rows}" + (f", comment = {comment!r})" if comment else ")")
            )
    except UnicodeDecodeError as exc:
        raise OxyError(
            f"{path}: not valid {mapping.encoding} text (line {line_no + 1}: {exc.reason}); "
            "set `encoding` in the source mapping"
        ) from None
    fields = line.rstrip("\r\n").split(mapping.delimiter)
    if quote:
        with contextlib.suppress(csv.Error, StopIteration):  # a broken quote: split plainly
            fields = next(
                csv.reader([line.rstrip("\r\n")], delimiter=mapping.delimiter, quotechar=quote)
            )
    columns = [f.strip() for f in fields]
    return CsvLayout(columns=columns, header_line=line_no, skip=counted)


def time_bounds(config: Config, now: datetime) -> tuple[datetime, datetime]:
    """``ingest.time_range`` as two UTC instants (``"1990-01-01"``, ``"now + 1 day"`` ...)."""
    return time_range(config["ingest"]["time_range"], now)


def parse_params(
    mapping: SourceMapping, config: Config, kind: str, now: datetime
) -> dict[str, Any]:
    """The parameters of ``sql/staging/readings_parsed.sql`` for one mapping."""
    ingest = config["ingest"]
    kinds: list[str] = []
    zoned: list[str] = []
    naive: list[str] = []
    epoch = [f for f in mapping.time_formats if f in _EPOCH_US]
    if len(set(epoch)) > 1:
        raise OxyError(f"source {mapping.name!r}: time_format lists more than one epoch unit")
    for fmt in mapping.time_formats:
        if fmt in _EPOCH_US:
            name = "epoch"
        elif fmt in ("iso", "excel"):
            name = fmt
        elif "%z" in fmt or "%Z" in fmt:
            name = "zoned"
            zoned.append(fmt)
        else:
            name = "naive"
            naive.append(fmt)
        if name not in kinds:
            kinds.append(name)
    limits = ingest[mapping.canonical_unit]
    lo, hi = time_bounds(config, now)
    sentinels = [float(s) for s in ingest["sentinels"]]
    low, high = float(limits["min"]), float(limits["max"])
    codes = [_KIND_CODES[k] for k in kinds]
    return {
        "formats": codes,
        "format_count": len(codes),
        "first_kind": codes[0],
        **{f"use_{k}": k in kinds for k in _KIND_CODES if k != "typed"},
        "epoch_us": _EPOCH_US[epoch[0]] if epoch else 1e6,
        "patterns_zoned": zoned or [_NO_PATTERN + "%z"],
        "patterns_naive": naive or [_NO_PATTERN],
        "local_zone": mapping.naive_time_zone != "UTC",
        "min_us": _epoch_us(lo),
        "max_us": _epoch_us(hi),
        "range_detail": f"outside {lo:%Y-%m-%d} .. {hi:%Y-%m-%d}",
        "max_offset_us": _MAX_OFFSET_US,
        "na_values": na_values(mapping, config),
        "decimal": mapping.decimal,
        "sentinels": sentinels,
        # only a sentinel inside the plausible range needs a test of every good row
        "sentinels_inside": any(low <= s * mapping.unit_factor <= high for s in sentinels),
        "unit_factor": mapping.unit_factor,
        "min_value": low,
        "max_value": high,
        "min_temperature": float(ingest["temperature_c"]["min"]),
        "max_temperature": float(ingest["temperature_c"]["max"]),
        "min_salinity": float(ingest["salinity"]["min"]),
        "max_salinity": float(ingest["salinity"]["max"]),
    }


def _epoch_us(instant: datetime) -> int:
    return round((instant - _EPOCH).total_seconds() * 1e6)


def na_values(mapping: SourceMapping, config: Config) -> list[str]:
    """Texts that mean "no value" for this source."""
    values = mapping.na_values
    return list(values if values is not None else config["ingest"]["na_values"])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _trimmed(expr: str) -> str:
    # trim() copies every string: only call it on text with a space (contains() is cheap)
    return f"(case when contains({expr}, ' ') then trim({expr}) else {expr} end)"


def _unquoted(expr: str) -> str:
    """A field read without quote handling: an enclosing pair of quotes removed."""
    return (
        f"(case when starts_with({expr}, '\"') and ends_with({expr}, '\"') and length({expr}) > 1 "
        f"then replace({expr}[2:-2], '\"\"', '\"') else {expr} end)"
    )


@dataclass(frozen=True)
class RawRows:
    """The ``raw_rows`` select for one file, its parameters, and how readings map to rows."""

    select: str
    params: dict[str, Any]
    width: int  # readings per record (value columns of a wide file)
    value_columns: list[str]
    parts: bool  # sensor_id holds the raw identity parts, joined with chr(31)


def raw_rows(
    mapping: SourceMapping,
    columns: list[str],
    path: Path,
    source_sql: str,
    *,
    positional: bool,
    unquote: bool,
    types: list[str] | None = None,
) -> RawRows:
    """The select producing raw reading rows from ``source_sql`` (a ``read_csv`` with
    positional column names ``c0``... when ``positional``, else a ``read_parquet`` whose
    column ``types`` let numbers and timestamps pass typed: no round trip through text)."""
    m = mapping
    index = _column_index(columns)

    def kind(name: str) -> str:
        duck = (types[index[name]] if types else "VARCHAR").upper()
        if duck == "TIMESTAMP WITH TIME ZONE":
            return "instant"
        if duck.startswith("TIMESTAMP"):
            return "timestamp"
        if duck in _NUMBER_TYPES or duck.startswith("DECIMAL"):
            return "number"
        return "text"

    def typed(name: str) -> str:
        column = f"c{index[name]}" if positional else _ident(columns[index[name]])
        return column

    def ref(name: str) -> str:
        column = f"c{index[name]}" if positional else _ident(columns[index[name]])
        expr = f"cast({column} as varchar)"
        return _unquoted(expr) if unquote else expr

    groups = _file_groups(m, path)
    fields = m.template_fields
    literal_fields = {"stem", "file", "column", *groups}
    id_columns = list(
        dict.fromkeys([*m.sensor_columns, *(f for f in fields if f not in literal_fields)])
    )
    id_of = {c: f"id_{i}" for i, c in enumerate(id_columns)}
    other = [*m.time_fields, *id_columns]
    if m.temperature_column:
        other.append(m.temperature_column)
    if isinstance(m.salinity, str):
        other.append(m.salinity)
    missing = [c for c in dict.fromkeys(other) if c not in index]
    if missing:
        unknown = [c for c in missing if c in fields]
        if unknown:
            raise OxyError(
                f"{path}: sensor_id field {{{unknown[0]}}} of source {m.name!r} is neither a "
                f"column of the file nor one of {list(_RESERVED)} or a file_pattern group "
                f"(file has {columns})"
            )
        raise OxyError(
            f"{path}: column(s) {missing} of source {m.name!r} not found (file has {columns})"
        )
    values = _value_columns(m, columns, set(other), path)
    params: dict[str, Any] = {}
    wide = len(values) > 1

    # inner: the raw pieces of each record (a wide file: one row per value column)
    trim = _trimmed if m.sensor_id is not None else (lambda expr: expr)
    pieces = [f"{trim(ref(c))} as {id_of[c]}" for c in id_columns]
    times = [ref(c) for c in m.time_fields]
    time_kind = kind(m.time_fields[0]) if len(times) == 1 else "text"
    # a number is a time as a number only under epoch and Excel formats (202407011200 under
    # "%Y%m%d%H%M" is read from its digits)
    numeric_formats = all(f in _EPOCH_US or f == "excel" for f in m.time_formats)
    time_num = time_us = "null"
    if time_kind == "number" and numeric_formats:  # epoch numbers or Excel serials
        pieces.append("cast(null as varchar) as raw_time")
        time_num = f"cast({typed(m.time_fields[0])} as double)"
    elif time_kind in ("timestamp", "instant"):  # typed times: no format needed
        column = typed(m.time_fields[0])
        # an infinite timestamp has no epoch: its text ('infinity') says it is implausible
        pieces.append(
            f"(case when not isfinite({column}) then {ref(m.time_fields[0])} end) as raw_time"
        )
        time_us = f"epoch_us({column})"
    elif len(times) == 1:
        pieces.append(f"{times[0]} as raw_time")
    else:
        any_null = " or ".join(f"{t} is null" for t in times)
        joined_time = f"concat_ws(' ', {', '.join(times)})"
        pieces.append(f"(case when {any_null} then null else {joined_time} end) as raw_time")
    numbers = all(kind(c) == "number" for c in values)  # typed values pass as doubles
    value_num = "null"
    if wide:
        if numbers:
            listed = ", ".join(f"cast({typed(c)} as double)" for c in values)
            pieces.append("cast(null as varchar) as raw_value")
            pieces.append(f"unnest([{listed}]) as value_num")
            value_num = "value_num"
        else:
            pieces.append(f"unnest([{', '.join(ref(c) for c in values)}]) as raw_value")
        pieces.append("unnest($value_names) as value_name")
        params["value_names"] = values
    elif numbers:
        pieces.append("cast(null as varchar) as raw_value")
        value_num = f"cast({typed(values[0])} as double)"
    else:
        pieces.append(f"{ref(values[0])} as raw_value")
    if value_num != "value_num":
        pieces.append(f"cast({value_num} as double) as value_num")
    pieces.append(f"cast({time_num} as double) as time_num")
    pieces.append(f"cast({time_us} as bigint) as time_us")
    params["typed_wall"] = time_kind == "timestamp"  # a naive timestamp is a wall time
    temperature = ref(m.temperature_column) if m.temperature_column else "cast(null as varchar)"
    salinity = ref(m.salinity) if isinstance(m.salinity, str) else "cast(null as varchar)"
    pieces += [f"{temperature} as raw_temperature", f"{salinity} as raw_salinity"]
    inner = f"select {', '.join(pieces)} from {source_sql}"

    # outer: the sensor id from columns, a template, or both (wide: the column name last)
    column_name = "value_name" if wide else "$value_name"
    if m.sensor_id is not None:
        parts: list[str] = []
        literal = 0

        def lit(text: str) -> None:
            nonlocal literal
            if text:
                params[f"id_lit_{literal}"] = text
                parts.append(f"$id_lit_{literal}")
                literal += 1

        text = m.sensor_id.replace("{{", "\x00").replace("}}", "\x01")
        position = 0
        for match in _FIELD.finditer(text):
            lit(_unescape(text[position : match.start()]))
            field = match.group(1)
            if field == "stem":
                lit(path.stem)
            elif field == "file":
                lit(path.name)
            elif field in groups:
                lit(groups[field] or "")
            elif field == "column":
                parts.append(column_name)
                params.setdefault("value_name", values[0])
            else:
                parts.append(id_of[field])
            position = match.end()
        lit(_unescape(text[position:]))
        if wide and "column" not in fields:
            lit(m.sensor_separator)
            parts.append(column_name)
        sensor = f"concat({', '.join(parts)})" if len(parts) != 1 else parts[0]
    else:
        # identity parts as read, joined with a unit separator: the scan trims them, tests them
        # for emptiness and joins them with '|' once per distinct id, not per row
        raw_parts = [f"id_{i}" for i in range(len(id_columns))]
        joined = raw_parts + ([column_name] if wide else [])
        sensor = joined[0] if len(joined) == 1 else f"concat({', chr(31), '.join(joined)})"
    if "$value_name" in sensor and "value_name" not in params:
        params["value_name"] = values[0]
    empty = "false"
    if m.sensor_id is not None:
        empty = " or ".join(f"coalesce({p}, '') = ''" for p in id_of.values()) or "false"
    select = (
        f"select {sensor} as sensor_id, ({empty}) as id_empty, raw_time, time_num, time_us, "
        f"raw_value, value_num, raw_temperature, raw_salinity from ({inner})"
    )
    return RawRows(
        select=select,
        params=params,
        width=len(values),
        value_columns=values,
        parts=m.sensor_id is None,
    )


class _ColumnIndex(dict[str, int]):
    """Column positions by name: the exact name, else the one column whose name differs
    only in case (exports of one logger spell ``dateTime`` / ``DateTime``)."""

    def __init__(self, columns: list[str]) -> None:
        super().__init__()
        self.folded: dict[str, list[int]] = {}
        for i, name in enumerate(columns):
            self.setdefault(name, i)
            self.folded.setdefault(name.casefold(), []).append(i)

    def __missing__(self, name: str) -> int:
        found = self.folded.get(name.casefold(), [])
        if len(found) != 1:
            raise KeyError(name)
        return found[0]

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        return isinstance(name, str) and len(self.folded.get(name.casefold(), [])) == 1


def _column_index(columns: list[str]) -> _ColumnIndex:
    return _ColumnIndex(columns)


def _unescape(text: str) -> str:
    return text.replace("\x00", "{").replace("\x01", "}")


def _file_groups(mapping: SourceMapping, path: Path) -> dict[str, str | None]:
    if mapping.file_pattern is None:
        return {}
    found = re.fullmatch(mapping.file_pattern, path.stem)
    if found is None:
        raise OxyError(
            f"{path}: the file name {path.stem!r} does not match file_pattern "
            f"{mapping.file_pattern!r} of source {mapping.name!r}"
        )
    return found.groupdict()


def _value_columns(
    mapping: SourceMapping, columns: list[str], taken: set[str], path: Path
) -> list[str]:
    """The value columns: listed names in order, glob patterns expanded in file order."""
    out: list[str] = []
    for entry in mapping.value_fields:
        if any(ch in entry for ch in "*?["):
            found = [
                c
                for c in columns
                if fnmatch.fnmatchcase(c.casefold(), entry.casefold())
                and c not in taken
                and c not in out
            ]
            if not found:
                raise OxyError(
                    f"{path}: no column matches value_columns pattern {entry!r} of source "
                    f"{mapping.name!r} (file has {columns})"
                )
            out += found
        elif entry not in _column_index(columns):
            raise OxyError(
                f"{path}: column(s) [{entry!r}] of source {mapping.name!r} not found "
                f"(file has {columns})"
            )
        else:
            out.append(columns[_column_index(columns)[entry]])
    return out
