"""Where the gateway may send a file's bytes: the backend's `upload_url`, checked.

The backend's file-create answer names a signed storage URL and the gateway PUTs the
client's bytes there (protocol §1.9). The URL is not ours, so the gateway must not become a
way to reach addresses inside its own network: loopback, private, link-local, multicast,
unspecified and reserved targets are refused, in IPv4 and IPv6 (an IPv6 address that embeds
an IPv4 one, `::ffff:a.b.c.d`, 6to4 or NAT64, is judged by the IPv4 address). The one
exception is the configured upstream's own origin (the emulator serves its blob store
there, on 127.0.0.1 in tests).

A host is read the way the connecting code reads it. Numeric forms go through the same
parser as the C resolver (`inet_aton`), so `127.1`, `2130706433`, `0x7f000001` and
`0177.0.0.1` are all 127.0.0.1; a name is resolved (`trio.socket.getaddrinfo`) and every
address it resolves to must pass. The connection then goes to the checked address, with the
name kept for the Host header and TLS, so a second lookup cannot answer differently (DNS
rebinding).

`parse_upload_url` and `is_public_address` are pure; `resolve_upload_address` does the I/O.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import trio

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST_NAME: Final = re.compile(r"[A-Za-z0-9.-]{1,253}")
_TARGET: Final = re.compile(r"[!-~]*")  # printable ASCII, no space: one request-line token
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class UnsafeUploadUrl(ValueError):
    """The upload URL may not be followed; the message says why (never the URL)."""


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """A checked upload URL: where to connect and what to ask for."""

    origin: str  # scheme://netloc, for the Host header and TLS
    target: str  # path and query
    host: str
    port: int
    own: bool  # the configured upstream's own origin: not checked further
    address: Address | None  # a numeric host, already checked; None: a name to resolve


def parse_upload_url(url: str, upstream_base_url: str) -> UploadTarget:
    """The target of `url`, or UnsafeUploadUrl. Only https URLs without credentials, whose
    host is a public address or a name, are followed, or URLs on the upstream's own origin."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or IPv6 literal
        raise UnsafeUploadUrl("the upload URL is malformed") from exc
    host = (parts.hostname or "").rstrip(".")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        raise UnsafeUploadUrl("the upload URL is not an http(s) URL with a host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _TARGET.fullmatch(target):
        raise UnsafeUploadUrl("the upload URL's path is not printable ASCII")
    port = port or _DEFAULT_PORTS[scheme]
    origin = f"{scheme}://{parts.netloc}"
    if (scheme, host, port) == _origin_of(upstream_base_url):
        return UploadTarget(origin, target, host, port, own=True, address=None)
    if scheme != "https":
        raise UnsafeUploadUrl("the upload URL is not https")
    address = literal_address(host)
    if address is not None and not is_public_address(address):
        raise UnsafeUploadUrl("the upload URL names a local or private address")
    return UploadTarget(origin, target, host, port, own=False, address=address)


def literal_address(host: str) -> Address | None:
    """The address a numeric host stands for, read as the resolver reads it; None for a
    name. A host that is neither (or `localhost`) is refused."""
    if host == "localhost" or host.endswith(".localhost"):
        raise UnsafeUploadUrl("the upload URL names a local address")
    try:
        return ipaddress.ip_address(host)  # IPv6 (urlsplit took the brackets off) or dotted quad
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host):
        raise UnsafeUploadUrl("the upload URL's host is not a host name")
    try:  # the C resolver's numeric forms: `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_public_address(address: Address) -> bool:
    """Whether `address` is a public unicast address (an IPv6 one that embeds IPv4 is judged
    by the IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
    )


async def resolve_upload_address(target: UploadTarget) -> str:
    """The address to connect to for `target`: its numeric host, or the first address its
    name resolves to when every one of them is public (UnsafeUploadUrl otherwise). The
    upstream's own origin is connected to as configured."""
    if target.own:
        return target.host
    if target.address is not None:
        return str(target.address)
    try:
        found = await trio.socket.getaddrinfo(
            target.host, target.port, type=trio.socket.SOCK_STREAM
        )
    except OSError as exc:
        raise UnsafeUploadUrl("the upload URL's host does not resolve") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found]
    if not addresses:
        raise UnsafeUploadUrl("the upload URL's host does not resolve")
    if not all(is_public_address(address) for address in addresses):
        raise UnsafeUploadUrl("the upload URL's host resolves to a local or private address")
    return str(addresses[0])


def _origin_of(base_url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    return scheme, (parts.hostname or "").rstrip("."), port
