"""A streamed body piece framed here, with the bytes h11 would write, without h11's per-event
machinery.

A relay pushes each SSE event through Hypercorn's ASGI `send`. In Hypercorn 0.18 that is
`HTTPStream.app_send` (a `Body` event), `H11Protocol.stream_send` (an `h11.Data`),
`H11Protocol._send_h11_event` (pooler.response_head), `h11.Connection.send` (its state
machine, which leaves our side in SEND_BODY, then its `ChunkedWriter`: the length in hex,
CRLF, the data, CRLF, joined) and a `RawData` for the server's `protocol_send`
(pooler.write_stall): dozens of Python calls per event that decide nothing new
(ops/bench/write_path_cost.py measures the chain).

`frame_chunks_directly` replaces `HTTPStream.app_send` with one that frames a body piece
itself and hands the chunk to the protocol's `send`, as `_send_h11_event` would, when all
of these hold (else Hypercorn and h11 do it, as before):

- the message is a body piece with more to come, its body non-empty `bytes`, and the
  stream has started its response (Hypercorn's state RESPONSE);
- the stream's `send` is `H11Protocol.stream_send` (HTTP/1.1; HTTP/2 goes its own way);
- that protocol's connection is an `h11.Connection` (or pooler.http1_framing's
  `StrictServerConnection`, which changes only how requests are read and response heads
  sent) whose state for our side is SEND_BODY and whose writer is exactly h11's
  `ChunkedWriter`. A Content-Length body keeps h11 (its writer counts the bytes), so does
  an HTTP/1.0 client's unframed one; HEAD, 204 and 304 get a Content-Length writer of 0
  from h11, so a body Hypercorn suppresses never comes here. In SEND_BODY, h11's
  `send(Data)` changes no state and cannot fail: skipping it skips nothing;
- no head is held (pooler.response_head holds heads only for a Content-Length, but a
  response may carry one beside `transfer-encoding: chunked`).

So the bytes on the wire and the writes are the same; the end of the body, every head and
every other message still go through h11, which keeps its state (keep-alive, `connection:
close`, EndOfMessage) right. It relies on Hypercorn's `app_send`, `stream_send` and
`_send_h11_event` and h11's `Connection._cstate.states`, `Connection._writer` and
`ChunkedWriter.send_data` as of Hypercorn 0.18 and h11 0.16, and on
`StrictServerConnection.send` leaving body events alone: `frame_chunks_directly` refuses
to start if one has moved; tests/unit/test_chunked_body.py compares the bytes with h11's.
"""

from __future__ import annotations

from typing import Any

import h11

from pooler.dependency_shape import missing_texts, refuse_if_moved
from pooler.http1_framing import StrictServerConnection
from pooler.response_head import HELD_HEAD

# Connections whose `send` of a body piece is h11's own.
_H11_SENDS = frozenset({h11.Connection, StrictServerConnection})


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body: exactly what h11's ChunkedWriter writes."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _check_shapes() -> None:
    from h11._connection import Connection, _body_framing
    from h11._writers import ChunkedWriter
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.http_stream import HTTPStream

    expected: dict[Any, tuple[str, ...]] = {
        HTTPStream.app_send: ('message["type"] == "http.response.body"', "self.send(", "Body("),
        H11Protocol.stream_send: ("isinstance(event, Body)", "h11.Data(data=event.data)"),
        H11Protocol._send_h11_event: ("self.connection.send(event)", "RawData(data=data)"),
        Connection.send_with_data_passthrough: ("writer = self._writer",),
        # A body Hypercorn suppresses (HEAD, 204, 304) never gets a ChunkedWriter:
        _body_framing: ("event.status_code in (204, 304)", 'request_method == b"HEAD"'),
        Connection.__dict__["our_state"].fget: ("self._cstate.states[self.our_role]",),
        StrictServerConnection.send: ("if type(event) is h11.Response", "super().send(event)"),
        ChunkedWriter.send_data: (
            'write(b"%x\\r\\n" % len(data))',
            "write(data)",
            'write(b"\\r\\n")',
        ),
    }
    refuse_if_moved(missing_texts(expected), "Hypercorn or h11", "pooler.chunked_body")


def frame_chunks_directly() -> None:
    """Install the direct framing (see the module doc). Idempotent."""
    from h11._writers import ChunkedWriter
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

    app_send = HTTPStream.app_send
    if getattr(app_send, "_frames_chunks", False):
        return
    _check_shapes()
    stream_send = H11Protocol.stream_send
    streaming = ASGIHTTPState.RESPONSE
    server, send_body, h11_sends = h11.SERVER, h11.SEND_BODY, _H11_SENDS

    async def app_send_framing(self: HTTPStream, message: Any) -> None:
        if (
            message is not None
            and message["type"] == "http.response.body"
            and message.get("more_body", False)
            and self.state is streaming
        ):
            body = message.get("body", b"")
            send: Any = self.send
            if (
                type(body) is bytes
                and body
                and getattr(send, "__func__", None) is stream_send
                and getattr(send.__self__, HELD_HEAD, None) is None
            ):
                connection = send.__self__.connection
                if (
                    type(connection) in h11_sends
                    and type(connection._writer) is ChunkedWriter
                    and connection._cstate.states[server] is send_body
                ):
                    await send.__self__.send(RawData(data=chunk(body)))
                    return
        await app_send(self, message)

    app_send_framing._frames_chunks = True  # type: ignore[attr-defined]
    app_send_framing.__wrapped__ = app_send  # type: ignore[attr-defined]
    HTTPStream.app_send = app_send_framing  # type: ignore[method-assign]
