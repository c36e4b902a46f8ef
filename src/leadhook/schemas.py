"""The committed JSON Schemas of the event contract, one file per event type.

Regenerate them after changing `leadhook.domain.events` with
`python -m leadhook.schemas schemas` from the repository root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from leadhook.domain.events import EVENT_TYPES, json_schema

REGENERATE_COMMAND = "python -m leadhook.schemas schemas"


def schema_file_name(event_type: str) -> str:
    """Name the schema file of one event type."""
    return f"{event_type}.json"


def schema_text(event_type: str) -> str:
    """Return the exact text of one event type's schema file."""
    return json.dumps(json_schema(event_type), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def schema_documents() -> dict[str, str]:
    """Return the expected text of every schema file, by file name, in contract order."""
    return {schema_file_name(t): schema_text(t) for t in EVENT_TYPES}


def write_schemas(directory: Path) -> list[Path]:
    """Write one `<event_type>.json` per event type into `directory`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in schema_documents().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _default_directory() -> Path:
    # In a checkout (src/leadhook/schemas.py) the repository's own `schemas/`, two folders
    # above `leadhook`; installed from a wheel, `schemas/` in the current folder, never a
    # folder inside the Python installation.
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "leadhook").is_dir():
        return root / "schemas"
    return Path.cwd() / "schemas"


def main(argv: list[str]) -> int:
    """Write the schemas to the folder named by the first argument (default: the checkout's
    `schemas/`, or `./schemas` when leadhook is installed from a wheel)."""
    if len(argv) > 1:
        sys.stderr.write("usage: python -m leadhook.schemas [DIRECTORY]\n")
        return 2
    directory = Path(argv[0]) if argv else _default_directory()
    for path in write_schemas(directory):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
