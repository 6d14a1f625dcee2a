"""bench/loso.py: leave-one-source-out selection on fake metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.loso import choose, grid_points, leave_out, overrides, pool, read_grid, status
from engine.config import Config
from engine.evaluate import metrics


def fake(f1_like: float, events: int = 10) -> dict[str, Any]:
    """Metrics whose F1 grows with ``f1_like`` in [0, 1] (precision = recall = f1_like)."""
    found = round(f1_like * events)
    flagged = 100
    return metrics(
        pl.DataFrame(
            {"type": ["spike"] * events, "found": [True] * found + [False] * (events - found)}
        ),
        {"readings": 10_000, "flagged": flagged, "flagged_inside": round(f1_like * flagged)},
    )


FAMILIES = {"lro": "lro", "semi/a-1": "semi/a", "semi/a-5": "semi/a", "demo/s1": "demo"}


def test_the_held_out_source_never_chooses_its_own_point() -> None:
    # point 1 is best for the held-out "lro" by far, point 0 best for everyone else
    by_point = [
        {"lro": fake(0.1), "semi/a-1": fake(0.8), "semi/a-5": fake(0.8), "demo/s1": fake(0.9)},
        {"lro": fake(1.0), "semi/a-1": fake(0.6), "semi/a-5": fake(0.6), "demo/s1": fake(0.7)},
    ]
    assert choose(by_point, {"lro"}) == 0
    assert choose(by_point, set()) == 1  # with its figures in, "lro" would pull point 1
    rows = {r["held_out"]: r for r in leave_out(by_point, FAMILIES)}
    assert rows["lro"]["point"] == 0
    assert rows["lro"]["metrics"]["f1"] == pytest.approx(fake(0.1)["f1"])
    assert rows["lro"]["tuned"]["f1"] == pytest.approx(
        pool([fake(0.8), fake(0.8), fake(0.9)])["f1"]
    )
    # a family of several sources is left out as a whole; one-source families only once
    assert set(rows) == {*FAMILIES, "family semi/a"}
    assert rows["family semi/a"]["sources"] == ["semi/a-1", "semi/a-5"]


@settings(max_examples=50, deadline=None)
@given(
    others=st.lists(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), min_size=2, max_size=5),
    held=st.data(),
)
def test_the_choice_does_not_depend_on_the_held_out_figures(
    others: list[list[float]], held: st.DataObject
) -> None:
    names = ["semi/a-1", "semi/a-5", "demo/s1"]
    a = held.draw(st.lists(st.floats(0.0, 1.0), min_size=len(others), max_size=len(others)))
    b = held.draw(st.lists(st.floats(0.0, 1.0), min_size=len(others), max_size=len(others)))

    def points(lro: list[float]) -> list[dict[str, Any]]:
        return [
            {"lro": fake(x), **{n: fake(v) for n, v in zip(names, row, strict=True)}}
            for x, row in zip(lro, others, strict=True)
        ]

    assert choose(points(a), {"lro"}) == choose(points(b), {"lro"})
    best = max(range(len(others)), key=lambda i: (pool(points(a)[i][n] for n in names)["f1"], -i))
    assert choose(points(a), {"lro"}) == best


def test_pool_adds_events_and_flags_then_recomputes() -> None:
    one = metrics(
        pl.DataFrame({"type": ["spike", "drift"], "found": [True, False]}),
        {"readings": 100, "flagged": 10, "flagged_inside": 5},
    )
    two = metrics(
        pl.DataFrame({"type": ["spike"], "found": [True]}),
        {"readings": 300, "flagged": 10, "flagged_inside": 10},
    )
    both = pool([one, two])
    expected = metrics(
        pl.DataFrame({"type": ["spike", "drift", "spike"], "found": [True, False, True]}),
        {"readings": 400, "flagged": 20, "flagged_inside": 15},
    )
    assert both == expected


def test_grid_points_become_config_overrides(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(
        "[anomaly]\nseverity_threshold = [0.4, 0.6]\n"
        '"warehouse.threads" = [1]\n[forecast]\nvalid_days = [5, 7]\n'
    )
    grid = read_grid(path)
    assert grid == {
        "anomaly.severity_threshold": [0.4, 0.6],
        "anomaly.warehouse.threads": [1],
        "forecast.valid_days": [5, 7],
    }
    points = grid_points({"anomaly.severity_threshold": [0.4, 0.6], "forecast.valid_days": [5]})
    assert points == [
        {"anomaly.severity_threshold": 0.4, "forecast.valid_days": 5},
        {"anomaly.severity_threshold": 0.6, "forecast.valid_days": 5},
    ]
    config = Config.load().with_overrides(overrides(points[1]))
    assert config["anomaly"]["severity_threshold"] == 0.6
    assert config["forecast"]["valid_days"] == 5
    path.write_text("[anomaly]\nseverity_threshold = 0.5\n")
    with pytest.raises(ValueError, match="must be a non-empty list"):
        read_grid(path)


def test_status_marks_sources_and_families_tuned_on() -> None:
    marks = status(FAMILIES, ["demo", "semi/a-1"])
    assert marks == {
        "lro": "held-out",
        "semi/a-1": "tuned-on",
        "semi/a-5": "held-out",
        "demo/s1": "tuned-on",
    }
