"""Every mart reads back with plain pyarrow with exactly the schema the README documents."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from engine import anomaly
from engine.monitor import run_monitor
from engine.registry import record_run
from engine.warehouse import Warehouse

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
}


def documented_marts() -> dict[str, list[tuple[str, str]]]:
    """``{mart: [(column, TYPE), ...]}`` from the README's "#### `name`" tables."""
    marts: dict[str, list[tuple[str, str]]] = {}
    section = README.split("### Marts", 1)[1].split("\n## ", 1)[0]
    for block in re.split(r"^#### ", section, flags=re.M)[1:]:
        name = re.match(r"`([a-z_]+)`", block).group(1)
        rows = re.findall(r"^\| ([a-z_0-9]+) \| ([A-Z]+) \|", block, flags=re.M)
        marts[name] = rows
    return marts


def test_readme_documents_every_operations_mart() -> None:
    marts = documented_marts()
    assert {"model_runs", "monitoring", "anomaly_scores", "anomaly_events"} <= set(marts)
    for name, columns in marts.items():
        assert columns, f"{name}: no column table"
        assert {t for _, t in columns} <= set(ARROW_TYPES), name


@pytest.fixture
def looped_warehouse(warehouse: Warehouse, readings_loader) -> Warehouse:
    """A warehouse where every operations command has written its mart."""
    rng = np.random.default_rng(0)
    minutes = np.arange(2 * 1440)
    start = datetime(2024, 3, 1)
    readings = pl.DataFrame(
        {
            "sensor_id": "s1",
            "ts": [start + timedelta(minutes=int(m)) for m in minutes],
            "value": 8 + rng.normal(0, 0.1, minutes.size),
        }
    ).with_columns(
        value=pl.when(pl.col("ts") == start + timedelta(hours=30))
        .then(20.0)
        .otherwise(pl.col("value"))
    )  # one spike: anomaly_events has a row
    readings_loader(warehouse, readings)
    anomaly.score(warehouse)
    folder = warehouse.registry_dir / "runs" / "r1"
    folder.mkdir(parents=True)
    meta = {
        "run_id": "r1",
        "created_at": "2024-03-03T00:00:00",
        "params": {"learning_rate": 0.1},
        "metrics": {"test": {"mae": 0.1, "rmse": 0.12, "mase": 0.9}},
        "split": {"test_start": "2024-03-02T00:00:00", "test_end": "2024-03-03T00:00:00"},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    record_run(warehouse, "r1", meta)
    run_monitor(warehouse)
    return warehouse


def test_marts_match_documented_schema(looped_warehouse: Warehouse) -> None:
    marts = documented_marts()
    written = looped_warehouse.mart_names()
    assert {"model_runs", "monitoring", "anomaly_scores", "anomaly_events"} <= set(written)
    for name in written:
        if name not in marts:
            continue  # a mart of another stage not documented here is checked by its owner
        dataset = ds.dataset(
            looped_warehouse.marts_dir / name, format="parquet", partitioning="hive"
        )
        table = dataset.to_table()
        expected = [(c, ARROW_TYPES[t]) for c, t in marts[name]]
        actual = [(f.name, f.type) for f in table.schema]
        assert actual == expected, name
        assert table.num_rows > 0, name
