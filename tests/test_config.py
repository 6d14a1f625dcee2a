"""Configuration: defaults, overrides, refusal of unknown keys, source mappings."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import OxyError
from engine.config import Config, SourceMapping

SOURCE = """
[sources.fjordras]
customer = "fjordras"
timezone = "Europe/Oslo"
unit = "mg/L"
sensor_columns = ["Unit", "Tank"]
time_column = "Timestamp"
time_format = "%d.%m.%Y %H:%M"
naive_time_zone = "Europe/Oslo"
value_column = "O2"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oxy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_hold_the_seed_thresholds() -> None:
    config = Config.load()
    anomaly = config["anomaly"]["seed"]
    assert (anomaly["point_z_lo"], anomaly["point_z_hi"]) == (2.0, 5.0)
    assert (anomaly["collective_lo"], anomaly["collective_hi"]) == (1.0, 3.0)
    assert (anomaly["contextual_z_lo"], anomaly["contextual_z_hi"]) == (2.0, 4.0)
    assert config["forecast"]["severity_quantile_cutoff"] == 0.99
    assert config.sources == {}


def test_user_file_overrides_one_key_and_keeps_the_rest(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, "[warehouse]\nthreads = 1\n" + SOURCE))
    assert config["warehouse"]["threads"] == 1
    assert config["warehouse"]["buckets"] == Config.load()["warehouse"]["buckets"]
    mapping = config.source("fjordras")
    assert mapping.sensor_columns == ("Unit", "Tank")
    assert mapping.naive_time_zone == "Europe/Oslo"
    assert mapping.sensor_separator == "|"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[warehouse]\nthreds = 1\n", "unknown key 'warehouse.threds'"),
        ("[nonsense]\nx = 1\n", "unknown key 'nonsense'"),
        ("[warehouse\n", "not valid TOML"),
        (SOURCE.replace('"mg/L"', '"ppb"'), "unit must be one of"),
        (SOURCE.replace('"Europe/Oslo"', '"Mars/Olympus"', 1), "is not an IANA zone"),
        (SOURCE.replace('value_column = "O2"', ""), "missing key(s) ['value_column']"),
        (SOURCE + 'colour = "red"\n', "unknown key(s) ['colour']"),
        (SOURCE.replace('"%d.%m.%Y %H:%M"', '"dd.mm.yyyy"'), "time_format must be"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(OxyError) as info:
        Config.load(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_file_and_unknown_source_are_clear(tmp_path: Path) -> None:
    with pytest.raises(OxyError, match="does not exist"):
        Config.load(tmp_path / "absent.toml")
    config = Config.load(write(tmp_path, SOURCE))
    with pytest.raises(OxyError, match="unknown source 'nope'.*known: fjordras"):
        config.source("nope")


def test_with_overrides_validates_and_copies() -> None:
    config = Config.load()
    changed = config.with_overrides({"anomaly": {"severity_threshold": 0.7}})
    assert changed["anomaly"]["severity_threshold"] == 0.7
    assert config["anomaly"]["severity_threshold"] == 0.5
    with pytest.raises(OxyError):
        config.with_overrides({"anomaly": {"no_such_key": 1}})


def test_source_mapping_round_trips_through_dict() -> None:
    mapping = SourceMapping.from_dict(
        "x",
        {
            "customer": "c",
            "timezone": "UTC",
            "unit": "%sat",
            "sensor_columns": "Tag",
            "time_column": "t",
            "value_column": "v",
            "time_format": "epoch_ms",
        },
    )
    assert mapping.sensor_columns == ("Tag",)
    assert SourceMapping.from_dict("x", mapping.to_dict()) == mapping
