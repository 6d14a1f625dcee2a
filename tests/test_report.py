"""Report: HTML that references non-empty PNGs, the right sensor pages, graceful degradation."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cli import oxy
from engine.config import Config
from engine.registry import record_run
from engine.report import build_report, slug
from engine.warehouse import Warehouse

START = datetime(2024, 3, 1)
SENSORS = ("farm|cage 1", "farm|cage 2", "pond/3")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def wh(tmp_path: Path, config: Config) -> Warehouse:
    return Warehouse(tmp_path / "wh", config.with_overrides({"report": {"dpi": 40}}))


def readings(days: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    minutes = np.arange(days * 1440)
    ts = [START + timedelta(minutes=int(m)) for m in minutes]
    return pl.concat(
        pl.DataFrame(
            {
                "sensor_id": sid,
                "ts": ts,
                "value": 8 + np.sin(minutes / 229) + rng.normal(0, 0.1, minutes.size),
            }
        )
        for sid in SENSORS
    )


def add_events_and_forecast(wh: Warehouse) -> None:
    """Synthetic anomaly_events (cage 2 worst, then pond/3) and a production forecast."""
    events = pl.DataFrame(
        {
            "sensor_id": ["farm|cage 2", "farm|cage 2", "pond/3"],
            "start_ts": [START + timedelta(hours=h) for h in (10, 30, 40)],
            "end_ts": [START + timedelta(hours=h, minutes=59) for h in (10, 30, 40)],
            "minutes": [60, 60, 60],
            "anomaly_type": ["point", "stuck", "spike"],
            "peak_severity": [0.9, 0.8, 0.7],
            "mean_severity": [0.6, 0.6, 0.5],
        }
    )
    folder = wh.registry_dir / "runs" / "r1"
    folder.mkdir(parents=True)
    meta = {
        "run_id": "r1",
        "created_at": "2024-03-03T00:00:00",
        "params": {},
        "metrics": {"test": {"mae": 0.1, "rmse": 0.12, "mase": 0.9}},
        "split": {
            "valid_start": "2024-03-02T00:00:00",
            "test_start": "2024-03-02T12:00:00",
            "test_end": "2024-03-03T00:00:00",
        },
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    record_run(wh, "r1", meta)
    origin = START + timedelta(days=2)
    horizon = np.arange(1, 7 * 1440 + 1)
    forecast = pl.concat(
        pl.DataFrame(
            {
                "run_id": "r1",
                "sensor_id": sid,
                "origin_ts": origin,
                "ts": [origin + timedelta(minutes=int(h)) for h in horizon],
                "horizon_min": horizon,
                "yhat": 8.0 + i,
                "yhat_lo": 7.5 + i,
                "yhat_hi": 8.5 + i,
            }
        )
        for i, sid in enumerate(SENSORS)
    )
    with wh.writer() as con:
        con.register("synthetic_events", events.to_arrow())
        con.register("synthetic_forecast", forecast.to_arrow())
        wh.write_mart(con, "anomaly_events", "select * from synthetic_events")
        wh.write_mart(con, "forecasts", "select * from synthetic_forecast")
        wh.refresh_mart_views(con)


def referenced_images(page: Path) -> list[Path]:
    return [page.parent / src for src in re.findall(r"<img src='([^']+)'", page.read_text())]


def test_full_report_references_real_pngs_and_right_pages(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, readings())
    add_events_and_forecast(wh)
    CliRunner().invoke(oxy, ["--warehouse", str(wh.root), "monitor"])
    result = build_report(wh, wh.root.parent / "report")

    assert set(result.sensor_pages) == set(SENSORS)
    index = result.index.read_text()
    for sid, page in result.sensor_pages.items():
        assert page.name == f"sensor-{slug(sid)}.html"
        assert f"href='{page.name}'" in index
        assert f"<h1>Sensor {sid}</h1>" in page.read_text()
    # ranked by anomaly minutes: cage 2 (120) before pond/3 (60); cage 1 has none
    assert index.index("farm|cage 2") < index.index("pond/3")
    assert "Latest monitoring" in index and "run r1: test MAE 0.1" in index

    pages = [result.index, *result.sensor_pages.values()]
    images = [img for page in pages for img in referenced_images(page)]
    assert {img.resolve() for img in images} == {p.resolve() for p in result.images}
    for img in images:
        data = img.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    cage2 = result.sensor_pages["farm|cage 2"].read_text()
    assert "-forecast.png" in cage2 and "-anomalies.png" in cage2
    assert "stuck" in cage2  # the events table lists types
    # the synthetic run has no verifiable model files: said on the page, not a crash
    assert "the production model cannot be used: run r1: no manifest.json" in cage2
    assert not list(result.output.rglob("*.tmp"))


def test_max_sensors_keeps_the_worst(wh: Warehouse, readings_loader, tmp_path: Path) -> None:
    readings_loader(wh, readings())
    add_events_and_forecast(wh)
    small = Warehouse(wh.root, wh.config.with_overrides({"report": {"max_sensors": 2}}))
    result = build_report(small, tmp_path / "out")
    assert list(result.sensor_pages) == ["farm|cage 2", "pond/3"]
    assert "1 more sensors have no page" in result.index.read_text()


def test_degrades_when_stages_have_not_run(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, readings(days=1))
    out = CliRunner().invoke(oxy, ["--warehouse", str(wh.root), "report"])
    assert out.exit_code == 0, out.output
    index = (wh.root / "report" / "index.html").read_text()
    assert "no production model yet (run `oxy train`)" in index
    assert "no anomaly scores yet (run `oxy score`)" in index
    assert "monitoring has not run yet (run `oxy monitor`)" in index
    page = (wh.root / "report" / f"sensor-{slug('pond/3')}.html").read_text()
    assert "no production model yet" in page and "<img" not in page


def test_report_on_missing_warehouse_is_one_line(tmp_path: Path) -> None:
    out = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path / "none"), "report"])
    assert out.exit_code == 1 and out.output.startswith("Error: no warehouse at ")


def test_actual_vs_predicted_and_residuals_from_the_production_model(
    wh: Warehouse, readings_loader, fake_forecasting_engine: list[str]
) -> None:
    loaded = fake_forecasting_engine
    readings_loader(wh, readings())
    add_events_and_forecast(wh)
    result = build_report(wh, wh.root.parent / "report")
    assert set(loaded) == {"r1"}
    page = result.sensor_pages["pond/3"].read_text()
    for plot in ("actual-vs-predicted", "residuals", "forecast", "anomalies"):
        png = result.output / "img" / f"{slug('pond/3')}-{plot}.png"
        assert f"img/{png.name}" in page
        assert png.read_bytes().startswith(PNG_MAGIC)


def test_report_on_the_real_loop(tmp_path: Path, readings_loader) -> None:
    from conftest import FAST_FORECAST
    from engine import anomaly, forecast

    wh = Warehouse(tmp_path / "loop", Config.load().with_overrides(FAST_FORECAST))
    readings_loader(wh, readings(days=22).filter(pl.col("sensor_id") != "pond/3"))
    anomaly.score(wh)
    run_id = forecast.train(wh, echo=lambda _: None).run_id
    forecast.forecast(wh, echo=lambda _: None)
    result = build_report(wh, tmp_path / "out")
    assert set(result.sensor_pages) == {"farm|cage 1", "farm|cage 2"}
    assert f"run {run_id}: test" in result.index.read_text()
    page = result.sensor_pages["farm|cage 1"].read_text()
    for plot in ("actual-vs-predicted", "residuals", "forecast", "anomalies"):
        png = result.output / "img" / f"{slug('farm|cage 1')}-{plot}.png"
        assert f"img/{png.name}" in page and png.read_bytes().startswith(PNG_MAGIC)
