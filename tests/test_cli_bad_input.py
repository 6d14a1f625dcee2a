"""Bad input at the CLI's edge: one line `Error: ...`, exit code 1, no traceback, no change.

A missing warehouse, a read-only or unwritable one, and a config path that does not exist
(or is a folder) are what a mounted container volume most often gets wrong; these tests pin
the behaviour outside the container, and `scripts/check-image` runs the same cases inside
the image. A read-only warehouse is a real one: a read-only bind mount in a private mount
namespace when the tests run as root (root writes through file modes), else file modes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import oxy

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(output: str) -> str:
    """The single `Error: ...` line of a failed command (and nothing else)."""
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: "), output
    return lines[0]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (what a refused command must leave as it was)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXY_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(
        oxy, ["demo-data", str(out), "--sensors-per-site", "1", "--days", "2", "--clean-days", "1"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def scored_warehouse(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Path:
    """A small warehouse, ingested and scored (module-wide: the tests here only read it)."""
    root = tmp_path_factory.mktemp("wh") / "warehouse"
    runner = CliRunner(env=clean_env())
    base = ["--warehouse", str(root), "--config", str(demo_dir / "sources.toml")]
    for args in (["ingest", str(demo_dir)], ["score"]):
        result = runner.invoke(oxy, [*base, *args])
        assert result.exit_code == 0, result.output
    return root


def _can_mount_read_only(directory: Path) -> bool:
    probe = 'mount --bind -o ro "$0" "$0" && ! touch "$0/.oxy-probe" 2>/dev/null'
    try:
        done = subprocess.run(
            ["unshare", "--mount", "sh", "-c", probe, str(directory)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


RunOxy = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], RunOxy]]:
    """``read_only(dir)`` -> ``run(*args)``: run `oxy ARGS` in a subprocess that sees
    ``dir`` read-only (as `docker run -v DIR:/warehouse:ro` does)."""
    restore: list[tuple[Path, int]] = []

    def make(directory: Path) -> RunOxy:
        if os.geteuid() == 0:
            if not _can_mount_read_only(tmp_path):
                pytest.skip("running as root without unshare/mount: no read-only directory")
            wrap = [
                "unshare",
                "--mount",
                "sh",
                "-c",
                'mount --bind -o ro "$0" "$0" && exec "$@"',
                str(directory),
            ]
        else:
            wrap = []
            for p in [directory, *directory.rglob("*")]:
                restore.append((p, p.stat().st_mode))
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

        def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            command = [*wrap, sys.executable, "-m", "cli", *args]
            return subprocess.run(
                command,
                cwd=ROOT,
                env=env or clean_env(),
                capture_output=True,
                text=True,
                timeout=300,
            )

        return run

    yield make
    for p, mode in reversed(restore):
        p.chmod(mode)


# --- a read-only warehouse -------------------------------------------------------------

WRITING_COMMANDS = [
    ["score"],
    ["score", "--full"],
    ["train"],
    ["forecast"],
    ["monitor"],
    ["promote", "20240101T0000-abcdef"],
    ["rollback"],
]


@pytest.mark.parametrize("args", WRITING_COMMANDS, ids=lambda a: " ".join(a))
def test_a_writing_command_on_a_read_only_warehouse_fails_in_one_line(
    scored_warehouse: Path, read_only: Callable[[Path], RunOxy], args: list[str]
) -> None:
    before = tree_digest(scored_warehouse)
    run = read_only(scored_warehouse)
    done = run("--warehouse", str(scored_warehouse), *args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    line = one_line_error(done.stderr)
    assert line.startswith(f"Error: warehouse {scored_warehouse} is not writable by uid ")
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert f"({reason})" in line
    assert tree_digest(scored_warehouse) == before


def test_ingest_into_a_read_only_warehouse_fails_in_one_line(
    scored_warehouse: Path, demo_dir: Path, read_only: Callable[[Path], RunOxy]
) -> None:
    before = tree_digest(scored_warehouse)
    run = read_only(scored_warehouse)
    done = run(
        "--warehouse",
        str(scored_warehouse),
        "--config",
        str(demo_dir / "sources.toml"),
        "ingest",
        str(demo_dir / "pond.csv"),
    )
    assert done.returncode == 1
    assert "is not writable by uid" in one_line_error(done.stderr)
    assert tree_digest(scored_warehouse) == before


def test_reading_commands_work_on_a_read_only_warehouse(
    scored_warehouse: Path, read_only: Callable[[Path], RunOxy]
) -> None:
    """An analyst's read-only mount: `oxy sql` and `oxy status` answer, even with no
    `.staging/` folder for DuckDB's spill files (the reader spills to the system temp)."""
    import shutil

    shutil.rmtree(scored_warehouse / ".staging", ignore_errors=True)
    query = "select count(*) as n, count(distinct sensor_id) as sensors from anomaly_scores"
    expected = CliRunner(env=clean_env()).invoke(
        oxy, ["--warehouse", str(scored_warehouse), "--json", "sql", query]
    )
    assert expected.exit_code == 0, expected.output
    shutil.rmtree(scored_warehouse / ".staging", ignore_errors=True)
    before = tree_digest(scored_warehouse)
    run = read_only(scored_warehouse)
    done = run("--warehouse", str(scored_warehouse), "--json", "sql", query)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(expected.output)
    assert json.loads(done.stdout)["rows"][0]["sensors"] == 5
    assert json.loads(done.stdout)["rows"][0]["n"] > 2 * 1440  # two days of minutes
    status = run("--warehouse", str(scored_warehouse), "status")
    assert status.returncode == 0, status.stderr
    assert "anomaly_scores" in status.stdout
    assert tree_digest(scored_warehouse) == before
    assert not (scored_warehouse / ".staging").exists()


def test_a_file_the_command_cannot_write_is_one_line(
    tmp_path: Path, read_only: Callable[[Path], RunOxy]
) -> None:
    """Writes outside the warehouse too (here demo-data's output folder): one line."""
    out = tmp_path / "out"
    out.mkdir()
    run = read_only(out)
    done = run("demo-data", str(out), "--sensors-per-site", "1", "--days", "2", "--clean-days", "1")
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert str(out) in line
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file modes")
def test_a_warehouse_owned_by_another_user_fails_in_one_line(tmp_path: Path) -> None:
    parent = tmp_path / "mounted"
    parent.mkdir()
    parent.chmod(0o555)  # what `docker run -v NEW_DIR:/warehouse` gives a non-root container
    try:
        result = CliRunner(env=clean_env()).invoke(
            oxy, ["--warehouse", str(parent / "warehouse"), "score"]
        )
    finally:
        parent.chmod(0o755)
    assert result.exit_code == 1
    assert "(Permission denied)" in one_line_error(result.output)
    assert not (parent / "warehouse").exists()


# --- a missing warehouse ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["sql", "select 1"], ["score"], ["train"], ["forecast"], ["monitor"], ["report"]],
    ids=lambda a: a[0],
)
def test_a_command_that_needs_data_on_a_missing_warehouse_says_so(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "nowhere" / "warehouse"
    result = CliRunner(env=clean_env()).invoke(oxy, ["--warehouse", str(missing), *args])
    assert result.exit_code == 1, result.output
    assert one_line_error(result.output).startswith(f"Error: no warehouse at {missing}")
    assert not (tmp_path / "nowhere").exists()


def test_status_of_a_missing_warehouse_explains_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "warehouse"
    result = CliRunner(env=clean_env()).invoke(oxy, ["--warehouse", str(missing), "status"])
    assert result.exit_code == 0, result.output
    assert f"no warehouse at {missing} yet" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_a_warehouse_path_under_a_file_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder\n")
    target = tmp_path / "afile" / "warehouse"
    result = CliRunner(env=clean_env()).invoke(oxy, ["--warehouse", str(target), "score"])
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert line.startswith(f"Error: warehouse {target} is not writable")
    assert "(Not a directory)" in line


def test_oxy_warehouse_sets_the_warehouse(scored_warehouse: Path) -> None:
    result = CliRunner(env=clean_env(OXY_WAREHOUSE=str(scored_warehouse))).invoke(
        oxy, ["--json", "sql", "select count(distinct sensor_id) as n from anomaly_scores"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == [{"n": 5}]


# --- the config path -------------------------------------------------------------------


def test_a_missing_config_file_fails_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "config" / "oxy.toml"
    result = CliRunner(env=clean_env()).invoke(
        oxy, ["--config", str(missing), "demo-data", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert one_line_error(result.output) == f"Error: config file {missing} does not exist"
    assert not (tmp_path / "out").exists()


def test_a_missing_config_from_oxy_config_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "config" / "oxy.toml"
    result = CliRunner(env=clean_env(OXY_CONFIG=str(missing))).invoke(
        oxy, ["--warehouse", str(tmp_path / "wh"), "runs"]
    )
    assert result.exit_code == 1
    assert one_line_error(result.output) == (
        f"Error: config file {missing} does not exist (from $OXY_CONFIG)"
    )


def test_a_config_folder_instead_of_a_file_fails_in_one_line(tmp_path: Path) -> None:
    """`--config /config` (the mounted folder) instead of `/config/oxy.toml`."""
    result = CliRunner(env=clean_env()).invoke(
        oxy, ["--config", str(tmp_path), "demo-data", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert one_line_error(result.output) == (
        f"Error: config file {tmp_path} is a directory; pass the TOML file "
        f"(e.g. {tmp_path}/oxy.toml)"
    )


def test_oxy_config_is_honoured_and_empty_means_built_in_defaults(tmp_path: Path) -> None:
    config = tmp_path / "oxy.toml"
    config.write_text("[demo]\nsensors_per_site = 1\ndays = 2\nclean_days = 1\n")
    runner = CliRunner()
    from_env = runner.invoke(
        oxy, ["--json", "demo-data", str(tmp_path / "a")], env=clean_env(OXY_CONFIG=str(config))
    )
    assert from_env.exit_code == 0, from_env.output
    summary = json.loads(from_env.output)
    assert (summary["sensors"], summary["days"]) == (5, 2)
    # --config beats $OXY_CONFIG; an empty $OXY_CONFIG is no config file at all
    other = tmp_path / "other.toml"
    other.write_text("[demo]\nsensors_per_site = 2\ndays = 2\nclean_days = 1\n")
    given = runner.invoke(
        oxy,
        ["--config", str(other), "--json", "demo-data", str(tmp_path / "b")],
        env=clean_env(OXY_CONFIG=str(config)),
    )
    assert given.exit_code == 0, given.output
    assert json.loads(given.output)["sensors"] == 10
    empty = runner.invoke(
        oxy,
        ["--json", "demo-data", str(tmp_path / "c"), "--days", "2", "--clean-days", "1"],
        env=clean_env(OXY_CONFIG=""),
    )
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.output)["sensors"] == 10  # the built-in [demo] default: 5 x 2
