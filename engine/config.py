"""Configuration: built-in defaults (``engine/defaults.toml``) overlaid by one user TOML file.

Every default lives in ``defaults.toml``. A user file may override any known key and may
declare ``[sources.NAME]`` tables (customer export mappings); unknown keys are refused so
that a typo never silently falls back to a default.
"""

from __future__ import annotations

import codecs
import copy
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine import OxyError

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
# The canonical units of readings; a source may deliver others, converted at ingest.
UNITS = ("mg/L", "%sat")
# source unit -> (canonical unit, factor): canonical value = source value x factor
# (DESIGN.md, "Physical reference": ppm ~ mg/L; umol/L / 31.25 = mg/L; mL/L x 1.429 = mg/L)
SOURCE_UNITS: dict[str, tuple[str, float]] = {
    "mg/L": ("mg/L", 1.0),
    "%sat": ("%sat", 1.0),
    "ppm": ("mg/L", 1.0),
    "\u00b5mol/L": ("mg/L", 1 / 31.25),  # micro sign
    "\u03bcmol/L": ("mg/L", 1 / 31.25),  # Greek mu
    "umol/L": ("mg/L", 1 / 31.25),
    "mL/L": ("mg/L", 1.429),
}
TIME_FORMATS = ("iso", "epoch_s", "epoch_ms", "epoch_us", "excel")
FILE_FORMATS = ("csv", "parquet")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

_SOURCE_REQUIRED = ("customer", "timezone", "unit")
# every key of [sources.NAME], with what it takes (the refusal of an unknown key lists them)
SOURCE_KEYS: dict[str, str] = {
    "customer": "owner of the sensors",
    "timezone": "IANA zone of the site (hour-of-day baselines)",
    "unit": "unit of the values: " + ", ".join(sorted(set(SOURCE_UNITS) - {"\u03bcmol/L"})),
    "sensor_columns": "columns joined with '|' into sensor_id",
    "sensor_id": "constant id or template, e.g. 'lro|{site}|do' or '{stem}|{Tag}'",
    "file_pattern": "regex over the file stem; its named groups are template fields",
    "sensor_separator": "separator of tag levels in an id",
    "time_column": "one time column",
    "time_columns": "several time columns joined with a space (date, time)",
    "time_format": "iso | epoch_s | epoch_ms | epoch_us | excel | strftime pattern, or a list",
    "naive_time_zone": "zone of times that carry no offset",
    "value_column": "one value column",
    "value_columns": "several value columns (names or glob patterns), one sensor each",
    "temperature_column": "water temperature in degC, carried into readings",
    "salinity": "salinity (PSU): a column name or a number",
    "format": "csv | parquet (default: by file extension)",
    "delimiter": "CSV field separator",
    "quote": "CSV quote character ('' for none)",
    "decimal": "decimal separator of numbers",
    "encoding": "text encoding",
    "comment": "lines starting with this are skipped",
    "skip_rows": "lines before the header to skip",
    "na_values": "texts meaning 'no value' (default ingest.na_values)",
}


def _names(raw: Any, key: str, name: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(c, str) and c for c in raw):
        raise OxyError(f"source {name!r}: {key} must be a name or a list of names")
    return tuple(raw)


@dataclass(frozen=True)
class SourceMapping:
    """How one customer export maps onto canonical readings (DESIGN.md, "Source mappings").

    Identity comes from ``sensor_columns`` (joined with ``|``), from ``sensor_id`` (a
    constant or a template over the file name and columns), or both (the template may name
    the columns); wide files list several ``value_columns``, each a sensor whose id ends with
    the column name. Time comes from one column or several (joined with a space), read with
    one format or the first of several that fits.

    Examples
    --------
    >>> m = SourceMapping.from_dict("fjordras", {"customer": "fjordras",
    ...     "timezone": "Europe/Oslo", "unit": "mg/L", "sensor_columns": ["Tag"],
    ...     "time_column": "Timestamp", "value_column": "Value"})
    >>> m.time_format, m.naive_time_zone
    ('iso', 'UTC')
    >>> SourceMapping.from_dict("lro", {"customer": "lro", "timezone": "America/Denver",
    ...     "unit": "ppm", "sensor_id": "lro|{site}|do", "file_pattern": "(?P<site>[A-Za-z]+)",
    ...     "time_column": "datetime", "value_column": "do"}).template_fields
    ('site',)
    """

    name: str
    customer: str
    timezone: str
    unit: str
    sensor_columns: tuple[str, ...] = ()
    time_column: str | None = None
    value_column: str | None = None
    time_format: str | tuple[str, ...] = "iso"
    naive_time_zone: str = "UTC"
    sensor_separator: str = "|"
    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"
    sensor_id: str | None = None
    file_pattern: str | None = None
    time_columns: tuple[str, ...] = ()
    value_columns: tuple[str, ...] = ()
    temperature_column: str | None = None
    salinity: float | str | None = None
    format: str | None = None
    quote: str = '"'
    comment: str | None = None
    skip_rows: int = 0
    na_values: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> SourceMapping:
        unknown = set(raw) - set(SOURCE_KEYS)
        if unknown:
            raise OxyError(
                f"source {name!r}: unknown key(s) {sorted(unknown)}; "
                f"valid keys: {', '.join(SOURCE_KEYS)}"
            )
        missing = [k for k in _SOURCE_REQUIRED if k not in raw]
        for one, many in (("time_column", "time_columns"), ("value_column", "value_columns")):
            if one not in raw and many not in raw:
                missing.append(one)
        if "sensor_columns" not in raw and "sensor_id" not in raw:
            missing.append("sensor_columns")
        if missing:
            raise OxyError(f"source {name!r}: missing key(s) {missing}")
        for one, many in (("time_column", "time_columns"), ("value_column", "value_columns")):
            if one in raw and many in raw:
                raise OxyError(f"source {name!r}: give {one} or {many}, not both")
        sensor_columns = _names(raw.get("sensor_columns", []), "sensor_columns", name)
        if sensor_columns and "sensor_id" in raw:
            raise OxyError(
                f"source {name!r}: give sensor_columns or sensor_id, not both "
                '(a sensor_id template may name columns: "{Tag}|do")'
            )
        if "sensor_columns" in raw and not sensor_columns and "sensor_id" not in raw:
            raise OxyError(
                f"source {name!r}: sensor_columns must be a non-empty list of names "
                '(or give sensor_id, e.g. sensor_id = "{stem}|do")'
            )
        fmt = raw.get("time_format", "iso")
        if isinstance(fmt, list):
            if not fmt or not all(isinstance(f, str) and f for f in fmt):
                raise OxyError(f"source {name!r}: time_format list must hold formats")
            fmt = tuple(fmt) if len(fmt) > 1 else fmt[0]
        salinity = raw.get("salinity")
        if salinity is not None and not isinstance(salinity, (int, float, str)):
            raise OxyError(f"source {name!r}: salinity must be a column name or a number")
        if isinstance(salinity, bool):
            raise OxyError(f"source {name!r}: salinity must be a column name or a number")
        na_values = raw.get("na_values")
        skip_rows = raw.get("skip_rows", 0)
        if not isinstance(skip_rows, int) or isinstance(skip_rows, bool) or skip_rows < 0:
            raise OxyError(f"source {name!r}: skip_rows must be a whole number >= 0")
        mapping = cls(
            name=name,
            customer=str(raw["customer"]),
            timezone=str(raw["timezone"]),
            unit=str(raw["unit"]),
            sensor_columns=sensor_columns,
            time_column=str(raw["time_column"]) if "time_column" in raw else None,
            value_column=str(raw["value_column"]) if "value_column" in raw else None,
            time_format=fmt if isinstance(fmt, tuple) else str(fmt),
            naive_time_zone=str(raw.get("naive_time_zone", "UTC")),
            sensor_separator=str(raw.get("sensor_separator", "|")),
            delimiter=str(raw.get("delimiter", ",")),
            decimal=str(raw.get("decimal", ".")),
            encoding=str(raw.get("encoding", "utf-8")),
            sensor_id=str(raw["sensor_id"]) if "sensor_id" in raw else None,
            file_pattern=str(raw["file_pattern"]) if "file_pattern" in raw else None,
            time_columns=_names(raw["time_columns"], "time_columns", name)
            if "time_columns" in raw
            else (),
            value_columns=_names(raw["value_columns"], "value_columns", name)
            if "value_columns" in raw
            else (),
            temperature_column=str(raw["temperature_column"])
            if "temperature_column" in raw
            else None,
            salinity=salinity if isinstance(salinity, str) or salinity is None else float(salinity),
            format=str(raw["format"]) if "format" in raw else None,
            quote=str(raw.get("quote", '"')),
            comment=str(raw["comment"]) if "comment" in raw else None,
            skip_rows=skip_rows,
            na_values=None if na_values is None else _names(na_values, "na_values", name),
        )
        mapping.validate()
        return mapping

    # derived -----------------------------------------------------------------------
    @property
    def time_fields(self) -> tuple[str, ...]:
        """The time column(s), in the order they are joined."""
        return self.time_columns or ((self.time_column,) if self.time_column else ())

    @property
    def time_formats(self) -> tuple[str, ...]:
        """The time formats, tried in this order."""
        fmt = self.time_format
        return fmt if isinstance(fmt, tuple) else (fmt,)

    @property
    def value_fields(self) -> tuple[str, ...]:
        """The value column(s) or glob patterns as configured."""
        return self.value_columns or ((self.value_column,) if self.value_column else ())

    @property
    def canonical_unit(self) -> str:
        """The unit readings are stored in (``mg/L`` or ``%sat``)."""
        return SOURCE_UNITS[self.unit][0]

    @property
    def unit_factor(self) -> float:
        """Stored value = source value x this factor (1 for mg/L, %sat, ppm)."""
        return SOURCE_UNITS[self.unit][1]

    @property
    def template_fields(self) -> tuple[str, ...]:
        """Names the ``sensor_id`` template refers to (``()`` for a constant id)."""
        if self.sensor_id is None:
            return ()
        text = self.sensor_id.replace("{{", "").replace("}}", "")
        return tuple(_PLACEHOLDER.findall(text))

    @property
    def level_separator(self) -> str:
        """How a sensor id splits into tag levels (``|`` when columns were joined)."""
        joined = len(self.sensor_columns) > 1 or len(self.value_fields) > 1
        return "|" if joined and self.sensor_id is None else self.sensor_separator

    def levels(self, sensor_id: str) -> list[str]:
        """The tag levels of one sensor id of this source."""
        sep = self.level_separator
        return sensor_id.split(sep) if sep else [sensor_id]

    def file_format(self, suffix: str) -> str | None:
        """``csv`` / ``parquet`` for a file with this extension (None: unknown type)."""
        if self.format is not None:
            return self.format
        suffix = suffix.lower()
        if suffix in (".csv", ".txt", ".tsv"):
            return "csv"
        if suffix in (".parquet", ".pq"):
            return "parquet"
        return None

    def validate(self) -> None:
        if self.unit not in SOURCE_UNITS:
            units = ", ".join(k for k in SOURCE_UNITS if k != "\u03bcmol/L")
            raise OxyError(f"source {self.name!r}: unit must be one of {units}; not {self.unit!r}")
        for key in ("timezone", "naive_time_zone"):
            zone = getattr(self, key)
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise OxyError(
                    f"source {self.name!r}: {key} {zone!r} is not an IANA zone"
                ) from None
        for fmt in self.time_formats:
            if fmt not in TIME_FORMATS and "%" not in fmt:
                raise OxyError(
                    f"source {self.name!r}: time_format must be one of {TIME_FORMATS} "
                    f"or a strftime pattern (or a list of them), not {fmt!r}"
                )
        if self.format is not None and self.format not in FILE_FORMATS:
            raise OxyError(
                f"source {self.name!r}: format must be one of {FILE_FORMATS}, not {self.format!r}"
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise OxyError(
                f"source {self.name!r}: encoding {self.encoding!r} is not a known text encoding"
            ) from None
        if len(self.delimiter) != 1:
            raise OxyError(f'source {self.name!r}: delimiter must be one character ("\\t" = tab)')
        if len(self.quote) > 1 or len(self.decimal) != 1:
            raise OxyError(f"source {self.name!r}: quote and decimal must be one character")
        if self.comment is not None and not self.comment:
            raise OxyError(f"source {self.name!r}: comment must be a non-empty prefix")
        if self.file_pattern is not None:
            try:
                groups = set(re.compile(self.file_pattern).groupindex)
            except re.error as exc:
                raise OxyError(
                    f"source {self.name!r}: file_pattern is not a regex: {exc}"
                ) from None
        else:
            groups = set()
        if self.sensor_id is not None:
            text = self.sensor_id.replace("{{", "").replace("}}", "")
            if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
                raise OxyError(
                    f"source {self.name!r}: sensor_id {self.sensor_id!r} has a stray brace"
                )
            if any(not f for f in self.template_fields):
                raise OxyError(f"source {self.name!r}: sensor_id has an empty {{}} field")
        reserved = sorted(groups & {"stem", "file", "column"})
        if reserved:
            raise OxyError(
                f"source {self.name!r}: file_pattern group {reserved[0]!r} is a reserved name"
            )
        if isinstance(self.salinity, float) and not 0 <= self.salinity <= 50:
            raise OxyError(f"source {self.name!r}: salinity {self.salinity} is not in 0..50")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "customer": self.customer,
            "timezone": self.timezone,
            "unit": self.unit,
        }
        if self.sensor_columns or self.sensor_id is None:
            out["sensor_columns"] = list(self.sensor_columns)
        optional: dict[str, Any] = {
            "sensor_id": self.sensor_id,
            "file_pattern": self.file_pattern,
            "time_column": self.time_column,
            "time_columns": list(self.time_columns) or None,
            "value_column": self.value_column,
            "value_columns": list(self.value_columns) or None,
        }
        out |= {k: v for k, v in optional.items() if v is not None}
        out |= {
            "time_format": list(self.time_format)
            if isinstance(self.time_format, tuple)
            else self.time_format,
            "naive_time_zone": self.naive_time_zone,
            "sensor_separator": self.sensor_separator,
            "delimiter": self.delimiter,
            "decimal": self.decimal,
            "encoding": self.encoding,
        }
        extra: dict[str, Any] = {
            "temperature_column": self.temperature_column,
            "salinity": self.salinity,
            "format": self.format,
            "quote": None if self.quote == '"' else self.quote,
            "comment": self.comment,
            "skip_rows": self.skip_rows or None,
            "na_values": None if self.na_values is None else list(self.na_values),
        }
        out |= {k: v for k, v in extra.items() if v is not None}
        # key order as in SOURCE_KEYS (readable files)
        return {k: out[k] for k in SOURCE_KEYS if k in out}


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str = "") -> None:
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base:
            raise OxyError(f"config: unknown key {where!r}")
        if isinstance(base[key], dict) and isinstance(value, Mapping):
            _merge(base[key], value, where + ".")
        else:
            base[key] = value


@dataclass(frozen=True)
class Config:
    """Effective configuration: defaults overlaid by the user's file.

    Sections are plain dicts: ``config["anomaly"]["spike"]["z"]``.

    Examples
    --------
    >>> Config.load()["warehouse"]["threads"]
    2
    """

    data: dict[str, Any]
    sources: dict[str, SourceMapping] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> Config:
        with DEFAULTS_PATH.open("rb") as fh:
            data = tomllib.load(fh)
        sources: dict[str, SourceMapping] = {}
        if path is not None:
            path = Path(path)
            try:
                with path.open("rb") as fh:
                    user = tomllib.load(fh)
            except FileNotFoundError:
                raise OxyError(f"config file {path} does not exist") from None
            except IsADirectoryError:
                raise OxyError(
                    f"config file {path} is a directory; pass the TOML file (e.g. {path}/oxy.toml)"
                ) from None
            except OSError as exc:
                raise OxyError(f"config file {path} cannot be read: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise OxyError(f"config file {path} is not valid TOML: {exc}") from None
            raw_sources = user.pop("sources", {})
            _merge(data, user)
            sources = {n: SourceMapping.from_dict(n, s) for n, s in raw_sources.items()}
        return cls(data=data, sources=sources, path=path)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with ``{"section": {"key": value}}`` overrides applied (validated)."""
        data = copy.deepcopy(self.data)
        _merge(data, overrides)
        return Config(data=data, sources=dict(self.sources), path=self.path)

    def source(self, name: str) -> SourceMapping:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none declared"
            where = f" in {self.path}" if self.path else " (pass --config FILE)"
            raise OxyError(f"unknown source {name!r}{where}; known: {known}") from None
