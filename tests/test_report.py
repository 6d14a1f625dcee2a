"""Report: any sensor and window, every event with its plot, gaps as gaps, zones named, metrics
beside their naive baselines; every image loads and every link resolves (HTML and Chromium)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from report_check import check_html, check_in_browser, chromium

from cli import oxy
from engine.config import Config
from engine.detectors import COLOURS
from engine.registry import record_run
from engine.report import (
    TYPE_COLOURS,
    build_report,
    plot_anomalies,
    slug,
    to_utc,
    type_colour,
    with_gaps,
)
from engine.warehouse import Warehouse

START = datetime(2024, 3, 1)
SENSORS = ("farm|cage 1", "farm|cage 2", "pond/3")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OSLO = "Europe/Oslo"


@pytest.fixture
def wh(tmp_path: Path, config: Config) -> Warehouse:
    return Warehouse(tmp_path / "wh", config.with_overrides({"report": {"dpi": 40}}))


def readings(days: int = 3, every: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    minutes = np.arange(0, days * 1440, every)
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


BACKTEST = {
    "model": {"mae": 0.1, "rmse": 0.12, "mase": 0.9},
    "naive_day": {"mae": 0.2, "rmse": 0.25, "mase": 1.8},
    "naive_week": {"mae": 0.3, "rmse": 0.35, "mase": 2.7},
}


def add_events_and_forecast(wh: Warehouse, events: pl.DataFrame | None = None) -> None:
    """Synthetic anomaly_events (cage 2 worst, then pond/3) and a production forecast."""
    if events is None:
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
        "metrics": {"test": BACKTEST["model"], "backtest": {"week": BACKTEST}},
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
    readings_loader(wh, readings(), timezone=OSLO)
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
    assert "Latest monitoring" in index

    pages = [result.index, *result.sensor_pages.values()]
    images = [img for page in pages for img in referenced_images(page)]
    linked = {p.resolve() for p in result.images}
    assert {img.resolve() for img in images} | {
        p for p in linked if "-event-" in p.name
    } == linked  # event plots are linked from their table, the rest shown inline
    for img in result.images:
        data = img.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    cage2 = result.sensor_pages["farm|cage 2"].read_text()
    assert "-forecast.png" in cage2 and "-anomalies.png" in cage2
    assert "stuck" in cage2  # the events table lists types
    # the synthetic run has no verifiable model files: said on the page, not a crash
    assert "the production model cannot be used: run r1: no manifest.json" in cage2
    assert not list(result.output.rglob("*.tmp"))
    # index: 9 sensor links (two rankings, the page list); pages: 3 back links, 3 event plots
    assert check_html(result.index) == {"pages": 4, "images": 8, "links": 15}


def test_index_puts_each_headline_metric_beside_its_naive(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, readings())
    add_events_and_forecast(wh)
    index = build_report(wh, wh.root.parent / "report").index.read_text()
    table = re.search(r"<h2>Production model</h2>.*?(<table>.*?</table>)", index).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    assert rows == [
        ("model (production run)", "0.1", "0.12", "0.9"),
        ("naive: same time yesterday", "0.2", "0.25", "1.8"),
        ("naive: same time last week", "0.3", "0.35", "2.7"),
    ]
    assert "<th>MAE</th><th>RMSE</th><th>MASE</th>" in table
    assert "naive MAE (previous reading)" in index  # the forecast-error table's baseline


def test_every_event_is_listed_with_a_plot_in_local_time(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, readings(), timezone=OSLO)
    starts = [START + timedelta(hours=h) for h in range(2, 62, 5)]  # 12 events
    events = pl.DataFrame(
        {
            "sensor_id": "pond/3",
            "start_ts": starts,
            "end_ts": [s + timedelta(minutes=19) for s in starts],
            "minutes": 20,
            "anomaly_type": ["spike", "drift", "brand_new_type"] * 4,
            "peak_severity": np.linspace(0.5, 0.95, 12),
            "mean_severity": 0.5,
        }
    )
    add_events_and_forecast(wh, events)
    result = build_report(wh, wh.root.parent / "report", sensors=["pond/3"])
    page = result.sensor_pages["pond/3"].read_text()
    assert "Anomaly events (12)" in page
    assert page.count("-event-") == 12 and result.events == 12
    # 02:00 UTC on 1 March is 03:00 in Oslo (UTC+1): the table and axes say so
    assert "<th>start (Europe/Oslo)</th>" in page and "<td>2024-03-01 03:00</td>" in page
    # each known type in the detector registry's colour; an unknown one grey, no crash
    assert f"background:{COLOURS['spike']}" in page and f"background:{COLOURS['drift']}" in page
    assert type_colour("brand_new_type") not in COLOURS.values()
    assert f"background:{type_colour('brand_new_type')}" in page
    utc = build_report(wh, wh.root.parent / "utc", sensors=["pond/3"], utc=True)
    utc_page = utc.sensor_pages["pond/3"].read_text()
    assert "<th>start (UTC)</th>" in utc_page and "<td>2024-03-01 02:00</td>" in utc_page
    # only the worst report.event_plots get a plot; every event is still listed
    few = Warehouse(wh.root, wh.config.with_overrides({"report": {"event_plots": 3}}))
    capped = build_report(few, wh.root.parent / "few", sensors=["pond/3"]).sensor_pages["pond/3"]
    assert capped.read_text().count("no plot (report.event_plots)") == 9
    assert check_html(capped.parent / "index.html")["links"] > 0


def test_a_chosen_sensor_and_window_show_an_old_event(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, readings(days=40, every=15))
    big = pl.DataFrame(
        {
            "sensor_id": "farm|cage 1",
            "start_ts": [START + timedelta(days=2)],
            "end_ts": [START + timedelta(days=2, hours=6)],
            "minutes": [361],
            "anomaly_type": ["collective"],
            "peak_severity": [1.0],
            "mean_severity": [0.9],
        }
    )
    add_events_and_forecast(wh, big)
    default = build_report(wh, wh.root.parent / "default")
    assert default.end - default.start == timedelta(days=14)
    assert "no anomaly events in this window" in default.sensor_pages["farm|cage 1"].read_text()
    out = wh.root.parent / "chosen"
    cli = CliRunner().invoke(
        oxy,
        [
            "--warehouse", str(wh.root), "report", "--output", str(out), "--sensor",
            "farm|cage 1", "--from", "2024-03-01", "--to", "2024-03-05T12:00", "--utc",
        ],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert cli.output.startswith("this run: ") and "\nwarehouse: " in cli.output
    pages = list(out.glob("sensor-*.html"))
    assert [p.name for p in pages] == [f"sensor-{slug('farm|cage 1')}.html"]
    page = pages[0].read_text()
    assert "Anomaly events (1)" in page and "collective" in page
    assert "2024-03-01 00:00 to 2024-03-05 12:00 (UTC)" in page
    check_html(out / "index.html")


def test_unknown_sensor_and_bad_times_are_one_line_errors(wh: Warehouse, readings_loader) -> None:
    readings_loader(wh, readings(days=1))
    runner = CliRunner()
    base = ["--warehouse", str(wh.root), "report"]
    out = runner.invoke(oxy, [*base, "--sensor", "nope"])
    assert out.exit_code == 1 and out.output == "Error: unknown sensor(s): nope\n"
    out = runner.invoke(oxy, [*base, "--from", "yesterday"])
    assert out.exit_code == 2 and "is not a time like 2024-03-01" in out.output
    out = runner.invoke(oxy, [*base, "--from", "2024-03-02", "--to", "2024-03-01"])
    assert out.exit_code == 1 and "must be before --to" in out.output


def test_gaps_are_drawn_as_gaps_and_axes_name_their_zone() -> None:
    ts = [START + timedelta(minutes=m) for m in range(60)]
    ts += [START + timedelta(days=3, minutes=m) for m in range(60)]
    frame = pl.DataFrame({"sensor_id": "s", "ts": ts, "value": np.ones(120)})
    gapped = with_gaps(frame, 5.0)
    assert gapped.height == 121 and gapped["value"].null_count() == 1
    fig = plot_anomalies(frame, pl.DataFrame(), "mg/L", OSLO, 5.0, "t")
    ax = fig.axes[0]
    ydata = np.asarray(ax.lines[0].get_ydata(), dtype=float)
    assert np.isnan(ydata).sum() == 1  # the line stops at the 3-day gap
    assert ax.get_xlabel() == "time (Europe/Oslo)"
    assert to_utc(datetime(2024, 7, 1, 12), OSLO) == datetime(2024, 7, 1, 10)
    assert TYPE_COLOURS == COLOURS  # the report draws the registry's colours


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
    assert "no production model yet" in page
    assert page.count("<img") == 1  # the readings, nothing else to draw
    check_html(wh.root / "report" / "index.html")


def test_report_on_missing_warehouse_is_one_line(tmp_path: Path) -> None:
    out = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path / "none"), "report"])
    assert out.exit_code == 1 and out.output.startswith("Error: no warehouse at ")


def test_html_check_catches_a_missing_image_and_a_dead_link(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "index.html").write_text("<img src='img/none.png'>")
    with pytest.raises(AssertionError, match="does not exist"):
        check_html(tmp_path / "index.html")
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "index.html").write_text("<img src='img/bad.png'>")
    with pytest.raises(Exception, match="cannot identify image"):
        check_html(tmp_path / "index.html")
    (tmp_path / "index.html").write_text("<a href='sensor-x.html'>x</a>")
    with pytest.raises(AssertionError, match="does not resolve"):
        check_html(tmp_path / "index.html")
    (tmp_path / "index.html").write_text("<a href='#nowhere'>x</a>")
    with pytest.raises(AssertionError, match="no #nowhere"):
        check_html(tmp_path / "index.html")


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


BROWSER = chromium()


@pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium installed (`make test` installs Debian's chromium where it can: "
    "apt-get install chromium)",
)
def test_the_report_renders_in_headless_chromium(
    wh: Warehouse, readings_loader, fake_forecasting_engine: list[str]
) -> None:
    readings_loader(wh, readings(), timezone=OSLO)
    add_events_and_forecast(wh)
    CliRunner().invoke(oxy, ["--warehouse", str(wh.root), "monitor"])
    result = build_report(wh, wh.root.parent / "report")
    assert BROWSER is not None
    seen = check_in_browser(result.index, BROWSER)
    in_html = check_html(result.index)
    assert seen["pages"] == in_html["pages"] == 4
    assert seen["images"] == in_html["images"] and seen["images"] >= 10
    # a broken image is caught by the browser too
    next(result.output.glob("img/*-residuals.png")).write_bytes(b"broken")
    with pytest.raises(AssertionError, match="did not load"):
        check_in_browser(result.index, BROWSER)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")
def test_the_browser_check_runs_in_a_process_with_few_files_open(tmp_path: Path) -> None:
    """In a fresh process the DevTools pipe ends are fds 3-6: the check must still hand
    Chromium fds 3 and 4 (it once lost fd 3 to close-on-exec there: a broken pipe)."""
    import subprocess
    import sys

    (tmp_path / "dot.png").write_bytes(save_dot(tmp_path / "dot.png"))
    (tmp_path / "page.html").write_text("<img src='dot.png'>")
    (tmp_path / "index.html").write_text("<img src='dot.png'><a href='page.html'>p</a>")
    script = (
        "import sys; from pathlib import Path; from report_check import check_in_browser; "
        "print(check_in_browser(Path(sys.argv[1]), sys.argv[2]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "index.html"), str(BROWSER)],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "{'pages': 2, 'images': 2, 'links': 1}"


def save_dot(path: Path) -> bytes:
    """A 4 x 4 PNG."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.04, 0.04), dpi=100)
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


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
    index = result.index.read_text()
    assert f"run {run_id}, week-ahead backtest" in index and "naive: same time yesterday" in index
    page = result.sensor_pages["farm|cage 1"].read_text()
    for plot in ("actual-vs-predicted", "residuals", "forecast", "anomalies"):
        png = result.output / "img" / f"{slug('farm|cage 1')}-{plot}.png"
        assert f"img/{png.name}" in page and png.read_bytes().startswith(PNG_MAGIC)
    check_html(result.index)


def test_report_sql_fixed_answers(tmp_path: Path) -> None:
    """The report's queries on a handful of rows: windows are (start, end], events overlapping
    the window count, the latest monitor run's alerts come first, the latest forecast only."""
    import duckdb

    from engine.warehouse import sql_text

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    t0, hour = START, timedelta(hours=1)
    window = {"start": t0 + 10 * hour, "end": t0 + 20 * hour}
    con.execute(
        "create table anomaly_events as select * from (values "
        "('a', $t0 + interval 8 hour, $t0 + interval 11 hour, 180, 'drift', 0.9, 0.5), "
        "('a', $t0 + interval 9 hour, $t0 + interval 10 hour, 60, 'spike', 0.8, 0.8), "
        "('a', $t0 + interval 20 hour, $t0 + interval 21 hour, 60, 'noise', 0.7, 0.6), "
        "('a', $t0 + interval 21 hour, $t0 + interval 22 hour, 60, 'stuck', 0.7, 0.6), "
        "('b', $t0 + interval 12 hour, $t0 + interval 12 hour, 1, 'point', 0.6, 0.6)"
        ") as t(sensor_id, start_ts, end_ts, minutes, anomaly_type, peak_severity, "
        "mean_severity)",
        {"t0": t0},
    )
    events = con.execute(sql_text("report/sensor_events"), {**window, "sensor_id": "a"})
    # the drift began before the window and ends inside it; the spike ends at its start (out);
    # the noise starts at its end (in); the stuck run lies after it (out)
    assert [(r[3], r[2]) for r in events.fetchall()] == [("drift", 180), ("noise", 60)]
    ranking = con.execute(sql_text("report/anomaly_minutes"), window).fetchall()
    assert sorted(ranking) == [("a", 240, 2), ("b", 1, 1)]
    con.execute(
        'create table monitoring as select time, scope, "check", value::double as value, '
        "threshold::double as threshold, status, reason from (values "
        "($t0, 'a', 'stale', 1, 1, 'alert', 'old run'), "
        "($t0 + interval 1 day, 'b', 'stale', 0, 1, 'ok', ''), "
        "($t0 + interval 1 day, 'a', 'drift_psi', 0.2, 0.1, 'warn', ''), "
        "($t0 + interval 1 day, 'c', 'anomaly_rate', 0.9, 0.1, 'alert', '')"
        ') as t(time, scope, "check", value, threshold, status, reason)',
        {"t0": t0},
    )
    latest = con.execute(sql_text("report/latest_monitoring")).fetchall()
    assert [(r[1], r[5]) for r in latest] == [("c", "alert"), ("a", "warn"), ("b", "ok")]
    con.execute(
        "create table forecasts as select * from (values "
        "('r1', 'a', $t0, $t0 + interval 1 minute, 1.0, 0.5, 1.5), "
        "('r1', 'a', $d1, $d1 + interval 2 minute, 3.0, 2.0, 4.0), "
        "('r1', 'a', $d1, $d1 + interval 1 minute, 2.0, 1.0, 3.0), "
        "('r2', 'a', $d2, $d2 + interval 1 minute, 9.0, 8.0, 10.0)"
        ") as t(run_id, sensor_id, origin_ts, ts, yhat, yhat_lo, yhat_hi)",
        {"t0": t0, "d1": t0 + 24 * hour, "d2": t0 + 48 * hour},
    )
    forecast = con.execute(sql_text("report/sensor_forecast"), {"run_id": "r1", "sensor_id": "a"})
    assert [r[2] for r in forecast.fetchall()] == [2.0, 3.0]  # run r1's latest origin, in order
    lake = tmp_path / "lake.parquet"
    pl.DataFrame(
        {
            "sensor_id": ["a", "a", "a", "b"],
            "ts": [t0 + 10 * hour, t0 + 15 * hour, t0 + 20 * hour, t0 + 15 * hour],
            "value": [1.0, 2.0, 3.0, 4.0],
        }
    ).write_parquet(lake)
    rows = con.execute(
        sql_text("report/sensor_readings"), {**window, "sensor_id": "a", "paths": [str(lake)]}
    ).fetchall()
    assert [r[2] for r in rows] == [2.0, 3.0]  # (start, end]: the reading at start is out
