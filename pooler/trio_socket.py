"""The OS socket under a plain-TCP `trio.SocketStream`, for the hot paths that wait on it
and make one recv(2) or send(2) themselves, without trio's layers: the server's read of its
clients (`pooler.closed_connections`), the upstream clients' reads (`pooler.upstream.http1`,
`pooler.upstream.ws_client`) and the first write of an answer (`pooler.write_stall`).

This reaches into trio (its socket wrapper keeps the OS socket as `_sock`, and
`SocketStream.receive_some` reads it with `recv`): the module refuses to load if trio
changed either.
"""

from __future__ import annotations

import socket

import trio
from trio import _socket as _trio_socket

from pooler.dependency_shape import missing_texts, refuse_if_moved

refuse_if_moved(
    missing_texts(
        {
            _trio_socket._SocketType.__init__: ("self._sock = sock",),
            trio.SocketStream.receive_some: ("self.socket.recv(max_bytes)",),
        }
    ),
    "trio",
    "pooler.trio_socket",
)


def os_socket(sock: trio.socket.SocketType) -> socket.socket:
    """The OS socket `sock` (a trio socket) wraps."""
    return sock._sock  # type: ignore[attr-defined,no-any-return]


def plain_socket(stream: trio.abc.Stream) -> socket.socket | None:
    """The OS socket under `stream` when it is plain TCP (a `trio.SocketStream`), else None
    (TLS, or any other stream)."""
    if type(stream) is trio.SocketStream:
        return os_socket(stream.socket)
    return None
