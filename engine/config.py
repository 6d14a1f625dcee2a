"""Configuration: built-in defaults (``engine/defaults.toml``) overlaid by one user TOML file.

Every default lives in ``defaults.toml``. A user file may override any known key and may
declare ``[sources.NAME]`` tables (customer export mappings); unknown keys are refused so
that a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine import OxyError

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")
UNITS = ("mg/L", "%sat")
TIME_FORMATS = ("iso", "epoch_s", "epoch_ms")

_SOURCE_REQUIRED = ("customer", "timezone", "unit", "sensor_columns", "time_column", "value_column")
_SOURCE_KEYS = {
    *_SOURCE_REQUIRED,
    "time_format",
    "naive_time_zone",
    "sensor_separator",
    "delimiter",
    "decimal",
    "encoding",
}


@dataclass(frozen=True)
class SourceMapping:
    """How one customer export maps onto canonical readings (DESIGN.md, "Source mappings").

    Examples
    --------
    >>> m = SourceMapping.from_dict("fjordras", {"customer": "fjordras",
    ...     "timezone": "Europe/Oslo", "unit": "mg/L", "sensor_columns": ["Tag"],
    ...     "time_column": "Timestamp", "value_column": "Value"})
    >>> m.time_format, m.naive_time_zone
    ('iso', 'UTC')
    """

    name: str
    customer: str
    timezone: str
    unit: str
    sensor_columns: tuple[str, ...]
    time_column: str
    value_column: str
    time_format: str = "iso"
    naive_time_zone: str = "UTC"
    sensor_separator: str = "|"
    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> SourceMapping:
        unknown = set(raw) - _SOURCE_KEYS
        if unknown:
            raise OxyError(f"source {name!r}: unknown key(s) {sorted(unknown)}")
        missing = [k for k in _SOURCE_REQUIRED if k not in raw]
        if missing:
            raise OxyError(f"source {name!r}: missing key(s) {missing}")
        cols = raw["sensor_columns"]
        if isinstance(cols, str):
            cols = [cols]
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise OxyError(f"source {name!r}: sensor_columns must be a non-empty list of names")
        mapping = cls(
            name=name,
            customer=str(raw["customer"]),
            timezone=str(raw["timezone"]),
            unit=str(raw["unit"]),
            sensor_columns=tuple(cols),
            time_column=str(raw["time_column"]),
            value_column=str(raw["value_column"]),
            time_format=str(raw.get("time_format", "iso")),
            naive_time_zone=str(raw.get("naive_time_zone", "UTC")),
            sensor_separator=str(raw.get("sensor_separator", "|")),
            delimiter=str(raw.get("delimiter", ",")),
            decimal=str(raw.get("decimal", ".")),
            encoding=str(raw.get("encoding", "utf-8")),
        )
        mapping.validate()
        return mapping

    def validate(self) -> None:
        if self.unit not in UNITS:
            raise OxyError(f"source {self.name!r}: unit must be one of {UNITS}, not {self.unit!r}")
        for key in ("timezone", "naive_time_zone"):
            zone = getattr(self, key)
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise OxyError(
                    f"source {self.name!r}: {key} {zone!r} is not an IANA zone"
                ) from None
        if self.time_format not in TIME_FORMATS and "%" not in self.time_format:
            raise OxyError(
                f"source {self.name!r}: time_format must be one of {TIME_FORMATS} "
                f"or a strftime pattern, not {self.time_format!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "timezone": self.timezone,
            "unit": self.unit,
            "sensor_columns": list(self.sensor_columns),
            "time_column": self.time_column,
            "value_column": self.value_column,
            "time_format": self.time_format,
            "naive_time_zone": self.naive_time_zone,
            "sensor_separator": self.sensor_separator,
            "delimiter": self.delimiter,
            "decimal": self.decimal,
            "encoding": self.encoding,
        }


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
