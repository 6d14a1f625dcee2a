"""Demo data: determinism, labels that hold what they claim, physics, exports, CLI."""

from __future__ import annotations

import inspect
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import oxy
from engine import OxyError
from engine.config import Config
from engine.demo import (
    DEFAULT_START,
    EXPORTS,
    LABEL_TYPES,
    SITES,
    DemoData,
    generate_demo,
    oxygen_solubility_mg_l,
    read_labels,
    simulate,
    sources_toml,
)

SMALL = {"sensors_per_site": 1, "days": 4, "clean_days": 1}


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return simulate()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, generate_demo(out)


def _with_labels(demo: DemoData) -> pl.DataFrame:
    return (
        demo.readings.join_where(
            demo.labels.rename({"sensor_id": "label_sensor", "type": "label_type"}),
            pl.col("sensor_id") == pl.col("label_sensor"),
            pl.col("ts") >= pl.col("start"),
            pl.col("ts") <= pl.col("end"),
        )
        .select("sensor_id", "ts", "label_type", "start", "end")
        .join(demo.readings, on=["sensor_id", "ts"], how="right")
    )


def _local(frame: pl.DataFrame, demo: DemoData) -> pl.DataFrame:
    """Add the site's local clock hour (``hour``) and its kind to readings."""
    meta = demo.sensors.select("sensor_id", "timezone", "site_kind", "site")
    parts = []
    for (zone,), part in frame.join(meta, on="sensor_id").group_by("timezone"):
        local = pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone(zone)
        parts.append(part.with_columns(hour=local.dt.hour()))
    return pl.concat(parts)


# --- physics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "fresh", "sea"),
    [(0, 14.62, 11.47), (10, 11.29, 9.03), (20, 9.09, 7.39), (30, 7.56, 6.23), (35, 6.95, 5.76)],
)
def test_solubility_matches_the_design_reference_table(
    temperature: float, fresh: float, sea: float
) -> None:
    assert abs(float(oxygen_solubility_mg_l(temperature)) - fresh) < 0.05
    assert abs(float(oxygen_solubility_mg_l(temperature, 35.0)) - sea) < 0.05


def test_pond_is_lowest_at_dawn_and_highest_in_the_afternoon(demo: DemoData) -> None:
    clean = _with_labels(demo).filter(pl.col("label_type").is_null())
    ponds = _local(clean, demo).filter(pl.col("site_kind") == "pond")
    profile = ponds.group_by("sensor_id", "hour").agg(pl.col("value").mean()).sort("hour")
    extremes = profile.group_by("sensor_id").agg(
        pl.col("hour").sort_by("value").first().alias("low"),
        pl.col("hour").sort_by("value").last().alias("high"),
        pl.col("value").max().alias("peak"),
    )
    assert extremes.height == 4
    assert extremes["low"].is_between(4, 7).all(), extremes
    assert extremes["high"].is_between(12, 16).all(), extremes
    assert (extremes["peak"] > 105).all()  # afternoon supersaturation
    assert ponds["value"].max() < 200


def test_ras_holds_its_setpoint(demo: DemoData) -> None:
    clean = _with_labels(demo).filter(pl.col("label_type").is_null())
    ras = _local(clean, demo).filter(pl.col("site_kind") == "ras")
    stats = ras.group_by("sensor_id").agg(
        pl.col("value").median().alias("median"),
        (pl.col("value").quantile(0.95) - pl.col("value").quantile(0.05)).alias("spread"),
    )
    assert stats.height == 2
    assert stats["median"].is_between(9.0, 11.0).all(), stats
    assert (stats["spread"] < 1.6).all(), stats
    # the controller oscillates: no clean hour of a tank is flat
    hourly = ras.group_by("sensor_id", pl.col("ts").dt.truncate("1h")).agg(pl.col("value").std())
    assert (hourly["value"].drop_nulls() > 0.02).all()


def test_sea_cages_stay_below_benson_krause_saturation(demo: DemoData) -> None:
    cages = (
        _local(demo.readings, demo)
        .filter(pl.col("site_kind") == "seacage")
        .with_columns(pl.col("ts").dt.truncate("1h").alias("hour_ts"))
        .join(demo.conditions.rename({"ts": "hour_ts"}), on=["site", "hour_ts"])
    )
    below = (cages["value"] < cages["saturation_mg_l"]).mean()
    assert below > 0.95
    assert cages["water_temp_c"].is_between(5.0, 16.0).all()


def test_sensors_of_one_site_are_correlated(demo: DemoData) -> None:
    wide = (
        demo.readings.filter(pl.col("sensor_id").str.starts_with("Farm1|"))
        .pivot("sensor_id", index="ts", values="value")
        .drop_nulls()
    )
    a, b = wide.drop("ts").to_numpy().T
    assert np.corrcoef(a, b)[0, 1] > 0.7


# --- readings and labels ---------------------------------------------------------------


def test_simulate_is_deterministic_per_seed() -> None:
    first, again, other = simulate(**SMALL, seed=3), simulate(**SMALL, seed=3), simulate(**SMALL)
    assert first.readings.equals(again.readings)
    assert first.labels.equals(again.labels)
    assert not first.readings.equals(other.readings)


def test_more_sensors_per_site_keep_the_existing_sensors() -> None:
    one, two = simulate(**SMALL), simulate(**{**SMALL, "sensors_per_site": 2})
    assert two.sensors.height == 10
    kept = two.readings.filter(pl.col("sensor_id").is_in(one.sensors["sensor_id"].implode()))
    assert kept.equals(one.readings)


def test_readings_are_canonical(demo: DemoData) -> None:
    r = demo.readings
    assert r.schema == pl.Schema(
        {
            "sensor_id": pl.String,
            "ts": pl.Datetime("us"),
            "value": pl.Float64,
            "unit": pl.String,
            "customer": pl.String,
        }
    )
    assert r["value"].is_nan().sum() == 0 and r.null_count().sum_horizontal().item() == 0
    assert r.select(pl.struct("sensor_id", "ts").is_unique().all()).item()
    assert r.equals(r.sort("sensor_id", "ts"))
    assert r["ts"].min() == DEFAULT_START
    assert r["ts"].max() <= DEFAULT_START + timedelta(days=35, minutes=-1)
    assert (r["ts"].dt.second() == 0).all()
    units = r.join(demo.sensors, on="sensor_id").group_by("site_kind").agg(pl.col("unit").unique())
    assert {k: sorted(u) for k, u in units.iter_rows()} == {
        "seacage": ["mg/L"],
        "ras": ["mg/L"],
        "pond": ["%sat"],
    }
    full = 10 * 35 * 1440
    assert 0.98 * full < r.height < full  # gaps are missing rows, not many


def test_gaps_include_multi_hour_blocks_and_are_never_labelled(demo: DemoData) -> None:
    steps = demo.readings.with_columns(
        gap=pl.col("ts").diff().over("sensor_id").dt.total_minutes()
    ).filter(pl.col("gap") > 1)
    assert (steps["gap"] == 2).sum() > 100  # random single missing minutes
    assert (steps["gap"] >= 60).sum() >= 3  # multi-hour blocks and logger outages
    labelled = steps.join_where(
        demo.labels.rename({"sensor_id": "sid"}),
        pl.col("sensor_id") == pl.col("sid"),
        pl.col("ts") > pl.col("start"),
        pl.col("ts") <= pl.col("end"),
    )
    assert labelled.height == 0


def test_every_label_type_is_present_and_windows_are_clean(demo: DemoData) -> None:
    labels = demo.labels
    assert set(labels["type"]) == set(LABEL_TYPES)
    assert (labels["start"] <= labels["end"]).all()
    assert labels["start"].min() >= DEFAULT_START
    assert labels["end"].max() < demo.clean_start
    assert labels["sensor_id"].is_in(demo.sensors["sensor_id"].implode()).all()
    ordered = labels.sort("sensor_id", "start")
    overlap = ordered.with_columns(prev_end=pl.col("end").shift().over("sensor_id")).filter(
        pl.col("start") <= pl.col("prev_end")
    )
    assert overlap.height == 0
    counts = labels.group_by("sensor_id", "type").len()
    short = counts.filter(pl.col("type") != "drift")
    assert short.height == 10 * 6  # every sensor has every short-lived type
    fraction = (
        labels.filter(pl.col("type") != "drift")
        .select(((pl.col("end") - pl.col("start")).dt.total_minutes() + 1).sum())
        .item()
        / demo.readings.height
    )
    assert 0.005 < fraction < 0.025


def test_no_anomaly_in_the_clean_final_days(demo: DemoData) -> None:
    tail = demo.readings.filter(pl.col("ts") >= demo.clean_start)
    assert tail.height > 10 * 6 * 1440
    assert (tail["value"] > 0).all()  # no dropout
    runs = (
        tail.with_columns(same=(pl.col("value").diff().over("sensor_id") == 0).cast(pl.Int32))
        .group_by("sensor_id")
        .agg(pl.col("same").rolling_sum(30).max())
    )
    assert (runs["same"] < 30).all()  # nothing stuck for half an hour


def _windows(demo: DemoData, kind: str) -> list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]:
    """(inside, 2 h before, 2 h after) readings of every label of one type."""
    out = []
    for sensor_id, start, end, _ in demo.labels.filter(pl.col("type") == kind).iter_rows():
        series = demo.readings.filter(pl.col("sensor_id") == sensor_id)
        inside = series.filter(pl.col("ts").is_between(start, end))
        before = series.filter(pl.col("ts").is_between(start - timedelta(hours=2), start, "left"))
        after = series.filter(pl.col("ts").is_between(end, end + timedelta(hours=2), "right"))
        out.append((inside, before, after))
    return out


def test_dropouts_are_exact_zeros_and_only_there(demo: DemoData) -> None:
    for inside, _, _ in _windows(demo, "dropout"):
        assert inside.height >= 5 and (inside["value"] == 0.0).all()
    zeros = demo.readings.filter(pl.col("value") == 0.0).height
    minutes = demo.labels.filter(pl.col("type") == "dropout").select(
        ((pl.col("end") - pl.col("start")).dt.total_minutes() + 1).sum()
    )
    assert zeros == minutes.item()


def test_stuck_windows_repeat_one_value_for_an_hour_or_more(demo: DemoData) -> None:
    for inside, before, _ in _windows(demo, "stuck"):
        assert inside.height >= 60 and inside["value"].n_unique() == 1
        assert before["value"].n_unique() > 5


def test_spikes_stand_out_from_their_neighbourhood(demo: DemoData) -> None:
    for inside, before, after in _windows(demo, "spike"):
        assert 1 <= inside.height <= 3
        around = pl.concat([before.tail(10), after.head(10)])["value"].to_numpy()
        residual_sd = np.std(np.diff(around)) / np.sqrt(2)
        jump = np.abs(inside["value"].to_numpy() - np.median(around)).max()
        assert jump > 3.0 * residual_sd


def test_noise_windows_are_noisier_than_around(demo: DemoData) -> None:
    for inside, before, after in _windows(demo, "noise"):
        noisy = np.std(np.diff(inside["value"].to_numpy()))
        calm = np.std(np.diff(pl.concat([before, after])["value"].to_numpy()))
        assert noisy > 2.0 * calm


def test_collective_episodes_decay_then_recover(demo: DemoData) -> None:
    for inside, before, after in _windows(demo, "collective"):
        assert inside.height >= 90
        level = before["value"].median()
        assert inside["value"].min() < 0.85 * level
        assert after.head(10)["value"].median() > 0.85 * level  # recovered by the end


def test_drift_ends_with_a_cleaning_step(demo: DemoData) -> None:
    windows = _windows(demo, "drift")
    assert windows
    for inside, _, after in windows:
        assert inside.height > 1.4 * 1440
        last, first_after = inside.tail(5)["value"].mean(), after.head(5)["value"].mean()
        assert first_after > last * 1.05


def test_contextual_values_are_normal_for_the_sensor_but_wrong_for_the_hour(
    demo: DemoData,
) -> None:
    labelled = _with_labels(demo)
    local = _local(labelled, demo)
    normal = local.filter(pl.col("label_type").is_null())
    profile = normal.group_by("sensor_id", "hour").agg(pl.col("value").median().alias("usual"))
    ranges = normal.group_by("sensor_id").agg(
        pl.col("value").quantile(0.001).alias("lo"), pl.col("value").quantile(0.999).alias("hi")
    )
    contextual = (
        local.filter(pl.col("label_type") == "contextual")
        .join(profile, on=["sensor_id", "hour"])
        .join(ranges, on="sensor_id")
    )
    episodes = contextual.group_by("sensor_id", "start", "site_kind").agg(
        (pl.col("value") - pl.col("usual")).abs().median().alias("off"),
        (pl.col("value").is_between(pl.col("lo") * 0.9, pl.col("hi") * 1.1)).mean().alias("in"),
    )
    assert episodes.height >= 10
    threshold = pl.when(pl.col("site_kind") == "pond").then(20.0).otherwise(0.3)
    assert episodes.select((pl.col("off") > threshold).all()).item(), episodes
    assert (episodes["in"] > 0.9).all(), episodes


# --- exports on disk -------------------------------------------------------------------


def _canonical(out: Path, name: str) -> pl.DataFrame:
    """Read one export back into (sensor_id, ts, value) by its mapping, independently."""
    mapping = Config.load(out / "sources.toml").source(name)
    path = out / EXPORTS[name].filename
    raw = (
        pl.read_parquet(path)
        if path.suffix == ".parquet"
        else pl.read_csv(path, infer_schema=False)
    )
    assert raw.columns == [mapping.time_column, *mapping.sensor_columns, mapping.value_column]
    time = pl.col(mapping.time_column)
    if mapping.time_format == "epoch_ms":
        ts = pl.from_epoch(time, time_unit="ms")
    else:
        ts = time.str.to_datetime("%Y-%m-%dT%H:%M:%S%#z").dt.convert_time_zone("UTC")
    return raw.select(
        pl.concat_str(list(mapping.sensor_columns), separator=mapping.sensor_separator).alias(
            "sensor_id"
        ),
        ts.dt.replace_time_zone(None).dt.cast_time_unit("us").alias("ts"),
        pl.col(mapping.value_column).cast(pl.Float64).alias("value"),
        time.alias("raw_time"),
    )


def test_sources_toml_loads_and_names_every_export(written: tuple[Path, dict]) -> None:
    out, summary = written
    config = Config.load(out / "sources.toml")
    assert set(config.sources) == {"seacage", "ras", "pond"}
    assert sorted(p.name for p in out.iterdir()) == sorted(summary["files"])
    for name in config.sources:
        assert (out / EXPORTS[name].filename).stem == name
    assert {m.unit for m in config.sources.values()} == {"mg/L", "%sat"}
    assert {m.time_format for m in config.sources.values()} == {"iso", "epoch_ms"}
    assert config.source("pond").sensor_columns == ("Unit", "Section", "Equipment", "Subunit")
    assert (out / "sources.toml").read_text() == sources_toml()


def test_exports_hold_exactly_the_simulated_readings(
    written: tuple[Path, dict], demo: DemoData
) -> None:
    out, summary = written
    exported = pl.concat([_canonical(out, name).drop("raw_time") for name in EXPORTS])
    assert exported.height == summary["rows"] == demo.readings.height
    assert exported.sort("sensor_id", "ts").equals(demo.readings.select("sensor_id", "ts", "value"))


def test_identities_look_like_each_customers_tags(written: tuple[Path, dict]) -> None:
    out, _ = written
    seacage = pl.read_csv(out / "seacage.csv", infer_schema=False)
    ras = pl.read_parquet(out / "ras.parquet")
    assert "System_10|EquipmentUnit_10|SubUnit_07" in seacage["TagName"].to_list()
    assert ras["point"].unique().sort().to_list() == ["ras1/tank-01/o2", "ras1/tank-02/o2"]
    assert ras.schema["ts_epoch_ms"] == pl.Int64


def test_rows_are_interleaved_across_sensors_in_time_order(written: tuple[Path, dict]) -> None:
    out, _ = written
    for name in EXPORTS:
        frame = _canonical(out, name)
        assert frame["ts"].is_sorted()
        assert frame.head(2)["sensor_id"].n_unique() == 2


def test_local_time_export_crosses_a_dst_change(written: tuple[Path, dict]) -> None:
    out, _ = written
    frame = _canonical(out, "seacage")
    offsets = frame["raw_time"].str.slice(-6).unique().sort().to_list()
    assert offsets == ["+01:00", "+02:00"]
    # the repeated local hour appears twice, as two different UTC instants
    repeated = frame.filter(pl.col("raw_time").str.starts_with("2024-10-27T02:30"))
    assert repeated["ts"].unique().sort().to_list() == [
        datetime(2024, 10, 27, 0, 30),
        datetime(2024, 10, 27, 1, 30),
    ]


def test_labels_csv_round_trips(written: tuple[Path, dict], demo: DemoData) -> None:
    out, summary = written
    assert read_labels(out / "labels.csv").equals(demo.labels)
    assert summary["labels"] == demo.labels.height
    first = (out / "labels.csv").read_text().splitlines()[:2]
    assert first[0] == "sensor_id,start,end,type"
    assert datetime.fromisoformat(first[1].split(",")[1]).tzinfo is None  # naive UTC


def test_ingest_reads_the_exports_into_the_simulated_readings(tmp_path: Path) -> None:
    from engine.ingest import ingest_files
    from engine.warehouse import Warehouse

    out = tmp_path / "demo"
    generate_demo(out, **SMALL)
    wh = Warehouse(tmp_path / "wh", Config.load(out / "sources.toml"))
    results = ingest_files(wh, [out / EXPORTS[name].filename for name in EXPORTS])
    assert [r.to_dict()["quarantined"] for r in results] == [0, 0, 0]
    with wh.reader() as con:
        lake = pl.from_arrow(
            con.sql("select sensor_id, ts, value from readings order by 1, 2").to_arrow_table()
        )
    expected = simulate(**SMALL).readings.select("sensor_id", "ts", "value")
    assert lake.with_columns(pl.col("ts").cast(pl.Datetime("us"))).equals(expected)


# --- API and CLI -----------------------------------------------------------------------


def test_defaults_agree_with_the_config() -> None:
    defaults = Config.load()["demo"]
    for function in (simulate, generate_demo):
        params = inspect.signature(function).parameters
        for key in ("sensors_per_site", "days", "seed", "clean_days"):
            assert params[key].default == defaults[key]
    assert datetime.fromisoformat(defaults["start"]) == DEFAULT_START
    assert len(SITES) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensors_per_site": 0}, "sensors per site must be at least 1, not 0"),
        ({"days": 3, "clean_days": 5}, "clean days must be between 0 and days (3), not 5"),
    ],
)
def test_bad_sizes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(OxyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        simulate(**kwargs)


def test_cli_writes_the_demo_and_prints_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "d"
    args = ["demo-data", str(out), "--sensors-per-site", "1", "--days", "3", "--seed", "5"]
    result = runner.invoke(oxy, [*args, "--clean-days", "1"])
    assert result.exit_code == 0, result.output
    expected = simulate(sensors_per_site=1, days=3, seed=5, clean_days=1)
    assert result.output == (
        f"demo data: 5 sensors, {expected.readings.height:,} rows, {expected.labels.height} "
        f"labels -> {out}/ (seacage.csv, ras.parquet, pond.csv, labels.csv, sources.toml)\n"
    )
    as_json = runner.invoke(oxy, ["--json", *args, "--clean-days", "1"])
    assert json.loads(as_json.output)["rows_by_source"] == {
        "seacage": expected.readings.filter(pl.col("customer") == "nordfjord").height,
        "ras": expected.readings.filter(pl.col("customer") == "andesras").height,
        "pond": expected.readings.filter(pl.col("customer") == "mekong").height,
    }
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(oxy, ["demo-data", str(tmp_path / "d"), "--days", "2"])
    assert result.exit_code == 1
    assert result.output == "Error: clean days must be between 0 and days (2), not 7\n"
    afile = tmp_path / "file"
    afile.write_text("x")
    result = runner.invoke(oxy, ["demo-data", str(afile), "--days", "2", "--clean-days", "0"])
    assert result.exit_code != 0 and "Traceback" not in result.output


# --- properties ------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sensors_per_site=st.integers(1, 2),
    days=st.integers(1, 5),
    clean_fraction=st.floats(0.0, 1.0),
)
def test_any_size_gives_consistent_readings_and_well_formed_labels(
    seed: int, sensors_per_site: int, days: int, clean_fraction: float
) -> None:
    clean_days = round(days * clean_fraction)
    demo = simulate(sensors_per_site=sensors_per_site, days=days, seed=seed, clean_days=clean_days)
    r, labels = demo.readings, demo.labels
    assert demo.sensors.height == 5 * sensors_per_site
    assert set(r["sensor_id"]) <= set(demo.sensors["sensor_id"])
    full = days * 1440 * demo.sensors.height
    assert 0.5 * full <= r.height <= full
    assert r.select(pl.struct("sensor_id", "ts").is_unique().all()).item()
    assert not r["value"].is_nan().any() and (r["value"] >= 0).all()
    assert set(labels["type"]) <= set(LABEL_TYPES)
    assert set(labels["sensor_id"]) <= set(demo.sensors["sensor_id"])
    if labels.height:
        assert (labels["start"] <= labels["end"]).all()
        assert labels["start"].min() >= demo.start + timedelta(days=1)
        assert labels["end"].max() < demo.clean_start


# --- anomaly spread (the detection benchmark's widened demo) ----------------------------

# sha256 of files written by generate_demo(sensors_per_site=2, days=14, clean_days=1, seed=11)
# before the anomaly_spread option existed (ras.parquet: of its rows as CSV, since Parquet
# bytes carry the writer's version); spread 1.0 must keep writing exactly these
_BEFORE_SPREAD = {
    "labels.csv": "ba16d72890a7b969bf6c7e08c65c491887eec9711dd142f7439782bba0d13c3f",
    "pond.csv": "6eeb02a71bf4de06e2a5626db6b10c3355599a413a47977f3a6056c03bfdaed8",
    "seacage.csv": "0e7bb3e5c2980f878ab29742ba3fc6dec3abb2bbaad66fb05e8ba82ce7f8338d",
    "ras.parquet": "6745a088542ff232f644f828bbec92fd5b97ba6e336b2fb2b68bce9f31f31928",
}


@pytest.mark.parametrize("spread", [None, 1.0])
def test_anomaly_spread_one_writes_todays_demo_byte_for_byte(tmp_path: Path, spread) -> None:
    import hashlib

    kwargs = {"sensors_per_site": 2, "days": 14, "clean_days": 1, "seed": 11}
    if spread is not None:
        kwargs["anomaly_spread"] = spread
    generate_demo(tmp_path, **kwargs)
    digests = {
        name: hashlib.sha256(
            pl.read_parquet(tmp_path / name).write_csv().encode()
            if name.endswith(".parquet")
            else (tmp_path / name).read_bytes()
        ).hexdigest()
        for name in _BEFORE_SPREAD
    }
    assert digests == _BEFORE_SPREAD


def test_cli_anomaly_spread_is_passed_through(tmp_path: Path) -> None:
    args = ["--sensors-per-site", "1", "--days", "4", "--clean-days", "1", "--seed", "2"]
    result = CliRunner().invoke(oxy, ["demo-data", str(tmp_path), *args, "--anomaly-spread", "3"])
    assert result.exit_code == 0, result.output
    expected = simulate(sensors_per_site=1, days=4, clean_days=1, seed=2, anomaly_spread=3.0)
    assert read_labels(tmp_path / "labels.csv").equals(expected.labels)
    refused = CliRunner().invoke(oxy, ["demo-data", str(tmp_path), "--anomaly-spread", "0.5"])
    assert refused.exit_code == 2 and "0.5 is not in the range x>=1.0" in refused.output


def _durations(labels: pl.DataFrame) -> pl.DataFrame:
    minutes = (pl.col("end") - pl.col("start")).dt.total_minutes() + 1
    return labels.group_by("type").agg(
        minutes.min().alias("shortest"), minutes.max().alias("longest")
    )


def test_a_wider_spread_reaches_outside_todays_duration_ranges() -> None:
    from engine.demo import _SPREAD_FLOORS, widen

    kwargs = {"sensors_per_site": 4, "days": 21, "clean_days": 1, "seed": 5}
    today = _durations(simulate(**kwargs).labels)
    wide = _durations(simulate(**kwargs, anomaly_spread=2.0).labels)
    both = today.join(wide, on="type", suffix="_wide")
    # today's plan (engine.demo._ANOMALY_PLAN): collective 90-180, stuck 60-180, noise 45-120,
    # dropout 5-45, contextual 30-75, spike 1-3 minutes
    assert (both["longest_wide"] > both["longest"]).sum() >= 5
    bounds = {"collective": (90, 180), "stuck": (60, 180), "noise": (45, 120), "dropout": (5, 45)}
    for row in both.filter(pl.col("type").is_in(list(bounds))).iter_rows(named=True):
        lo, hi = bounds[row["type"]]
        assert lo <= row["shortest"] and row["longest"] <= hi
        assert row["shortest_wide"] < lo or row["longest_wide"] > hi
        wide_lo, wide_hi = widen(lo, hi, 2.0, _SPREAD_FLOORS[row["type"]])
        assert wide_lo - 1 <= row["shortest_wide"] and row["longest_wide"] <= wide_hi + 1


def test_widen_keeps_the_centre_and_multiplies_the_width() -> None:
    from engine.demo import widen

    assert widen(0.3, 0.55, 1.0, 0.01) == (0.3, 0.55)
    lo, hi = widen(0.3, 0.55, 2.0, 0.01)
    assert (lo, hi) == pytest.approx((0.175, 0.675))
    assert widen(5.0, 45.0, 2.0, 1.0) == (1.0, 81.0)  # the floor moves the range, width kept
    with pytest.raises(OxyError, match="anomaly spread must be a number >= 1"):
        simulate(days=2, clean_days=1, anomaly_spread=0.5)
