"""What a person sees while a command runs and when it ends: progress bars and run summaries.

* :func:`wanted` — should this process draw progress bars? Only for a person at a terminal:
  never under ``--quiet`` or ``--json``, never when stderr is not a TTY (a pipe, a log file,
  cron, CI);
* :func:`bar` — a tqdm bar on stderr when enabled, else a silent stand-in with the same
  methods (``update``, ``set_postfix_str``, ``close``, iteration), so stages call it
  unconditionally;
* :func:`warehouse_totals` / :func:`totals_line` — the warehouse-wide figures every command's
  summary ends with, after what *this run* did.

Every stage that can take more than a few seconds (ingest, score, train, forecast, report)
takes ``progress: bool`` and draws its bars through :func:`bar`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

import duckdb

T = TypeVar("T")


def wanted(*, quiet: bool = False, as_json: bool = False, stream: IO[str] | None = None) -> bool:
    """True when progress bars should be drawn: a TTY on ``stream`` (stderr), not quiet/json.

    Examples
    --------
    >>> import io
    >>> wanted(stream=io.StringIO())   # not a terminal
    False
    """
    if quiet or as_json:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class _Silent:
    """The bar when progress is off: iterates and counts, draws nothing."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None) -> None:
        self._iterable = iterable
        self.total = total
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable or ():
            yield item
            self.n += 1

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def set_description_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "",
    enabled: bool,
    unit_scale: bool = False,
) -> Any:
    """A progress bar over ``iterable`` (or updated by hand up to ``total``), on stderr.

    ``enabled`` comes from the CLI (:func:`wanted`); when False nothing is drawn. The bar
    disappears when done (``leave=False``): the command's summary line follows it.

    Examples
    --------
    >>> sum(bar(range(3), desc="demo", enabled=False))
    3
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not enabled:
        return _Silent(iterable, total)
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=f" {unit}" if unit else "it",
        unit_scale=unit_scale,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def warehouse_totals(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Readings, sensors and span of the whole warehouse (for the end of a summary)."""
    from engine.warehouse import sql_text

    first, last, rows, sensors = con.execute(sql_text("meta/readings_span")).fetchall()[0]
    return {
        "readings": int(rows or 0),
        "sensors": int(sensors or 0),
        "first_ts": first,
        "last_ts": last,
    }


def totals_line(totals: dict[str, Any], *extra: str) -> str:
    """``warehouse: 1,234 readings of 5 sensors, 2024-03-01 .. 2024-03-09 UTC[; extra...]``.

    Examples
    --------
    >>> from datetime import datetime
    >>> totals_line({"readings": 1440, "sensors": 1, "first_ts": datetime(2024, 3, 1),
    ...              "last_ts": datetime(2024, 3, 1, 23, 59)}, "12 events")
    'warehouse: 1,440 readings of 1 sensor(s), 2024-03-01 00:00 .. 2024-03-01 23:59 UTC; 12 events'
    """
    text = f"warehouse: {totals['readings']:,} readings of {totals['sensors']} sensor(s)"
    if totals.get("first_ts") is not None:
        text += f", {totals['first_ts']:%Y-%m-%d %H:%M} .. {totals['last_ts']:%Y-%m-%d %H:%M} UTC"
    return "; ".join([text, *extra])
