"""Every module of src/leadhook falls under at least one import-linter contract.

`lint-imports` checks the contracts in pyproject.toml, but a module that no contract names is
free to import anything: a new top-level module would silently escape the layering. A module is
covered when it, or a package above it, is named in a contract's `layers` (under its
`containers`, if any), `source_modules` or `modules`; a forbidden contract with
`as_packages = false` covers only the modules it names, not what is inside them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "leadhook"


def modules_under(package_dir: Path) -> list[str]:
    """Dotted names of every Python module in a package directory (a package is its name)."""
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _layer_names(entry: str) -> list[str]:
    # "a | b" (independent siblings), "a : b" (siblings) and "(a)" (optional layer).
    return [part.strip().strip("()").strip() for part in re.split(r"[|:]", entry)]


def contract_names(contracts: Iterable[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """(module expression, whether it covers the modules inside it) named by the contracts."""
    named: list[tuple[str, bool]] = []
    for contract in contracts:
        kind = contract["type"]
        if kind == "layers":
            containers = contract.get("containers", [])
            for entry in contract["layers"]:
                for layer in _layer_names(entry):
                    if containers:
                        named += [(f"{c}.{layer}", True) for c in containers]
                    else:
                        named.append((layer, True))
        elif kind == "forbidden":
            as_packages = contract.get("as_packages", True)
            named += [(m, as_packages) for m in contract["source_modules"]]
        elif kind == "independence":
            named += [(m, True) for m in contract["modules"]]
    return named


def _matches(expression: str, module: str, as_package: bool) -> bool:
    # import-linter's wildcards: `*` one level, `**` any number of levels.
    pattern = ".".join(
        r"[^.]+(?:\.[^.]+)*" if part == "**" else r"[^.]+" if part == "*" else re.escape(part)
        for part in expression.split(".")
    )
    return re.fullmatch(pattern + (r"(?:\..+)?" if as_package else ""), module) is not None


def uncovered(modules: Iterable[str], named: list[tuple[str, bool]]) -> list[str]:
    """The modules no contract covers."""
    return [m for m in modules if not any(_matches(e, m, p) for e, p in named)]


def _contracts() -> list[dict[str, Any]]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, Any]] = pyproject["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_module_is_under_an_import_contract() -> None:
    modules = modules_under(PACKAGE)
    assert {"leadhook", "leadhook.__main__", "leadhook.cli.runtime", "leadhook.schemas"} <= set(
        modules
    )
    assert uncovered(modules, contract_names(_contracts())) == []


def test_a_module_no_contract_names_is_reported() -> None:
    named = contract_names(_contracts())
    assert uncovered(["leadhook.stray", "leadhook.cli.stray", "leadhook.domain.x.y"], named) == [
        "leadhook.stray"
    ]


def test_coverage_follows_layers_containers_wildcards_and_as_packages() -> None:
    named = contract_names(
        [
            {"type": "layers", "containers": ["p.cli"], "layers": ["root", "a | (b) : c"]},
            {"type": "forbidden", "source_modules": ["p"], "as_packages": False},
            {"type": "forbidden", "source_modules": ["p.x.*"], "forbidden_modules": []},
            {"type": "independence", "modules": ["p.ind.**"]},
        ]
    )
    covered = ["p", "p.cli.root", "p.cli.b", "p.cli.c.deep", "p.x.one", "p.x.one.two", "p.ind.a.b"]
    assert uncovered(covered, named) == []
    assert uncovered(["p.cli", "p.cli.other", "p.y", "p.x", "p.ind"], named) == [
        "p.cli",
        "p.cli.other",
        "p.y",
        "p.x",
        "p.ind",
    ]
