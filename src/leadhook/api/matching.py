"""Which routes serve a path, whatever the request's method: for a 405's `Allow`, and for the
route label of a request refused before it was routed.

Starlette's router answers a 405 with the methods of the first route whose path matched, and
newer FastAPI versions wrap each included router in a route with no path, so neither the
router's answer nor a walk of `app.router.routes` tells every method of a path. The app
builds this table once from the routes of the routers it includes (`api/app.py`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope


@dataclass(frozen=True)
class RouteTable:
    """Every route's path pattern, template and methods, in the order the router tries them."""

    entries: tuple[tuple[re.Pattern[str], str, frozenset[str]], ...]

    @classmethod
    def of(cls, routes: Iterable[Any]) -> RouteTable:
        """Collect the routes that have a path and methods (not mounts, not wrappers)."""
        entries = []
        for route in routes:
            regex = getattr(route, "path_regex", None)
            path = getattr(route, "path", None)
            methods = getattr(route, "methods", None)
            if regex is not None and isinstance(path, str) and path and methods:
                entries.append((regex, path, frozenset(methods)))
        return cls(tuple(entries))

    def methods(self, path: str) -> list[str]:
        """Every method some route serves at `path`, sorted (the `Allow` of a 405)."""
        found: set[str] = set()
        for regex, _, methods in self.entries:
            if regex.match(path):
                found |= methods
        return sorted(found)

    def template(self, path: str, method: str) -> str | None:
        """The template of the route the router would take for `method` at `path`, else of
        the first route serving `path` with another method; None when none serves it."""
        other = None
        for regex, template, methods in self.entries:
            if regex.match(path):
                if method in methods:
                    return template
                other = other or template
        return other


def route_table(scope: Scope) -> RouteTable | None:
    """The table of the app serving this request (None outside a leadhook app)."""
    state = getattr(scope.get("app"), "state", None)
    table = getattr(state, "route_table", None)
    return table if isinstance(table, RouteTable) else None
