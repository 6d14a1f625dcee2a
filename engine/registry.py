"""Model registry: the ``model_runs`` catalog, the promotion rule and the production pointer.

Runs live in ``registry/runs/<run_id>/`` (``model.txt`` + ``meta.json`` + a sha256
manifest, written by :mod:`engine.artifacts`). This module records each run in the
``model_runs`` table and decides which run is *production*:

* the first run recorded is promoted;
* a later run is promoted only if it beats production on the **same test window**:
  lower test RMSE and test MASE not worse. When the windows differ, production is
  re-evaluated on the candidate's window (``engine.forecast.evaluate_run``) so that
  the comparison is like for like; if that is impossible the run is not promoted and
  the reason says so (a human can still ``oxy promote RUN_ID``).

The production pointer is ``registry/production.json`` (``run_id``, the ``stack`` of
previous productions for ``oxy rollback``, and a ``history`` log). It is replaced
atomically (temp file + fsync + ``os.replace`` + directory fsync), so a crash in the
middle of a promotion leaves either the old or the new production, never neither.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from engine import OxyError
from engine.artifacts import RUN_ID, read_json, run_dir, runs_dir, verify_run
from engine.warehouse import Problem, Warehouse, fsync_path, sql_text

POINTER_NAME = "production.json"
# Test hook: seconds to sleep after the new pointer is durable on disk but before it
# replaces the old one (lets a test kill the process mid-promotion).
PAUSE_ENV = "OXY_REGISTRY_PAUSE_S"

Evaluator = Callable[[str, tuple[datetime, datetime]], Mapping[str, float]]


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of :func:`record_run`.

    ``production_metrics`` are production's test metrics on the candidate's test window
    (empty when there was no production run).
    """

    run_id: str
    promoted: bool
    reason: str
    previous: str | None
    candidate_metrics: dict[str, float] = field(default_factory=dict)
    production_metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- run metadata -------------------------------------------------------------------------


def read_meta(warehouse: Warehouse, run_id: str) -> dict[str, Any]:
    """``meta.json`` of a registered run (clear error when the run does not exist, or when
    its meta is not an object with object ``metrics`` and ``split``)."""
    path = run_dir(warehouse, run_id) / "meta.json"
    meta = read_json(path, f"run {run_id!r}", f"no run {run_id!r} in {runs_dir(warehouse)}")
    problem = None
    if not isinstance(meta, dict):
        problem = f"is not an object but {type(meta).__name__}"
    elif not isinstance(meta.get("metrics", {}), dict) or not all(
        isinstance(m, dict) for m in meta.get("metrics", {}).values()
    ):
        problem = "metrics is not an object of per-split objects"
    elif not isinstance(meta.get("split", {}), dict):
        problem = "split is not an object"
    if problem is not None:
        raise OxyError(f"run {run_id!r}: meta.json {problem}")
    return meta


def split_metrics(meta: Mapping[str, Any], split: str) -> dict[str, float]:
    """``{"mae", "rmse", "mase"}`` of one split (``train``/``valid``/``test``) from a meta."""
    metrics = meta.get("metrics") or {}
    raw = metrics.get(split) or {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[str(key).lower()] = float(value)
    return out


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def test_window(meta: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """The ``(start, end)`` of a run's test split, naive UTC, or None if not recorded.

    Looks at ``meta["split"]`` (``test_start``/``test_end``) and, failing that, at
    top-level ``test_start``/``test_end``.
    """
    for source in (meta.get("split") or {}, meta):
        start, end = _parse_ts(source.get("test_start")), _parse_ts(source.get("test_end"))
        if start is not None and end is not None:
            return start, end
    return None


# -- the production pointer ---------------------------------------------------------------


def pointer_path(warehouse: Warehouse) -> Path:
    return warehouse.registry_dir / POINTER_NAME


def _pointer_problem(pointer: Any) -> str | None:
    """What is wrong with the shape of a production pointer (None when nothing)."""
    if not isinstance(pointer, dict):
        return f"is not an object but {type(pointer).__name__}"
    run_id = pointer.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or not RUN_ID.match(run_id)):
        return f"run_id {run_id!r} is not a run id"
    stack = pointer.get("stack", [])
    if not isinstance(stack, list) or not all(
        isinstance(r, str) and RUN_ID.match(r) for r in stack
    ):
        return "stack is not a list of run ids"
    history = pointer.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        return "history is not a list of objects"
    return None


def read_pointer(warehouse: Warehouse, *, repair: bool = False) -> dict[str, Any]:
    """The production pointer (``{"run_id": None, "stack": [], "history": []}`` if none).

    A pointer that is not valid JSON or not of that shape is refused with one line; with
    ``repair`` (``oxy promote``, which writes a new one) it reads as none, and the bad file is
    kept beside it as ``production.json.bad``."""
    path = pointer_path(warehouse)
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
        problem = _pointer_problem(pointer)
    except FileNotFoundError:
        return {"run_id": None, "stack": [], "history": []}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"is not valid JSON ({exc})"
    except OSError as exc:
        raise OxyError(f"production pointer {path} cannot be read ({exc.strerror})") from None
    if problem is not None:
        if repair:
            os.replace(path, path.with_name(path.name + ".bad"))
            return {"run_id": None, "stack": [], "history": []}
        raise OxyError(
            f"production pointer {path} {problem}; `oxy promote RUN_ID` writes a new one "
            "(see `oxy runs`)"
        )
    pointer.setdefault("stack", [])
    pointer.setdefault("history", [])
    return pointer


def _write_pointer(warehouse: Warehouse, pointer: Mapping[str, Any]) -> None:
    """Replace the pointer atomically: temp file, fsync, ``os.replace``, directory fsync."""
    path = pointer_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):  # from a killed promotion
        leftover.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(pointer, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        time.sleep(float(pause))
    os.replace(tmp, path)
    fsync_path(path.parent)


def _set_production(warehouse: Warehouse, run_id: str, action: str, reason: str) -> None:
    pointer = read_pointer(warehouse, repair=action == "promote")
    current = pointer.get("run_id")
    stack = list(pointer["stack"])
    if action == "rollback":
        stack = stack[:-1]
    elif current and current != run_id:
        stack.append(current)
    history = list(pointer["history"])
    history.append(
        {
            "at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
            "action": action,
            "run_id": run_id,
            "previous": current,
            "reason": reason,
        }
    )
    _write_pointer(warehouse, {"run_id": run_id, "stack": stack, "history": history})


def production_run(warehouse: Warehouse) -> str | None:
    """The run id currently in production, or None when nothing was promoted yet."""
    run_id = read_pointer(warehouse).get("run_id")
    if run_id and not (run_dir(warehouse, run_id) / "meta.json").is_file():
        raise OxyError(
            f"production run {run_id!r} is missing from {runs_dir(warehouse)}; "
            "use `oxy promote RUN_ID` or `oxy rollback`"
        )
    return run_id or None


def check_registry(warehouse: Warehouse, *, deep: bool = True) -> list[Problem]:
    """The registry's problems (``oxy check``): a malformed pointer, a production run that is
    missing or does not verify, and with ``deep`` every run folder verified (manifest,
    checksums, meta, and the model loaded in a child process, never in this one)."""
    problems: list[Problem] = []
    pointer_file = pointer_path(warehouse).relative_to(warehouse.root).as_posix()
    try:
        production = read_pointer(warehouse).get("run_id")
    except OxyError as exc:
        problems.append(
            Problem(
                "registry",
                "registry",
                pointer_file,
                "production",
                str(exc),
                "`oxy promote RUN_ID` writes a new pointer (see `oxy runs`)",
            )
        )
        production = None
    base = runs_dir(warehouse)
    folders = (
        sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if base.is_dir()
        else []
    )
    if production is not None and not (base / production).is_dir():
        problems.append(
            Problem(
                "missing",
                "registry",
                pointer_file,
                "production",
                f"production run {production} is missing from {base}",
                "`oxy rollback`, or `oxy promote RUN_ID` (see `oxy runs`)",
            )
        )
    for folder in folders:
        if not deep and folder.name != production:
            continue
        problem = verify_run(folder, deep=deep)
        if problem is not None:
            is_production = folder.name == production
            repair = (
                "`oxy rollback`, or `oxy promote RUN_ID` of a good run, then `oxy train`"
                if is_production
                else f"remove {folder} (it can no longer be promoted)"
            )
            problems.append(
                Problem(
                    "registry",
                    "registry",
                    folder.relative_to(warehouse.root).as_posix(),
                    "production" if is_production else "runs",
                    problem,
                    repair,
                )
            )
    return problems


# -- the promotion rule -------------------------------------------------------------------


def _finite(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return value if value is not None and math.isfinite(value) else None


def decide(
    candidate_id: str,
    candidate: Mapping[str, float],
    production_id: str | None,
    production: Mapping[str, float] | None,
    *,
    min_rmse_improvement: float = 0.0,
) -> PromotionDecision:
    """The promotion rule on test metrics measured on the same window.

    The candidate needs test RMSE below ``production RMSE x (1 - min_rmse_improvement)``
    and test MASE not above production's.

    Examples
    --------
    >>> decide("b", {"rmse": 1.0, "mase": 0.9}, "a", {"rmse": 1.2, "mase": 0.9}).promoted
    True
    >>> decide("b", {"rmse": 1.0, "mase": 1.1}, "a", {"rmse": 1.2, "mase": 0.9}).promoted
    False
    """
    cand = dict(candidate)
    if production_id is None:
        return PromotionDecision(candidate_id, True, "first run: promoted", None, cand, {})
    prod = dict(production or {})
    c_rmse, p_rmse = _finite(cand, "rmse"), _finite(prod, "rmse")
    if c_rmse is None:
        reason = "candidate has no finite test RMSE: not promoted"
        return PromotionDecision(candidate_id, False, reason, production_id, cand, prod)
    if p_rmse is None:
        reason = f"production {production_id} has no test RMSE on this window: promoted"
        return PromotionDecision(candidate_id, True, reason, production_id, cand, prod)
    c_mase, p_mase = _finite(cand, "mase"), _finite(prod, "mase")
    mase_ok = c_mase is None or p_mase is None or c_mase <= p_mase
    mase_txt = (
        f", MASE {c_mase:.4f} vs {p_mase:.4f}" if c_mase is not None and p_mase is not None else ""
    )
    compared = f"test RMSE {c_rmse:.4f} vs {p_rmse:.4f}{mase_txt} (production {production_id})"
    rmse_ok = c_rmse < p_rmse * (1.0 - min_rmse_improvement)
    if rmse_ok and mase_ok:
        return PromotionDecision(
            candidate_id, True, f"beats production: {compared}", production_id, cand, prod
        )
    why = "MASE worse" if rmse_ok else "RMSE not lower"
    if not rmse_ok and min_rmse_improvement > 0:
        why = f"RMSE not {min_rmse_improvement:.1%} lower"
    return PromotionDecision(
        candidate_id, False, f"not promoted, {why}: {compared}", production_id, cand, prod
    )


def _default_evaluator(warehouse: Warehouse) -> Evaluator | None:
    try:
        from engine import forecast
    except ImportError:
        return None
    evaluate = getattr(forecast, "evaluate_run", None)
    if evaluate is None:
        return None
    return lambda run_id, window: evaluate(warehouse, run_id, window)


def _production_on_window(
    warehouse: Warehouse,
    production_id: str,
    window: tuple[datetime, datetime] | None,
    evaluate: Evaluator | None,
) -> tuple[dict[str, float] | None, str]:
    """Production's test metrics on ``window``: stored if the windows match, else re-measured."""
    prod_meta = read_meta(warehouse, production_id)
    prod_window = test_window(prod_meta)
    if window is None or prod_window == window:
        return split_metrics(prod_meta, "test"), ""
    if evaluate is None:
        return None, (
            f"production {production_id} was tested on {prod_window} and the candidate on "
            f"{window}; cannot re-evaluate production on the same window"
        )
    return {k.lower(): float(v) for k, v in evaluate(production_id, window).items()}, ""


def _upsert_run(
    con: duckdb.DuckDBPyConnection, run_id: str, meta: Mapping[str, Any], decision: Any
) -> None:
    window = test_window(meta)
    test = split_metrics(meta, "test")
    created = _parse_ts(meta.get("created_at")) or datetime.now(UTC).replace(tzinfo=None)
    con.execute(
        sql_text("registry/upsert_model_run"),
        {
            "run_id": run_id,
            "created_at": created,
            "params": json.dumps(meta.get("params") or {}, sort_keys=True, default=str),
            "metrics": json.dumps(meta.get("metrics") or {}, sort_keys=True, default=str),
            "test_start": window[0] if window else None,
            "test_end": window[1] if window else None,
            "test_mae": test.get("mae"),
            "test_rmse": test.get("rmse"),
            "test_mase": test.get("mase"),
            "promoted": decision.promoted,
            "reason": decision.reason,
        },
    )


def write_model_runs_mart(warehouse: Warehouse, con: duckdb.DuckDBPyConnection) -> int:
    """Refresh the ``model_runs`` Parquet mart (adds ``is_production`` from the pointer)."""

    rows = warehouse.write_mart(
        con,
        "model_runs",
        sql_text("marts/model_runs"),
        {"production_run_id": read_pointer(warehouse).get("run_id")},
    )
    warehouse.refresh_mart_views(con)
    return rows


def record_run(
    warehouse: Warehouse,
    run_id: str,
    meta: Mapping[str, Any] | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    evaluate: Evaluator | None = None,
) -> PromotionDecision:
    """Record a trained run in ``model_runs`` and promote it if the rule says so.

    Parameters
    ----------
    warehouse
        The warehouse whose registry holds ``runs/<run_id>/``.
    run_id
        The run folder name.
    meta
        The run's metadata (read from ``meta.json`` when omitted).
    con
        The caller's writer connection, if it already holds one (e.g. inside ``train``).
    evaluate
        ``evaluate(production_run_id, (start, end)) -> {"rmse", "mase", ...}``, used when
        production was tested on another window; defaults to ``engine.forecast.evaluate_run``.

    Returns
    -------
    PromotionDecision
        Whether the run became production, and why.
    """
    run_dir(warehouse, run_id)  # validates the id
    meta = dict(meta) if meta is not None else read_meta(warehouse, run_id)
    if not (run_dir(warehouse, run_id) / "meta.json").is_file():
        raise OxyError(f"no run {run_id!r} in {runs_dir(warehouse)}")
    current = read_pointer(warehouse).get("run_id")
    candidate = split_metrics(meta, "test")
    if current == run_id:
        decision = PromotionDecision(run_id, True, "already production", run_id, candidate, {})
    elif current is None:
        decision = decide(run_id, candidate, None, None)
    else:
        if evaluate is None:
            evaluate = _default_evaluator(warehouse)
        prod, problem = _production_on_window(warehouse, current, test_window(meta), evaluate)
        if prod is None:
            decision = PromotionDecision(
                run_id, False, f"not promoted: {problem}", current, candidate, {}
            )
        else:
            improvement = float(warehouse.config["registry"]["min_rmse_improvement"])
            decision = decide(run_id, candidate, current, prod, min_rmse_improvement=improvement)

    def apply(c: duckdb.DuckDBPyConnection) -> None:
        c.execute("begin")
        try:
            _upsert_run(c, run_id, meta, decision)
            if decision.promoted and current != run_id:
                _set_production(warehouse, run_id, "auto", decision.reason)
            c.execute("commit")
        except BaseException:
            c.execute("rollback")
            raise
        write_model_runs_mart(warehouse, c)

    if con is not None:
        apply(con)
    else:
        with warehouse.writer() as own:
            apply(own)
    return decision


def promote(warehouse: Warehouse, run_id: str, *, reason: str = "promoted by hand") -> str | None:
    """Make ``run_id`` production regardless of metrics; returns the previous production."""
    meta = read_meta(warehouse, run_id)
    current = read_pointer(warehouse, repair=True).get("run_id")
    if current == run_id:
        raise OxyError(f"run {run_id} is already production")
    with warehouse.writer() as con:
        known = con.execute(sql_text("registry/model_run_recorded"), {"run_id": run_id}).fetchall()[
            0
        ][0]
        con.execute("begin")
        try:
            if not known:
                _upsert_run(con, run_id, meta, PromotionDecision(run_id, True, reason, current))
            _set_production(warehouse, run_id, "promote", reason)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        write_model_runs_mart(warehouse, con)
    return current


def rollback(warehouse: Warehouse) -> tuple[str, str]:
    """Return production to the run that preceded it; returns ``(from_run, to_run)``."""
    pointer = read_pointer(warehouse)
    current, stack = pointer.get("run_id"), pointer["stack"]
    if not current:
        raise OxyError("no production model yet: nothing to roll back (run `oxy train`)")
    if not stack:
        raise OxyError(f"production {current} has no previous production to roll back to")
    target = stack[-1]
    read_meta(warehouse, target)  # the target must still exist
    with warehouse.writer() as con:
        _set_production(warehouse, target, "rollback", f"rolled back from {current}")
        write_model_runs_mart(warehouse, con)
    return current, target


def list_runs(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Every recorded run, newest first, with ``is_production``."""
    if not warehouse.exists():
        return []
    production = read_pointer(warehouse).get("run_id")
    with warehouse.reader() as con:
        try:
            rows = con.execute(sql_text("registry/model_runs_newest_first")).fetchall()
        except duckdb.CatalogException:
            return []
    keys = ("run_id", "created_at", "test_mae", "test_rmse", "test_mase", "promoted", "reason")
    return [{**dict(zip(keys, r, strict=True)), "is_production": r[0] == production} for r in rows]


def production_predictions(
    warehouse: Warehouse, readings: pl.DataFrame
) -> tuple[pl.DataFrame | None, str | None, str]:
    """1-step-ahead predictions of the production model for ``readings``.

    Returns ``(predictions, run_id, note)``: predictions are ``sensor_id, ts, yhat`` (None
    when there is no production model or the forecasting engine cannot give them; the note
    says why). Uses ``engine.artifacts.load_run`` (manifest verified) and
    ``engine.forecast.one_step_predictions(warehouse, run, readings)``.
    """
    run_id = production_run(warehouse) if warehouse.exists() else None
    if run_id is None:
        return None, None, "no production model yet (run `oxy train`)"
    try:
        from engine import artifacts, forecast

        load, predict = artifacts.load_run, forecast.one_step_predictions
    except (ImportError, AttributeError):
        return None, run_id, "this installation's forecasting engine gives no 1-step predictions"
    predicted = predict(warehouse, load(warehouse, run_id), readings)
    return predicted.select("sensor_id", "ts", "yhat"), run_id, ""
