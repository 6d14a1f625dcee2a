"""Looking before, refusing a wrong mapping, and undoing: `oxy ingest --dry-run`, the
bad-fraction guard, `oxy forget` (forget then re-ingest returns the same readings and scores;
forget then score equals a fresh warehouse), `oxy sources` and the ingest ids of `oxy status`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_ingest import BASE_SOURCE, _lake_state, counts, make_config, make_warehouse, query, write

from cli import oxy
from engine import OxyError
from engine.anomaly import score
from engine.config import Config
from engine.ingest import forget, ingest_files, source_summaries
from engine.warehouse import Warehouse

T0 = datetime(2024, 3, 1)


def export(path: Path, sensors: list[str], first_day: int, days: int, seed: int = 0) -> Path:
    """A diel DO export at 5-minute cadence: Timestamp,Tag,Value (UTC)."""
    rng = np.random.default_rng(seed)
    n = days * 288
    minutes = (first_day * 1440 + np.arange(n) * 5).astype(int)
    frames = []
    for k, sensor in enumerate(sensors):
        value = 8 + 1.5 * np.sin(2 * np.pi * (minutes / 1440 - 0.3 - 0.05 * k))
        value += rng.normal(0, 0.03, n)
        frames.append(
            pl.DataFrame(
                {
                    "Timestamp": [
                        (T0 + timedelta(minutes=int(m))).strftime("%Y-%m-%dT%H:%M:%SZ")
                        for m in minutes
                    ],
                    "Tag": sensor,
                    "Value": np.round(value, 3),
                }
            )
        )
    pl.concat(frames).sort("Timestamp", maintain_order=True).write_csv(path)
    return path


def readings_of(wh: Warehouse) -> list[tuple[Any, ...]]:
    return query(
        wh,
        "select sensor_id, ts, value, unit, customer, source_file, temperature_c, salinity "
        "from readings order by sensor_id, ts",
    )


def scores_of(wh: Warehouse) -> pl.DataFrame:
    with wh.reader() as con:
        table = con.sql(
            "select * exclude (bucket, month) from anomaly_scores order by sensor_id, ts"
        ).to_arrow_table()
    return pl.from_arrow(table)


def events_of(wh: Warehouse) -> pl.DataFrame:
    with wh.reader() as con:
        table = con.sql(
            "select * exclude (bucket) from anomaly_events order by sensor_id, start_ts"
        ).to_arrow_table()
    return pl.from_arrow(table)


def assert_frames_equal(mine: pl.DataFrame, theirs: pl.DataFrame) -> None:
    """Every column equal: floats to 1e-9 (nulls in the same places), the rest exactly."""
    assert mine.columns == theirs.columns and mine.height == theirs.height
    for column in mine.columns:
        if mine[column].dtype == pl.Float64:
            assert mine[column].is_null().equals(theirs[column].is_null()), column
            diff = (mine[column] - theirs[column]).abs().max()
            assert diff is None or diff <= 1e-9, column
        else:
            assert mine[column].equals(theirs[column]), column


def assert_recorded_as_on_disk(wh: Warehouse, *, deep: bool) -> None:
    """Every lake file as `oxy check` expects it: listed with its true size and row count,
    and no problem found (``deep``: footers, row counts and scores against readings too)."""
    for path, rows, size in query(wh, "select path, rows, bytes from lake_files"):
        file = wh.root / path
        assert (file.stat().st_size, pq.read_metadata(file).num_rows) == (size, rows)
    with wh.reader() as con:
        assert [p.line() for p in wh.check_files(con, deep=deep)] == []


def test_forget_then_score_equals_a_fresh_warehouse_and_reingest_restores(
    tmp_path: Path,
) -> None:
    first = export(tmp_path / "first.csv", ["s1", "s2"], 0, 12)
    second = export(tmp_path / "second.csv", ["s1", "s3"], 12, 3, seed=1)
    wh = make_warehouse(tmp_path)
    ingest_files(wh, [first, second], source="fjordras")
    score(wh)
    assert_recorded_as_on_disk(wh, deep=True)
    readings, scores, events = readings_of(wh), scores_of(wh), events_of(wh)
    assert {r[0] for r in readings} == {"s1", "s2", "s3"}

    (ingest_id,) = [
        r[0] for r in query(wh, "select ingest_id from ingest_log where path like '%second.csv'")
    ]
    removed = forget(wh, ingest_id=ingest_id)
    assert removed.ingest_ids == [ingest_id] and removed.readings == 2 * 3 * 288
    assert removed.sensors_affected == 2 and removed.sensors_emptied == ["s3"]
    assert removed.sensors_removed == []  # s3 was scored: registered until its scores go
    assert query(wh, "select count(*) from ingest_log where path like '%second.csv'") == [(0,)]
    listed = {r[0] for r in query(wh, "select path from lake_files")}
    on_disk = {p.relative_to(wh.root).as_posix() for p in wh.lake_dir.rglob("*.parquet")}
    assert listed == on_disk
    assert_recorded_as_on_disk(wh, deep=False)
    summary = score(wh)
    assert not summary.full
    assert_recorded_as_on_disk(wh, deep=True)

    fresh = Warehouse(tmp_path / "fresh", wh.config)
    ingest_files(fresh, [first], source="fjordras")
    score(fresh)
    assert readings_of(wh) == readings_of(fresh)
    assert_frames_equal(scores_of(wh), scores_of(fresh))
    assert_frames_equal(events_of(wh), events_of(fresh))

    (again,) = ingest_files(wh, [second], source="fjordras")
    assert again.status == "ok" and again.accepted == 2 * 3 * 288
    score(wh)
    assert_recorded_as_on_disk(wh, deep=True)
    assert readings_of(wh) == readings
    assert_frames_equal(scores_of(wh), scores)
    assert_frames_equal(events_of(wh), events)


def test_forget_by_file_takes_quarantine_and_repeats_and_names_later_ingests(
    tmp_path: Path,
) -> None:
    wh = make_warehouse(tmp_path)
    a = write(
        tmp_path / "a.csv",
        "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,7.0\n2024-01-01T00:01:00Z,c,oops\n",
    )
    b = write(
        tmp_path / "b.csv",
        "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,7.0\n2024-01-01T00:02:00Z,d,7.2\n",
    )
    ingest_files(wh, [a, a, b], source="fjordras")  # the second a is a skipped repeat
    assert query(wh, "select status, count(*) from ingest_log group by 1 order by 1") == [
        ("ok", 2),
        ("skipped", 1),
    ]
    removed = forget(wh, path=a)
    assert removed.files == 1 and removed.readings == 1 and removed.quarantined == 1
    assert removed.sensors_removed == ["c"]  # b's reading of c was a duplicate of a's
    assert query(wh, "select path from ingest_log") == [(str(b),)]
    assert query(wh, "select count(*) from quarantine") == [(0,)]
    assert [line.split(" (")[0] for line in removed.summary()][:1] == [
        f"forgot ingest {removed.ingest_ids[0]}"
    ]
    assert removed.later_ingests and removed.later_ingests[0].endswith("(b.csv)")
    # b's reading of c at 00:00 had been dropped as a duplicate of a's: it left with a
    assert query(wh, "select sensor_id, count(*) from readings group by 1") == [("d", 1)]
    assert query(wh, "select sensor_id from sensors order by 1") == [("d",)]


def test_forget_unknown_ingest_is_a_clear_error(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    path = write(tmp_path / "a.csv", "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,7.0\n")
    (result,) = ingest_files(wh, [path], source="fjordras")
    with pytest.raises(OxyError) as err:
        forget(wh, ingest_id="nope")
    assert f"no ingest 'nope' in the ingest_log; latest ingests: {result.ingest_id} (a.csv)" in (
        str(err.value)
    )
    with pytest.raises(OxyError, match="give an INGEST_ID or --file PATH"):
        forget(wh)
    with pytest.raises(OxyError, match="nothing to forget"):
        forget(Warehouse(tmp_path / "none", wh.config), ingest_id="x")


def test_forget_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure before the commit leaves every table and file as it was."""
    wh = make_warehouse(tmp_path)
    path = write(
        tmp_path / "a.csv", "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c,7.0\n2024-01-01,c,x\n"
    )
    (result,) = ingest_files(wh, [path], source="fjordras")
    before = _lake_state(wh), readings_of(wh)

    def boom(self: Warehouse, con: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Warehouse, "refresh_views", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        forget(wh, ingest_id=result.ingest_id)
    monkeypatch.undo()
    assert (_lake_state(wh), readings_of(wh)) == before


MOSTLY_BAD = (
    "Timestamp,Tag,Value\n"
    + "".join(f"2024-01-01T00:{m:02d}:00Z,c,{7 + m / 100}\n" for m in range(4))
    + "".join(f"2024-01-01 {m}h,c,7\n" for m in range(5))
    + "2024-01-01T00:10:00Z,c,-9999\n"
)


def test_the_guard_refuses_a_mostly_bad_file_and_commits_nothing(tmp_path: Path) -> None:
    config = Config.load(make_config(tmp_path, {"fjordras": BASE_SOURCE}, ingest={}))
    wh = Warehouse(tmp_path / "warehouse", config)
    good = write(tmp_path / "good.csv", "Timestamp,Tag,Value\n2023-12-31T00:00:00Z,old,7\n")
    ingest_files(wh, [good], source="fjordras")
    before = _lake_state(wh)
    path = write(tmp_path / "fjordras.csv", MOSTLY_BAD)
    with pytest.raises(OxyError) as err:
        ingest_files(wh, [path])
    message = str(err.value)
    assert message == (
        f"{path}: nothing committed: 6 of 10 rows (60%) would be quarantined, more than "
        "ingest.max_bad_fraction = 0.5 (unparseable timestamp 5, sentinel value 1); check "
        "[sources.fjordras] with `oxy ingest --dry-run FILE --source fjordras`, or pass "
        "--accept-bad to commit it anyway"
    )
    assert _lake_state(wh) == before
    assert not any(wh.staging_dir.glob("*.parquet"))
    (accepted,) = ingest_files(wh, [path], accept_bad=True)
    assert counts(accepted) == (10, 4, 0, 6)
    assert accepted.note and accepted.note.startswith("nothing committed: 6 of 10 rows")


def test_exact_duplicates_of_lake_rows_do_not_count_against_a_file(tmp_path: Path) -> None:
    """An export overlapping the previous one: its 40 lake duplicates are left out; of its
    10 new rows 4 bad passes (40%), 6 bad is refused (60%)."""
    config = Config.load(make_config(tmp_path, {"fjordras": BASE_SOURCE}, ingest={}))
    wh = Warehouse(tmp_path / "warehouse", config)
    old = "".join(f"2024-01-01T00:{m:02d}:00Z,c,7\n" for m in range(40))
    ingest_files(
        wh, [write(tmp_path / "old.csv", "Timestamp,Tag,Value\n" + old)], source="fjordras"
    )

    def overlap(bad: int) -> str:
        new = [f"2024-01-01T{bad:02d}:{m:02d}:00Z,c,7\n" for m in range(10 - bad)]
        new += [f"2024-01-01T{bad:02d}:3{m}:00Z,c,abc\n" for m in range(bad)]
        return "Timestamp,Tag,Value\n" + old + "".join(new)

    (passed,) = ingest_files(wh, [write(tmp_path / "p.csv", overlap(4))], source="fjordras")
    assert counts(passed) == (50, 6, 40, 4)
    with pytest.raises(OxyError, match=r"6 of 10 rows \(60%\)"):
        ingest_files(wh, [write(tmp_path / "r.csv", overlap(6))], source="fjordras")


def test_dry_run_writes_nothing_and_shows_what_would_land(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"fjordras": {**BASE_SOURCE, "temperature_column": "T"}}, {})
    wh = Warehouse(tmp_path / "warehouse", Config.load(config))
    text = (
        "Timestamp,Tag,Value,T\n2024-01-01T00:00:00Z,c1,7.0,11\n2024-01-01T00:01:00Z,c1,x,11\n"
        "2024-01-01T00:01:00Z,c2,6.5,12\n"
    )
    path = write(tmp_path / "fjordras.csv", text)
    (dry,) = ingest_files(wh, [path], dry_run=True)
    assert not wh.root.exists()  # not even a warehouse
    assert dry.status == "dry-run" and counts(dry) == (3, 2, 0, 1)
    assert dry.reasons == {"non-numeric value": 1}
    assert dry.preview is not None and dry.preview.refusal is None
    assert [s["sensor_id"] for s in dry.preview.new_sensors] == ["c1", "c2"]
    assert [
        (r["sensor_id"], r["ts"], r["value"], r["temperature_c"]) for r in dry.preview.first_rows
    ] == [
        ("c1", datetime(2024, 1, 1, 0, 0), 7.0, 11.0),
        ("c2", datetime(2024, 1, 1, 0, 1), 6.5, 12.0),
    ]
    (real,) = ingest_files(wh, [path])
    assert counts(real) == counts(dry)
    before = _lake_state(wh)
    again = write(tmp_path / "again.csv", text + "2024-01-01T00:02:00Z,c3,6.6,12\n")
    (dry2,) = ingest_files(wh, [again], source="fjordras", dry_run=True)
    assert counts(dry2) == (4, 1, 2, 1)  # classified against the lake as it is
    assert dry2.preview is not None and dry2.preview.known_sensors == 2
    assert _lake_state(wh) == before
    bad = write(tmp_path / "bad.csv", "Timestamp,Tag,Value,T\n" + "x,c,7,1\n" * 3)
    (dry3,) = ingest_files(wh, [bad], source="fjordras", dry_run=True)
    assert dry3.preview is not None and "3 of 3 rows (100%)" in (dry3.preview.refusal or "")


def test_cli_dry_run_forget_sources_and_status_lines(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"fjordras": BASE_SOURCE, "unused": BASE_SOURCE}, {})
    base = ["--warehouse", str(tmp_path / "wh"), "--config", str(config)]
    path = write(
        tmp_path / "fjordras.csv",
        "Timestamp,Tag,Value\n2024-01-01T00:00:00Z,c1,7.0\n2024-01-01T00:01:00Z,c1,NA\n"
        "2024-01-01T00:02:00Z,c1,7.5\n",
    )
    runner = CliRunner()
    dry = runner.invoke(oxy, [*base, "ingest", "--dry-run", str(path)])
    assert dry.exit_code == 0, dry.output
    assert dry.output == (
        "fjordras.csv (dry run, nothing written): read 3 = 2 accepted + 0 duplicate + "
        "1 quarantined\n"
        "  quarantined by reason: missing value 1\n"
        "  sensors: 1 new, 0 already known:\n"
        "    c1  (levels ['c1'], bucket 1)\n"
        "  first rows as they would land:\n"
        "    c1  2024-01-01 00:00:00 UTC  7 mg/L\n"
        "    c1  2024-01-01 00:02:00 UTC  7.5 mg/L\n"
    )
    done = runner.invoke(oxy, [*base, "--json", "ingest", str(path)])
    assert done.exit_code == 0, done.output
    (logged,) = json.loads(done.output)
    ingest_id = logged["ingest_id"]
    status = runner.invoke(oxy, [*base, "status"])
    assert ingest_id in status.output and "ingest_id" in status.output
    sources = runner.invoke(oxy, [*base, "sources"])
    assert sources.exit_code == 0, sources.output
    lines = sources.output.splitlines()
    assert lines[1].split()[:7] == ["fjordras", "fjordras", "mg/L", "1", "2", "1", "1"]
    assert lines[2].split()[:7] == ["unused", "fjordras", "mg/L", "0", "0", "0", "0"]
    gone = runner.invoke(oxy, [*base, "forget", ingest_id])
    assert gone.exit_code == 0, gone.output
    assert gone.output == (
        f"forgot ingest {ingest_id} (fjordras.csv)\n"
        "  removed 2 readings in 1 lake file(s), 1 quarantine rows, 1 ingest_log entry and "
        "1 sensor(s) left without readings\n"
        "  1 sensor(s) affected: the next `oxy score` rescores them\n"
    )
    again = runner.invoke(oxy, [*base, "forget", "--file", str(path)])
    assert again.exit_code == 1 and again.output.startswith("Error: no ingest of ")


def test_source_summaries_without_a_warehouse(tmp_path: Path) -> None:
    wh = make_warehouse(tmp_path)
    assert source_summaries(wh) == [
        {
            "source": "fjordras",
            "configured": True,
            "customer": "fjordras",
            "unit": "mg/L",
            "files": 0,
            "readings": 0,
            "quarantined": 0,
            "sensors": 0,
            "last_ingest": None,
        }
    ]
