"""bench/RESULTS.md: each benchmark script owns one section and rewrites only that section.

A section is the text between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``; a script
calls :func:`write_section` with its table, and the header (date, machine, command) is added
here so every section says when, where and how its figures were measured. The file is
replaced atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = (
    "# Benchmark results\n\n"
    "Written by the benchmark scripts in `bench/` (each owns one section and rewrites it when "
    "it runs); do not edit by hand.\n"
)


def machine() -> str:
    """One line about the machine the figures were measured on."""
    cores = os.cpu_count() or 0
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    try:
        mem_kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        mem = f", {mem_kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        mem = ""
    return f"{platform.machine()}, {cores} cores{mem}{load}, Python {platform.python_version()}"


def write_section(name: str, body: str, *, title: str, command: str | None = None) -> Path:
    """Replace (or append) section ``name`` of bench/RESULTS.md with ``body``.

    ``title`` becomes the section's heading; ``command`` (default: this process's command
    line) is printed under it with the date and the machine.
    """
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lower-case letters, digits, - and _")
    cmd = command or " ".join(shlex.quote(a) for a in [".venv/bin/python", *_relative(sys.argv)])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- begin {name} -->\n## {title}\n\n"
        f"Measured {stamp} on {machine()}; command: `{cmd}`\n\n"
        f"{body.strip()}\n<!-- end {name} -->\n"
    )
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else TITLE
    pattern = re.compile(
        rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->\n?", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, RESULTS)
    return RESULTS


def _relative(argv: list[str]) -> list[str]:
    root = RESULTS.parent.parent
    out = []
    for arg in argv:
        path = Path(arg)
        if path.is_absolute() and path.is_relative_to(root):
            arg = str(path.relative_to(root))
        out.append(arg)
    return out
