"""Hypercorn's HTTP/2 upgrade check skipped for a request that cannot be one.

For every HTTP/1.1 request, Hypercorn's `H11Protocol._check_protocol` (0.18) decodes,
strips and lowercases each header name looking for an `Upgrade: h2c` request (answered with
101 and a switch to HTTP/2) or HTTP/2's `PRI * HTTP/2.0` preface: a dozen Python string
operations per Codex request, which acts on neither. h11 has already lowercased every
header name and checked it is a token (no spaces), so Hypercorn's cleaned name is the
name itself: a request without an `upgrade` header whose method is not `PRI` makes both
branches false, and `_check_protocol` returns without acting. Only those requests skip it;
any other still goes through Hypercorn's own.

This relies on `_check_protocol`'s shape as of Hypercorn 0.18 and on h11's stored header
triples (`Headers._full_items`, names lowercased): `skip_needless_upgrade_checks` refuses to
start if either moved; tests/unit/test_upgrade_check.py drives Hypercorn's server.
"""

from __future__ import annotations

import inspect
from typing import Any

import h11

from pooler.dependency_shape import missing_texts, refuse_if_moved


def may_upgrade(request: h11.Request) -> bool:
    """Whether Hypercorn's `_check_protocol` could act on `request`."""
    if request.method == b"PRI":
        return True
    return any(name == b"upgrade" for _, name, _ in request.headers._full_items)


def skip_needless_upgrade_checks() -> None:
    """Install the skip described in the module doc. Idempotent."""
    from hypercorn.protocol.h11 import H11Protocol

    original = H11Protocol._check_protocol
    if getattr(original, "_skips", False):
        return
    source = inspect.getsource(original)
    expected = (
        'if sanitised_name == "upgrade":',
        'if upgrade_value.lower() == "h2c" and not has_body:',
        'elif event.method == b"PRI" and event.target == b"*" and event.http_version == b"2.0":',
    )
    missing = missing_texts({original: expected})
    headers = h11.Request(method="GET", target="/", headers=[("Host", "b")]).headers
    if getattr(headers, "_full_items", None) != [(b"Host", b"host", b"b")]:
        missing.append("h11's Headers._full_items")
    if source.count("if ") != 5 or source.count("raise ") != 2:  # no other branch (0.18)
        missing.append("_check_protocol's two branches and nothing else")
    refuse_if_moved(missing, "Hypercorn or h11", "pooler.upgrade_check")

    async def check_protocol(self: Any, event: h11.Request) -> None:
        if may_upgrade(event):
            await original(self, event)

    check_protocol._skips = True  # type: ignore[attr-defined]
    check_protocol.__wrapped__ = original  # type: ignore[attr-defined]
    H11Protocol._check_protocol = check_protocol  # type: ignore[method-assign]
