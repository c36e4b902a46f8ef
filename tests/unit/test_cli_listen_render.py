"""What `leadhook listen` shows of an event: the sender's text never acts on the terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from leadhook.cli.listen import render_event, shown
from leadhook.receiver import parse

EXAMPLE = Path(__file__).parents[1] / "golden" / "object_create.json"


def _event_named(name: str) -> bytes:
    event = json.loads(EXAMPLE.read_text())
    event["extra_data"]["mapping_data"]["name"] = [name]
    event["extra_data"]["mapping_data_text"]["name"] = name
    return json.dumps(event).encode()


def _printed(name: str) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=200)
    console.print(render_event(parse(_event_named(name)), verified=True))
    return out.getvalue()


def test_control_characters_in_a_field_are_shown_escaped() -> None:
    # A lead's name from a web form: a colour, a window title and a clear screen, a line of
    # its own that passes for a verified delivery, a right-to-left override.
    hostile = "a\x1b[31mRED\x1b]0;PWNED\x07\x1b[2J\nFAKE ✔ verified  object_create\u202eb"
    printed = _printed(hostile)
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed
    lines = printed.splitlines()
    assert [n for n, line in enumerate(lines) if "✔ verified" in line] == [0, 1]
    assert not lines[1].lstrip().startswith(("FAKE", "✔"))  # the field's text, one line
    assert "name = a\\x1b[31mRED\\x1b]0;PWNED\\x07\\x1b[2J\\nFAKE ✔ verified" in printed
    assert "object_create\\u202eb\n" in printed


def test_shown_keeps_ordinary_text() -> None:
    assert shown("赵拥晨 O'Brien 😀 tab\there") == "赵拥晨 O'Brien 😀 tab\\there"
    assert shown("\x00\x7f\x85\u2028") == "\\x00\\x7f\\x85\\u2028"
    assert shown(12) == "12"


def test_a_member_with_no_numeric_id_is_named_by_its_user_id() -> None:
    # A claim from a pool: the member is the operator (type 2) with operator_id 0 when it is
    # bound to none; "by member" alone said nothing of who (a new user's walk-through).
    event = json.loads(EXAMPLE.read_text())
    event["extra_data"].update(operator_type=2, operator_id=0, omni_user_uuid="m-wang")
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system=None, width=200).print(
        render_event(parse(json.dumps(event).encode()), verified=True)
    )
    assert "by member m-wang" in out.getvalue()
