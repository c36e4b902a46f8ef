"""The delivery timeout and the auto-disable delay are defined once, in `leadhook.domain.retry`.

The settings take their defaults from those constants, and the documents that state the
defaults (the environment tables of README.md and docs/api.md, the prose of docs/) state the
same numbers: changing a constant without its documents fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from leadhook.domain.retry import DEFAULT_DELIVERY_TIMEOUT, DEFAULT_DISABLE_AFTER
from leadhook.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("README.md", "docs/api.md")


def test_the_settings_default_to_the_domain_constants() -> None:
    for settings in (Settings(), Settings.from_env({})):
        assert settings.delivery_timeout == DEFAULT_DELIVERY_TIMEOUT
        assert settings.auto_disable_after == DEFAULT_DISABLE_AFTER


def test_the_environment_still_overrides_them() -> None:
    settings = Settings.from_env(
        {"LEADHOOK_DELIVERY_TIMEOUT": "2.5", "LEADHOOK_AUTO_DISABLE_AFTER": "60"}
    )
    assert (settings.delivery_timeout, settings.auto_disable_after) == (2.5, 60.0)


def _table_default(document: str, variable: str) -> str:
    text = (ROOT / document).read_text(encoding="utf-8")
    row = re.search(rf"^\| `{variable}` \| (.+?) \|", text, re.MULTILINE)
    assert row is not None, f"{document} has no row for {variable}"
    return row.group(1)


@pytest.mark.parametrize("document", TABLES)
def test_the_environment_tables_state_the_defaults(document: str) -> None:
    timeout = _table_default(document, "LEADHOOK_DELIVERY_TIMEOUT")
    assert timeout == f"`{DEFAULT_DELIVERY_TIMEOUT:g}`"
    days = DEFAULT_DISABLE_AFTER / 86400
    disable = _table_default(document, "LEADHOOK_AUTO_DISABLE_AFTER")
    assert disable == f"`{DEFAULT_DISABLE_AFTER:.0f}` ({days:g} days)"


def test_the_documents_state_the_default_timeout() -> None:
    # "(`LEADHOOK_DELIVERY_TIMEOUT`, 10 s" and "a timeout (10 s by default)".
    pattern = re.compile(r"`LEADHOOK_DELIVERY_TIMEOUT`, (\d+(?:\.\d+)?) s|timeout \((\d+) s by")
    found = [
        (path.name, a or b)
        for path in sorted((ROOT / "docs").glob("*.md"))
        for a, b in pattern.findall(path.read_text(encoding="utf-8"))
    ]
    assert len(found) >= 3, found
    assert {value for _, value in found} == {f"{DEFAULT_DELIVERY_TIMEOUT:g}"}, found


def test_writer_threads_default_to_one_and_read_the_environment() -> None:
    assert Settings().writer_threads == Settings.from_env({}).writer_threads == 1
    assert Settings.from_env({"LEADHOOK_WRITER_THREADS": "4"}).writer_threads == 4
    for bad in ("0", "-1", "two", "1.5", "33"):
        with pytest.raises(SettingsError, match="LEADHOOK_WRITER_THREADS"):
            Settings.from_env({"LEADHOOK_WRITER_THREADS": bad})


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("", False), ("0", False),
     ("false", False), ("off", False), ("no", False)],
)  # fmt: skip
def test_the_private_targets_switch_reads_the_usual_spellings(value: str, allowed: bool) -> None:
    env = {"LEADHOOK_ALLOW_PRIVATE_TARGETS": value}
    assert Settings.from_env(env).allow_private_targets is allowed


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_switch_set_to_anything_else_is_a_mistake_said(value: str) -> None:
    with pytest.raises(SettingsError, match="LEADHOOK_ALLOW_PRIVATE_TARGETS"):
        Settings.from_env({"LEADHOOK_ALLOW_PRIVATE_TARGETS": value})
