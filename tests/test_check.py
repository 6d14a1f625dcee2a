"""`oxy check`: every listed file as recorded, marts agreeing with their bookkeeping, the
registry verifying; each problem with the command that repairs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cli import oxy
from engine.anomaly import score
from engine.check import check_warehouse
from engine.warehouse import Warehouse, query_frame

T0 = datetime(2024, 3, 1)


def _series(sensor: str, days: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * 1440)
    value = 8 + 1.5 * np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.03, minutes.size)
    return pl.DataFrame(
        {
            "sensor_id": sensor,
            "ts": [T0 + timedelta(minutes=int(m)) for m in minutes],
            "value": np.round(value, 3),
        }
    )


@pytest.fixture
def scored(warehouse: Warehouse, readings_loader: Callable[..., None]) -> Warehouse:
    """Three sensors, two days, scored (lake files, anomaly_scores and anomaly_events)."""
    data = pl.concat([_series(f"site|s{i}", 2, i) for i in range(3)])
    readings_loader(warehouse, data, batch_id="ingest-a")
    score(warehouse)
    return warehouse


def _run(wh: Warehouse, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(oxy, ["--warehouse", str(wh.root), *args])
    return result.exit_code, result.output


def test_a_clean_warehouse_checks_clean(scored: Warehouse) -> None:
    code, out = _run(scored, "check")
    assert code == 0, out
    assert out.startswith(f"warehouse {scored.root}: 3 lake files, ")
    assert out.rstrip().endswith("no problem")
    report = check_warehouse(scored)
    assert report.ok and report.lake_files == 3 and report.mart_files >= 6


def test_each_damaged_file_is_named_with_its_span_and_repair(scored: Warehouse) -> None:
    score_files = sorted((scored.marts_dir / "anomaly_scores").rglob("*.parquet"))
    score_files[0].unlink()
    lake = sorted(scored.lake_dir.rglob("*.parquet"))
    lake[0].write_bytes(lake[0].read_bytes()[:-50])
    code, out = _run(scored, "check")
    assert code == 2, out
    lines = out.splitlines()
    assert lines[0].endswith(": 2 problem(s)")
    rel_lake = lake[0].relative_to(scored.root).as_posix()
    rel_score = score_files[0].relative_to(scored.root).as_posix()
    assert any(line.startswith(f"  TRUNCATED    {rel_lake} (readings, bucket ") for line in lines)
    assert any(
        line.startswith(f"  MISSING      {rel_score} (anomaly_scores, bucket ") for line in lines
    )
    assert "repair: `oxy forget ingest-a` (the ingest that wrote it)" in out
    assert "repair: oxy score (it rescores the span of a missing or damaged file)" in out
    code, out = _run(scored, "--json", "check")
    payload = json.loads(out)
    assert code == 2 and not payload["ok"]
    missing = next(p for p in payload["problems"] if p["kind"] == "missing")
    assert missing["table"] == "anomaly_scores" and missing["bucket"] is not None
    assert missing["min_ts"] >= "2024-03-01" and missing["rows"] > 0


def _marts(wh: Warehouse) -> tuple[pl.DataFrame, pl.DataFrame]:
    with wh.reader(check=False) as con:
        scores = query_frame(con, "select * exclude (bucket) from anomaly_scores")
        events = query_frame(con, "select * exclude (bucket) from anomaly_events")
    return scores.sort("sensor_id", "ts"), events.sort("sensor_id", "start_ts", "anomaly_type")


@pytest.mark.parametrize(
    ("mart", "damage"),
    [("anomaly_scores", "delete"), ("anomaly_scores", "truncate"), ("anomaly_events", "delete")],
)
def test_oxy_score_rescores_the_span_of_a_missing_or_damaged_file(
    warehouse: Warehouse, readings_loader: Callable[..., None], mart: str, damage: str
) -> None:
    """The probe's case: one deleted anomaly_scores file made `oxy score` say "scored 0
    readings" and repair nothing. Now the span is rescored, to the clean run's result."""
    data = pl.concat([_series(f"site|s{i}", 10, i) for i in range(3)])  # files of 7 + 1 days
    readings_loader(warehouse, data.filter(pl.col("ts") < T0 + timedelta(days=6)), batch_id="a")
    readings_loader(warehouse, data.filter(pl.col("ts") >= T0 + timedelta(days=6)), batch_id="b")
    score(warehouse)
    clean_scores, clean_events = _marts(warehouse)
    files = sorted((warehouse.marts_dir / mart).rglob("*.parquet"))
    victim = files[len(files) // 2]
    if damage == "delete":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:-100])
    assert {p.kind for p in check_warehouse(warehouse).problems} == {
        "missing" if damage == "delete" else "truncated"
    }
    summary = score(warehouse)
    assert summary.rows_scored > 0
    scores, events = _marts(warehouse)
    assert scores.select("sensor_id", "ts").equals(clean_scores.select("sensor_id", "ts"))
    np.testing.assert_allclose(scores["severity"], clean_scores["severity"], atol=1e-9)
    assert scores.drop("severity").equals(clean_scores.drop("severity"))
    keys = ["sensor_id", "start_ts", "end_ts", "anomaly_type"]
    assert events.select(keys).equals(clean_events.select(keys))
    assert check_warehouse(warehouse).problems == []
    assert score(warehouse).rows_scored == 0  # repaired: nothing left to rescore


def test_quick_checks_sizes_and_deep_reads_footers_and_row_counts(scored: Warehouse) -> None:
    victim = sorted((scored.marts_dir / "anomaly_events").rglob("*.parquet"))[0]
    body = bytearray(victim.read_bytes())
    body[-2:] = b"XX"  # same size, the footer's magic broken
    victim.write_bytes(bytes(body))
    assert _run(scored, "check", "--quick")[0] == 0
    code, out = _run(scored, "check")
    assert code == 2 and "UNREADABLE" in out and "not valid Parquet" in out


def test_marts_that_disagree_with_the_lake_are_a_bookkeeping_problem(scored: Warehouse) -> None:
    with scored.writer() as con:  # as if one score file's rows were recorded short
        con.execute(
            "update mart_files set rows = rows - 10 where path = "
            "(select min(path) from mart_files where mart = 'anomaly_scores')"
        )
    kinds = {p.kind for p in check_warehouse(scored).problems}
    assert kinds == {"rows", "bookkeeping"}


def test_a_broken_production_pointer_is_a_registry_problem(scored: Warehouse) -> None:
    scored.registry_dir.mkdir(parents=True, exist_ok=True)
    (scored.registry_dir / "production.json").write_text("[]", encoding="utf-8")
    (problem,) = check_warehouse(scored).problems
    assert (problem.area, problem.path) == ("registry", "registry/production.json")
    assert "oxy promote RUN_ID" in problem.repair


def test_check_of_a_missing_warehouse_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path / "none"), "check"])
    assert result.exit_code == 1 and result.output.startswith("Error: no warehouse at")
