"""`oxy check`: is every file as the catalog recorded it, and does the registry verify?

One pass over what the warehouse holds, reading only the catalog (a copy, held for the copy),
file footers and the registry's files:

* every lake and mart file the catalog lists exists with the size and row count recorded when
  it was written, and its Parquet footer reads (``Warehouse.check_files(deep=True)``); mart
  folders hold no file that no write recorded; ``anomaly_scores`` holds a row per reading of
  the lake files it scored;
* a writer that was killed left no unfinished mart change (the next writer undoes it);
* the production pointer is well formed and names a run that exists, and every run folder
  verifies against its manifest, with a ``meta.json`` of the right shape and a ``model.txt``
  that LightGBM loads (tried in a child process: :func:`engine.artifacts.verify_run`).

Each problem says what is wrong, where (table, bucket, time span) and the command that
repairs it. The same :class:`~engine.warehouse.Problem` list is what every writer's cheap check
(size only) gives and what the scorer reads to find the score files it must write again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine import OxyError
from engine.registry import check_registry, runs_dir
from engine.warehouse import Problem, Warehouse, has_relation, sql_rows


@dataclass(frozen=True)
class CheckReport:
    """What ``oxy check`` found: ``problems`` (empty when all is well) and what it checked."""

    warehouse: str
    deep: bool
    lake_files: int
    mart_files: int
    runs: int
    seconds: float
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "warehouse": self.warehouse,
            "ok": self.ok,
            "deep": self.deep,
            "checked": {
                "lake_files": self.lake_files,
                "mart_files": self.mart_files,
                "runs": self.runs,
            },
            "seconds": self.seconds,
            "problems": [p.to_dict() for p in self.problems],
        }


def check_warehouse(warehouse: Warehouse, *, deep: bool = True) -> CheckReport:
    """Check the warehouse's files and registry (see the module docstring).

    Parameters
    ----------
    warehouse
        The warehouse to check (its catalog is copied, then released: writers are not held).
    deep
        Also read every file's footer (row count), compare ``anomaly_scores`` with the lake
        and load every model in a child process; without it, sizes only (what writers run).

    Examples
    --------
    >>> report = check_warehouse(Warehouse("warehouse"))   # doctest: +SKIP
    >>> [p.line() for p in report.problems]                # doctest: +SKIP
    []
    """
    started = time.perf_counter()
    if not warehouse.exists():
        raise OxyError(
            f"no warehouse at {warehouse.root} (run `oxy ingest` first, or pass --warehouse DIR)"
        )
    with warehouse.reader(check=False) as con:
        problems = warehouse.check_files(con, deep=deep)
        lake = (
            sql_rows(con, "integrity#lake_files_count")[0][0]
            if has_relation(con, "lake_files")
            else 0
        )
        marts = (
            sql_rows(con, "integrity#mart_files_count")[0][0]
            if has_relation(con, "mart_files")
            else 0
        )
    problems += check_registry(warehouse, deep=deep)
    base = runs_dir(warehouse)
    runs = (
        sum(1 for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if (base.is_dir())
        else 0
    )
    return CheckReport(
        warehouse=str(warehouse.root),
        deep=deep,
        lake_files=int(lake),
        mart_files=int(marts),
        runs=runs,
        seconds=round(time.perf_counter() - started, 3),
        problems=problems,
    )


def render_check(report: CheckReport) -> str:
    """The human form of a :class:`CheckReport`: one summary line, then each problem with the
    command that repairs it."""
    what = "footers, row counts and models" if report.deep else "sizes only"
    head = (
        f"warehouse {report.warehouse}: {report.lake_files:,} lake files, "
        f"{report.mart_files:,} mart files, {report.runs:,} model runs checked ({what}) "
        f"in {report.seconds:.1f} s: "
    )
    if report.ok:
        return head + "no problem"
    lines = [head + f"{len(report.problems)} problem(s)"]
    for p in report.problems:
        where = p.table + (f", bucket {p.bucket}" if p.bucket is not None else "")
        if p.min_ts is not None and p.max_ts is not None:
            where += f", {p.min_ts:%Y-%m-%d %H:%M} .. {p.max_ts:%Y-%m-%d %H:%M}"
        lines.append(f"  {p.kind.upper():12} {p.path or p.table} ({where}): {p.detail}")
        lines.append(f"  {'':12} repair: {p.repair}")
    return "\n".join(lines)
