"""Model artefacts: one folder per training run, plain files only (LightGBM text and JSON).

``registry/runs/<run_id>/`` holds

* ``model.txt``     — the LightGBM booster as LightGBM's own text format;
* ``meta.json``     — features, params, split boundaries, metrics, data span, versions;
* ``manifest.json`` — sha256 of both files.

A run folder is written under a temporary name and renamed into place, so a reader sees a
complete run or none. Loading verifies the manifest and that the feature list equals the
one this code computes; a mismatch is refused with an :class:`engine.OxyError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb

from engine import OxyError
from engine.features import FEATURES
from engine.warehouse import Warehouse

MODEL_FILE = "model.txt"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"


@dataclass
class Run:
    """A loaded run; unpacks as ``booster, meta``."""

    run_id: str
    path: Path
    booster: lgb.Booster
    meta: dict[str, Any]

    def __iter__(self) -> Iterator[Any]:
        yield self.booster
        yield self.meta


def runs_dir(warehouse: Warehouse) -> Path:
    return warehouse.registry_dir / "runs"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_run_id() -> str:
    """``YYYYmmddTHHMMSS-xxxxxx`` (UTC): sorts by creation time."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def save_run(
    warehouse: Warehouse, booster: lgb.Booster, meta: Mapping[str, Any]
) -> tuple[str, Path]:
    """Write a run folder atomically; returns ``(run_id, path)``.

    ``meta`` gets ``run_id`` and ``features`` (the booster's feature names).
    """
    run_id = new_run_id()
    final = runs_dir(warehouse) / run_id
    tmp = runs_dir(warehouse) / f".{run_id}.tmp"
    tmp.mkdir(parents=True)
    try:
        (tmp / MODEL_FILE).write_text(booster.model_to_string(), encoding="utf-8")
        full_meta = {**meta, "run_id": run_id, "features": list(booster.feature_name())}
        (tmp / META_FILE).write_text(
            json.dumps(full_meta, indent=2, default=str) + "\n", encoding="utf-8"
        )
        manifest = {name: _sha256(tmp / name) for name in (MODEL_FILE, META_FILE)}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for name in (MODEL_FILE, META_FILE, MANIFEST_FILE):
            _fsync(tmp / name)
        os.replace(tmp, final)
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_id, final


def load_run(warehouse: Warehouse | str | Path, run_id: str | None = None) -> Run:
    """Load and verify a run: ``load_run(warehouse, run_id)`` or ``load_run(path)``.

    Raises
    ------
    OxyError
        When a file is missing, a checksum differs from the manifest, or the feature list
        differs from :data:`engine.features.FEATURES`.
    """
    if isinstance(warehouse, Warehouse):
        if run_id is None:
            raise OxyError("load_run needs a run id with a warehouse")
        from engine.registry import run_dir

        path = run_dir(warehouse, run_id)
    else:
        path = Path(warehouse)
    name = path.name
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OxyError(f"run {name}: no {MANIFEST_FILE} in {path}") from None
    except json.JSONDecodeError as exc:
        raise OxyError(f"run {name}: {MANIFEST_FILE} is not valid JSON ({exc})") from None
    for file in (MODEL_FILE, META_FILE):
        if file not in manifest:
            raise OxyError(f"run {name}: {MANIFEST_FILE} does not list {file}")
        if not (path / file).is_file():
            raise OxyError(f"run {name}: {file} is missing")
        if _sha256(path / file) != manifest[file]:
            raise OxyError(f"run {name}: {file} does not match its sha256 in {MANIFEST_FILE}")
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    booster = lgb.Booster(model_str=(path / MODEL_FILE).read_text(encoding="utf-8"))
    expected = list(FEATURES)
    for where, names in (
        ("meta.json", meta.get("features")),
        ("model.txt", booster.feature_name()),
    ):
        if list(names or []) != expected:
            raise OxyError(
                f"run {name}: {where} features {names} differ from this version's {expected}; "
                "retrain with `oxy train`"
            )
    return Run(meta.get("run_id", name), path, booster, meta)


def latest_run(warehouse: Warehouse) -> str | None:
    """The newest complete run folder's id (None when there is none)."""
    base = runs_dir(warehouse)
    if not base.is_dir():
        return None
    done = [p.name for p in base.iterdir() if (p / MANIFEST_FILE).is_file()]
    return max(done) if done else None
