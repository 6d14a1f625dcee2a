"""Leave-one-source-out: whatever is tuned is tuned on the other sources and reported on the
left-out one.

Pure functions over metrics (``engine.evaluate.metrics`` dicts), so that the selection is
tested on fake figures (tests/test_detection_suite.py):

* :func:`read_grid` -- a TOML file of ``key = [values, ...]`` (dotted keys or tables, e.g.
  ``[anomaly]`` ``severity_threshold = [0.4, 0.5, 0.6]``) -> the parameters to vary;
* :func:`grid_points` -- every combination, each as a ``Config.with_overrides`` dict;
* :func:`pool` -- several sources' metrics pooled into one (events and flagged readings added);
* :func:`choose` -- the grid point with the best pooled F1 on the sources *not* held out;
* :func:`leave_out` -- for each held-out set (each source, then each family), the point chosen
  without it and the held-out figures at that point;
* :func:`status` -- "tuned-on" or "held-out" per source for the default run, from a list of
  source or family names the current defaults were tuned on.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Metrics = dict[str, Any]


def read_grid(path: str | Path) -> dict[str, list[Any]]:
    """``{"section.key": [values]}`` from a TOML grid file (every leaf must be a list)."""
    with Path(path).open("rb") as fh:
        raw = tomllib.load(fh)
    grid: dict[str, list[Any]] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(name + ".", value)
            elif isinstance(value, list) and value:
                grid[name] = list(value)
            else:
                raise ValueError(f"grid {path}: {name} must be a non-empty list of values")

    walk("", raw)
    if not grid:
        raise ValueError(f"grid {path}: no parameters")
    return grid


def overrides(point: Mapping[str, Any]) -> dict[str, Any]:
    """``{"anomaly.x": 1}`` -> ``{"anomaly": {"x": 1}}`` (the shape of Config.with_overrides)."""
    nested: dict[str, Any] = {}
    for dotted, value in point.items():
        *sections, key = dotted.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return nested


def grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as flat ``{"section.key": value}`` points."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def pool(results: Iterable[Metrics]) -> Metrics:
    """Metrics of several sources pooled: events (per type) and flagged readings added, the
    figures recomputed from the sums by ``engine.evaluate.metrics``."""
    import polars as pl

    from engine.evaluate import metrics

    totals = {"readings": 0, "flagged": 0, "flagged_inside": 0}
    types: list[str] = []
    found: list[bool] = []
    for m in results:
        for key in totals:
            totals[key] += m[key]
        for kind, b in m["by_type"].items():
            types += [kind] * b["events"]
            found += [True] * b["found"] + [False] * (b["events"] - b["found"])
    events = pl.DataFrame(
        {"type": types, "found": found}, schema={"type": pl.String, "found": pl.Boolean}
    )
    return metrics(events, totals)


def choose(by_point: list[Mapping[str, Metrics]], held_out: set[str]) -> int:
    """Index of the grid point with the best pooled F1 over the sources not in ``held_out``
    (ties: the earliest point). The held-out sources' figures are never read."""
    best, best_f1 = 0, -1.0
    for i, per_source in enumerate(by_point):
        f1 = pool(m for name, m in per_source.items() if name not in held_out)["f1"]
        if f1 > best_f1:
            best, best_f1 = i, f1
    return best


def leave_out(
    by_point: list[Mapping[str, Metrics]], families: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per held-out set: each source alone, then each family of several sources.

    ``by_point[i][source]`` are the metrics of ``source`` at grid point ``i``; ``families``
    maps every source to its family. A row holds ``held_out`` (the name), ``sources``,
    ``point`` (the index chosen on the others), ``metrics`` (the held-out pooled figures at
    that point) and ``tuned`` (the other sources' pooled figures at that point).
    """
    sets: list[tuple[str, set[str]]] = [(s, {s}) for s in families]
    by_family: dict[str, set[str]] = {}
    for source, family in families.items():
        by_family.setdefault(family, set()).add(source)
    sets += [(f"family {f}", members) for f, members in by_family.items() if len(members) > 1]
    rows = []
    for name, held in sets:
        if held == set(families):
            continue  # nothing left to tune on
        point = choose(by_point, held)
        chosen = by_point[point]
        rows.append(
            {
                "held_out": name,
                "sources": sorted(held),
                "point": point,
                "metrics": pool(chosen[s] for s in sorted(held)),
                "tuned": pool(m for s, m in chosen.items() if s not in held),
            }
        )
    return rows


def status(sources: Mapping[str, str], tuned_on: Iterable[str]) -> dict[str, str]:
    """``{source: "tuned-on" | "held-out"}``: a source is tuned-on when its name or its family
    is in ``tuned_on`` (``sources`` maps source -> family)."""
    marks = set(tuned_on)
    return {
        source: "tuned-on" if source in marks or family in marks else "held-out"
        for source, family in sources.items()
    }
