"""Who is the client, and did it come over https, when proxies may stand in between: the one
resolution of the client's address, used by the request log, the console (its sign-in
throttling and session list) and the ingress allowlist (`pooler.web.ingress`).

A forwarded header (`X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`) is believed only
when the peer that sent it is one of the instance's `trusted_proxies`; otherwise any client
could claim any address (and pass the allowlist, or dodge sign-in throttling) or claim
https. Where the address is read (`ingress.client_ip_source`):

    x_forwarded_for  depth 0: the right-most address that is not itself a trusted proxy
                     (each trusted hop appends the address it saw); depth N: the Nth
                     address from the right counting the peer (N = 1 is the peer; 2, the
                     address the one proxy in front saw), whatever the hops are
    x_real_ip        the header's address (its last line)
    peer             the connection's own address; no header is read

Values are bounded: only the right-most `MAX_HOPS` entries are looked at, each of at most
`MAX_VALUE_LEN` characters; anything unparsable (a name, a port, a NUL, garbage) stops the
walk at the last address believed, and a chain shorter than the depth gives its left-most
address. Pure; `ClientIpRules` is built once per settings snapshot (`client_rules`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pooler.web.asgi import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HOPS: Final = 32
MAX_VALUE_LEN: Final = 64  # request_logs.client_ip holds 64 characters
# Where the gateway keeps the address it resolved for a request (the allowlist's, then the
# request log's): resolved once.
CLIENT_IP_KEY: Final = "pooler.client_ip"


@dataclass(frozen=True, slots=True)
class ClientIpRules:
    trusted: tuple[Network, ...] = ()
    source: str = "x_forwarded_for"
    depth: int = 0


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    """The parsed networks of a setting (validated when it was set; a bad entry is skipped
    here: it neither trusts nor allows anything)."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return tuple(out)


def client_rules(
    trusted: Iterable[str], source: str = "x_forwarded_for", depth: int = 0
) -> ClientIpRules:
    return ClientIpRules(networks(trusted), source, depth)


def parse_address(text: str) -> Address | None:
    """An address as a client or proxy wrote it, or None: bounded, no port, no brackets.
    An IPv4-mapped IPv6 address is its IPv4 address (a dual-stack socket's peer)."""
    if len(text) > MAX_VALUE_LEN:
        return None
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def within(address: Address, nets: tuple[Network, ...]) -> bool:
    return any(address in network for network in nets)  # another version: never in


def is_trusted(address: str, rules: ClientIpRules) -> bool:
    if not rules.trusted:
        return False
    parsed = parse_address(address)
    return parsed is not None and within(parsed, rules.trusted)


def client_address(
    rules: ClientIpRules,
    peer: str,
    forwarded_for: Sequence[str] = (),
    real_ip: str | None = None,
) -> str:
    """The client's address under `rules`: the peer, or what a trusted peer says of it
    (`forwarded_for`: the X-Forwarded-For lines in order; `real_ip`: X-Real-IP's last)."""
    if rules.source == "peer" or not is_trusted(peer, rules):
        return peer
    if rules.source == "x_real_ip":
        found = parse_address(real_ip.strip()) if real_ip is not None else None
        return peer if found is None else str(found)
    client = peer
    steps = 0
    for hop in _hops_right_to_left(forwarded_for):
        if rules.depth and steps >= rules.depth - 1:
            break
        found = parse_address(hop)
        if found is None:
            break
        client, steps = str(found), steps + 1
        if not rules.depth and not within(found, rules.trusted):
            break
    return client


def _hops_right_to_left(values: Sequence[str]) -> Iterable[str]:
    """At most `MAX_HOPS` entries of the header lines, right-most first; a long line is
    split only as far as needed."""
    left = MAX_HOPS
    for value in reversed(values):
        parts = value.rsplit(",", left)
        for part in reversed(parts[-left:]):
            yield part.strip()
        left -= len(parts)
        if left <= 0:
            return


def client_address_of(scope: Scope, rules: ClientIpRules) -> str:
    """The client's address of an ASGI scope (resolved once per request: kept in it)."""
    known = scope.get(CLIENT_IP_KEY)
    if known is not None:
        return str(known)
    client = scope.get("client")
    peer = str(client[0])[:MAX_VALUE_LEN] if client else ""
    forwarded_for: list[str] = []
    real_ip = None
    if rules.trusted and rules.source != "peer":
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(bytes(value).decode("latin-1"))
            elif name == b"x-real-ip":
                real_ip = bytes(value[: MAX_VALUE_LEN + 8]).decode("latin-1")
    found = client_address(rules, peer, forwarded_for, real_ip)
    scope[CLIENT_IP_KEY] = found
    return found


def came_over_https(
    scheme: str, peer: str, forwarded_proto: str | None, rules: ClientIpRules
) -> bool:
    """Whether the browser's connection was https: the server's own scheme, or what a
    trusted proxy says in `X-Forwarded-Proto` (its first value)."""
    if scheme == "https":
        return True
    if forwarded_proto is None or not is_trusted(peer, rules):
        return False
    return forwarded_proto.split(",")[0].strip().lower() == "https"
