"""The repository stands on its own: every relative link of its documents resolves inside it,
and no file of it reads or links anything beside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
# [text](target) and [text]: target, skipping images' and code spans' look-alikes.
_INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s+(\S+)", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_EXTERNAL = ("http://", "https://", "mailto:")


def _links(document: Path) -> list[str]:
    text = _FENCE.sub("", document.read_text(encoding="utf-8"))
    text = _CODE_SPAN.sub("", text)
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def _anchors(document: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings of `document` (GitHub's rule)."""
    text = _FENCE.sub("", document.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_there_are_documents_and_they_have_links() -> None:
    names = {p.relative_to(REPO).as_posix() for p in DOCUMENTS}
    assert {"README.md", "docs/contract.md", "docs/api.md", "docs/design.md"} <= names
    assert sum(len(_links(p)) for p in DOCUMENTS) > 20


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    broken: list[str] = []
    for link in _links(document):
        if link.startswith(_EXTERNAL):
            continue
        path_part, _, anchor = link.partition("#")
        if path_part.startswith("/"):
            broken.append(f"{link}: absolute path (use a relative one)")
            continue
        target = (document.parent / path_part).resolve() if path_part else document
        if not target.is_relative_to(REPO):
            broken.append(f"{link}: points outside the repository")
        elif not target.exists():
            broken.append(f"{link}: {target.relative_to(REPO)} does not exist")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(REPO)}")
    assert not broken, f"{document.relative_to(REPO)}: " + "; ".join(broken)


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [REPO / name for name in listed.split("\0") if name]


def test_no_file_reads_or_links_beside_the_repository() -> None:
    # Spelled in pieces so that this file does not match itself.
    outside = re.compile(re.escape(".." + "/shared") + "|" + re.escape("shared" + "/spec"))
    found: list[str] = []
    for path in _tracked_files():
        if not path.is_file() or path.suffix in {".png", ".db"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if outside.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "files that reach beside the repository:\n" + "\n".join(found)
