"""Benchmark: the warehouse never answers wrong and no writer dies of a reader.

Four trials, each printing its figures (written to bench/RESULTS.md, section "reliability"):

1. **fuzzed ingest** — ``--fuzz`` generated exports (CSV and Parquet; bad values and times,
   sentinels, ragged and short lines, duplicates that agree and that conflict, quotes with
   commas and newlines, blank lines, a BOM, CRLF, NUL and latin-1 bytes, truncated Parquet,
   empty files), each ingested on its own: no traceback, and exact accounting (per file
   read = accepted + duplicate + quarantined; lake rows = accepted; quarantine rows =
   quarantined; the rows written = the rows read for files whose text is well formed);
2. **kill -9** — ``--kills`` trials per writer command (ingest, score, train, forecast): the
   command is started on a copy of the same warehouse and killed at a random moment of its
   clean run time, run again to completion, and the result compared with a clean run's
   (readings, scores and events, the production model's test metrics, the forecasts), with
   ``oxy check`` clean after it;
3. **writers beside a reader loop** — ``--stress`` writer runs (``oxy ingest`` of a new day,
   ``oxy score``, ``oxy score --full``) while a loop of ``oxy sql`` / ``oxy status`` reads
   beside them: failures of either, and reader answers that no committed state had;
4. **sandbox escapes** — the hostile statement list of ``tests/test_query.py`` plus generated
   writes and file reads, through ``oxy sql``: each must be refused, and the warehouse's files
   and a folder outside it must be unchanged.

    .venv/bin/python bench/bench_reliability.py                       # the full run (~20 min)
    .venv/bin/python bench/bench_reliability.py --fuzz 100 --kills 3 --stress 10   # a quick one
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.results import write_section  # noqa: E402
from engine import OxyError  # noqa: E402
from engine.check import check_warehouse  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.ingest import ingest_files  # noqa: E402
from engine.query import run_sql  # noqa: E402
from engine.warehouse import Warehouse  # noqa: E402

OXY = str(Path(sys.executable).with_name("oxy"))
FAST = """
[warehouse]
lock_timeout_s = 120

[forecast]
learning_rates = [0.1]
num_leaves = [7]
num_boost_round = 30
early_stopping_rounds = 5
min_data_in_leaf = 20
origin_every = "3h"
backtest_every = "3d"
backtest_step = "30m"
valid_days = 2
test_days = 2
horizon = "1d"
"""
FUZZ_SOURCE = """
[sources.fuzz]
customer = "fuzz"
timezone = "Europe/Oslo"
unit = "mg/L"
sensor_columns = ["Tag"]
time_column = "Timestamp"
value_column = "Value"

[sources.fuzzpq]
customer = "fuzz"
timezone = "UTC"
unit = "mg/L"
sensor_columns = ["Tag"]
time_column = "Timestamp"
value_column = "Value"
"""


def oxy(wh: Path, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [OXY, "--warehouse", str(wh), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"oxy {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done


def query(wh: Path, sql: str) -> list[tuple[Any, ...]]:
    result = run_sql(Warehouse(wh, Config.load()), sql, fmt="table", limit=10**9)
    assert result.table is not None
    return [tuple(r.values()) for r in result.table.to_pylist()]


# -- 1. fuzzed ingest ----------------------------------------------------------------------
BAD_VALUES = ["abc", "", "NaN", "1e999", "-9999", "9999", "7,5", " ", "null", "--1"]
BAD_TIMES = ["2024-13-45T00:00:00Z", "", "yesterday", "2024-02-30", "12:00", "2024-03-01T25:00"]
# times that make polars panic inside ingest (issue 20 quarantines them): --with-issue-20
ISSUE_20_TIMES = ["infinity", "-infinity", "+275760-09-13T00:00:00Z"]


def fuzz_csv(rng: random.Random) -> tuple[bytes, int | None]:
    """One malformed CSV export, and its data rows when its text is well formed (else None)."""
    rows: list[str] = []
    written: list[tuple[str, str, str]] = []
    well_formed = True
    for _ in range(rng.randrange(0, 60)):
        kind = rng.random()
        tag = f"cage{rng.randrange(4)}"
        ts = f"2024-0{rng.randrange(1, 4)}-1{rng.randrange(10)}T0{rng.randrange(10)}:" + (
            f"{rng.randrange(60):02d}:00Z"
        )
        if kind < 0.45:
            value = f"{rng.uniform(0, 15):.2f}"
        elif kind < 0.6:
            value = rng.choice(BAD_VALUES)
        elif kind < 0.7:
            ts, value = rng.choice(BAD_TIMES), "7.0"
        elif kind < 0.8 and written:
            ts_, tag_, value_ = rng.choice(written)
            ts, tag, value = ts_, tag_, value_ if rng.random() < 0.5 else "3.3"
        elif kind < 0.85:
            rows.append(f"{ts},{tag},7.1,extra")  # ragged
            continue
        elif kind < 0.9:
            rows.append(f"{ts},{tag}")  # short
            continue
        elif kind < 0.94:
            rows.append(f'{ts},"{tag},x\nnext",7.2')  # a quoted comma and newline
            continue
        else:
            value = "8.0"
        rows.append(f"{ts},{tag},{value}")
        written.append((ts, tag, value))
    text = "Timestamp,Tag,Value\n" + "\n".join(rows) + ("\n" if rows else "")
    data = text.encode("utf-8")
    twist = rng.random()
    if twist < 0.05:
        data = b"\xef\xbb\xbf" + data  # a BOM
    elif twist < 0.1:
        data = data.replace(b"\n", b"\r\n", rng.randrange(1, 5))  # mixed line endings
    elif twist < 0.14:
        data = data + b"\n\n\n"  # blank lines at the end
    elif twist < 0.18 and len(data) > 30:
        cut = rng.randrange(20, len(data))
        data, well_formed = data[:cut] + b"\x00" + data[cut:], False
    elif twist < 0.22 and len(data) > 30:
        cut = rng.randrange(20, len(data))
        data, well_formed = data[:cut] + b"\xe9\xff" + data[cut:], False
    elif twist < 0.25:
        data, well_formed = data[: rng.randrange(0, len(data) + 1)], False  # cut anywhere
    elif twist < 0.27:
        data, well_formed = b"", False
    quoted = any('"' in r for r in rows)
    return data, (len(rows) if well_formed and not quoted else None)


def fuzz_parquet(rng: random.Random, path: Path) -> int | None:
    n = rng.randrange(0, 80)
    times = [
        f"2024-03-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"
        if rng.random() > 0.1
        else rng.choice(BAD_TIMES)
        for _ in range(n)
    ]
    values = [
        rng.uniform(0, 15) if rng.random() > 0.15 else rng.choice([float("nan"), -9999.0, 1e9])
        for _ in range(n)
    ]
    tags = [f"tank{rng.randrange(3)}" if rng.random() > 0.05 else None for _ in range(n)]
    table = pa.table({"Timestamp": times, "Tag": tags, "Value": values})
    pq.write_table(table, path)
    if rng.random() < 0.1:
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(0, len(data))])  # truncated
        return None
    return n


def fuzzed_ingest(work: Path, files: int, seed: int) -> dict[str, Any]:
    config_path = work / "fuzz.toml"
    config_path.write_text(FUZZ_SOURCE, encoding="utf-8")
    wh = Warehouse(work / "fuzz-wh", Config.load(config_path))
    rng = random.Random(seed)
    exports = work / "fuzz"
    exports.mkdir()
    stats = {"files": 0, "tracebacks": 0, "refused": 0, "accounting_errors": 0, "read": 0}
    stats |= {"accepted": 0, "duplicates": 0, "quarantined": 0, "skipped": 0}
    examples: list[str] = []
    for i in range(files):
        if rng.random() < 0.8:
            path = exports / f"export{i:04d}.csv"
            data, expected = fuzz_csv(rng)
            path.write_bytes(data)
            source = "fuzz"
        else:
            path = exports / f"export{i:04d}.parquet"
            expected = fuzz_parquet(rng, path)
            source = "fuzzpq"
        stats["files"] += 1
        before = query(wh.root, "select count(*) from readings")[0][0] if wh.exists() else 0
        try:
            (result,) = ingest_files(wh, [path], source=source)
        except OxyError:
            stats["refused"] += 1
            after = query(wh.root, "select count(*) from readings")[0][0] if wh.exists() else 0
            stats["accounting_errors"] += int(after != before)  # a refusal changes nothing
            continue
        except (Exception, BaseException) as exc:  # a traceback (pyo3 panics are BaseException)
            if isinstance(exc, KeyboardInterrupt):
                raise
            stats["tracebacks"] += 1
            examples.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        if result.status == "skipped":
            stats["skipped"] += 1
            continue
        balanced = result.rows_read == result.accepted + result.duplicates + result.quarantined
        exact = expected is None or result.rows_read == expected
        stats["accounting_errors"] += int(not (balanced and exact))
        if not (balanced and exact):
            examples.append(f"{path.name}: {result.summary()} (wrote {expected} rows)")
        for key in ("accepted", "duplicates", "quarantined"):
            stats[key] += getattr(result, key)
        stats["read"] += result.rows_read
    lake = query(wh.root, "select count(*) from readings")[0][0]
    quarantine = query(wh.root, "select count(*) from quarantine")[0][0]
    logged = query(
        wh.root, "select sum(accepted), sum(quarantined) from ingest_log where status = 'ok'"
    )[0]
    stats["lake_rows"], stats["quarantine_rows"] = lake, quarantine
    stats["totals_exact"] = (
        (lake, quarantine)
        == (stats["accepted"], stats["quarantined"])
        == (tuple(int(v or 0) for v in logged))
    )
    stats["check_ok"] = check_warehouse(wh).ok
    stats["examples"] = examples[:5]
    return stats


# -- 2. kill -9 of every writer command ------------------------------------------------------
def fingerprint(wh: Path, command: str) -> Any:
    """What a run of ``command`` must leave, the same after a kill and a re-run as clean."""
    if command == "ingest":
        return query(
            wh,
            "select count(*), round(sum(value), 6), count(distinct sensor_id), "
            "(select count(*) from quarantine), "
            "(select sum(accepted) from ingest_log where status = 'ok') from readings",
        )
    if command == "score":
        return query(
            wh,
            "select count(*), sum(hash(sensor_id, ts, round(severity, 9), anomaly_type)), "
            "(select count(*) from anomaly_events), "
            "(select sum(hash(sensor_id, start_ts, end_ts, anomaly_type)) from anomaly_events) "
            "from anomaly_scores",
        )
    if command == "train":  # the newest complete run (promoted or not: a small demo can lose
        # to the seasonal naive, which the promotion rule refuses)
        run = _newest_run(wh)
        meta = json.loads((wh / "registry/runs" / run / "meta.json").read_text())
        return json.dumps(meta["metrics"], sort_keys=True)
    return query(  # forecast
        wh,
        "select count(*), sum(hash(sensor_id, ts, round(yhat, 9), round(yhat_lo, 9))), "
        "(select count(*) from forecast_status) from forecasts",
    )


def _newest_run(wh: Path) -> str:
    runs = sorted(p.name for p in (wh / "registry/runs").iterdir() if (p / "meta.json").exists())
    return runs[-1]


def kill_trials(
    work: Path, config: Path, demo: Path, trials: int, seed: int
) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    stages = [
        ("ingest", ["ingest", str(demo)]),
        ("score", ["score"]),
        ("train", ["train"]),
        ("forecast", ["forecast"]),
    ]
    base = work / "kill-base"
    out: dict[str, dict[str, Any]] = {}
    for name, args in stages:
        before = work / f"before-{name}"
        shutil.copytree(base, before, symlinks=True) if base.exists() else before.mkdir()
        clean = work / f"clean-{name}"
        shutil.copytree(before, clean, symlinks=True)
        started = time.perf_counter()
        oxy(clean, config, *args)
        duration = time.perf_counter() - started
        expected = fingerprint(clean, name)
        stats = {"trials": 0, "recovered": 0, "ended_before_kill": 0, "check_failures": 0}
        stats["clean_s"] = round(duration, 2)
        attempts = 0
        while stats["trials"] < trials and attempts < trials * 6:
            attempts += 1
            trial = work / f"trial-{name}"
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(before, trial, symlinks=True)
            proc = subprocess.Popen(
                [OXY, "--warehouse", str(trial), "--config", str(config), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.2, 0.95) * duration)
            if proc.poll() is not None:
                stats["ended_before_kill"] += 1
                duration *= 0.9  # the box got faster: kill earlier
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stats["trials"] += 1
            oxy(trial, config, *args)
            got = fingerprint(trial, name)
            same = not _differences(expected, got)
            report = check_warehouse(Warehouse(trial, Config.load(config)))
            stats["recovered"] += int(same and report.ok)
            stats["check_failures"] += int(not report.ok)
            if not (same and report.ok):
                print(f"  {name}: not recovered ({[p.line() for p in report.problems]})")
                print(f"    differs: {_differences(expected, got)[:5]}")
        if name == "train" and not (clean / "registry/production.json").exists():
            oxy(clean, config, "promote", _newest_run(clean))  # forecast needs a production run
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(clean, base, symlinks=True)  # the next stage starts from this one
        for folder in (before, clean, work / f"trial-{name}"):
            shutil.rmtree(folder, ignore_errors=True)
        out[name] = stats
        print(f"  kill -9 {name}: {stats}", flush=True)
    return out


# -- 3. writers beside a reader loop -------------------------------------------------------
def stress(work: Path, config: Path, demo: Path, runs: int) -> dict[str, Any]:
    wh = work / "stress-wh"
    oxy(wh, config, "ingest", str(demo))
    oxy(wh, config, "score")
    days = work / "days"
    for i in range(runs // 3 + 1):
        start = f"2024-10-{11 + i % 18:02d}" if i < 18 else f"2024-11-{1 + i - 18:02d}"
        oxy(
            wh,
            config,
            "demo-data",
            str(days / f"d{i}"),
            "--days",
            "1",
            "--clean-days",
            "0",
            "--start",
            start,
            "--sensors-per-site",
            "1",
        )
    committed = {query(wh, "select count(*) from readings")[0][0]}
    stop = threading.Event()
    reads = {"runs": 0, "failures": 0, "tracebacks": 0, "wrong": 0}
    seen: set[int] = set()

    def reader_loop() -> None:
        while not stop.is_set():
            for args in (
                ["sql", "select count(*) from readings", "--format", "csv"],
                ["--json", "status"],
            ):
                done = subprocess.run(
                    [OXY, "--warehouse", str(wh), "--config", str(config), *args],
                    capture_output=True,
                    text=True,
                )
                reads["runs"] += 1
                reads["failures"] += int(done.returncode != 0)
                reads["tracebacks"] += int("Traceback" in done.stderr + done.stdout)
                if done.returncode == 0:
                    count = (
                        int(done.stdout.splitlines()[-1])
                        if args[0] == "sql"
                        else json.loads(done.stdout)["rows"]
                    )
                    seen.add(count)

    thread = threading.Thread(target=reader_loop)
    thread.start()
    writes = {"runs": 0, "failures": 0}
    errors: list[str] = []
    try:
        for i in range(runs):
            kind = i % 3
            if kind == 0:
                folder = days / f"d{i // 3}"
                args = ["--config", str(folder / "sources.toml"), "ingest", str(folder)]
                done = subprocess.run(
                    [OXY, "--warehouse", str(wh), *args], capture_output=True, text=True
                )
            else:
                extra = ["--full"] if kind == 2 else []
                done = oxy(wh, config, "score", *extra, check=False)
            writes["runs"] += 1
            if done.returncode != 0:
                writes["failures"] += 1
                errors.append(done.stderr.strip()[-300:])
            committed.add(query(wh, "select count(*) from readings")[0][0])
    finally:
        stop.set()
        thread.join()
    reads["wrong"] = len(seen - committed)
    return {
        "writes": writes,
        "reads": reads,
        "errors": errors[:3],
        "check_ok": check_warehouse(Warehouse(wh, Config.load(config))).ok,
    }


# -- 4. the sandbox escape list ------------------------------------------------------------
def sandbox_escapes(work: Path, config: Path, demo: Path) -> dict[str, Any]:
    from test_query import _READS, _WRITES, HOSTILE

    wh_path = work / "escape-wh"
    oxy(wh_path, config, "ingest", str(demo))
    oxy(wh_path, config, "score")
    wh = Warehouse(wh_path, Config.load(config))
    outside = work / "outside"
    outside.mkdir()
    pq.write_table(pa.table({"secret": [42]}), outside / "secret.parquet")
    (outside / "secret.csv").write_text("secret\n42\n", encoding="utf-8")
    lake = sorted(wh.lake_dir.rglob("*.parquet"))[0]
    mart = sorted(wh.marts_dir.rglob("*.parquet"))[0]
    fill = {"db": wh.db_path, "root": wh.root, "outside": outside, "lake": lake, "mart": mart}
    statements = [t.format(**fill) for t in HOSTILE]
    for template in _WRITES:
        for name, n, path in (("evil", 1, outside), ("x", 0, "/etc"), ("y", 7, wh.root)):
            statements.append(template.format(name=name, n=n, path=path))
    functions = ["read_csv", "read_csv_auto", "read_parquet", "read_json", "read_text"]
    functions += ["read_blob", "glob"]
    for template in _READS:
        for fn in functions:
            for where in ("/etc", outside, wh.root, wh.lake_dir, f"{wh.root}/.."):
                statements.append(template.format(fn=fn, name="secret", path=where))

    def hashes() -> dict[str, str]:
        files = [p for p in wh.root.rglob("*") if p.is_file() and ".staging" not in p.parts]
        files += list(outside.rglob("*"))
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}

    before = hashes()
    escapes: list[str] = []
    for statement in statements:
        try:
            result = run_sql(wh, statement, fmt="table", limit=5)
        except OxyError as exc:
            if not str(exc).startswith(("refused: ", "SQL syntax error: ", "query failed: ")):
                escapes.append(f"{statement}: {exc}")
            continue
        rows = result.table.to_pylist() if result.table is not None else []
        escapes.append(f"{statement}: answered {rows[:2]}")
    changed = before != hashes()
    return {
        "statements": len(statements),
        "escapes": len(escapes) + int(changed),
        "files_changed": changed,
        "examples": escapes[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=1000, help="fuzzed export files (1000)")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 trials per command (20)")
    parser.add_argument("--stress", type=int, default=50, help="writer runs beside readers (50)")
    parser.add_argument("--sensors-per-site", type=int, default=1, help="demo size (1: 5 sensors)")
    parser.add_argument("--days", type=int, default=10, help="demo days (10)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--with-issue-20",
        action="store_true",
        help="also fuzz with times that make polars panic inside ingest (issue 20's fix)",
    )
    args = parser.parse_args()
    if args.with_issue_20:
        BAD_TIMES.extend(ISSUE_20_TIMES)
    work = Path(tempfile.mkdtemp(prefix="oxy-bench-reliability-"))
    load = [f"{x:.1f}" for x in os.getloadavg()]
    print(f"work folder {work}; load {' '.join(load)}", flush=True)
    started = time.perf_counter()
    try:
        demo = work / "demo"
        subprocess.run(
            [
                OXY,
                "demo-data",
                str(demo),
                "--sensors-per-site",
                str(args.sensors_per_site),
                "--days",
                str(args.days),
            ],
            check=True,
            capture_output=True,
        )
        config = work / "oxy.toml"
        config.write_text((demo / "sources.toml").read_text() + FAST, encoding="utf-8")
        results: dict[str, Any] = {}
        timed: dict[str, float] = {}
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("fuzz", lambda: fuzzed_ingest(work, args.fuzz, args.seed)),
            ("kill", lambda: kill_trials(work, config, demo, args.kills, args.seed)),
            ("stress", lambda: stress(work, config, demo, args.stress)),
            ("sandbox", lambda: sandbox_escapes(work, config, demo)),
        ]
        for name, step in steps:
            t = time.perf_counter()
            results[name] = step()
            timed[name] = time.perf_counter() - t
            print(
                f"{name}: {json.dumps(results[name], default=str)} ({timed[name]:.0f} s)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_end = [f"{x:.1f}" for x in os.getloadavg()]
    fuzz, kill, stress_, escape = (results[k] for k in ("fuzz", "kill", "stress", "sandbox"))
    fuzz_ok = fuzz["files"] >= 1000 and not fuzz["tracebacks"] and fuzz["totals_exact"]
    fuzz_ok = fuzz_ok and not fuzz["accounting_errors"]
    rows = [
        "| trial | figures | target | met |",
        "|---|---|---|---|",
        f"| fuzzed ingest, {fuzz['files']:,} files"
        + (" (with issue 20's times)" if args.with_issue_20 else "")
        + f" | {fuzz['tracebacks']} tracebacks, "
        f"{fuzz['accounting_errors']} accounting errors; read {fuzz['read']:,} = "
        f"{fuzz['accepted']:,} accepted + {fuzz['duplicates']:,} duplicate + "
        f"{fuzz['quarantined']:,} quarantined; {fuzz['refused']} files refused in one line, "
        f"{fuzz['skipped']} skipped as repeats; lake and quarantine totals "
        f"{'exact' if fuzz['totals_exact'] else 'WRONG'}, check "
        f"{'clean' if fuzz['check_ok'] else 'NOT clean'} | ≥ 1,000 files, 0 tracebacks, "
        f"exact accounting | {_met(fuzz_ok)} |",
    ]
    for name, s in kill.items():
        rows.append(
            f"| `kill -9` of `oxy {name}` (clean run {s['clean_s']} s) | {s['recovered']} of "
            f"{s['trials']} recovered to the clean run's result, `oxy check` clean "
            f"({s['ended_before_kill']} runs ended before their kill, not counted) | ≥ 20 "
            f"trials, all recovered | {_met(s['trials'] >= 20 and s['recovered'] == s['trials'])} |"
        )
    w, r = stress_["writes"], stress_["reads"]
    rows.append(
        f"| {w['runs']} writer runs (ingest, score, score --full) beside a reader loop | "
        f"{w['failures']} writer failures; {r['runs']} reads ({r['failures']} failed, "
        f"{r['tracebacks']} tracebacks, {r['wrong']} answers of no committed state); check "
        f"{'clean' if stress_['check_ok'] else 'NOT clean'} | 50 runs, 0 failures | "
        f"{_met(w['runs'] >= 50 and not w['failures'] and not r['failures'] and not r['wrong'])} |"
    )
    rows.append(
        f"| sandbox escape list, {escape['statements']} statements | {escape['escapes']} "
        f"escapes, files {'changed' if escape['files_changed'] else 'unchanged'} | 0 escapes | "
        f"{_met(not escape['escapes'])} |"
    )
    body = (
        f"Load average {' '.join(load)} at the start, {' '.join(load_end)} at the end (the "
        f"2 cores are shared); {time.perf_counter() - started:.0f} s in all "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in timed.items())}).\n\n" + "\n".join(rows)
    )
    print(body)
    write_section("reliability", body, title="Reliability (bench_reliability.py)")


def _differences(a: Any, b: Any, at: str = "") -> list[str]:
    """Where two fingerprints differ (JSON texts are compared key by key)."""
    if isinstance(a, str) and isinstance(b, str) and a.startswith("{"):
        a, b = json.loads(a), json.loads(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{at}.{k}")
        ]
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-9):
        return []  # a sum in another order (threads): the last bit of a metric may differ
    return [] if a == b else [f"{at}: {a!r} vs {b!r}"]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


if __name__ == "__main__":
    main()
