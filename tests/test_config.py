"""Configuration: defaults, overrides, refusal of unknown keys, source mappings."""

from __future__ import annotations

import copy
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
        ("[anomaly]\npoint_z_range = [5.0]\n", "unknown key 'anomaly.point_z_range'"),  # old key
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


def test_with_overrides_refuses_unknown_keys_and_copies() -> None:
    config = Config.load()
    changed = config.with_overrides({"anomaly": {"severity_threshold": 0.7}})
    assert changed["anomaly"]["severity_threshold"] == 0.7
    assert config["anomaly"]["severity_threshold"] == 0.5
    with pytest.raises(OxyError, match="unknown key 'anomaly.no_such_key'"):
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
    ("text", "line"),
    [  # the wrong values of the probe that gave tracebacks or were accepted silently
        (
            '[ingest]\nbatch_rows = "many"',
            "[ingest] batch_rows must be a whole number >= 1, not 'many'",
        ),
        ("[ingest]\nbatch_rows = 0", "[ingest] batch_rows must be a whole number >= 1, not 0"),
        ("[ingest]\nbatch_rows = -5", "[ingest] batch_rows must be a whole number >= 1, not -5"),
        ('[ingest]\nsentinels = "x"', "[ingest] sentinels must be a list of values, each a number"),
        ('[ingest]\n"mg/L" = { min = "a" }', "min < max, each a number, not {'min': 'a'"),
        ('[ingest]\n"mg/L" = { min = 60.0 }', "min < max, each a number, not {'min': 60.0"),
        (
            "[warehouse]\nbuckets = 0",
            "[warehouse] buckets must be a whole number in [1, 4096], not 0",
        ),
        ("[warehouse]\nbuckets = -1", "[warehouse] buckets must be a whole number in [1, 4096]"),
        (
            "[warehouse]\nthreads = 0",
            "[warehouse] threads must be a whole number in [1, 256], not 0",
        ),
        ('[warehouse]\nmemory_limit = "lots"', "such as '2GB' or '1500MB'"),
        ('[warehouse]\nmemory_limit = "-1GB"', "percentage of RAM such as '50%', not '-1GB'"),
        ("[query]\ntimeout_s = -1", "[query] timeout_s must be a number in [0, 86400], not -1"),
        ('[forecast]\nhorizon = "7 parsecs"', "'7d' or '90 minutes', not '7 parsecs'"),
        ('[monitor]\nstale_after = "2h"', "'2 hours', '1 day' or '2 weeks', not '2h'"),
        ("[forecast]\ninterval = 1.0", "[forecast] interval must be a number in (0, 1), not 1.0"),
        ("[forecast]\nnum_leaves = []", "[forecast] num_leaves must be a list of at least 1"),
        ('[ingest]\nambiguous_local_time = "guess"', "one of 'infer', 'earliest'"),
        ("[query]\nthreads = 2.0", "[query] threads must be a whole number in [1, 256], not 2.0"),
        ("[warehouse]\nlock_timeout_s = true", "[warehouse] lock_timeout_s must be a number"),
        ('[demo]\nstart = "yesterday"', "[demo] start must be a date such as"),
        ("warehouse = 5", "warehouse must be a table of settings, not 5"),
        ("[monitor]\npsi_warn = 0.5", "[monitor] needs psi_warn < psi_alert, not psi_warn = 0.5"),
        # [anomaly], regrouped: every key declared, the rules between keys
        ("[anomaly.spike]\nz = 0", "[anomaly.spike] z must be a number > 0, not 0"),
        ('[anomaly]\nhistory = "soon"', "[anomaly] history must be a duration > 0"),
        (
            "[anomaly]\nsite_levels = -1",
            "[anomaly] site_levels must be a whole number >= 0, not -1",
        ),
        ("[anomaly.run]\nfile_days = 32", "file_days must be a whole number of days in [1, 31]"),
        ('[anomaly.run]\nmemory_limit = "lots"', "[anomaly.run] memory_limit must be a memory"),
        ("[anomaly.noise]\nreadings = 2", "[anomaly.noise] readings must be a whole number >= 3"),
        ('[anomaly.collective]\nwindow = "1 hour"', "must be a duration of at least 2 hours"),
        ("[anomaly.dropout]\n'mg/L' = -1.0", "[anomaly] dropout must be a table whose values"),
        ("[anomaly.range]\nfail_sat = 100.0", "[anomaly.range] needs fail_sat > suspect_sat"),
        ("[anomaly]\nseverity_threshold = 0.95", "needs severity_threshold <= qartod_fail_sev"),
        ('[anomaly.drift]\ngap = "60 days"', "[anomaly.drift] needs reference longer than gap"),
        ("[anomaly.seed]\npoint_z_lo = 6.0", "[anomaly.seed] needs point_z_lo < point_z_hi"),
        ('[anomaly.seed]\nspike_gap = "30m"', "[anomaly.seed] spike_gap must be a duration > 0"),
        ("[demo]\nanomaly_spread = 0.5", "[demo] anomaly_spread must be a number >= 1, not 0.5"),
    ],
)
def test_every_bad_value_names_its_key_its_value_and_what_is_allowed(
    tmp_path: Path, text: str, line: str
) -> None:
    with pytest.raises(OxyError) as info:
        Config.load(write(tmp_path, text))
    message = str(info.value)
    assert line in message, message
    assert message.startswith(f"config {tmp_path / 'oxy.toml'}: ")


def test_a_source_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OxyError, match=r"source 'fjordras': customer must be a non-empty text"):
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
            '[anomaly]\nhistory = "4w"\nseverity_threshold = 0.9\n[anomaly.spike]\nz = 7\n'
            '[anomaly.drift]\ngap = "2 days"\nreference = "3d"\n',
        )
    )
    assert config["warehouse"]["memory_limit"] == "1.5 GiB"
    assert (config["anomaly"]["history"], config["anomaly"]["spike"]["z"]) == ("4w", 7)


def test_every_default_passes_its_own_spec_and_every_spec_names_a_key() -> None:
    from engine.config import RELATIONS, SPECS, _defaults, _lookup, validate

    defaults = _defaults()
    validate(defaults, defaults)  # the built-in defaults are valid
    keys = [*SPECS, *(key for rule in RELATIONS for key in (rule.small, rule.large))]
    missing = [key for key in keys if _lookup(defaults, key) is None]
    assert missing == []  # a spec of a key that no longer exists is a stale spec


def _keys(values: dict, prefix: str = "") -> list[str]:
    """Every key of the defaults, dotted (a table with a spec of its own, such as
    ``ingest.mg/L``, is one key; any other table is a section)."""
    from engine.config import SPECS

    keys = []
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in SPECS:
            keys += _keys(value, key + ".")
        else:
            keys.append(key)
    return keys


def test_every_key_of_every_section_has_a_deliberate_spec() -> None:
    """A new key (here or on another branch) needs its spec in SPECS: the spec inferred from
    its default is only a safety net."""
    from engine.config import SPECS, _defaults

    assert [key for key in _keys(_defaults()) if key not in SPECS] == []


ANOMALY_PROBES: list[object] = [-1, 0, 0.5, 1, 2, 3, 31, 32, 1.5, True, "x", "0 hours"]
ANOMALY_PROBES += [300.0, "90 minutes", "1h", "2 hours", "3d", "100 days", "1 week", "1GB"]
ANOMALY_PROBES += [{"mg/L": 0.1, "%sat": 1.0}, {"mg/L": -1.0, "%sat": 1.0}]


def _anomaly_keys() -> list[str]:
    from engine.config import _defaults

    return [k for k in _keys(_defaults()["anomaly"], "anomaly.") if ".seed." not in k]


@pytest.mark.parametrize("key", _anomaly_keys())
def test_no_anomaly_value_the_specs_accept_fails_in_the_scorer(key: str) -> None:
    """engine.anomaly checks its settings again where it reads them: every value that passes
    the spec table passes those checks too (no config that loads fails in `oxy score`)."""
    from engine import anomaly
    from engine.config import _defaults, validate

    defaults = _defaults()
    accepted = 0
    for value in ANOMALY_PROBES:
        data = _defaults()
        *path, name = key.split(".")
        table = data
        for part in path:
            table = table[part]
        table[name] = copy.deepcopy(value)
        try:
            validate(data, defaults)
        except OxyError:
            continue  # the spec table refuses it
        config = Config(data=data)
        a, w = anomaly.settings(config)
        anomaly.file_days(config)
        anomaly.event_params(a, w)
        accepted += 1
    assert 0 < accepted < len(ANOMALY_PROBES)


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
