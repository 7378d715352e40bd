"""Whether a URL the gateway itself will call (a price catalog, an alert webhook) is one it
accepts: absolute http(s) with a host and a valid port, printable, with no user name or
password in it (URLs are listed to operators and logged by host). Pure.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pooler.store.text import findable

Refusal = Literal["unprintable", "invalid", "not_http", "credentials"]


def unprintable(url: str) -> bool:
    """A control character, a space, a NUL or a lone surrogate anywhere in `url`."""
    return not findable(url) or any(ch.isspace() or not ch.isprintable() for ch in url)


def outbound_url_refusal(url: str) -> Refusal | None:
    """Why `url` is refused, or None when it is accepted."""
    if unprintable(url):
        return "unprintable"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "invalid"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not_http"
    if parts.username is not None or parts.password is not None:
        return "credentials"
    return None
