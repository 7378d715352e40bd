"""The server's own HTTP/1.1 protocol, in place of Hypercorn's h11-based one (issue 17).

Hypercorn (0.18) serves each connection with its `ProtocolWrapper`, which makes an
`H11Protocol` for every connection that is not HTTP/2 and switches to its `H2Protocol`
when that one raises `H2CProtocolRequiredError` or `H2ProtocolAssumedError`.
`serve_http1_ourselves` makes the wrapper build `pooler.http_server.protocol.Http1Protocol`
instead (the name the wrapper looks up in its module), after checking that Hypercorn still
has the shape that class relies on: the wrapper's construction and switches, the two
exceptions' constructors, and the events its `HTTPStream` and `WSStream` take. Everything
else of Hypercorn's (TCPServer, worker, TLS, lifespan, HTTP/2, the ASGI streams) serves as
before. Parsing and framing live apart from I/O: `request_reader` and `response_writer`.
"""

from __future__ import annotations

import inspect
from typing import Any

from pooler.dependency_shape import missing_texts, refuse_if_moved
from pooler.http_server.protocol import Http1Protocol

__all__ = ["Http1Protocol", "serve_http1_ourselves"]


def _check_shapes() -> None:
    import hypercorn.protocol as wrapper_module
    from hypercorn.protocol import h11 as h11_protocol
    from hypercorn.protocol.http_stream import HTTPStream
    from hypercorn.protocol.ws_stream import WSStream

    wrapper = wrapper_module.ProtocolWrapper
    expected: dict[Any, tuple[str, ...]] = {
        wrapper.__init__: ("self.protocol = H11Protocol(", 'alpn_protocol == "h2"'),
        wrapper.handle: (
            "return await self.protocol.handle(event)",
            "except H2ProtocolAssumedError as error:",
            "except H2CProtocolRequiredError as error:",
            "await self.protocol.initiate(error.headers, error.settings)",
        ),
        h11_protocol.H2CProtocolRequiredError.__init__: (
            '(b":method", request.method), (b":path", request.target)',
            "for name, value in request.headers:",
        ),
        h11_protocol.H2ProtocolAssumedError.__init__: ("self.data = data",),
        HTTPStream.handle: (
            "isinstance(event, Request)",
            "isinstance(event, Body)",
            "isinstance(event, EndBody)",
            "isinstance(event, StreamClosed)",
        ),
        HTTPStream.app_send: (
            "Response(",
            "Body(",
            "await self._send_closed()",
            # read before Response is sent; after it, only the status and trailers
            # (protocol.slim_start)
            "self.response = message",
            'headers = build_and_validate_headers(self.response.get("headers", []))',
            'int(self.response["status"])',
            'self.response.get("trailers", False)',
        ),
        HTTPStream._send_closed: ("EndBody(", "StreamClosed("),
        WSStream.handle: ("isinstance(event, Request)", "isinstance(event, (Body, Data))"),
    }
    missing = missing_texts(expected)
    signature = str(inspect.signature(HTTPStream.__init__))
    for name in ("app", "config", "context", "task_group", "ssl", "client", "server", "send"):
        if name not in signature:
            missing.append(f"HTTPStream({name})")
    refuse_if_moved(missing, "Hypercorn", "pooler.http_server")


def serve_http1_ourselves() -> None:
    """Make Hypercorn serve HTTP/1.1 with `Http1Protocol` (see the module doc). Idempotent."""
    import hypercorn.protocol as wrapper_module

    if getattr(wrapper_module, "H11Protocol", None) is Http1Protocol:
        return
    _check_shapes()
    # The name ProtocolWrapper.__init__ builds its HTTP/1.1 protocol from.
    setattr(wrapper_module, "H11Protocol", Http1Protocol)  # noqa: B010
