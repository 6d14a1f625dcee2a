"""Every CLI command has help with an example and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli import oxy

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(oxy.commands)


def test_the_cli_has_every_designed_command() -> None:
    designed = {"demo-data", "ingest", "score", "train", "forecast", "infer", "monitor"}
    designed |= {"evaluate", "report", "sql", "status"}
    assert designed <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(oxy, [name, "--help"])
    assert result.exit_code == 0, result.output
    command = oxy.commands[name]
    assert isinstance(command, click.Command)
    assert command.help and len(command.help.strip()) > 20
    assert "Example" in result.output, f"`oxy {name} --help` shows no example"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_appears_in_the_readme(name: str) -> None:
    assert f"oxy {name}" in README, f"README.md does not mention `oxy {name}`"


def test_version_and_unknown_command() -> None:
    runner = CliRunner()
    assert runner.invoke(oxy, ["--version"]).output.startswith("oxy, version ")
    result = runner.invoke(oxy, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output
