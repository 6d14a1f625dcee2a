"""Shared fixtures: a fresh temporary warehouse and tiny generated readings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from engine.config import Config
from engine.warehouse import Warehouse, canonical_readings

# A tiny, quick forecasting grid for tests that train (one grid point, 30 trees).
FAST_FORECAST = {
    "forecast": {
        "learning_rates": [0.1],
        "num_leaves": [7],
        "num_boost_round": 30,
        "early_stopping_rounds": 5,
        "min_data_in_leaf": 20,
        "origin_every": "3h",
        "backtest_every": "3d",
        "backtest_step": "30m",
    }
}


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
    )
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
        con.register("batch_readings", canonical_readings(frame))
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


@pytest.fixture
def fake_forecasting_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-ins for ``engine.artifacts.load_run`` and ``engine.forecast.one_step_predictions``
    (prediction = the sensor's previous value), for tests of the stages that consume them.
    Returns the list of run ids loaded."""
    import types

    import engine

    loaded: list[str] = []
    artifacts = types.ModuleType("engine.artifacts")
    forecast = types.ModuleType("engine.forecast")

    def load_run(warehouse: Warehouse, run_id: str) -> dict[str, str]:
        loaded.append(run_id)
        return {"run_id": run_id}

    def one_step_predictions(
        warehouse: Warehouse, run: object, readings: pl.DataFrame
    ) -> pl.DataFrame:
        return readings.sort("sensor_id", "ts").with_columns(
            yhat=pl.col("value").shift(1).over("sensor_id")
        )

    artifacts.load_run = load_run  # type: ignore[attr-defined]
    forecast.one_step_predictions = one_step_predictions  # type: ignore[attr-defined]
    for name, module in (("artifacts", artifacts), ("forecast", forecast)):
        monkeypatch.setitem(sys.modules, f"engine.{name}", module)
        monkeypatch.setattr(engine, name, module, raising=False)
    return loaded
