"""The shared real exports, ingested as they are with the mappings the README ships
(README "Configuration"), with exact accounting per file."""

from __future__ import annotations

import re
import tomllib
from datetime import datetime
from pathlib import Path

import pytest
from test_ingest import query

from engine import OxyError
from engine.config import Config
from engine.ingest import ingest_files
from engine.warehouse import Warehouse

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason="the shared real data (../shared/data) is not present"
)


def readme_mappings(tmp_path: Path) -> Path:
    """The README's TOML block of real-export mappings, as a config file."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if "[sources.lro]" in b]
    assert set(tomllib.loads(block)["sources"]) == {"lro", "lake_buoy", "aquaponics", "fishpond"}
    path = tmp_path / "real.toml"
    path.write_text(block, encoding="utf-8")
    return path


@pytest.fixture
def real(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse", Config.load(readme_mappings(tmp_path)))


def accounting(results: list) -> dict[str, tuple[int, int, int, int]]:
    return {
        Path(r.path).name: (r.rows_read, r.accepted, r.duplicates, r.quarantined) for r in results
    }


def test_lro_logger_files_without_a_sensor_column(real: Warehouse) -> None:
    files = sorted((DATA / "lro").glob("*20[0-9][0-9].csv"))
    results = ingest_files(real, files, source="lro")
    assert accounting(results) == {
        "MainStreet2019.csv": (25_881, 25_781, 0, 100),
        "MainStreet2020.csv": (8_736, 8_736, 0, 0),
        "Mendon2019.csv": (25_883, 25_883, 0, 0),
        "Mendon2020.csv": (8_730, 8_730, 0, 0),
        "TonyGrove2019.csv": (30_450, 30_450, 0, 0),
        "TonyGrove2020.csv": (8_736, 8_736, 0, 0),
    }
    assert query(real, "select sensor_id, count(*) from readings group by 1 order by 1") == [
        ("lro|MainStreet|do", 34_517),
        ("lro|Mendon|do", 34_613),
        ("lro|TonyGrove|do", 39_186),
    ]
    assert query(
        real,
        "select reason, min(raw_value::double), max(raw_value::double), count(*) "
        "from quarantine group by 1",
    ) == [("above plausible maximum", 75.71, 109.8, 100)]
    # fixed UTC-7: local midnight is 07:00 UTC; the water temperature rides along
    assert query(
        real,
        "select ts, value, temperature_c, salinity from readings "
        "where sensor_id = 'lro|MainStreet|do' order by ts limit 1",
    ) == [(datetime(2019, 1, 1, 7, 0), 14.08, 0.76, 0.0)]
    assert query(
        real, "select sensor_id, count(temperature_c) from readings group by 1 order by 1"
    ) == [("lro|MainStreet|do", 34_486), ("lro|Mendon|do", 30_963), ("lro|TonyGrove|do", 39_165)]


def test_lake_buoy_doobs_files_tab_separated_with_three_spellings(real: Warehouse) -> None:
    files = sorted((DATA / "lake_mendota").glob("*.doobs"))
    results = ingest_files(real, files, source="lake_buoy")
    assert accounting(results) == {
        "mendota.doobs": (10_077, 10_066, 0, 11),
        "sparkling.doobs": (1_296, 1_296, 0, 0),
        "troutbog.doobs": (1_296, 1_296, 0, 0),
    }
    assert query(real, "select sensor_id from sensors order by 1") == [
        ("gleon|mendota|doobs_0.5",),
        ("gleon|sparkling|doobs_0.5",),
        ("gleon|troutbog|doobs_0.25",),
    ]
    assert query(real, "select distinct reason, raw_value from quarantine") == [
        ("non-finite value", "NaN")
    ]
    assert query(
        real, "select min(ts), max(ts) from readings where sensor_id like '%mendota%'"
    ) == [(datetime(2009, 7, 23, 6, 0), datetime(2009, 7, 30, 6, 0))]


def test_fish_pond_buoy(real: Warehouse) -> None:
    results = ingest_files(
        real, [DATA / "fishpond_buoy" / "waterquality_data.csv"], source="fishpond"
    )
    assert accounting(results) == {"waterquality_data.csv": (207, 207, 0, 0)}
    # the stuck 55.353 degC readings are not a water temperature: null, the DO stays
    assert query(
        real, "select count(*), count(temperature_c), max(temperature_c) < 40 from readings"
    ) == [(207, 190, True)]


def test_dirty_aquaponics_exports_two_time_formats_and_the_guard(real: Warehouse) -> None:
    """Date-only rows all land on their day's midnight: after the first, conflicting
    duplicates. IoTPond10 passes the guard; 11 and 12 are refused, then accepted on request."""
    files = sorted((DATA / "aquaponics_dirty").glob("IoTPond1*.csv"))
    (pond10,) = ingest_files(real, files[:1], source="aquaponics")
    assert accounting([pond10]) == {"IoTPond10.csv": (620, 315, 164, 141)}
    with pytest.raises(OxyError) as err:
        ingest_files(real, files[1:2], source="aquaponics")
    assert "2,192 of 3,165 rows (69%) would be quarantined" in str(err.value)
    assert query(real, "select count(*) from ingest_log") == [(1,)]
    rest = ingest_files(real, files[1:], source="aquaponics", accept_bad=True)
    assert accounting(rest) == {
        "IoTPond11.csv": (3_165, 748, 225, 2_192),
        "IoTPond12.csv": (3_590, 34, 23, 3_533),
    }
    assert query(real, "select count(*) from readings") == [(315 + 748 + 34,)]
    assert query(real, "select distinct reason from quarantine") == [("conflicting duplicate",)]
    # "2021-06-25 15:14:07 CET" is a fixed UTC+1, read as Lagos time
    assert query(
        real,
        "select min(ts) from readings where sensor_id = 'udanor|IoTPond11|do'",
    ) == [(datetime(2021, 6, 25, 14, 14, 7),)]
