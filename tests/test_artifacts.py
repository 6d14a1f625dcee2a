"""Model artefacts and registry JSON: every malformed file is a clear refusal, never an abort."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from click.testing import CliRunner

from cli import oxy
from engine import OxyError, artifacts
from engine.features import FEATURES
from engine.registry import check_registry, promote, read_meta, read_pointer
from engine.warehouse import Warehouse

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(warehouse: Warehouse) -> tuple[Warehouse, str, Path]:
    """A saved run of a small booster over this version's features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURES)))
    y = 2 * x[:, 0] + rng.normal(size=400)
    booster = lgb.train(
        {"objective": "regression", "num_leaves": 7, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, y, feature_name=list(FEATURES)),
        num_boost_round=4,
    )
    with warehouse.writer():
        pass
    run_id, path = artifacts.save_run(warehouse, booster, {"horizon_min": 60, "metrics": {}})
    return warehouse, run_id, path


def _rehash(path: Path) -> None:
    """Update the manifest to the edited files (as a tamperer would)."""
    manifest = {
        name: hashlib.sha256((path / name).read_bytes()).hexdigest()
        for name in (artifacts.MODEL_FILE, artifacts.META_FILE)
    }
    (path / artifacts.MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def _edits(text: str) -> dict[str, str]:
    """Model edits that made LightGBM abort the process (rc 134) or segfault when parsed."""
    first = text.index("internal_weight=")
    line_end = text.index("\n", first)
    return {
        "truncated": text[: len(text) // 2],
        "a tree one byte longer": text[:line_end] + "0" + text[line_end:],
        "a value turned negative": text.replace("internal_weight=", "internal_weight=-", 1),
        "wrong tree_sizes": re.sub(r"tree_sizes=(\d+)", r"tree_sizes=1\1", text, count=1),
        "a NUL byte": text.replace("Tree=1", "Tree=\x001", 1),
        "a child out of range": re.sub(r"left_child=(-?\d+)", "left_child=99", text, count=1),
        "a feature out of range": re.sub(
            r"split_feature=(\d+)", "split_feature=999", text, count=1
        ),
        "a threshold that is no number": re.sub(r"threshold=\S+", "threshold=nan", text, count=1),
        "no trees": text[: text.index("Tree=0")],
        "empty": "",
    }


def test_a_tampered_model_with_a_matching_hash_is_refused_in_one_line(
    run: tuple[Warehouse, str, Path],
) -> None:
    warehouse, run_id, path = run
    good = (path / artifacts.MODEL_FILE).read_text(encoding="utf-8")
    assert artifacts.check_model_text(good) is None and artifacts.parse_in_child(good) is None
    for what, text in _edits(good).items():
        (path / artifacts.MODEL_FILE).write_text(text, encoding="utf-8")
        _rehash(path)
        with pytest.raises(OxyError, match=rf"run {run_id}: model.txt is not a valid LightGBM"):
            artifacts.load_run(warehouse, run_id)
        assert artifacts.verify_run(path) is not None, what
    (path / artifacts.MODEL_FILE).write_text(good, encoding="utf-8")
    _rehash(path)
    assert artifacts.load_run(warehouse, run_id).booster.num_trees() == 4


def test_the_unchecked_edits_really_abort_lightgbm(run: tuple[Warehouse, str, Path]) -> None:
    """Why the check exists: parsed by LightGBM directly, an edit kills the process."""
    _, _, path = run
    text = _edits((path / artifacts.MODEL_FILE).read_text(encoding="utf-8"))["truncated"]
    code = "import sys, lightgbm; lightgbm.Booster(model_str=sys.stdin.read())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=120,
    )  # bytes: LightGBM's dying words can hold any byte of the edited model
    assert done.returncode < 0  # killed by a signal (SIGSEGV / SIGABRT), not an exception


def test_random_edits_are_refused_or_load_never_crash(run: tuple[Warehouse, str, Path]) -> None:
    """Any edit the structure check lets through is one LightGBM loads and predicts with."""
    _, _, path = run
    good = (path / artifacts.MODEL_FILE).read_text(encoding="utf-8")
    rng = random.Random(11)
    lines = good.split("\n")
    passed = 0
    for _ in range(40):
        edited = list(lines)
        i = rng.randrange(len(edited))
        if "=" in edited[i]:
            key, value = edited[i].split("=", 1)
            values = value.split(" ")
            values[rng.randrange(len(values))] = rng.choice(["-1", "999", "x", "", "nan", "0"])
            edited[i] = key + "=" + " ".join(values)
        else:
            del edited[i]
        text = "\n".join(edited)
        if artifacts.check_model_text(text) is None:
            passed += 1
            problem = artifacts.parse_in_child(text)
            assert problem is None or "crashed" not in problem, problem
    assert passed > 0


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ([], "meta.json is not an object but list"),
        ({"features": "x"}, "meta.json has no list of feature names"),
        ({"features": list(FEATURES), "horizon_min": -5}, "horizon_min is not a positive"),
        ({"features": list(FEATURES), "metrics": []}, "metrics is not an object"),
        ({"features": list(FEATURES), "intervals": {"buckets": [[1, 2]]}}, "intervals.buckets"),
    ],
)
def test_a_malformed_meta_json_is_refused(
    run: tuple[Warehouse, str, Path], meta: object, message: str
) -> None:
    warehouse, run_id, path = run
    (path / artifacts.META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    _rehash(path)
    with pytest.raises(OxyError, match=re.escape(message)):
        artifacts.load_run(warehouse, run_id)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("[]", "manifest.json is not an object"),
        ("{", "manifest.json is not valid JSON"),
        ('{"model.txt": 5, "meta.json": "x"}', "manifest.json holds no sha256 for model.txt"),
    ],
)
def test_a_malformed_manifest_is_refused(
    run: tuple[Warehouse, str, Path], manifest: str, message: str
) -> None:
    warehouse, run_id, path = run
    (path / artifacts.MANIFEST_FILE).write_text(manifest, encoding="utf-8")
    with pytest.raises(OxyError, match=re.escape(message)):
        artifacts.load_run(warehouse, run_id)


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("[]", "is not an object but list"),
        ('{"run_id": 5}', "run_id 5 is not a run id"),
        ('{"run_id": "../../etc"}', "is not a run id"),
        ('{"run_id": null, "stack": "r1"}', "stack is not a list of run ids"),
        ('{"run_id": null, "history": [1]}', "history is not a list of objects"),
        ("not json", "is not valid JSON"),
    ],
)
def test_a_malformed_production_pointer_is_refused_and_promote_repairs_it(
    run: tuple[Warehouse, str, Path], pointer: str, message: str
) -> None:
    warehouse, run_id, _ = run
    (warehouse.registry_dir / "production.json").write_text(pointer, encoding="utf-8")
    with pytest.raises(OxyError, match=re.escape(message) + ".*`oxy promote RUN_ID` writes"):
        read_pointer(warehouse)
    result = CliRunner().invoke(oxy, ["--warehouse", str(warehouse.root), "runs"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert [p.table for p in check_registry(warehouse)] == ["production"]
    assert promote(warehouse, run_id) is None  # a new pointer; the bad one is kept aside
    assert read_pointer(warehouse)["run_id"] == run_id
    assert (warehouse.registry_dir / "production.json.bad").read_text() == pointer
    assert check_registry(warehouse) == []


def test_a_meta_json_that_is_not_an_object_is_refused_by_the_registry(
    run: tuple[Warehouse, str, Path],
) -> None:
    warehouse, run_id, path = run
    (path / artifacts.META_FILE).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(OxyError, match=rf"run '{run_id}': meta.json is not an object but list"):
        read_meta(warehouse, run_id)


def test_check_registry_finds_a_damaged_production_run(run: tuple[Warehouse, str, Path]) -> None:
    warehouse, run_id, path = run
    promote(warehouse, run_id)
    assert check_registry(warehouse) == []
    text = (path / artifacts.MODEL_FILE).read_text(encoding="utf-8")
    (path / artifacts.MODEL_FILE).write_text(text[: len(text) // 2], encoding="utf-8")
    _rehash(path)
    (problem,) = check_registry(warehouse)
    assert (problem.table, problem.kind) == ("production", "registry")
    assert "is not a valid LightGBM model" in problem.detail and "rollback" in problem.repair
