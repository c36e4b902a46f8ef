"""Every command's `--help` reads whole in an 80-column terminal.

Rich draws the options as a table and cuts a word too long for its column with "…": with
`serve`'s `--access-log / --no-access-log` pair taking a column of its own, its
`--database-url` help read "$LEADHOOK_DATABASE…" and "sqlite:///./leadho…".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from leadhook.cli.root import app


def _paths(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _paths(command, (*prefix, name))


PATHS = [(), *_paths(typer.main.get_command(app))]


def test_every_command_is_listed() -> None:
    assert ("serve",) in PATHS and ("tenants", "keys", "revoke") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "leadhook")
def test_help_is_not_cut_at_80_columns(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


@pytest.mark.parametrize("path", PATHS[1:], ids=" ".join)
def test_a_commands_summary_is_one_paragraph_without_a_hard_line_break(
    path: tuple[str, ...],
) -> None:
    # Rich keeps a docstring's line breaks: a summary broken in the source reads broken in
    # `leadhook --help`'s list ("... supervises (migrates the" / "database first).").
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    summary = (command.help or "").strip().split("\n\n")[0]
    assert summary and "\n" not in summary, summary
