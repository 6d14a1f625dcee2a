"""Configuration: built-in defaults (``engine/defaults.toml``) overlaid by one user TOML file.

Every default lives in ``defaults.toml``. A user file may override any known key and may
declare ``[sources.NAME]`` tables (customer export mappings); unknown keys are refused so
that a typo never silently falls back to a default.

Every value of the user's file is validated when the configuration is loaded, against one
declarative table: :data:`SPECS` maps a dotted
key (``"warehouse.threads"``, ``"anomaly.spike.z"``) to a :class:`Spec` that states its type
and allowed range once, and :data:`RELATIONS` holds the rules between two keys (warn below
alert, ``suspect_sat`` below ``fail_sat``, the seed's lo below hi). Every key of the defaults
has a spec (tested); a key added without one gets a spec inferred from its default
(:func:`inferred_spec`). An error names the key, the value and what is allowed:
``[warehouse] buckets must be a whole number in [1, 4096], not 0``.
"""

from __future__ import annotations

import codecs
import copy
import functools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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


AMBIGUOUS_LOCAL_TIME = ("infer", "earliest", "latest", "quarantine")  # = ingest.AMBIGUOUS_RULES


# -- value specs ---------------------------------------------------------------------------
class Spec:
    """The type and allowed range of one configuration value.

    ``check(value)`` returns ``None`` when the value is allowed, else a short reason; ``allowed``
    says in words what is allowed (it ends every error message).
    """

    allowed = "a value"

    def check(self, value: Any) -> str | None:  # pragma: no cover - overridden
        raise NotImplementedError


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number(Spec):
    """A finite number within ``[lo, hi]`` (``lo_open`` / ``hi_open``: the bound itself is
    excluded); ``integer`` asks for a whole number (TOML ``5``, not ``5.0``)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    unit: str = ""  # "days": "a whole number of days in [1, 31]"

    @property
    def allowed(self) -> str:  # type: ignore[override]
        kind = "a whole number" if self.integer else "a number"
        kind += f" of {self.unit}" if self.unit else ""
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{kind} in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        return kind

    def check(self, value: Any) -> str | None:
        if self.integer and not (isinstance(value, int) and not isinstance(value, bool)):
            return "not a whole number"
        if not _is_number(value) or not math.isfinite(value):
            return "not a finite number"
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return "too small"
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return "too large"
        return None


def Count(lo: int = 1, hi: int | None = None, unit: str = "") -> Number:  # noqa: N802 - a type
    """A whole number >= ``lo`` (and <= ``hi``)."""
    return Number(lo=lo, hi=hi, integer=True, unit=unit)


PROBABILITY = Number(lo=0.0, hi=1.0, lo_open=True, hi_open=True)
FRACTION = Number(lo=0.0, hi=1.0, lo_open=True)  # (0, 1]


@dataclass(frozen=True)
class Boolean(Spec):
    allowed = "true or false"

    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "not true or false"


@dataclass(frozen=True)
class Text(Spec):
    """A string: non-empty, one of ``choices`` when given, at most ``max_len`` characters."""

    choices: tuple[str, ...] = ()
    max_len: int | None = None

    @property
    def allowed(self) -> str:  # type: ignore[override]
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.max_len is not None:
            return f"a text of 1 to {self.max_len} characters"
        return "a non-empty text"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return "not a non-empty text"
        if self.choices and value not in self.choices:
            return "not a known choice"
        if self.max_len is not None and len(value) > self.max_len:
            return "too long"
        return None


@dataclass(frozen=True)
class Zone(Spec):
    allowed = "an IANA time zone such as 'Europe/Oslo' or 'UTC'"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return "not a text"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            return "not an IANA zone"
        return None


@dataclass(frozen=True)
class IsoDate(Spec):
    allowed = "a date such as '2024-10-01' (or '2024-10-01T06:00')"

    def check(self, value: Any) -> str | None:
        if isinstance(value, date):
            return None
        if not isinstance(value, str):
            return "not a date"
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return "not an ISO date"
        return None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t)\s*$", re.I)
_SIZE_FACTOR = {"b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_size(text: Any) -> float | None:
    """Bytes of a DuckDB memory size (``"2GB"``, ``"1500MB"``, ``"2 GiB"``); None if not one."""
    match = _SIZE.match(text) if isinstance(text, str) else None
    if not match:
        return None
    unit = match.group(2).lower()
    factor = _SIZE_FACTOR[unit[0]] if unit != "b" else 1
    if unit.endswith("ib"):
        factor = 1024 ** ("bkmgt".index(unit[0]))
    return float(match.group(1)) * factor


@dataclass(frozen=True)
class Size(Spec):
    """A DuckDB memory size, at least ``min_bytes``, or a percentage of RAM (1 to 100 %)."""

    min_bytes: float = 16e6

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return (
            f"a memory size of at least {self.min_bytes / 1e6:g}MB such as '2GB' or '1500MB' "
            "(KB/MB/GB/TB, KiB/MiB/GiB/TiB), or a percentage of RAM such as '50%'"
        )

    def check(self, value: Any) -> str | None:
        if isinstance(value, str) and (pct := _PERCENT.match(value)):
            return None if 0 < float(pct.group(1)) <= 100 else "not a percentage in (0, 100]"
        size = parse_size(value)
        if size is None:
            return "not a memory size"
        return None if size >= self.min_bytes else "too small"


class WorkerMemory(Size):
    """A Dask worker's ``memory_limit``: a memory size (Dask reads no percentage) or ``auto``
    (its share of the machine's RAM)."""

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return (
            f"a memory size of at least {self.min_bytes / 1e6:g}MB such as '4GB' or '1500MB' "
            "(KB/MB/GB/TB, KiB/MiB/GiB/TiB), or 'auto'"
        )

    def check(self, value: Any) -> str | None:
        if value == "auto":
            return None
        if isinstance(value, str) and _PERCENT.match(value):
            return "not a memory size"
        return super().check(value)


_WORDS = re.compile(r"^(\d+(?:\.\d+)?) (minute|hour|day|week)s?$")
_COMPACT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_COMPACT_UNITS = {"m": 1, "min": 1, "minute": 1, "minutes": 1, "h": 60, "hour": 60}
_COMPACT_UNITS |= {"hours": 60, "d": 1440, "day": 1440, "days": 1440}
_COMPACT_UNITS |= {"w": 10080, "week": 10080, "weeks": 10080}
_WORD_MINUTES = {"minute": 1, "hour": 60, "day": 1440, "week": 10080}


def parse_duration(text: Any, *, style: str = "words") -> timedelta | None:
    """A duration setting as a timedelta, or None when ``text`` is not one of ``style``.

    ``"words"``: ``"<number> <minute|hour|day|week>[s]"`` (``"60 minutes"``, ``"1 day"``), what
    DuckDB's interval cast and ``engine.monitor.parse_interval`` both read; ``"compact"``:
    what ``engine.forecast.minutes_of`` reads (``"7d"``, ``"6h"``, ``"15m"``, ``"90 minutes"``).

    Examples
    --------
    >>> parse_duration("2 hours"), parse_duration("6h", style="compact")
    (datetime.timedelta(seconds=7200), datetime.timedelta(seconds=21600))
    >>> parse_duration("6h") is None
    True
    """
    if not isinstance(text, str):
        return None
    if style == "words":
        match = _WORDS.match(text.strip().lower())
        if not match:
            return None
        return timedelta(minutes=float(match.group(1)) * _WORD_MINUTES[match.group(2)])
    match = _COMPACT.match(text.lower())
    if not match or match.group(2) not in _COMPACT_UNITS:
        return None
    return timedelta(minutes=round(float(match.group(1)) * _COMPACT_UNITS[match.group(2)]))


@dataclass(frozen=True)
class Duration(Spec):
    """A duration of ``style`` (see :func:`parse_duration`), > 0 unless ``allow_zero``, at
    least ``at_least_minutes`` when given."""

    style: str = "words"
    allow_zero: bool = False
    at_least_minutes: int = 0

    @property
    def allowed(self) -> str:  # type: ignore[override]
        if self.at_least_minutes:
            sign = f"of at least {_minutes_text(self.at_least_minutes)}"
        else:
            sign = ">= 0" if self.allow_zero else "> 0"
        if self.style == "words":
            return f"a duration {sign} such as '60 minutes', '2 hours', '1 day' or '2 weeks'"
        return f"a duration {sign} of whole minutes such as '15m', '6h', '7d' or '90 minutes'"

    def check(self, value: Any) -> str | None:
        duration = parse_duration(value, style=self.style)
        if duration is None:
            return "not a duration"
        if duration < timedelta(0) or (duration == timedelta(0) and not self.allow_zero):
            return "not positive"
        if duration < timedelta(minutes=self.at_least_minutes):
            return "too short"
        return None


def _minutes_text(minutes: int) -> str:
    for size, unit in ((10080, "week"), (1440, "day"), (60, "hour")):
        if minutes % size == 0:
            n = minutes // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{minutes} minutes"


@dataclass(frozen=True)
class ListOf(Spec):
    """A list of ``item`` values, ``min_len`` or more (and at most ``max_len``)."""

    item: Spec
    min_len: int = 1
    max_len: int | None = None

    @property
    def allowed(self) -> str:  # type: ignore[override]
        if self.max_len is not None:
            size = f"{self.min_len} to {self.max_len} values"
        else:
            size = "values" if self.min_len == 0 else f"at least {self.min_len} value(s)"
        return f"a list of {size}, each {self.item.allowed}"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return "not a list"
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            return "wrong length"
        for item in value:
            if (why := self.item.check(item)) is not None:
                return f"item {item!r}: {why}"
        return None


@dataclass(frozen=True)
class Limits(Spec):
    """A table ``{ min = .., max = .. }`` of two numbers with min < max."""

    item: Spec = field(default_factory=Number)

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return f"{{ min = .., max = .. }} with min < max, each {self.item.allowed}"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, Mapping) or set(value) != {"min", "max"}:
            return "not a table of min and max"
        for key in ("min", "max"):
            if (why := self.item.check(value[key])) is not None:
                return f"{key}: {why}"
        return None if value["min"] < value["max"] else "min is not below max"


@dataclass(frozen=True)
class TableOf(Spec):
    """A table whose every value is ``item`` (keys from the default; unknown keys refused)."""

    item: Spec

    @property
    def allowed(self) -> str:  # type: ignore[override]
        return f"a table whose values are each {self.item.allowed}"

    def check(self, value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return "not a table"
        for key, item in value.items():
            if (why := self.item.check(item)) is not None:
                return f"{key}: {why}"
        return None


_NOW = re.compile(r"now\s*(?:([+-])\s*(\d+)\s*(minute|hour|day|week)s?)?")


def time_range(raw: Any, now: datetime) -> tuple[datetime, datetime]:
    """``ingest.time_range`` as two naive UTC instants: each bound an ISO date/time or
    ``"now"``, ``"now + N days"`` (minutes, hours, weeks), ``"now - N days"``.

    Examples
    --------
    >>> time_range(["1990-01-01", "now + 1 day"], datetime(2024, 5, 1))
    (datetime.datetime(1990, 1, 1, 0, 0), datetime.datetime(2024, 5, 2, 0, 0))
    """
    if not (isinstance(raw, list) and len(raw) == 2):
        raise OxyError('ingest.time_range must be two instants, e.g. ["1990-01-01", "now + 1 day"]')
    bounds = []
    for text in raw:
        text = str(text).strip()
        ahead = _NOW.fullmatch(text)
        if ahead:
            sign, n, unit = ahead.groups()
            delta = timedelta(**{f"{unit}s": int(n)}) if n else timedelta(0)
            bounds.append(now - delta if sign == "-" else now + delta)
            continue
        try:
            bounds.append(datetime.fromisoformat(text).replace(tzinfo=None))
        except ValueError:
            raise OxyError(
                f"ingest.time_range: {text!r} is neither an ISO date nor 'now + N days'"
            ) from None
    if bounds[0] >= bounds[1]:
        raise OxyError(f"ingest.time_range: {raw[0]!r} is not before {raw[1]!r}")
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class TimeRange(Spec):
    allowed = 'two instants, the first earlier, e.g. ["1990-01-01", "now + 1 day"]'

    def check(self, value: Any) -> str | None:
        try:
            time_range(value, datetime.now())
        except OxyError as exc:
            return str(exc)
        return None


NON_NEGATIVE = Number(lo=0.0)
POSITIVE = Number(lo=0.0, lo_open=True)
NAMES = ListOf(Text(), min_len=0)

# Every key of the defaults, dotted: "ingest.mg/L" is the table `"mg/L" = { min, max }` of
# [ingest], "anomaly.spike.z" the key z of [anomaly.spike]. Durations read by DuckDB or by
# engine.monitor are Duration() ("60 minutes"); those read by engine.forecast.minutes_of or
# engine.detectors.duration are Duration("compact") ("7d", "6h", "90 minutes").
SPECS: dict[str, Spec] = {
    # [warehouse]
    "warehouse.memory_limit": Size(),
    "warehouse.threads": Count(1, 256),
    "warehouse.buckets": Count(1, 4096),
    "warehouse.lock_timeout_s": Number(lo=0.0, hi=86400.0),
    # [cluster] (engine/cluster.py)
    "cluster.local_workers": Count(1, 256),
    "cluster.local_threads": Count(1, 256),
    "cluster.local_memory_limit": WorkerMemory(),
    "cluster.dashboard_address": Text(),
    "cluster.connect_timeout_s": Number(lo=0.0, hi=86400.0, lo_open=True),
    "cluster.dask_train_rows": Count(0),
    # [ingest]
    "ingest.sentinels": ListOf(Number(), min_len=0),
    "ingest.mg/L": Limits(),
    "ingest.%sat": Limits(),
    "ingest.ambiguous_local_time": Text(choices=AMBIGUOUS_LOCAL_TIME),
    "ingest.batch_rows": Count(1),
    "ingest.spill_rows": Count(1),
    "ingest.na_values": NAMES,
    "ingest.time_range": TimeRange(),
    "ingest.max_bad_fraction": Number(lo=0.0, hi=1.0),
    "ingest.temperature_c": Limits(Number(lo=-50.0, hi=100.0)),
    "ingest.salinity": Limits(Number(lo=0.0, hi=100.0)),
    "ingest.preview_rows": Count(0),
    # [anomaly] (engine/detectors.py; the checks of engine.anomaly.settings hold for every
    # value these accept, tested)
    "anomaly.severity_threshold": FRACTION,
    "anomaly.qartod_fail_severity": FRACTION,
    "anomaly.history": Duration("compact"),
    "anomaly.min_hours": Count(0),
    "anomaly.hour_floor": NON_NEGATIVE,
    "anomaly.neighbours": Count(1),
    "anomaly.max_cadence": Duration("compact"),
    "anomaly.site_levels": Count(0),
    "anomaly.range.suspect_sat": POSITIVE,
    "anomaly.range.fail_sat": POSITIVE,
    "anomaly.range.temperature_c": Number(lo=-5.0, hi=45.0),  # Benson-Krause's range (degC)
    "anomaly.range.salinity": Number(lo=0.0, hi=50.0),  # g/kg
    "anomaly.dropout": TableOf(NON_NEGATIVE),  # per unit: "mg/L", "%sat"
    "anomaly.stuck.ratio": POSITIVE,
    "anomaly.stuck.min_readings": Count(1),
    "anomaly.spike.z": POSITIVE,
    "anomaly.noise.ratio": POSITIVE,
    "anomaly.noise.readings": Count(3),
    "anomaly.point.z": POSITIVE,
    "anomaly.collective.z": POSITIVE,
    "anomaly.collective.window": Duration("compact", at_least_minutes=120),
    "anomaly.contextual.z": POSITIVE,
    "anomaly.contextual.min_days": Count(1),
    "anomaly.drift.z": POSITIVE,
    "anomaly.drift.min_relative": Number(lo=0.0, hi=1.0),
    "anomaly.drift.window": Duration("compact"),
    "anomaly.drift.gap": Duration("compact"),
    "anomaly.drift.reference": Duration("compact"),
    "anomaly.drift.min_reference_days": Count(1),
    "anomaly.drift.site_min_sensors": Count(1),
    "anomaly.events.merge_gap": Duration("compact"),
    "anomaly.run.memory_limit": Size(),
    "anomaly.run.chunk_rows": Count(1),
    "anomaly.run.file_days": Count(1, 31, unit="days"),
    # [anomaly.seed]: the seed's rules, read by DuckDB (intervals) and engine/evaluate.py
    "anomaly.seed.point_window": Duration(),
    "anomaly.seed.point_z_lo": NON_NEGATIVE,
    "anomaly.seed.point_z_hi": POSITIVE,
    "anomaly.seed.collective_window": Duration(),
    "anomaly.seed.collective_lo": NON_NEGATIVE,
    "anomaly.seed.collective_hi": POSITIVE,
    "anomaly.seed.contextual_z_lo": NON_NEGATIVE,
    "anomaly.seed.contextual_z_hi": POSITIVE,
    "anomaly.seed.stuck_window": Duration(),
    "anomaly.seed.stuck_std_ratio": POSITIVE,
    "anomaly.seed.spike_sigma": POSITIVE,
    "anomaly.seed.spike_gap": Duration(),
    "anomaly.seed.noise_window": Duration(),
    "anomaly.seed.noise_std_ratio": POSITIVE,
    # [forecast]
    "forecast.horizon": Duration("compact"),
    "forecast.valid_days": Count(1, 3650),
    "forecast.test_days": Count(1, 3650),
    "forecast.severity_quantile_cutoff": FRACTION,
    "forecast.exclude_types": NAMES,
    "forecast.interval": PROBABILITY,
    "forecast.seed": Count(0),
    "forecast.origin_every": Duration("compact"),
    "forecast.horizons_per_origin": Count(1),
    "forecast.predict_every": Duration("compact"),
    "forecast.backtest_every": Duration("compact"),
    "forecast.backtest_step": Duration("compact"),
    "forecast.learning_rates": ListOf(Number(lo=0.0, hi=1.0, lo_open=True)),
    "forecast.num_leaves": ListOf(Count(2, 131072)),
    "forecast.num_boost_round": Count(1),
    "forecast.early_stopping_rounds": Count(1),
    "forecast.min_data_in_leaf": Count(1),
    "forecast.min_history": Duration("compact"),
    "forecast.fault_window": Duration("compact"),
    "forecast.fault_fraction": FRACTION,
    "forecast.fault_types": NAMES,
    # [monitor]
    "monitor.stale_after": Duration(),
    "monitor.recent_window": Duration(),
    "monitor.reference_window": Duration(),
    "monitor.psi_bins": Count(2, 1000),
    "monitor.psi_warn": POSITIVE,
    "monitor.psi_alert": POSITIVE,
    "monitor.psi_min_points": Count(1),
    "monitor.step": Duration(),
    "monitor.calibration_windows": Count(1),
    "monitor.min_calibration_windows": Count(1),
    "monitor.warn_z": POSITIVE,
    "monitor.alert_z": POSITIVE,
    "monitor.min_sqrt_spread": POSITIVE,
    "monitor.min_log_spread": POSITIVE,
    "monitor.stale_cadence_multiple": POSITIVE,
    "monitor.stale_gap_ratio": POSITIVE,
    "monitor.historical_after": Duration(),
    "monitor.severity_min_spread": POSITIVE,
    "monitor.anomaly_rate_floor": Number(lo=0.0, hi=1.0),
    "monitor.severity_median_warn_delta": Number(lo=0.0, hi=1.0),
    "monitor.severity_median_alert_delta": Number(lo=0.0, hi=1.0),
    "monitor.forecast_warn_ratio": POSITIVE,
    "monitor.forecast_alert_ratio": POSITIVE,
    "monitor.forecast_min_minutes": Count(1),
    # [registry]
    "registry.min_rmse_improvement": Number(lo=0.0, hi=1.0, hi_open=True),
    # [report]
    "report.max_sensors": Count(0),
    "report.ranking_rows": Count(1),
    "report.history": Duration(),
    "report.event_plots": Count(0),
    "report.gap_factor": Number(lo=1.0),
    "report.forecast_context": Duration(),
    "report.dpi": Count(10, 1200),
    # [query]
    "query.memory_limit": Size(),
    "query.threads": Count(1, 256),
    "query.table_rows": Count(1),
    "query.column_width": Count(2),
    "query.status_ingests": Count(0),
    "query.timeout_s": Number(lo=0.0, hi=86400.0),
    # [demo]
    "demo.sensors_per_site": Count(1, 1000),
    "demo.days": Count(1, 3650),
    "demo.seed": Count(0),
    "demo.clean_days": Count(0, 3650),
    "demo.start": IsoDate(),
    "demo.anomaly_spread": Number(lo=1.0),
}


@dataclass(frozen=True)
class Relation:
    """A rule between two keys of one section: ``small`` < ``large`` (``strict``) or <=.

    Numbers compare as numbers, durations (``"3 days"``, ``"8w"``) as durations; ``says`` is
    how the rule reads in an error (default ``"small < large"``)."""

    small: str
    large: str
    strict: bool = True
    says: str = ""

    def broken(self, a: Any, b: Any) -> bool:
        """Whether values ``a`` (of ``small``) and ``b`` break the rule (False when either
        is not of a comparable kind: its own spec says so)."""
        if _is_number(a) and _is_number(b):
            x, y = float(a), float(b)
        else:
            da = parse_duration(a, style="compact")
            db = parse_duration(b, style="compact")
            if da is None or db is None:
                return False
            x, y = da.total_seconds(), db.total_seconds()
        return not (x < y if self.strict else x <= y)

    def message(self, a: Any, b: Any) -> str:
        section, _, small = self.small.rpartition(".")
        large = self.large.rpartition(".")[2]
        says = self.says or f"{small} {'<' if self.strict else '<='} {large}"
        return f"[{section}] needs {says}, not {small} = {a!r} and {large} = {b!r}"


RELATIONS: tuple[Relation, ...] = (
    Relation("monitor.psi_warn", "monitor.psi_alert"),
    Relation("monitor.warn_z", "monitor.alert_z"),
    Relation("monitor.min_calibration_windows", "monitor.calibration_windows", strict=False),
    Relation("monitor.stale_after", "monitor.historical_after"),
    Relation("monitor.severity_median_warn_delta", "monitor.severity_median_alert_delta"),
    Relation("monitor.forecast_warn_ratio", "monitor.forecast_alert_ratio"),
    Relation(
        "anomaly.severity_threshold",
        "anomaly.qartod_fail_severity",
        strict=False,
        says="severity_threshold <= qartod_fail_severity",
    ),
    Relation("anomaly.range.suspect_sat", "anomaly.range.fail_sat", says="fail_sat > suspect_sat"),
    Relation("anomaly.drift.gap", "anomaly.drift.reference", says="reference longer than gap"),
    Relation("anomaly.seed.point_z_lo", "anomaly.seed.point_z_hi"),
    Relation("anomaly.seed.collective_lo", "anomaly.seed.collective_hi"),
    Relation("anomaly.seed.contextual_z_lo", "anomaly.seed.contextual_z_hi"),
)


def inferred_spec(key: str, default: Any) -> Spec:
    """The spec of a key that :data:`SPECS` does not list (a key added on another branch:
    a test asks for a deliberate spec), from its default value.

    A bool stays a bool; a number stays a number (a whole number when the default is one),
    never negative when the default is not; a text that is a duration (``"60 minutes"`` or
    ``"7d"``) or a memory size (``"1500MB"``) stays one; a list keeps its items' type; a
    table its values' type.

    Examples
    --------
    >>> inferred_spec("anomaly.run.chunk_rows", 2_000_000).allowed
    'a whole number >= 0'
    >>> inferred_spec("anomaly.seed.point_window", "60 minutes").allowed
    "a duration >= 0 such as '60 minutes', '2 hours', '1 day' or '2 weeks'"
    """
    if isinstance(default, bool):
        return Boolean()
    if _is_number(default):
        lo = 0.0 if default >= 0 else None
        return Number(lo=lo, integer=isinstance(default, int))
    if isinstance(default, str):
        if parse_duration(default) is not None:
            return Duration("words", allow_zero=True)
        if parse_duration(default, style="compact") is not None:
            return Duration("compact", allow_zero=True)
        if parse_size(default) is not None:
            return Size()
        return Text()
    if isinstance(default, list):
        item = inferred_spec(key, default[0]) if default else Text()
        if isinstance(item, Number):
            item = Number(integer=item.integer)  # a list's items may take either sign
        return ListOf(item, min_len=1 if default else 0)
    if isinstance(default, Mapping):
        values = list(default.values())
        return TableOf(inferred_spec(key, values[0]) if values else Text())
    return Text()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _label(key: str) -> str:
    """``"anomaly.spike.z"`` as the TOML user reads it: ``[anomaly.spike] z``."""
    section, _, name = key.rpartition(".")
    return f"[{section}] {name}" if section else name


def validate(data: Mapping[str, Any], defaults: Mapping[str, Any], where: str = "") -> None:
    """Check every value of ``data`` (the merged config) against :data:`SPECS` (or the spec
    inferred from ``defaults``) and :data:`RELATIONS`; raise one :class:`OxyError` listing
    every bad value, each with its key, its value and what is allowed."""
    errors: list[str] = []

    def walk(values: Mapping[str, Any], base: Mapping[str, Any], prefix: str) -> None:
        for name, value in values.items():
            key = f"{prefix}{name}"
            default = base.get(name)
            spec = SPECS.get(key)
            if spec is None and isinstance(default, Mapping):  # a section ([anomaly.spike])
                if isinstance(value, Mapping):
                    walk(value, default, key + ".")
                else:
                    errors.append(f"{_label(key)} must be a table of settings, not {_shown(value)}")
                continue
            if spec is None:
                spec = inferred_spec(key, default)
            if spec.check(value) is not None:
                errors.append(f"{_label(key)} must be {spec.allowed}, not {_shown(value)}")

    walk(data, defaults, "")
    for rule in RELATIONS:
        a, b = _lookup(data, rule.small), _lookup(data, rule.large)
        if rule.broken(a, b):
            errors.append(rule.message(a, b))
    if errors:
        head = (
            f"config{where}: "
            if len(errors) == 1
            else f"config{where}: {len(errors)} bad values:\n  "
        )
        raise OxyError(head + "\n  ".join(errors))


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


# The type of each [sources.NAME] key checked before the mapping is built (names, lists,
# time formats, units, zones and the rest are checked by SourceMapping.from_dict / validate).
SOURCE_SPECS: dict[str, Spec] = {
    "customer": Text(),
    "timezone": Text(),
    "unit": Text(),
    "sensor_id": Text(),
    "file_pattern": Text(),
    "time_column": Text(),
    "value_column": Text(),
    "temperature_column": Text(),
    "naive_time_zone": Text(),
    "sensor_separator": Text(),
    "format": Text(choices=FILE_FORMATS),
    "delimiter": Text(max_len=1),
    "decimal": Text(choices=(".", ",")),
    "encoding": Text(),
    "comment": Text(),
    "skip_rows": Count(0),
}


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
        for key, value in raw.items():
            spec = SOURCE_SPECS.get(key)
            if spec is not None and spec.check(value):
                raise OxyError(
                    f"source {name!r}: {key} must be {spec.allowed}, not {_shown(value)}"
                )
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


@functools.cache
def _defaults_text() -> str:
    return DEFAULTS_PATH.read_text(encoding="utf-8")


def _defaults() -> dict[str, Any]:
    """The built-in defaults (a fresh copy)."""
    return tomllib.loads(_defaults_text())


def _merge(base: dict[str, Any], override: Mapping[str, Any], path: str = "") -> None:
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) if isinstance(base, dict) else ""
            raise OxyError(f"config: unknown key {where!r} (known here: {known})")
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
        data = _defaults()
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
            if not isinstance(raw_sources, Mapping) or not all(
                isinstance(s, Mapping) for s in raw_sources.values()
            ):
                raise OxyError(f"config {path}: [sources.NAME] must be tables of keys")
            defaults = copy.deepcopy(data)
            _merge(data, user)
            validate(data, defaults, f" {path}")
            sources = {n: SourceMapping.from_dict(n, s) for n, s in raw_sources.items()}
        return cls(data=data, sources=sources, path=path)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.data[section]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with ``{"section": {"key": value}}`` overrides applied.

        Unknown keys are refused; values are not validated here (the stage that reads a
        value checks it again, and tests set wrong values to see that check): the user's
        file is validated by :meth:`load`, and :func:`validate` checks any merged data."""
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
