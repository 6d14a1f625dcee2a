"""The CLI's error handling: every failure is one line and an exit code, never a traceback."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from cli import oxy


def _status_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    import engine.query

    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(engine.query, "warehouse_status", fail)


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/wh/x"),
            "Error: no space left on device (/wh/x): free some space and run the command again",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/wh"),
            f"Error: cannot access /wh: Permission denied for uid {os.getuid()}",
        ),
        (
            OSError(errno.EIO, "Input/output error", "/wh/x"),
            "Error: Input/output error (/wh/x)",
        ),
        (
            duckdb.IOException("IO Error: disk\nLINE 1"),
            "Error: database error: IO Error: disk LINE 1",
        ),
        (
            ValueError("no such thing"),
            "Error: internal error (a bug in oxy, please report it): ValueError: no such thing "
            "(OXY_DEBUG=1 shows the traceback)",
        ),
    ],
)
def test_an_unexpected_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exc: BaseException, line: str
) -> None:
    _status_raising(monkeypatch, exc)
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path), "status"])
    assert (result.exit_code, result.output) == (1, line + "\n")


def test_oxy_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _status_raising(monkeypatch, ValueError("no such thing"))
    monkeypatch.setenv("OXY_DEBUG", "1")
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path), "status"])
    assert isinstance(result.exception, ValueError)


def test_engine_warnings_are_printed_as_warning_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def warn(*args: object, **kwargs: object) -> dict:
        logging.getLogger("oxy").warning("a file is gone")
        return {"exists": False, "warehouse": str(tmp_path), "message": "none"}

    import engine.query

    monkeypatch.setattr(engine.query, "warehouse_status", warn)
    result = CliRunner().invoke(oxy, ["--warehouse", str(tmp_path), "status"])
    assert result.exit_code == 0
    assert result.output.startswith("warning: a file is gone\n")
