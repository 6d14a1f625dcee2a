"""Model artefacts: one folder per training run, plain files only (LightGBM text and JSON).

``registry/runs/<run_id>/`` holds

* ``model.txt``     — the LightGBM booster as LightGBM's own text format;
* ``meta.json``     — features, params, split boundaries, metrics, data span, versions;
* ``manifest.json`` — sha256 of both files.

A run folder is written under a temporary name and renamed into place, so a reader sees a
complete run or none. Loading reads each file once, verifies it against the manifest, checks
``meta.json``'s shape and that the feature list equals the one this code computes, and checks
``model.txt`` before LightGBM parses it in this process: LightGBM aborts the whole process
(``terminate called …``) on many malformed models, even ones whose manifest was updated to
match. :func:`check_model_text` checks the text's structure (header, every tree's byte size,
arrays, child indices, feature indices); :func:`parse_in_child` then has LightGBM's C library
load the model and predict in a child process, so whatever it does to a model that passed,
it does it there. Any failure is refused with an :class:`engine.OxyError`, never an abort.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb

from engine import OxyError
from engine.features import FEATURES
from engine.warehouse import Warehouse, fsync_path

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


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# seconds LightGBM gets to load and try a model in the child process
CHILD_TIMEOUT_S = 60.0


def runs_dir(warehouse: Warehouse) -> Path:
    return warehouse.registry_dir / "runs"


def run_dir(warehouse: Warehouse, run_id: str) -> Path:
    """The folder of one run; refuses ids that are not plain folder names."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise OxyError(f"invalid run id {run_id!r}")
    return runs_dir(warehouse) / run_id


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
            fsync_path(tmp / name)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_id, final


def load_run(warehouse: Warehouse | str | Path, run_id: str | None = None) -> Run:
    """Load and verify a run: ``load_run(warehouse, run_id)`` or ``load_run(path)``.

    Raises
    ------
    OxyError
        When a file is missing or malformed, a checksum differs from the manifest, the model
        text is not a model LightGBM can load (checked before it is parsed in this process),
        or the feature list differs from :data:`engine.features.FEATURES`.
    """
    if isinstance(warehouse, Warehouse):
        if run_id is None:
            raise OxyError("load_run needs a run id with a warehouse")
        path = run_dir(warehouse, run_id)
    else:
        path = Path(warehouse)
    name = path.name
    model_text, meta = _verified_files(path)
    _check_features(name, "meta.json", meta.get("features"))
    problem = check_model_text(model_text)
    if problem is None:
        problem = parse_in_child(model_text)
    if problem is not None:
        raise OxyError(f"run {name}: {MODEL_FILE} is not a valid LightGBM model ({problem})")
    booster = lgb.Booster(model_str=model_text)
    _check_features(name, MODEL_FILE, booster.feature_name())
    return Run(meta.get("run_id", name), path, booster, meta)


def verify_run(path: Path, *, deep: bool = True) -> str | None:
    """What is wrong with the run folder ``path`` (None when nothing is), without loading its
    model in this process: manifest, checksums, ``meta.json``, and with ``deep`` the model
    text's structure and a load in a child process (``oxy check``)."""
    try:
        model_text, meta = _verified_files(path)
        _check_features(path.name, "meta.json", meta.get("features"))
    except OxyError as exc:
        return str(exc)
    if deep:
        problem = check_model_text(model_text)
        if problem is None:
            problem = parse_in_child(model_text)
        if problem is not None:
            return f"run {path.name}: {MODEL_FILE} is not a valid LightGBM model ({problem})"
    return None


def _verified_files(path: Path) -> tuple[str, dict[str, Any]]:
    """``(model text, meta)`` of a run folder, each read once and checked against the
    manifest (so what is checked is what is parsed)."""
    name = path.name
    manifest = read_json(path / MANIFEST_FILE, f"run {name}")
    if not isinstance(manifest, dict):
        raise OxyError(f"run {name}: {MANIFEST_FILE} is not an object of file -> sha256")
    contents: dict[str, bytes] = {}
    for file in (MODEL_FILE, META_FILE):
        if file not in manifest:
            raise OxyError(f"run {name}: {MANIFEST_FILE} does not list {file}")
        digest = manifest[file]
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise OxyError(f"run {name}: {MANIFEST_FILE} holds no sha256 for {file}")
        try:
            contents[file] = (path / file).read_bytes()
        except FileNotFoundError:
            raise OxyError(f"run {name}: {file} is missing") from None
        except OSError as exc:
            raise OxyError(f"run {name}: {file} cannot be read ({exc.strerror})") from None
        if hashlib.sha256(contents[file]).hexdigest() != digest:
            raise OxyError(f"run {name}: {file} does not match its sha256 in {MANIFEST_FILE}")
    try:
        meta = json.loads(contents[META_FILE].decode("utf-8"))
        model_text = contents[MODEL_FILE].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OxyError(f"run {name}: a file is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise OxyError(f"run {name}: {META_FILE} is not valid JSON ({exc})") from None
    problem = check_meta(meta)
    if problem is not None:
        raise OxyError(f"run {name}: {META_FILE} {problem}")
    return model_text, meta


def read_json(path: Path, label: str, missing: str | None = None) -> Any:
    """The JSON in ``path``, or one line (``label: meta.json is not valid JSON (…)``; a
    missing file says ``missing``, by default ``label: no meta.json in <folder>``)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OxyError(missing or f"{label}: no {path.name} in {path.parent}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OxyError(f"{label}: {path.name} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise OxyError(f"{label}: {path.name} cannot be read ({exc.strerror})") from None


def _check_features(name: str, where: str, names: Any) -> None:
    expected = list(FEATURES)
    if list(names or []) != expected:
        raise OxyError(
            f"run {name}: {where} features {names} differ from this version's {expected}; "
            "retrain with `oxy train`"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_meta(meta: Any) -> str | None:
    """What is wrong with the shape of a run's ``meta.json`` (None when nothing): an object
    whose keys that oxy reads have their types (``features`` a list of names, ``run_id`` and
    ``created_at`` texts, ``horizon_min`` / ``predict_every_min`` positive whole numbers,
    ``params`` / ``split`` / ``intervals`` objects, ``metrics`` an object of objects)."""
    if not isinstance(meta, dict):
        return f"is not an object but {type(meta).__name__}"
    features = meta.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        return "has no list of feature names"
    for key in ("run_id", "created_at"):
        if key in meta and not isinstance(meta[key], str):
            return f"{key} is not a text"
    for key in ("horizon_min", "predict_every_min"):
        if key in meta and not _positive_int(meta[key]):
            return f"{key} is not a positive whole number"
    for key in ("params", "split", "intervals"):
        if key in meta and not isinstance(meta[key], dict):
            return f"{key} is not an object"
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(m, dict) for m in metrics.values()):
        return "metrics is not an object of per-split objects"
    buckets = (meta.get("intervals") or {}).get("buckets")
    if buckets is not None:
        rows_ok = (
            isinstance(buckets, list)
            and buckets
            and all(
                isinstance(row, list) and len(row) == 3 and all(_finite_number(v) for v in row)
                for row in buckets
            )
        )
        if not rows_ok:
            return "intervals.buckets is not a list of [horizon, lo, hi] rows"
    return None


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- the model text ---------------------------------------------------------------------------
_TREE_ARRAYS_INTERNAL = ("split_feature", "threshold", "decision_type", "left_child", "right_child")
_TREE_ARRAYS_INTERNAL_OPTIONAL = (
    "split_gain",
    "internal_value",
    "internal_weight",
    "internal_count",
)
_TREE_ARRAYS_LEAF_OPTIONAL = ("leaf_weight", "leaf_count")


def check_model_text(text: str) -> str | None:
    """What is wrong with a LightGBM text model's structure (None when nothing).

    Checks what LightGBM's parser trusts without checking (or checks by aborting): no NUL
    byte; a header with ``version``, one class, ``max_feature_idx`` and as many
    ``feature_names``; ``tree_sizes`` whose byte counts cut the text into exactly one
    ``Tree=i`` block each, followed by ``end of trees``; in each tree ``num_leaves`` >= 1,
    no categorical or linear parts, arrays of ``num_leaves - 1`` (internal) and
    ``num_leaves`` (leaf) numbers that parse, thresholds that are numbers (LightGBM writes
    ``inf``) and finite leaf values, split
    features within the header's features, and child indices that form one binary tree.

    Examples
    --------
    >>> check_model_text("tree\nversion=v4\n")
    'the header has no num_class'
    """
    if "\x00" in text:
        return "it holds a NUL byte"
    raw = text.encode("utf-8")
    start = raw.find(b"\nTree=")
    header_text = (raw[:start] if start >= 0 else raw).decode("utf-8")
    header = _key_values(header_text.splitlines()[1:])
    if not header_text.startswith("tree"):
        return "it does not start with a `tree` line"
    for key in ("version", "num_class", "num_tree_per_iteration", "max_feature_idx"):
        if key not in header:
            return f"the header has no {key}"
    try:
        num_class = int(header["num_class"])
        per_iteration = int(header["num_tree_per_iteration"])
        max_feature = int(header["max_feature_idx"])
    except ValueError:
        return "a header count is not a whole number"
    if num_class != 1 or per_iteration != 1:
        return "it is not a single-output regression model"
    names = header.get("feature_names", "").split()
    if max_feature < 0 or len(names) != max_feature + 1:
        return "feature_names do not match max_feature_idx"
    try:
        sizes = [int(v) for v in header.get("tree_sizes", "").split()]
    except ValueError:
        return "tree_sizes are not whole numbers"
    if start < 0:
        return "it holds no tree" if not sizes else "its trees are missing"
    position = start + 1
    for i, size in enumerate(sizes):
        if size <= 0 or position + size > len(raw):
            return f"tree_sizes do not match the text (tree {i})"
        block = raw[position : position + size]
        position += size
        try:
            problem = _check_tree(block.decode("utf-8"), i, max_feature)
        except UnicodeDecodeError:
            return f"tree {i} is cut inside a character"
        if problem is not None:
            return problem
    if not raw[position:].lstrip(b"\n").startswith(b"end of trees"):
        return "tree_sizes do not match the text (no `end of trees` after the last tree)"
    return None


def _key_values(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _check_tree(block: str, index: int, max_feature: int) -> str | None:
    lines = block.split("\n")
    if lines[0] != f"Tree={index}":
        return f"tree {index} does not start where tree_sizes say"
    body = _key_values(lines[1:])
    try:
        leaves = int(body.get("num_leaves", ""))
        categorical = int(body.get("num_cat", "0"))
        linear = int(body.get("is_linear", "0"))
        float(body.get("shrinkage", "1"))
    except ValueError:
        return f"tree {index}: num_leaves, num_cat, is_linear or shrinkage is not a number"
    if leaves < 1:
        return f"tree {index}: num_leaves {leaves} is not positive"
    if categorical != 0 or linear != 0:
        return f"tree {index}: categorical or linear trees are not written by oxy"
    arrays: dict[str, list[str]] = {}
    wanted = [(k, leaves - 1, True) for k in _TREE_ARRAYS_INTERNAL] + [("leaf_value", leaves, True)]
    wanted += [(k, leaves - 1, False) for k in _TREE_ARRAYS_INTERNAL_OPTIONAL]
    wanted += [(k, leaves, False) for k in _TREE_ARRAYS_LEAF_OPTIONAL]
    for key, length, required in wanted:
        if length == 0 and key != "leaf_value":
            continue
        if key not in body:
            if required:
                return f"tree {index} has no {key}"
            continue
        arrays[key] = body[key].split()
        if len(arrays[key]) != length:
            return f"tree {index}: {key} has {len(arrays[key])} values, not {length}"
    try:
        numbers = {k: [float(v) for v in vs] for k, vs in arrays.items()}
        ints = {
            k: [int(v) for v in arrays[k]]
            for k in ("split_feature", "decision_type", "left_child", "right_child")
            if k in arrays
        }
    except ValueError:
        return f"tree {index}: an array holds something that is not a number"
    if any(math.isnan(v) for v in numbers.get("threshold", [])):  # +-inf: LightGBM writes it
        return f"tree {index}: a threshold is not a number"
    if not all(math.isfinite(v) for v in numbers.get("leaf_value", [])):
        return f"tree {index}: a leaf value is not finite"
    if any(not 0 <= f <= max_feature for f in ints.get("split_feature", [])):
        return f"tree {index}: a split feature is outside the model's features"
    if any(not 0 <= d <= 255 for d in ints.get("decision_type", [])):
        return f"tree {index}: a decision type is out of range"
    if leaves > 1:
        children = ints["left_child"] + ints["right_child"]
        internal = sorted(c for c in children if c >= 0)
        leaf = sorted(-c - 1 for c in children if c < 0)
        if internal != list(range(1, leaves - 1)) or leaf != list(range(leaves)):
            return f"tree {index}: its child indices do not form one binary tree"
        for node in range(leaves - 1):  # children after their parent: no cycle
            if any(0 <= c <= node for c in (ints["left_child"][node], ints["right_child"][node])):
                return f"tree {index}: its child indices do not form one binary tree"
    return None


_CHILD = r"""
import array, ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.LGBM_GetLastError.restype = ctypes.c_char_p
text = sys.stdin.buffer.read()
booster, iterations = ctypes.c_void_p(), ctypes.c_int()
if lib.LGBM_BoosterLoadModelFromString(text, ctypes.byref(iterations), ctypes.byref(booster)):
    sys.stdout.write(lib.LGBM_GetLastError().decode("utf-8", "replace"))
    sys.exit(3)
features = ctypes.c_int()
lib.LGBM_BoosterGetNumFeature(booster, ctypes.byref(features))
n = features.value
rows = array.array("d", [0.0] * n + [float("nan")] * n + [1e30] * n + [-1e30] * n)
out, out_len = (ctypes.c_double * 4)(), ctypes.c_int64()
data = ctypes.c_void_p(rows.buffer_info()[0])
if lib.LGBM_BoosterPredictForMat(
    booster, data, 1, 4, n, 1, 0, 0, -1, b"", ctypes.byref(out_len), out
):
    sys.stdout.write(lib.LGBM_GetLastError().decode("utf-8", "replace"))
    sys.exit(3)
lib.LGBM_BoosterFree(booster)
"""


def parse_in_child(text: str) -> str | None:
    """Have LightGBM's C library load ``text`` and predict four rows in a child process;
    what went wrong (None when nothing did). A model that aborts the child never reaches
    this process."""
    library = getattr(getattr(lgb.basic, "_LIB", None), "_name", None)
    if not library:
        return None  # no library path to give the child: the structure check stands alone
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD, library],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"LightGBM did not load it within {CHILD_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"the model could not be tried in a child process ({exc.strerror})"
    if done.returncode == 0:
        return None
    said = done.stdout.decode("utf-8", "replace").strip().splitlines()
    reason = said[-1] if said else ""
    if done.returncode < 0:
        return f"LightGBM crashed loading it (signal {-done.returncode}) {reason}".strip()
    return f"LightGBM refused it: {reason or f'exit {done.returncode}'}"


def latest_run(warehouse: Warehouse) -> str | None:
    """The newest complete run folder's id (None when there is none)."""
    base = runs_dir(warehouse)
    if not base.is_dir():
        return None
    done = [p.name for p in base.iterdir() if (p / MANIFEST_FILE).is_file()]
    return max(done) if done else None
