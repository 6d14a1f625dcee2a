"""Shared fixtures: a fresh temporary warehouse and tiny generated readings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from engine.config import Config
from engine.warehouse import READINGS_SCHEMA, Warehouse


@pytest.fixture
def config() -> Config:
    return Config.load()


@pytest.fixture
def warehouse(tmp_path: Path, config: Config) -> Warehouse:
    return Warehouse(tmp_path / "warehouse", config)


def load_readings(
    warehouse: Warehouse,
    readings: pl.DataFrame,
    *,
    timezone: str = "UTC",
    customer: str = "test",
    unit: str = "mg/L",
    batch_id: str = "test-batch",
) -> None:
    """Put canonical readings (at least ``sensor_id, ts, value``) straight into the lake.

    For tests of later stages that need a warehouse without going through ingest.
    """
    defaults = {
        "unit": pl.lit(unit),
        "customer": pl.lit(customer),
        "source_file": pl.lit("test.csv"),
        "ingested_at": pl.lit(datetime(2024, 1, 1)),
    }
    frame = readings.with_columns(
        [expr.alias(name) for name, expr in defaults.items() if name not in readings.columns]
    ).select(READINGS_SCHEMA.names)
    with warehouse.writer() as con:
        warehouse.register_sensors(
            con,
            [
                {
                    "sensor_id": sid,
                    "customer": customer,
                    "source": "test",
                    "timezone": timezone,
                    "unit": unit,
                    "levels": sid.split("|"),
                }
                for sid in frame["sensor_id"].unique().sort().to_list()
            ],
        )
        con.register("batch_readings", frame.to_arrow().cast(READINGS_SCHEMA))
        con.execute("begin")
        warehouse.publish(con, warehouse.stage_readings(con, batch_id))
        con.execute("commit")
        con.unregister("batch_readings")


@pytest.fixture
def readings_loader() -> Callable[..., None]:
    """``readings_loader(warehouse, frame, timezone=...)``: see :func:`load_readings`."""
    return load_readings


# The working tree's cli.py must win over a stale copy a non-editable install may have left in
# site-packages (hatchling force-includes cli.py there).
_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)
