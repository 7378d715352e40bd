"""Routing a request to a path without parameters from a dictionary, not werkzeug's matcher.

werkzeug's `StateMachineMatcher.match` (3.1) builds a recursive closure per call: a
reference cycle on every request (eight objects) that only Python's cyclic garbage
collector frees, once per ~90 requests; with 50 requests in flight its collections are
what made a short request cost more CPU under Quart. The hot routes (`/responses`,
`/v1/chat/completions`, ...) have no path parameters, so their match is the same every
time: the first answer for (host, path, method) is kept and reused. Paths with parameters
(`/v1/files/{id}`) and failures (404, 405) still go through werkzeug each time, so a
client inventing paths cannot grow the cache; it holds at most `MAX_ENTRIES` anyway.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from werkzeug.routing import Map, Rule

MAX_ENTRIES = 1024


class StaticRouteCache:
    """A werkzeug matcher in front of the map's own, for rules without arguments."""

    def __init__(self, matcher: Any) -> None:
        self._matcher = matcher
        self._static: dict[tuple[str, str, str, bool], Rule] = {}

    def match(
        self, domain: str, path: str, method: str, websocket: bool
    ) -> tuple[Rule, MutableMapping[str, Any]]:
        key = (domain, path, method, websocket)
        rule = self._static.get(key)
        if rule is not None:
            return rule, {}
        rule, values = self._matcher.match(domain, path, method, websocket)
        if not rule.arguments and len(self._static) < MAX_ENTRIES:
            self._static[key] = rule
        return rule, values

    def update(self) -> None:
        self._static.clear()  # the rules changed
        self._matcher.update()

    def __getattr__(self, name: str) -> Any:  # add, merge_slashes, ...: the map's matcher
        return getattr(self._matcher, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_matcher", "_static"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._matcher, name, value)


def cache_static_routes(url_map: Map) -> None:
    """Put a `StaticRouteCache` in front of `url_map`'s matcher (before rules are added)."""
    url_map._matcher = StaticRouteCache(url_map._matcher)  # type: ignore[assignment]
