"""A fresh clone, with nothing beside it, passes the tests that read the contract's files.

The clone is of the committed HEAD (work in progress is not in it) into an empty folder. Its
tests run against its own sources (PYTHONPATH points at the clone's `src`), with this
environment's installed dependencies, and must skip nothing: every file they read (examples,
schemas, golden events, documents) is in the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACT_TESTS = (
    "tests/unit/test_golden_examples.py",
    "tests/unit/test_schemas.py",
    "tests/unit/test_repository_links.py",
)


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed to clone the repository")
    try:
        head = _git("rev-parse", "HEAD", cwd=REPO)
    except subprocess.CalledProcessError:
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    empty = tmp_path / "empty"
    empty.mkdir()
    target = empty / "leadhook"
    _git("clone", "--quiet", "--no-hardlinks", str(REPO), str(target), cwd=empty)
    _git("checkout", "--quiet", "--detach", head, cwd=target)
    assert sorted(p.name for p in empty.iterdir()) == ["leadhook"]
    return target


def test_a_fresh_clone_passes_the_contract_tests_skipping_nothing(clone: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADHOOK_", "PYTEST_"))}
    env["PYTHONPATH"] = str(clone / "src")
    # The clone's own code is what runs, not this checkout's editable install.
    where = subprocess.run(
        [sys.executable, "-c", "import leadhook; print(leadhook.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(clone), where.stdout + where.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *CONTRACT_TESTS],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) > 80, summary
    assert "skipped" not in summary and "SKIPPED" not in output, output
