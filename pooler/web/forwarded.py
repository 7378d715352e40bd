"""Who is the client, and did it come over https, when proxies may stand in between.

`X-Forwarded-For` and `X-Forwarded-Proto` are believed only when the peer that sent them is
one of the instance's `trusted_proxies`; otherwise any client could claim any address (and
dodge sign-in throttling) or claim https. The client is the right-most address in
`X-Forwarded-For` that is not itself a trusted proxy (each trusted hop appends the address
it saw). Values are bounded: at most `MAX_HOPS` entries of at most 64 characters; anything
unparsable stops the walk at the last address believed. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOPS: Final = 32
MAX_VALUE_LEN: Final = 64


@lru_cache(maxsize=8)
def trusted_networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    """The parsed networks of the setting (validated when it was set; a bad entry is
    skipped here rather than trusted)."""
    out = []
    for item in trusted:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return tuple(out)


def is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_networks(trusted))


def client_address(peer: str, forwarded_for: Sequence[str], trusted: tuple[str, ...]) -> str:
    """The client's address: the peer, or (through trusted proxies) the right-most
    untrusted address of the `X-Forwarded-For` header values."""
    if not is_trusted(peer, trusted):
        return peer
    hops = [part.strip() for value in forwarded_for for part in value.split(",")]
    client = peer
    for hop in reversed(hops[-MAX_HOPS:]):
        if len(hop) > MAX_VALUE_LEN:
            break
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
        if not is_trusted(hop, trusted):
            break
    return client


def came_over_https(
    scheme: str, peer: str, forwarded_proto: str | None, trusted: tuple[str, ...]
) -> bool:
    """Whether the browser's connection was https: the server's own scheme, or what a
    trusted proxy says in `X-Forwarded-Proto` (its first value)."""
    if scheme == "https":
        return True
    if forwarded_proto is None or not is_trusted(peer, trusted):
        return False
    return forwarded_proto.split(",")[0].strip().lower() == "https"
