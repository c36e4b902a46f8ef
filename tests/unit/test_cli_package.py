"""The `leadhook.cli` package: its entry points resolve, and it starts without the heavy modules.

`leadhook --help` and `leadhook tenants ...` should not pay for the database, the API, the
servers or the HTTP clients: every command imports them when it runs, never at module level.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from leadhook import __version__

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "aiohttp",
    "alembic",
    "fastapi",
    "httpx",
    "pydantic",
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "leadhook.adapters",
    "leadhook.api",
    "leadhook.bootstrap",
    "leadhook.receiver",
    "leadhook.services",
    "leadhook.settings",
    "leadhook.cli.runtime",
)


def _loaded_by(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded: list[str] = json.loads(out.splitlines()[-1])
    return loaded


def test_importing_the_command_line_loads_no_heavy_module() -> None:
    loaded = _loaded_by("import leadhook.cli")
    assert "leadhook.cli.serve" in loaded  # every command module is imported, to register it
    heavy = [m for m in loaded if any(m == h or m.startswith(f"{h}.") for h in HEAVY)]
    assert heavy == []


def test_the_console_script_names_the_command_line_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attribute = scripts["leadhook"].partition(":")
    main = getattr(importlib.import_module(module), attribute)
    from leadhook.cli import main as cli_main

    assert main is cli_main


def test_python_dash_m_leadhook_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "leadhook", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"leadhook {__version__}")


def test_the_banners_tenant_command_names_its_database_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from leadhook.cli.serve import database_flag, password_withheld
    from leadhook.settings import Settings

    plain = Settings(database_url="postgresql://leadhook@db.internal/leadhook")
    assert database_flag(plain) == " --database-url 'postgresql://leadhook@db.internal/leadhook'"
    assert not password_withheld(plain)
    secret_url = "postgresql://leadhook:s3cret@db.internal/leadhook"
    given = Settings(database_url=secret_url)
    assert database_flag(given) == ' --database-url "$LEADHOOK_DATABASE_URL"'
    monkeypatch.delenv("LEADHOOK_DATABASE_URL", raising=False)
    assert password_withheld(given)  # given by flag: the other shell must export it first
    monkeypatch.setenv("LEADHOOK_DATABASE_URL", secret_url)
    assert not password_withheld(given)  # the command runs as printed where it is exported


def test_a_worker_waits_only_for_a_server_not_there_yet() -> None:
    import psycopg

    from leadhook.cli.common import server_not_there_yet

    def refused(text: str) -> psycopg.OperationalError:
        return psycopg.OperationalError(f"connection failed: {text}")

    assert server_not_there_yet(refused("port 5432 failed: Connection refused"))
    assert server_not_there_yet(refused("FATAL:  the database system is starting up"))
    assert server_not_there_yet(refused("FATAL:  sorry, too many clients already"))
    assert not server_not_there_yet(refused('FATAL:  database "x" does not exist'))
    assert not server_not_there_yet(refused("FATAL:  password authentication failed"))
    assert not server_not_there_yet(RuntimeError("not a database's"))


@pytest.mark.parametrize("command", [["serve"], ["subscriptions", "list"], ["tenants", "list"]])
def test_a_flag_is_not_shown_as_taking_a_value(command: list[str]) -> None:
    # Typer 0.29 printed `--json <bool>` and `--help <bool>` (pyproject.toml pins below it):
    # a flag takes no value, and the help must not say it does.
    from typer.testing import CliRunner

    from leadhook.cli.root import app

    got = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100"})
    assert got.exit_code == 0, got.output
    assert "--help" in got.output and "<bool>" not in got.output
