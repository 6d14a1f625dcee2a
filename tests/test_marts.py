"""Every mart reads back with plain pyarrow with exactly the schema the README documents."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from conftest import FAST_FORECAST, load_readings
from engine import anomaly, forecast
from engine.config import Config
from engine.monitor import run_monitor
from engine.registry import production_run
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
    assert {"model_runs", "monitoring", "anomaly_scores", "anomaly_events", "forecasts"} <= set(
        marts
    )
    for name, columns in marts.items():
        assert columns, f"{name}: no column table"
        assert {t for _, t in columns} <= set(ARROW_TYPES), name


@pytest.fixture(scope="module")
def looped_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """The whole loop on 2 sensors x 22 days: score, train twice, forecast, monitor."""
    root = tmp_path_factory.mktemp("loop") / "warehouse"
    warehouse = Warehouse(root, Config.load().with_overrides(FAST_FORECAST))
    rng = np.random.default_rng(0)
    minutes = np.arange(22 * 1440)
    start = datetime(2024, 3, 1)
    ts = [start + timedelta(minutes=int(m)) for m in minutes]
    readings = pl.concat(
        pl.DataFrame(
            {
                "sensor_id": sensor,
                "ts": ts,
                "value": level
                + np.sin(2 * np.pi * minutes / 1440)
                + rng.normal(0, 0.1, minutes.size),
            }
        )
        for sensor, level in (("s1", 8.0), ("s2", 9.0))
    ).with_columns(  # one spike: anomaly_events has a row
        value=pl.when(pl.col("ts") == start + timedelta(hours=30)).then(20.0).otherwise("value")
    )
    load_readings(warehouse, readings)
    anomaly.score(warehouse)
    quiet = {"echo": lambda _: None}
    first = forecast.train(warehouse, **quiet)
    second = forecast.train(warehouse, **quiet)  # same data, same seed: same metrics
    assert first.decision["promoted"] and first.decision["reason"] == "first run: promoted"
    assert not second.decision["promoted"]
    assert second.decision["reason"].startswith("not promoted, RMSE not lower")
    assert production_run(warehouse) == first.run_id
    forecast.forecast(warehouse, **quiet)
    run_monitor(warehouse)
    return warehouse


def test_marts_match_documented_schema(looped_warehouse: Warehouse) -> None:
    marts = documented_marts()
    written = looped_warehouse.mart_names()
    assert {"model_runs", "monitoring", "anomaly_scores", "anomaly_events", "forecasts"} <= set(
        written
    )
    for name in written:
        if name not in marts:
            continue  # a mart of another stage not documented here is checked by its owner
        dataset = ds.dataset(
            looped_warehouse.marts_dir / name, format="parquet", partitioning="hive"
        )
        table = dataset.to_table()
        expected = [(c, ARROW_TYPES[t]) for c, t in marts[name]]
        # VARCHAR is UTF-8 byte arrays in Parquet; writers record it as string or large_string
        actual = [
            (f.name, pa.string() if f.type == pa.large_string() else f.type) for f in table.schema
        ]
        assert actual == expected, name
        assert table.num_rows > 0, name
