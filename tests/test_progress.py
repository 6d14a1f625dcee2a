"""Progress bars for a person at a terminal only; summaries say this run, then the warehouse."""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import polars as pl
from click.testing import CliRunner

import cli
from engine.progress import bar, totals_line, wanted
from engine.warehouse import Warehouse


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_and_never_under_quiet_or_json() -> None:
    assert wanted(stream=Terminal()) is True
    assert wanted(stream=io.StringIO()) is False  # a pipe, a log file, cron
    assert wanted(quiet=True, stream=Terminal()) is False
    assert wanted(as_json=True, stream=Terminal()) is False


def test_a_silent_bar_iterates_and_counts_and_draws_nothing(capsys) -> None:
    silent = bar(range(4), desc="score", unit="bucket", enabled=False)
    assert list(silent) == [0, 1, 2, 3] and silent.total == 4 and silent.n == 4
    by_hand = bar(total=3, desc="grid", enabled=False)
    by_hand.update(2)
    by_hand.set_postfix_str("lr 0.1")
    by_hand.close()
    assert by_hand.n == 2
    assert capsys.readouterr() == ("", "")
    drawn = bar(range(3), desc="report", unit="page", enabled=True)
    assert list(drawn) == [0, 1, 2]
    assert "report" in capsys.readouterr().err


def test_totals_line_names_the_span_in_utc() -> None:
    line = totals_line(
        {
            "readings": 2,
            "sensors": 1,
            "first_ts": datetime(2024, 3, 1),
            "last_ts": datetime(2024, 3, 1, 0, 1),
        },
        "3 events",
    )
    assert line == (
        "warehouse: 2 readings of 1 sensor(s), 2024-03-01 00:00 .. 2024-03-01 00:01 UTC; 3 events"
    )


def test_cli_draws_bars_on_a_terminal_and_summaries_say_this_run_first(
    tmp_path, readings_loader, monkeypatch
) -> None:
    wh = Warehouse(tmp_path / "wh")
    minutes = np.arange(2 * 1440)
    readings_loader(
        wh,
        pl.DataFrame(
            {
                "sensor_id": "a",
                "ts": pl.datetime_range(
                    datetime(2024, 3, 1), datetime(2024, 3, 2, 23, 59), "1m", eager=True
                ),
                "value": 8 + np.sin(minutes / 229),
            }
        ),
    )
    runner = CliRunner()
    quiet = runner.invoke(cli.oxy, ["--warehouse", str(wh.root), "score"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""  # not a terminal: no bar
    lines = quiet.output.splitlines()
    assert lines[0].startswith("this run (new readings only): scored 2,880 readings of 1 sensor")
    assert lines[1].startswith("warehouse: 2,880 readings of 1 sensor(s), 2024-03-01 00:00")
    as_json = runner.invoke(cli.oxy, ["--warehouse", str(wh.root), "--json", "score"])
    assert as_json.stderr == "" and as_json.output.lstrip().startswith("{")
    monkeypatch.setattr(cli, "wanted", lambda **_: True)  # as if stderr were a terminal
    drawn = runner.invoke(cli.oxy, ["--warehouse", str(wh.root), "report"])
    assert drawn.exit_code == 0, drawn.output
    assert "report" in drawn.stderr and drawn.stdout.startswith("this run: ")
