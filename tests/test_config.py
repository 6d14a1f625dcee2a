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
        (SOURCE.replace('"mg/L"', '"ppm"'), "unit must be one of"),
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


# -- every value validated -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [  # the wrong values of the probe that gave tracebacks or were accepted silently
        ('[ingest]\nbatch_rows = "many"', "ingest.batch_rows = 'many'", "a whole number >= 1"),
        ("[ingest]\nbatch_rows = 0", "ingest.batch_rows = 0", "a whole number >= 1"),
        ("[ingest]\nbatch_rows = -5", "ingest.batch_rows = -5", "a whole number >= 1"),
        ('[ingest]\nsentinels = "x"', "ingest.sentinels = 'x'", "a list of values, each a number"),
        ('[ingest]\n"mg/L" = { min = "a" }', "ingest.mg/L = {'min': 'a'", "min < max"),
        ('[ingest]\n"mg/L" = { min = 60.0 }', "ingest.mg/L = {'min': 60.0", "min < max"),
        ("[warehouse]\nbuckets = 0", "warehouse.buckets = 0", "a whole number in [1, 4096]"),
        ("[warehouse]\nbuckets = -1", "warehouse.buckets = -1", "a whole number in [1, 4096]"),
        ("[warehouse]\nthreads = 0", "warehouse.threads = 0", "a whole number in [1, 256]"),
        ('[warehouse]\nmemory_limit = "lots"', "warehouse.memory_limit = 'lots'", "'1500MB'"),
        ('[warehouse]\nmemory_limit = "-1GB"', "warehouse.memory_limit = '-1GB'", "'1500MB'"),
        ("[query]\ntimeout_s = -1", "query.timeout_s = -1", "a number in [0, 86400]"),
        ("[anomaly]\npoint_z_range = [5.0]", "anomaly.point_z_range = [5.0]", "lo < hi"),
        ("[anomaly]\npoint_z_range = [5.0, 2.0]", "anomaly.point_z_range = [5.0, 2.0]", "lo < hi"),
        ('[forecast]\nhorizon = "7 parsecs"', "forecast.horizon = '7 parsecs'", "'7d'"),
        ('[monitor]\nstale_after = "2h"', "monitor.stale_after = '2h'", "'2 hours'"),
        ("[forecast]\ninterval = 1.0", "forecast.interval = 1.0", "a number in (0, 1)"),
        ("[forecast]\nnum_leaves = []", "forecast.num_leaves = []", "at least 1 value(s)"),
        ('[ingest]\nambiguous_local_time = "guess"', "= 'guess'", "one of 'infer', 'earliest'"),
        ("[query]\nthreads = 2.0", "query.threads = 2.0", "a whole number"),
        ("[warehouse]\nlock_timeout_s = true", "warehouse.lock_timeout_s = True", "a number"),
        ('[demo]\nstart = "yesterday"', "demo.start = 'yesterday'", "a date such as"),
        ("warehouse = 5", "warehouse = 5", "a table of settings"),
        ("[monitor]\npsi_warn = 0.5", "monitor.psi_warn = 0.5 must be below", "psi_alert = 0.25"),
    ],
)
def test_every_bad_value_names_its_key_its_value_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    with pytest.raises(OxyError) as info:
        Config.load(write(tmp_path, text))
    message = str(info.value)
    assert key in message and allowed in message, message
    assert str(tmp_path) in message or key.startswith("source")


def test_a_source_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OxyError, match=r"source 'fjordras': customer = 5 is not allowed"):
        Config.load(write(tmp_path, SOURCE.replace('customer = "fjordras"', "customer = 5")))


def test_several_bad_values_are_listed_together(tmp_path: Path) -> None:
    with pytest.raises(OxyError) as info:
        Config.load(write(tmp_path, "[warehouse]\nthreads = 0\nbuckets = 0\n"))
    assert "2 bad values" in str(info.value)
    assert str(info.value).count("\n") == 2


def test_good_values_of_every_kind_are_accepted(tmp_path: Path) -> None:
    config = Config.load(
        write(
            tmp_path,
            '[warehouse]\nmemory_limit = "1.5 GiB"\nlock_timeout_s = 2.5\n'
            '[forecast]\nhorizon = "2 days"\nlearning_rates = [0.05]\n'
            '[monitor]\nstale_after = "90 minutes"\n[query]\nmemory_limit = "50%"\n'
            "[anomaly]\npoint_z_range = [3, 9.5]\n",
        )
    )
    assert config["warehouse"]["memory_limit"] == "1.5 GiB"
    assert config["anomaly"]["point_z_range"] == [3, 9.5]


def test_every_default_passes_its_own_spec_and_every_spec_names_a_key() -> None:
    from engine.config import RELATIONS, SPECS, _defaults, _lookup, validate

    defaults = _defaults()
    validate(defaults, defaults)  # the built-in defaults are valid
    keys = [*SPECS, *(key for pair in RELATIONS for key in pair)]
    missing = [key for key in keys if _lookup(defaults, key) is None]
    assert missing == []  # a spec of a key that no longer exists is a stale spec


def test_explicit_specs_cover_every_section_but_anomaly() -> None:
    """[anomaly] (being regrouped) relies on specs inferred from its defaults; every other
    section's keys are declared in SPECS, so a new key there gets a deliberate spec."""
    from engine.config import SPECS, _defaults

    undeclared = [
        f"{section}.{key}"
        for section, values in _defaults().items()
        if section != "anomaly"
        for key in values
        if f"{section}.{key}" not in SPECS
    ]
    assert undeclared == []


def test_the_specs_agree_with_the_parsers_that_read_the_values() -> None:
    """A duration or size the spec accepts is one its consumer reads (and the enum of
    ingest.ambiguous_local_time is the ingest's)."""
    import duckdb

    from engine.config import AMBIGUOUS_LOCAL_TIME, SPECS, Duration, Size
    from engine.forecast import minutes_of
    from engine.ingest import AMBIGUOUS_RULES
    from engine.monitor import parse_interval

    assert AMBIGUOUS_LOCAL_TIME == AMBIGUOUS_RULES
    words, compact = Duration(), Duration("compact")
    for text in ("60 minutes", "1 minute", "2 hours", "1 day", "3 days", "2 weeks", "1.5 hours"):
        assert words.check(text) is None
        parse_interval(text)
        with duckdb.connect() as con:
            con.execute("select cast(? as interval)", [text])
    for text in ("7d", "6h", "15m", "90 minutes", "2 days", "1w"):
        assert compact.check(text) is None and minutes_of(text) > 0
    for text in ("2GB", "1500MB", "1.5 GiB", "16MB", "50%"):
        assert Size().check(text) is None
        with duckdb.connect(config={"memory_limit": text}) as con:
            con.execute("select 1")
    assert {type(SPECS[k]).__name__ for k in ("monitor.stale_after", "forecast.horizon")} == {
        "Duration"
    }
