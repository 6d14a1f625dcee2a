"""Registry: promotion rule, manual promote/rollback, atomic production pointer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cli import oxy
from engine import OxyError
from engine.registry import (
    PAUSE_ENV,
    decide,
    list_runs,
    production_run,
    promote,
    read_pointer,
    record_run,
    rollback,
)
from engine.warehouse import Warehouse

ROOT = Path(__file__).resolve().parent.parent
WINDOW = {"test_start": "2024-03-01T00:00:00", "test_end": "2024-03-08T00:00:00"}


def make_run(
    warehouse: Warehouse,
    run_id: str,
    rmse: float,
    mase: float,
    *,
    window: dict[str, str] | None = None,
    created_at: str = "2024-03-09T00:00:00",
) -> dict:
    """A registry run folder as engine.artifacts writes it (meta.json + model text)."""
    meta = {
        "run_id": run_id,
        "created_at": created_at,
        "params": {"learning_rate": 0.1, "num_leaves": 15},
        "metrics": {
            "train": {"mae": 0.1, "rmse": 0.15, "mase": 0.5},
            "valid": {"mae": 0.2, "rmse": 0.25, "mase": 0.7},
            "test": {"mae": rmse * 0.8, "rmse": rmse, "mase": mase},
        },
        "split": window or WINDOW,
    }
    folder = warehouse.registry_dir / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "model.txt").write_text("tree\n")
    return meta


def test_decide_rule_exact_cases() -> None:
    assert decide("a", {"rmse": 1.0, "mase": 1.0}, None, None).promoted
    better = decide("b", {"rmse": 0.9, "mase": 1.0}, "a", {"rmse": 1.0, "mase": 1.0})
    assert better.promoted and better.reason.startswith("beats production")
    equal = decide("b", {"rmse": 1.0, "mase": 0.5}, "a", {"rmse": 1.0, "mase": 1.0})
    assert not equal.promoted and "RMSE not lower" in equal.reason
    worse_mase = decide("b", {"rmse": 0.5, "mase": 1.01}, "a", {"rmse": 1.0, "mase": 1.0})
    assert not worse_mase.promoted and "MASE worse" in worse_mase.reason
    small = decide(
        "b", {"rmse": 0.99, "mase": 1.0}, "a", {"rmse": 1.0, "mase": 1.0}, min_rmse_improvement=0.02
    )
    assert not small.promoted and "RMSE not 2.0% lower" in small.reason
    nan = decide("b", {"rmse": float("nan"), "mase": 0.1}, "a", {"rmse": 1.0, "mase": 1.0})
    assert not nan.promoted


def test_first_run_promoted_better_accepted_worse_refused(warehouse: Warehouse) -> None:
    assert production_run(warehouse) is None
    first = record_run(warehouse, "r1", make_run(warehouse, "r1", 1.0, 0.9))
    assert first.promoted and first.reason == "first run: promoted"
    assert production_run(warehouse) == "r1"

    worse = record_run(warehouse, "r2", make_run(warehouse, "r2", 1.1, 0.8))
    assert not worse.promoted and worse.previous == "r1"
    assert production_run(warehouse) == "r1"

    better = record_run(warehouse, "r3", make_run(warehouse, "r3", 0.8, 0.9))
    assert better.promoted and better.production_metrics["rmse"] == 1.0
    assert production_run(warehouse) == "r3"

    runs = {r["run_id"]: r for r in list_runs(warehouse)}
    assert {k: (v["promoted"], v["is_production"]) for k, v in runs.items()} == {
        "r1": (True, False),
        "r2": (False, False),
        "r3": (True, True),
    }
    assert runs["r2"]["reason"].startswith("not promoted, RMSE not lower")
    mart = pq.read_table(warehouse.marts_dir / "model_runs" / "data.parquet").to_pylist()
    assert [(r["run_id"], r["is_production"], r["test_rmse"]) for r in mart] == [
        ("r1", False, 1.0),
        ("r2", False, 1.1),
        ("r3", True, 0.8),
    ]
    assert json.loads(mart[0]["metrics"])["valid"]["mase"] == 0.7


def test_other_window_uses_evaluator_or_refuses(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_run(warehouse, "r1", make_run(warehouse, "r1", 1.0, 1.0))
    later = {"test_start": "2024-03-02T00:00:00", "test_end": "2024-03-09T00:00:00"}
    meta = make_run(warehouse, "r2", 0.5, 0.5, window=later)
    monkeypatch.setattr("engine.registry._default_evaluator", lambda wh: None)
    refused = record_run(warehouse, "r2", meta)
    assert not refused.promoted and "cannot re-evaluate production" in refused.reason
    assert production_run(warehouse) == "r1"
    calls = []

    def evaluate(run_id, window):
        calls.append((run_id, window[0].isoformat()))
        return {"RMSE": 0.4, "MASE": 0.4}

    meta3 = make_run(warehouse, "r3", 0.5, 0.5, window=later)
    decision = record_run(warehouse, "r3", meta3, evaluate=evaluate)
    assert calls == [("r1", "2024-03-02T00:00:00")]
    assert not decision.promoted and decision.production_metrics == {"rmse": 0.4, "mase": 0.4}
    assert production_run(warehouse) == "r1"


def test_manual_promote_and_rollback(warehouse: Warehouse) -> None:
    for i, rmse in enumerate([1.0, 2.0, 3.0], start=1):
        make_run(warehouse, f"r{i}", rmse, 1.0)
    record_run(warehouse, "r1")
    record_run(warehouse, "r2")
    assert production_run(warehouse) == "r1"
    assert promote(warehouse, "r2") == "r1"
    assert promote(warehouse, "r3") == "r2"
    assert production_run(warehouse) == "r3"
    assert rollback(warehouse) == ("r3", "r2")
    assert rollback(warehouse) == ("r2", "r1")
    with pytest.raises(OxyError, match="no previous production"):
        rollback(warehouse)
    with pytest.raises(OxyError, match="already production"):
        promote(warehouse, "r1")
    with pytest.raises(OxyError, match="no run 'nope'"):
        promote(warehouse, "nope")
    with pytest.raises(OxyError, match="invalid run id"):
        promote(warehouse, "../etc")
    actions = [h["action"] for h in read_pointer(warehouse)["history"]]
    assert actions == ["auto", "promote", "promote", "rollback", "rollback"]


def test_rollback_without_production_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path / "wh"), "rollback"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: no production model yet: nothing to roll back (run `oxy train`)"
    )


def test_cli_runs_promote_rollback(warehouse: Warehouse) -> None:
    make_run(warehouse, "r1", 1.0, 1.0)
    make_run(warehouse, "r2", 2.0, 1.0)
    record_run(warehouse, "r1")
    record_run(warehouse, "r2")
    runner = CliRunner()
    base = ["--warehouse", str(warehouse.root)]
    out = runner.invoke(oxy, [*base, "promote", "r2"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "production: r2 (was r1)"
    listed = runner.invoke(oxy, [*base, "--json", "runs"])
    assert [(r["run_id"], r["is_production"]) for r in json.loads(listed.output)] == [
        ("r2", True),
        ("r1", False),
    ]
    out = runner.invoke(oxy, [*base, "rollback"])
    assert out.output.strip() == "production: r1 (rolled back from r2)"


def _kill_during(warehouse: Warehouse, code: str) -> None:
    """Run ``code`` in a subprocess that pauses mid-pointer-write, and SIGKILL it there."""
    env = {**os.environ, PAUSE_ENV: "30"}
    script = (
        "from engine.warehouse import Warehouse; from engine.registry import *; "
        f"wh = Warehouse({str(warehouse.root)!r}); {code}"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    try:
        while not list(warehouse.registry_dir.glob(".production.json.*.tmp")):
            assert proc.poll() is None, "subprocess ended before the pause"
            assert time.monotonic() < deadline, "subprocess never reached the pause"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_crash_during_promotion_leaves_valid_production(warehouse: Warehouse) -> None:
    make_run(warehouse, "r1", 1.0, 1.0)
    make_run(warehouse, "r2", 2.0, 1.0)
    make_run(warehouse, "r3", 0.5, 0.5)
    record_run(warehouse, "r1")
    before = read_pointer(warehouse)

    _kill_during(warehouse, "promote(wh, 'r2')")
    assert read_pointer(warehouse) == before
    assert production_run(warehouse) == "r1"

    _kill_during(warehouse, "record_run(wh, 'r3')")
    assert production_run(warehouse) == "r1"
    # the killed transaction did not record r3; recording it again works and promotes it
    assert [r["run_id"] for r in list_runs(warehouse)] == ["r1"]
    assert record_run(warehouse, "r3").promoted
    assert production_run(warehouse) == "r3"
    # the next writer's pointer write replaces the leftover temp file's role cleanly
    assert json.loads((warehouse.registry_dir / "production.json").read_text())["run_id"] == "r3"


metric = st.floats(min_value=0.01, max_value=10, allow_nan=False)


@given(metric, metric, metric, metric)
def test_promotion_rule_never_promotes_both_ways(r1: float, m1: float, r2: float, m2: float):
    forward = decide("b", {"rmse": r2, "mase": m2}, "a", {"rmse": r1, "mase": m1}).promoted
    backward = decide("a", {"rmse": r1, "mase": m1}, "b", {"rmse": r2, "mase": m2}).promoted
    assert not (forward and backward)
    assert forward == (r2 < r1 and m2 <= m1)


def test_a_run_that_loses_to_a_seasonal_naive_is_never_promoted(warehouse: Warehouse) -> None:
    """Worse than the better naive on its own test window: refused even as the first run, and
    even when it beats production; the reason names the naive and both MASEs."""
    lost = decide(
        "a", {"rmse": 1.0, "mase": 0.99, "naive_day_mase": 1.2, "naive_week_mase": 0.81}, None, None
    )
    assert not lost.promoted
    assert lost.reason == (
        "not promoted: test MASE 0.9900 is worse than the better seasonal naive "
        "(repeat the last week) 0.8100 on the same window"
    )
    beats_production = decide(
        "b", {"rmse": 0.5, "mase": 0.9, "naive_day_mase": 0.85}, "a", {"rmse": 1.0, "mase": 1.0}
    )
    assert (
        not beats_production.promoted and "(repeat the last day) 0.8500" in beats_production.reason
    )
    won = decide("a", {"rmse": 1.0, "mase": 0.8, "naive_day_mase": 0.85}, None, None)
    assert won.promoted and won.reason == "first run: promoted"

    meta = make_run(warehouse, "r1", 1.0, 0.99)
    meta["metrics"]["test"] |= {"naive_day_mase": 1.3, "naive_week_mase": 0.95}
    decision = record_run(warehouse, "r1", meta)
    assert not decision.promoted and production_run(warehouse) is None
    (row,) = list_runs(warehouse)
    assert not row["promoted"] and "worse than the better seasonal naive" in row["reason"]
