"""oxy on a Dask cluster: the same results as embedded, faults, and one writer.

One LocalCluster of 2 worker processes serves the module (the tests connect to it by its
address, as `oxy --scheduler tcp://...` does). A worker plugin refuses any DuckDB connection
to a database file on the workers: only the client may open the catalog.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")

import cloudpickle  # noqa: E402  (comes with distributed)
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from cli import oxy  # noqa: E402
from conftest import FAST_FORECAST  # noqa: E402
from engine import OxyError  # noqa: E402
from engine.anomaly import score  # noqa: E402
from engine.check import check_warehouse  # noqa: E402
from engine.cluster import connect, parse_scheduler  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.demo import generate_demo  # noqa: E402
from engine.forecast import forecast, train  # noqa: E402
from engine.ingest import ingest_files  # noqa: E402
from engine.warehouse import StagedWarehouse, Warehouse, apply_file_ops  # noqa: E402

# the plugins below travel to the workers by value (the workers cannot import this module)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class CatalogGuard(WorkerPlugin):
    """On every worker (restarted ones too): a DuckDB connection to a file is refused and
    recorded; in-memory connections are what workers may open."""

    def setup(self, worker: Any) -> None:
        import duckdb as db

        if getattr(db.connect, "_oxy_guard", False):
            return
        original = db.connect
        opened: list[str] = []

        def guarded(database: Any = ":memory:", *args: Any, **kwargs: Any) -> Any:
            if str(database) not in (":memory:", ""):
                opened.append(str(database))
                raise RuntimeError(f"a worker opened the database file {database}")
            return original(database, *args, **kwargs)

        guarded._oxy_guard = True  # type: ignore[attr-defined]
        guarded.opened = opened  # type: ignore[attr-defined]
        db.connect = guarded


def opened_on_workers() -> list[str]:
    import duckdb as db

    return list(getattr(db.connect, "opened", ["guard not installed"]))


class KillOnce(WorkerPlugin):
    """Kill the worker process (no clean-up) shortly after it starts the first task whose key
    starts with ``prefix``; ``marker`` records that it did (once per test)."""

    def __init__(self, prefix: str, marker: str) -> None:
        self.prefix = prefix
        self.marker = marker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and str(key).startswith(self.prefix):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(key).encode())
            os.close(fd)
            threading.Timer(0.2, lambda: os._exit(1)).start()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(CatalogGuard(), name="oxy-catalog-guard")
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo export (10 sensors, 12 days) and a later one (2 days) of the same sensors."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root / "first", sensors_per_site=2, days=12, seed=3, clean_days=3)
    generate_demo(
        root / "later",
        sensors_per_site=2,
        days=2,
        seed=4,
        clean_days=0,
        start=datetime(2024, 10, 12),  # a day of overlap: duplicates and conflicts
    )
    return root


def config_of(demo: Path, **overrides: Any) -> Config:
    fast = {"forecast": {**FAST_FORECAST["forecast"], "valid_days": 3, "test_days": 2}}
    return Config.load(demo / "first" / "sources.toml").with_overrides(
        {"cluster": {"connect_timeout_s": 5}, **fast, **overrides}
    )


@pytest.fixture(scope="module")
def ingested(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse holding the first export (embedded ingest), copied by each test."""
    wh = Warehouse(tmp_path_factory.mktemp("template") / "warehouse", config_of(demo))
    ingest_files(wh, [demo / "first"])
    return wh.root


def copy_of(root: Path, tmp_path: Path, name: str, config: Config) -> Warehouse:
    shutil.copytree(root, tmp_path / name)
    return Warehouse(tmp_path / name, config)


def pair(
    ingested: Path, demo: Path, tmp_path: Path, **overrides: Any
) -> tuple[Config, Warehouse, Warehouse]:
    """The config and two copies of the ingested warehouse: one embedded, one clustered."""
    config = config_of(demo, **overrides)
    embedded = copy_of(ingested, tmp_path, "embedded", config)
    return config, embedded, copy_of(ingested, tmp_path, "clustered", config)


def no_catalog_opened(executor: Any) -> bool:
    return all(opened == [] for opened in executor.client.run(opened_on_workers).values())


def table(wh: Warehouse, query: str) -> pl.DataFrame:
    with wh.reader() as con:
        frame = pl.from_arrow(con.sql(query).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


SCORED = {
    "scores": "select * exclude (bucket, month) from anomaly_scores order by sensor_id, ts",
    "events": "select * exclude (bucket) from anomaly_events order by sensor_id, start_ts",
    "hourly": "select * from score_hourly order by sensor_id, hour",
    "sites": "select * from site_hourly order by site, hour",
    "scored_files": "select bucket, min_ts from score_files order by all",
}


def assert_same(mine: pl.DataFrame, theirs: pl.DataFrame, what: str) -> None:
    """Every column equal: floats to 1e-9 (nulls in the same places), the rest exactly."""
    assert mine.columns == theirs.columns and mine.height == theirs.height, what
    for column in mine.columns:
        if mine[column].dtype == pl.Float64:
            assert mine[column].is_null().equals(theirs[column].is_null()), (what, column)
            diff = (mine[column] - theirs[column]).abs().max()
            assert diff is None or diff <= 1e-9, (what, column, diff)
        else:
            assert mine[column].equals(theirs[column]), (what, column)


def assert_scored_alike(embedded: Warehouse, clustered: Warehouse) -> None:
    for what, query in SCORED.items():
        assert_same(table(embedded, query), table(clustered, query), what)


def test_scores_on_a_cluster_equal_embedded_full_and_incremental(
    scheduler: str,
    ingested: Path,
    demo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, embedded, clustered = pair(ingested, demo, tmp_path)
    mine = score(embedded)
    capsys.readouterr()
    lines: list[str] = []
    with connect(scheduler, clustered.root, config, echo=lines.append, progress=True) as executor:
        theirs = score(clustered, executor=executor)
        assert executor.tasks >= 2  # the site stage and at least one batch ran on workers
        # the dashboard's link, and a progress bar over each stage's partitions (stderr)
        assert lines == [
            f"dask: 2 worker(s) at {scheduler}; dashboard {executor.client.dashboard_link}"
        ]
        assert lines[0].endswith("/status")
        bars = capsys.readouterr().err
        assert "score: sites: 100%" in bars and "score: 100%" in bars and " partition" in bars
        assert_scored_alike(embedded, clustered)
        assert (mine.rows_scored, mine.anomalies, mine.events) == (
            theirs.rows_scored,
            theirs.anomalies,
            theirs.events,
        )
        for wh in (embedded, clustered):  # new readings of the same sensors: incremental
            ingest_files(wh, [demo / "later"])
        score(embedded)
        again = score(clustered, executor=executor)
        assert 0 < again.rows_scored < theirs.rows_scored + 1
        assert_scored_alike(embedded, clustered)
        assert no_catalog_opened(executor)
    assert not list(clustered.staging_dir.glob("unit-*"))  # the workers' files were moved
    # the files the client committed are recorded as embedded writes are (size, rows)
    assert check_warehouse(clustered).problems == []
    assert (
        table(clustered, "select count(*) as n from mart_files")["n"][0]
        == table(embedded, "select count(*) as n from mart_files")["n"][0]
    )


@pytest.mark.parametrize("mart", ["anomaly_scores", "anomaly_events"])
def test_a_cluster_score_repairs_a_missing_or_damaged_score_file(
    scheduler: str, ingested: Path, demo: Path, tmp_path: Path, mart: str
) -> None:
    """`oxy score` rescores the span of a deleted or truncated anomaly mart file on a cluster
    too: to the clean run's result, recorded, and nothing left to rescore after."""
    config, embedded, clustered = pair(ingested, demo, tmp_path)
    score(embedded)
    with connect(scheduler, clustered.root, config, echo=lambda _: None) as executor:
        score(clustered, executor=executor)
        files = sorted((clustered.marts_dir / mart).rglob("*.parquet"))
        assert len(files) >= 2
        files[0].unlink()
        files[-1].write_bytes(files[-1].read_bytes()[:-100])
        kinds = sorted(p.kind for p in check_warehouse(clustered).problems)
        assert kinds == ["missing", "truncated"]
        repaired = score(clustered, executor=executor)
        assert repaired.rows_scored > 0
        assert_scored_alike(embedded, clustered)
        assert check_warehouse(clustered).problems == []
        assert score(clustered, executor=executor).rows_scored == 0
        assert no_catalog_opened(executor)


def test_a_killed_worker_is_recomputed_and_nothing_is_committed_twice(
    scheduler: str, ingested: Path, demo: Path, tmp_path: Path
) -> None:
    config, embedded, clustered = pair(ingested, demo, tmp_path)
    score(embedded)
    marker = tmp_path / "killed"
    with connect(scheduler, clustered.root, config, echo=lambda _: None) as executor:
        executor.client.register_plugin(KillOnce("oxy-score-0", str(marker)), name="kill-once")
        try:
            summary = score(clustered, executor=executor)
        finally:
            executor.client.unregister_worker_plugin("kill-once")
        executor.client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert marker.read_text().startswith("oxy-score-0")  # a batch's worker did die mid-task
    assert_scored_alike(embedded, clustered)
    files = table(clustered, "select path from score_files")
    assert not files["path"].is_duplicated().any()
    lake = table(clustered, "select count(*) as n from lake_files where kind = 'readings'")
    assert files.height == lake["n"][0]
    assert summary.rows_scored == table(clustered, SCORED["scores"]).height


def test_many_files_ingest_on_a_cluster_as_embedded(
    scheduler: str, demo: Path, tmp_path: Path
) -> None:
    config = config_of(demo)
    # overlapping exports (duplicates, conflicts), a repeated file, two sources per folder
    files = [
        demo / "first" / "pond.csv",
        demo / "later" / "pond.csv",
        demo / "first" / "ras.parquet",
        demo / "first" / "pond.csv",
        demo / "later" / "seacage.csv",
        demo / "first" / "seacage.csv",
        demo / "later" / "ras.parquet",
    ]
    embedded = Warehouse(tmp_path / "embedded", config)
    clustered = Warehouse(tmp_path / "clustered", config)
    mine = ingest_files(embedded, files)
    with connect(scheduler, clustered.root, config, echo=lambda _: None) as executor:
        theirs = ingest_files(clustered, files, executor=executor)
        assert no_catalog_opened(executor)
    counts = ("rows_read", "accepted", "duplicates", "quarantined", "new_sensors", "status")
    assert [[getattr(r, c) for c in counts] for r in mine] == [
        [getattr(r, c) for c in counts] for r in theirs
    ]
    assert sum(r.quarantined for r in mine) > 0 and mine[3].status == "skipped"
    for query in (
        "select * exclude (ingested_at) from readings order by sensor_id, ts",
        "select * exclude (ingest_id, quarantined_at) from quarantine order by all",
        "select kind, bucket, rows, min_ts, max_ts from lake_files order by all",
        "select * exclude (first_seen) from sensors order by sensor_id",
    ):
        assert table(embedded, query).equals(table(clustered, query)), query
    # the commits keep the command line's order: a later file never wins a conflict
    order = table(clustered, "select path from ingest_log order by started_at")["path"]
    assert order.to_list() == [str(f) for f in files]
    assert not [p for p in clustered.staging_dir.iterdir() if p.name != "duckdb_tmp"]


def test_a_bad_file_stops_the_cluster_ingest_where_embedded_stops(
    scheduler: str, demo: Path, tmp_path: Path
) -> None:
    config = config_of(demo)
    files = [demo / "first" / "pond.csv", demo / "first" / "ras.parquet", demo / "later"]
    outcomes = []
    for name in ("embedded", "clustered"):
        wh = Warehouse(tmp_path / name, config)
        with connect(scheduler, wh.root, config, echo=lambda _: None) as executor:
            with pytest.raises(OxyError, match="ras.parquet: column") as failed:
                ingest_files(
                    wh, files, source="pond", executor=executor if name == "clustered" else None
                )
        logged = table(wh, "select path, accepted from ingest_log")
        outcomes.append((str(failed.value), logged.rows()))
        assert not [p for p in wh.staging_dir.iterdir() if p.name != "duckdb_tmp"]
    assert outcomes[0] == outcomes[1]
    assert [Path(p).name for p, _ in outcomes[0][1]] == ["pond.csv"]


def test_train_and_forecast_on_a_cluster_equal_embedded(
    scheduler: str, ingested: Path, demo: Path, tmp_path: Path
) -> None:
    config, embedded, clustered = pair(ingested, demo, tmp_path)
    quiet = lambda _: None  # noqa: E731
    score(embedded)
    mine = train(embedded, echo=quiet)
    forecast(embedded, echo=quiet)
    with connect(scheduler, clustered.root, config, echo=quiet) as executor:
        score(clustered, executor=executor)
        theirs = train(clustered, echo=quiet, executor=executor)
        forecast(clustered, echo=quiet, executor=executor)
        assert no_catalog_opened(executor)
    for split in ("train", "valid", "test"):
        for metric in ("mae", "rmse", "mase"):
            assert abs(mine.metrics[split][metric] - theirs.metrics[split][metric]) <= 1e-9
    assert mine.params == theirs.params
    for name in ("forecasts", "forecast_status"):
        query = f"select * exclude (run_id, bucket) from {name} order by all"
        assert_same(table(embedded, query), table(clustered, query), name)
    assert table(clustered, "select count(*) as n from forecasts")["n"][0] > 0
    assert check_warehouse(clustered).problems == []  # forecast partitions recorded too


def test_training_past_the_threshold_fits_with_lightgbm_dask(
    scheduler: str, ingested: Path, demo: Path, tmp_path: Path
) -> None:
    cluster = {"connect_timeout_s": 5, "dask_train_rows": 0}
    config, embedded, clustered = pair(ingested, demo, tmp_path, cluster=cluster)
    lines: list[str] = []
    mine = train(embedded, echo=lambda _: None)
    with connect(scheduler, clustered.root, config, echo=lambda _: None) as executor:
        theirs = train(clustered, echo=lines.append, executor=executor)
    assert any("lightgbm.dask" in line for line in lines)
    # data-parallel trees are neither bit-identical nor the same from run to run (the bins and
    # histograms follow where the partitions land), but the same kind of model
    for metric in ("mae", "rmse"):
        a, b = mine.metrics["test"][metric], theirs.metrics["test"][metric]
        assert abs(a - b) <= 0.25 * a, (metric, a, b)
    assert mine.metrics["train"]["n"] == theirs.metrics["train"]["n"]
    assert (Path(theirs.path) / "model.txt").read_text().startswith("tree")


def test_local_cluster_from_the_command_line_keeps_stdout_for_the_result(
    ingested: Path, demo: Path, tmp_path: Path
) -> None:
    """`--scheduler local:2` starts and stops its own cluster; lightgbm.dask's log lines, which
    its workers print to the stdout they share with the command, go to stderr: --json's
    stdout is the result alone."""
    config = config_of(demo)
    wh = copy_of(ingested, tmp_path, "warehouse", config)
    embedded = score(wh)
    toml = tmp_path / "oxy.toml"
    toml.write_text(
        (demo / "first" / "sources.toml").read_text()
        + '\n[cluster]\ndask_train_rows = 0\nlocal_memory_limit = "2GB"\n'
        + "\n[forecast]\nlearning_rates = [0.1]\nnum_leaves = [7]\nnum_boost_round = 20\n"
        + 'valid_days = 3\ntest_days = 2\norigin_every = "3h"\nbacktest_every = "3d"\n'
        + 'backtest_step = "30m"\n'
    )
    command = [Path(sys.executable).parent / "oxy", "--warehouse", str(wh.root)]
    command += ["--config", str(toml), "--scheduler", "local:2", "--json"]
    run = subprocess.run([*command, "score", "--full"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # nothing but the result on stdout
    assert result["full"] and result["rows_scored"] == embedded.rows_scored
    assert (result["anomalies"], result["events"]) == (embedded.anomalies, embedded.events)
    assert "dask: 2 worker(s) at local:2; dashboard http://" in run.stderr
    run = subprocess.run([*command, "train"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["metrics"]["train"]["n"] > 0
    assert "dask: 2 worker(s) at local:2; dashboard http://" in run.stderr
    assert "[LightGBM]" in run.stderr  # lightgbm.dask did run on the workers


def test_the_command_line_draws_a_bar_over_partitions_on_a_terminal(
    ingested: Path, demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, `oxy --scheduler local:2 score` prints the cluster and its dashboard
    link, then a bar over each stage's partitions, all on stderr; stdout keeps the summary."""
    import cli

    config = config_of(demo)
    wh = copy_of(ingested, tmp_path, "warehouse", config)
    toml = tmp_path / "oxy.toml"
    toml.write_text((demo / "first" / "sources.toml").read_text())
    monkeypatch.setattr(cli, "wanted", lambda **_: True)  # as if stderr were a terminal
    result = CliRunner().invoke(
        oxy,
        ["--warehouse", str(wh.root), "--config", str(toml), "--scheduler", "local:2", "score"],
    )
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert err.startswith("dask: 2 worker(s) at local:2; dashboard http://"), err[:300]
    for stage in ("score: sites", "score"):
        assert f"{stage}: 100%" in err, err[-1000:]
    assert " partition" in err and " bucket" not in err  # the cluster's bars, not embedded's
    assert result.stdout.startswith("this run (new readings only): scored ")


def _state(wh: Warehouse) -> dict[str, Any]:
    """What a run may change: the scoring tables and every mart file's bytes."""
    marts = {
        str(p.relative_to(wh.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(wh.marts_dir.rglob("*.parquet"))
    }
    tables = {
        name: table(wh, query).rows()
        for name, query in SCORED.items()
        if name not in ("scores", "events")
    }
    return {"marts": marts, **tables}


class KillScheduler(WorkerPlugin):
    """Kill the scheduler process when the first scoring batch starts on a worker."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and str(key).startswith("oxy-score-0"):
            os.kill(self.pid, signal.SIGKILL)


def test_a_lost_scheduler_is_one_line_and_the_warehouse_is_unchanged(
    ingested: Path, demo: Path, tmp_path: Path
) -> None:
    bin_dir = Path(sys.executable).parent
    info = tmp_path / "scheduler.json"
    sched = subprocess.Popen(
        [bin_dir / "dask", "scheduler", "--scheduler-file", info, "--port", "0"]
        + ["--host", "127.0.0.1", "--dashboard-address", ":0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline and sched.poll() is None, "no scheduler"
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        worker = subprocess.Popen(
            [bin_dir / "dask", "worker", address, "--nworkers", "1", "--nthreads", "1"]
            + ["--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        config = config_of(demo)
        wh = copy_of(ingested, tmp_path, "warehouse", config)
        score(wh)  # scored once: a full rescore below would replace every file
        before = _state(wh)
        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            client.register_plugin(KillScheduler(sched.pid), name="kill-scheduler")
        toml = tmp_path / "oxy.toml"
        toml.write_text("[cluster]\nconnect_timeout_s = 3\n")
        result = CliRunner().invoke(
            oxy,
            ["--warehouse", str(wh.root), "--config", str(toml), "--scheduler", address]
            + ["-q", "score", "--full"],
        )
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: score: lost the Dask scheduler at tcp://")
        assert "the warehouse is as before the run" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert _state(wh) == before
    finally:
        for process in (worker, sched):
            if process is not None:
                process.kill()
                process.wait()


def test_staged_writes_publish_nothing_until_applied(warehouse: Warehouse) -> None:
    folder = warehouse.marts_dir / "m" / "bucket=01"
    folder.mkdir(parents=True)
    old = pl.DataFrame({"x": [1, 2]})
    old.write_parquet(folder / "a.parquet")
    old.write_parquet(folder / "b.parquet")

    def stage() -> StagedWarehouse:
        """A worker's writes while the client holds the writer (as in a cluster run)."""
        staged = StagedWarehouse(warehouse.root, warehouse.config)
        new = staged.staging_path()
        pl.DataFrame({"x": [3]}).write_parquet(new)
        staged.replace_file(new, folder / "a.parquet", expected_rows=1)
        staged.remove_file(folder / "b.parquet")
        assert pl.read_parquet(folder / "a.parquet")["x"].to_list() == [1, 2]  # untouched
        assert (folder / "b.parquet").exists()
        assert pl.read_parquet(staged.current(folder / "a.parquet"))["x"].to_list() == [3]
        return staged

    for outcome in ("rollback", "commit"):
        with warehouse.writer() as con:  # the older files are adopted: listed with sizes
            staged = stage()
            con.execute("begin")
            assert apply_file_ops(warehouse, con, staged.ops) == 1
            con.execute(outcome)
        if outcome == "rollback":  # put back with the transaction
            assert pl.read_parquet(folder / "a.parquet")["x"].to_list() == [1, 2]
            assert (folder / "b.parquet").exists()
    assert pl.read_parquet(folder / "a.parquet")["x"].to_list() == [3]
    assert not (folder / "b.parquet").exists()
    # recorded as the embedded engine records its writes: `oxy check` finds nothing wrong
    listed = table(warehouse, "select path, rows, bytes from mart_files order by path")
    a = folder / "a.parquet"
    assert listed.rows() == [(str(a.relative_to(warehouse.root)), 1, a.stat().st_size)]
    with warehouse.reader() as con:
        assert warehouse.check_files(con, deep=True) == []


def test_a_warehouse_sent_to_a_worker_leaves_its_writer_connection_behind(
    warehouse: Warehouse,
) -> None:
    """Score jobs and ingest scans carry the client's Warehouse, whose open writer connection
    (DuckDB) cannot be pickled and must not travel: a copy holds paths and config only."""
    pl.DataFrame({"x": [1]}).write_parquet(warehouse.staging_path())  # makes the root
    with warehouse.writer():
        copy = cloudpickle.loads(cloudpickle.dumps(warehouse))
    assert copy.root == warehouse.root and copy.config.data == warehouse.config.data
    assert copy._writer_con is None and copy._journals == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("local:0", "at least 1 worker"),
        ("somewhere", "expected local, local:N or a scheduler address"),
    ],
)
def test_a_bad_scheduler_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(OxyError, match=message):
        parse_scheduler(text, Config.load())


def test_the_scheduler_comes_from_the_environment_and_an_unreachable_one_is_one_line(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "oxy.toml"
    toml.write_text("[cluster]\nconnect_timeout_s = 1\n")
    with socket.socket() as probe:  # a local port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        oxy,
        ["--warehouse", str(tmp_path / "wh"), "--config", str(toml), "score"],
        env={"OXY_SCHEDULER": f"tcp://127.0.0.1:{port}"},
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "wh" / "oxy.duckdb").exists()


def test_duckdb_guard_refuses_files(tmp_path: Path) -> None:
    """The guard the cluster tests rely on would catch a catalog opened on a worker."""
    plugin = CatalogGuard()
    original = duckdb.connect
    try:
        plugin.setup(None)
        with pytest.raises(RuntimeError, match="opened the database file"):
            duckdb.connect(str(tmp_path / "x.duckdb"))
        duckdb.connect(":memory:").close()
    finally:
        duckdb.connect = original
