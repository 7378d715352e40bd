"""The server's HTTP/1.1 protocol: Hypercorn's `H11Protocol` without h11.

Hypercorn's `ProtocolWrapper` serves every connection that is not HTTP/2 with this class
(pooler.http_server.install). It keeps H11Protocol's interface and its conversation with
Hypercorn's other parts, unchanged: the `TCPServer` hands it `RawData` and `Closed`; it
sends `RawData`, `Updated` (the keep-alive timer) and `Closed` back; each request gets one
of Hypercorn's `HTTPStream` (or `WSStream` for a websocket upgrade), fed `Request`, `Body`,
`EndBody`, `Data` and `StreamClosed` exactly when H11Protocol fed them, and answering
through `stream_send`; an `Upgrade: h2c` request (101) and HTTP/2's preface are handed to
Hypercorn's H2Protocol by raising H11Protocol's own two exceptions.

What h11 did is done here directly: requests are read by `RequestReader` (the strict framing
the gateway imposed on h11 before, h11's grammar), and responses are framed by `frame_response` and
written as bytes: a head with a Content-Length is held and goes out in one write with the
first body bytes (as the gateway made h11's writes do before), and so is a streamed answer's
head when the application marks its start with `BODY_FOLLOWS` (its first piece at hand and
sent next; pooler.http_server.response_writer); each piece of a chunked body is one write.
A streamed answer's later pieces may also come through the request's `BODY_PIECES` scope
extension (`PieceWriter`): framed and written straight to the connection, without the
layers of an ASGI send and without the yield after the write (the relay's wait for its
next upstream read is the schedule point): one task step per relayed piece. A streamed
head whose first piece is not at hand goes out at once, and, when the application marks
it with `WAIT_FOLLOWS` (its next step is its wait for that piece), without the yield
after its write either: that wait is the schedule point.
A short request costs as few turns of the event loop as it can: a Content-Length body read
whole goes to the application in one message (with its end), queued without a yield when
the queue has room, and a complete answer's held head, its empty end and its stream's
close (the `http.disconnect` queued) take none either: the answer's write is its one
schedule point (cancellation is still checked at each; tests/unit/test_short_request_turns.py).
The connection's state follows h11's: a request read while the previous answer
is still going waits (pipelining, with the read loop paused as before); an answer that ends
before its request's body says `connection: close` and the connection closes; a client that
said `Connection: close` or speaks HTTP/1.0 gets its answer and the connection closes;
`Expect: 100-continue` is answered with 100 before the body is read; a refused request is
answered (400, 431 or 501, `connection: close`, an OpenAI-shaped body) and the connection
closed, as the gateway answered it before.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import (
    Body,
    Data,
    EndBody,
    Request,
    Response,
    StreamClosed,
)
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H2ProtocolAssumedError
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.task_group import TaskGroup

from pooler.dependency_shape import missing_texts, refuse_if_moved
from pooler.errors import BadRequest
from pooler.http_server.request_reader import Head, Refused, RequestReader
from pooler.http_server.response_writer import (
    BODY_FOLLOWS,
    BODY_PIECES,
    CHUNKED,
    LAST_CHUNK,
    LENGTH,
    WAIT_FOLLOWS,
    Unsendable,
    chunk,
    frame_response,
    informational,
)
from pooler.lean_queues import lean_channel, lean_events
from pooler.write_stall import unyielding_send

STREAM_ID = 1

# The client's side of the exchange (h11's "their state").
IDLE = 0  # waiting for a request's head
BODY = 1  # reading its body
DONE = 2  # its request is complete
SWITCH = 3  # complete, but it proposed a protocol switch: nothing is read until the answer
WEBSOCKET = 4  # every byte goes to the websocket stream
ERROR = 5  # refused: nothing more is read
# Our side ("our state").
RESPONSE = 6  # a request to answer, no head sent yet
SENDING = 7  # the head sent (or held), the body going
SENT = 8  # the answer is complete
FAILED = 9  # the application sent what could not be sent

# What the answer to a refused request says, per status.
_REFUSALS: dict[int, tuple[str, str]] = {
    400: (
        "malformed_http_request",
        "The request is not well-formed HTTP/1.1 (RFC 9112): lines end in CRLF, headers are"
        " not folded, and a request has at most one of Content-Length and Transfer-Encoding."
        " The connection is closed.",
    ),
    431: ("request_header_fields_too_large", "The request head is too large."),
    501: (
        "unsupported_transfer_encoding",
        "Only `Transfer-Encoding: chunked` is supported. The connection is closed.",
    ),
}


def refusal(status: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and OpenAI-shaped body of the answer to a refused request."""
    code, message = _REFUSALS.get(
        status, ("malformed_http_request", "The request is not well-formed HTTP/1.1.")
    )
    body = BadRequest(message, code=code).body_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


def closing(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with `connection: close` unless a Connection header already says close."""
    if any(name == b"connection" and b"close" in value.lower() for name, value in headers):
        return headers
    return [*headers, (b"connection", b"close")]


def is_websocket(head: Head) -> bool:
    """Whether Hypercorn would serve `head` as a websocket handshake."""
    tokens = head.connection.decode("latin1").strip().lower().split(",")
    return (
        any(token.strip() == "upgrade" for token in tokens)
        and head.upgrade.decode("latin1").strip().lower() == "websocket"
        and head.method.decode("ascii").upper() == "GET"
    )


def slim_start(message: Any) -> Any:
    """An `http.response.start` message without its headers: what HTTPStream reads of it
    once the head is sent (its status and whether trailers follow)."""
    return {
        "type": message["type"],
        "status": message["status"],
        "headers": [],
        "trailers": message.get("trailers", False),
    }


# What `_handle_events` and `_close_stream` do for HTTPStream.handle (the whole body in one
# message; a complete answer's StreamClosed without a yield): its Body, EndBody and
# StreamClosed handling, and the application's queue being a trio memory channel whose
# bound `send` the stream keeps as `app_put`.
_COMPLETE = ASGIHTTPState.CLOSED
refuse_if_moved(
    missing_texts(
        {
            HTTPStream.handle: (
                "if self.closed:\n            return",
                'await self.app_put(\n                {"type": "http.request", "body":'
                ' bytes(event.data), "more_body": True}',
                'await self.app_put({"type": "http.request", "body": b"", "more_body": False})',
                "elif isinstance(event, StreamClosed):\n            self.closed = True\n"
                "            if self.state != ASGIHTTPState.CLOSED:",
                'if self.app_put is not None:\n                await self.app_put({"type":'
                ' "http.disconnect"})',
            ),
            TaskGroup.spawn_app: (
                "trio.open_memory_channel",
                "return app_send_channel.send",
            ),
        }
    ),
    "Hypercorn",
    "pooler.http_server.protocol",
)

_RESPONDING = ASGIHTTPState.RESPONSE  # an HTTPStream whose head is sent, its body going
refuse_if_moved(
    missing_texts(
        {
            HTTPStream.app_send: (
                'elif message["type"] == "http.response.body" and self.state =='
                " ASGIHTTPState.RESPONSE:",
                "not suppress_body(",
                'Body(stream_id=self.stream_id, data=bytes(message.get("body", b"")))',
            ),
        }
    ),
    "Hypercorn",
    "pooler.http_server.protocol",
)


class PieceWriter:
    """A request's `BODY_PIECES` extension (pooler.http_server.response_writer): a body
    piece of a chunked answer written as one chunk straight to the connection, without the
    yield after it. What `HTTPStream.app_send` and this protocol's `_send_body` do for a
    non-empty `http.response.body` once the head is sent or held for it (HTTPStream's body
    state, chunked framing, which a suppressed body never has; a held streamed head goes in
    the same write), when the server writes through `pooler.write_stall`; anything else is
    sent the ordinary way.

    It holds its stream weakly: the stream's scope holds the writer, and a strong reference
    back would make every request's stream, scope and what hangs off them garbage only the
    cycle collector frees (three times the young collections, each four times longer, under
    SSE load). The application holds the stream's `send` while it runs, so the stream is
    alive whenever the writer is called."""

    __slots__ = ("_protocol", "_stream")

    def __init__(self, protocol: Http1Protocol, stream: HTTPStream) -> None:
        self._protocol = protocol
        self._stream = weakref.ref(stream)

    async def __call__(self, data: bytes) -> None:
        protocol, stream = self._protocol, self._stream()
        if stream is None:  # the application outlived its stream: nothing to write to
            return
        raw = protocol.raw_send
        if (
            raw is not None
            and data
            and stream.state is _RESPONDING
            and protocol.stream is stream
            and protocol.ours == SENDING
            and protocol.body == CHUNKED
            and not protocol.gone
        ):
            held = protocol.held
            if held is None:
                await raw(b"%x\r\n%b\r\n" % (len(data), data))  # `chunk(data)`, inlined
                return
            if protocol.held_streamed:
                # A streamed head held for this, its first piece (BODY_FOLLOWS): one write
                # for both, as `_write_behind_held` makes it, without the yield after.
                protocol.held = None
                protocol.held_streamed = False
                await raw(held + b"%x\r\n%b\r\n" % (len(data), data))
                return
        await stream.app_send({"type": "http.response.body", "body": data, "more_body": True})


# What an accepted WSStream reads of its handshake from then on (`slim_websocket`).
_ACCEPTED = SimpleNamespace(accepted=True)
refuse_if_moved(
    missing_texts(
        {
            WSStream.handle: ("not self.handshake.accepted",),
            WSStream._accept: ("self.handshake.accept(",),
        }
    ),
    "Hypercorn",
    "pooler.http_server.protocol",
)


def slim_websocket(stream: WSStream) -> None:
    """What an accepted websocket keeps for its life, cut down (a held session keeps it
    idle: ops/bench/idle_memory.py --kind websocket): its handshake (the client's key,
    offers and tokens), of which it reads only that it was accepted, wsproto's queue of
    pending events and the application's queue of messages (pooler.lean_queues)."""
    if getattr(stream, "handshake", None) is not None and stream.handshake.accepted:
        stream.handshake = _ACCEPTED  # type: ignore[assignment]
    connection = getattr(stream, "connection", None)
    if connection is not None:
        lean_events(connection)
    lean_channel(stream.app_put)


class Http1Protocol:
    """One HTTP/1.1 connection (see the module doc); H11Protocol's constructor and methods."""

    def __init__(
        self,
        app: Any,
        config: Any,
        context: Any,
        task_group: Any,
        connection_state: Any,
        ssl: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Awaitable[None]],
    ) -> None:
        self.app = app
        self.can_read = context.event_class()
        self.client = client
        self.config = config
        self.context = context
        self.keep_alive_requests = 0
        self.send = send
        # `send` without its yield after a write, for `PieceWriter` (None: not Hypercorn's
        # stall-bounded TCPServer, e.g. a test's).
        self.raw_send = unyielding_send(send)
        self.server = server
        self.ssl = ssl
        self.stream: HTTPStream | WSStream | None = None
        self.task_group = task_group
        self.connection_state = connection_state
        self.reader = RequestReader(config.h11_max_incomplete_size)
        self.their = IDLE
        self.ours = IDLE
        self.head: Head | None = None
        self.keep_alive = True
        self.switch_pending = False
        self.waiting_100 = False
        self.body = LENGTH
        self.body_left = 0
        self.held: bytes | None = None  # a fixed-length answer's head, sent with its body
        self.held_streamed = False  # `held` is a streamed answer's (BODY_FOLLOWS)
        self.parked = False  # the read loop waits for the answer before the next request
        self.gone = False  # the server reported the connection Closed

    async def initiate(self) -> None:
        pass

    async def handle(self, event: Event) -> None:
        if isinstance(event, RawData):
            self.reader.buffer += event.data
            await self._handle_events()
        elif isinstance(event, Closed):
            self.gone = True
            if self.stream is not None:
                await self._close_stream()
            if self.parked:
                # A pipelined request waits behind an answer that will now never complete
                # (the client left, its write failed): without this the read loop, the
                # socket and this protocol would wait for ever. Often run in the
                # application's own task, which the client's leaving has just cancelled.
                self.parked = False
                with trio.CancelScope(shield=True):
                    await self.can_read.set()
                    await self.send(Closed())  # the server closes the socket

    async def _handle_events(self) -> None:
        reader = self.reader
        while True:
            if self.waiting_100:
                self.waiting_100 = False
                await self._write(informational(100, self.config.response_headers("h11")))
            their = self.their
            try:
                if their == BODY:
                    piece = reader.read_body()
                    if piece is None:
                        if reader.too_long():
                            raise Refused("Receive buffer too long", 431)
                        break
                    if isinstance(piece, bytes):
                        stream = self.stream
                        if stream is None:
                            break
                        if type(stream) is HTTPStream and reader.length_body_read():
                            # The whole body is here (it usually comes with the head): the
                            # application gets it in one message with its end, one channel
                            # send and one receive instead of two of each (each a yield to
                            # the loop). What HTTPStream does for Body then EndBody, at once.
                            reader.read_body()  # its END
                            self.their = SWITCH if self.switch_pending else DONE
                            if not stream.closed:
                                await self._hand_over(
                                    stream.app_put,
                                    {"type": "http.request", "body": piece, "more_body": False},
                                )
                            continue
                        await stream.handle(Body(stream_id=STREAM_ID, data=piece))
                    else:  # the end of the body
                        self.their = SWITCH if self.switch_pending else DONE
                        if self.stream is None:
                            break
                        await self.stream.handle(EndBody(stream_id=STREAM_ID))
                elif their == IDLE:
                    head = reader.read_head()
                    if head is None:
                        break
                    await self._request(head)
                elif their == WEBSOCKET:
                    if reader.buffer:
                        data = bytes(reader.buffer)
                        reader.buffer.clear()
                        if self.stream is not None:
                            await self.stream.handle(Data(stream_id=STREAM_ID, data=data))
                    break
                elif their == ERROR:
                    raise Refused("Can't receive data when peer state is ERROR")
                elif their == DONE and not self.keep_alive:
                    # The connection closes after this answer: nothing more may come
                    # (h11's MUST_CLOSE; what does is refused).
                    if reader.buffer:
                        raise Refused("Got data when expecting EOF")
                    break
                elif their == DONE and not reader.buffer:
                    break
                elif self.gone:
                    # The answer will never complete (the connection was reported Closed
                    # while this loop was busy elsewhere): the next request is not read.
                    with trio.CancelScope(shield=True):
                        await self.send(Closed())  # the server closes the socket
                    break
                else:  # the next request waits until this one's answer is complete
                    await self.can_read.clear()
                    self.parked = True
                    await self.can_read.wait()
                    self.parked = False
                    if self.gone:
                        break
            except Refused as refused:
                self.their = ERROR
                if self.ours == IDLE or self.ours == RESPONSE:
                    await self._send_error_response(refused.status)
                await self.send(Closed())
                break

    async def _request(self, head: Head) -> None:
        self.head = head
        self.their = BODY
        self.ours = RESPONSE
        self.keep_alive = head.keep_alive
        self.switch_pending = head.has_upgrade or head.method == b"CONNECT"
        self.waiting_100 = head.expects_100
        await self.send(Updated(idle=False))
        if head.has_upgrade or head.method == b"PRI":
            await self._check_protocol(head)
        kind: type[HTTPStream] | type[WSStream] = HTTPStream
        if head.has_upgrade and is_websocket(head):
            kind = WSStream
            self.their = WEBSOCKET  # as H11WSConnection: the rest is the websocket's
            self.waiting_100 = False
        stream = kind(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.ssl,
            self.client,
            self.server,
            self.stream_send,
            STREAM_ID,
        )
        self.stream = stream
        await stream.handle(
            Request(
                stream_id=STREAM_ID,
                headers=head.headers,
                http_version=head.http_version.decode(),
                method=head.method.decode("ascii").upper(),
                raw_path=head.target,
                state=self.connection_state,
            )
        )
        if isinstance(stream, HTTPStream) and not stream.closed:
            # No checkpoint since the application's task was started: it has not run yet.
            stream.scope["extensions"][BODY_PIECES] = PieceWriter(self, stream)  # type: ignore[assignment]
        self.keep_alive_requests += 1
        await self.context.mark_request()

    @staticmethod
    async def _hand_over(put: Any, message: dict[str, Any]) -> None:
        """Queue `message` for the application (`put`: its channel's bound `send`) without
        the send's yield to the loop when there is room: the read loop goes on to its next
        read at once, and the application's task, just started, runs in the next batch
        anyway. A cancellation is still seen; a full queue waits as before."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            put.__self__.send_nowait(message)
        except trio.WouldBlock:
            await put(message)

    async def _check_protocol(self, head: Head) -> None:
        """Hand an `Upgrade: h2c` request (without a body) or HTTP/2's preface to HTTP/2,
        as H11Protocol's `_check_protocol` does."""
        if head.upgrade.decode("latin1").strip().lower() == "h2c" and not head.has_body_header:
            headers = [
                *self.config.response_headers("h11"),
                (b"connection", b"upgrade"),
                (b"upgrade", b"h2c"),
            ]
            await self._write(informational(101, headers))
            request = SimpleNamespace(method=head.method, target=head.target, headers=head.headers)
            raise H2CProtocolRequiredError(bytes(self.reader.buffer), request)  # type: ignore[arg-type]
        if head.method == b"PRI" and head.target == b"*" and head.http_version == b"2.0":
            raise H2ProtocolAssumedError(b"PRI * HTTP/2.0\r\n\r\n" + bytes(self.reader.buffer))

    async def stream_send(self, event: Any) -> None:
        kind = type(event)
        if kind is Body:
            await self._send_body(event.data)
        elif kind is Response:
            stream = self.stream
            body_follows = wait_follows = False
            if type(stream) is HTTPStream:
                # HTTPStream keeps the whole `http.response.start` message for the stream's
                # life (its access log, which is off, reads it at the end): a held stream
                # would keep every header it sent (~1.9 KiB of relayed `x-` headers).
                start = stream.response
                body_follows = start.get(BODY_FOLLOWS) is True
                wait_follows = start.get(WAIT_FOLLOWS) is True
                stream.response = slim_start(start)
            headers = [*event.headers, *self.config.response_headers("h11")]
            if event.status_code >= 200:
                if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                    headers.append((b"connection", b"close"))
                await self._send_response(event.status_code, headers, body_follows, wait_follows)
            else:
                await self._send_informational(event.status_code, headers)
                if event.status_code == 101 and type(stream) is WSStream:
                    self.head = None  # a websocket's head is read no more once it is accepted
                    slim_websocket(stream)
        elif kind is EndBody:
            await self._end_body()
        elif kind is Data:
            await self.send(RawData(data=event.data))
        elif kind is StreamClosed:
            await self._maybe_recycle()
        # InformationalResponse (HTTP/2's early hints) and EndData: nothing for HTTP/1.

    def _refuse_send(self, what: str) -> bool:
        """False when the client's side is in error (the send is dropped, as h11's was);
        otherwise the send is refused."""
        if self.their == ERROR:
            return False
        raise Unsendable(f"can't send {what} now")

    async def _send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.ours != RESPONSE:
            self._refuse_send("an informational response")
            return
        self.waiting_100 = False
        await self._write(informational(status, headers))

    async def _send_response(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body_follows: bool = False,
        wait_follows: bool = False,
    ) -> None:
        if self.ours != RESPONSE:
            self._refuse_send("a response")
            return
        self.waiting_100 = False
        if self.their != DONE:
            # An answer that ends before its request's body did closes the connection
            # (Hypercorn closes it): say so (RFC 9112 §9.6) so a client does not reuse it.
            headers = closing(headers)
        head = self.head
        assert head is not None
        try:
            framed = frame_response(
                status, headers, head.method, head.http_version, self.keep_alive
            )
        except Unsendable:
            self.ours = FAILED
            raise
        self.keep_alive = framed.keep_alive
        self.switch_pending = False
        if self.their == SWITCH:
            self.their = DONE
        self.ours = SENDING
        self.body = framed.body
        self.body_left = framed.length
        if framed.declared_length:
            # Its body is right behind it: one write for both. No yield to the loop here:
            # the body's write is the schedule point (a cancellation is still seen first).
            self.held = framed.head
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        if body_follows and framed.body != LENGTH:
            # A streamed answer whose first piece the application has at hand and sends
            # next (BODY_FOLLOWS): one write for both. No yield to the loop here: the
            # piece's write, right behind, is the schedule point (a cancellation is still
            # seen first, as the write's would). Not for a body that cannot come (HEAD,
            # 204, 304: framed as LENGTH).
            await trio.lowlevel.checkpoint_if_cancelled()
            self.held = framed.head
            self.held_streamed = True
            return
        raw = self.raw_send
        if wait_follows and raw is not None and not self.gone:
            # The application's next step is a wait of its own (WAIT_FOLLOWS: a relay's
            # for its upstream's first piece, not at hand): the head written now, without
            # the yield after the write, that wait being the schedule point (a
            # cancellation is still seen first; a write that must wait is stall-bounded).
            await raw(framed.head)
            return
        await self._write(framed.head)

    async def _send_body(self, data: bytes) -> None:
        if self.ours != SENDING:
            self._refuse_send("body data")
            return
        body = self.body
        if body == CHUNKED:
            out = chunk(data) if data else b""
        elif body == LENGTH:
            if len(data) > self.body_left:
                self.ours = FAILED
                raise Unsendable("Too much data for declared Content-Length")
            self.body_left -= len(data)
            out = data
        else:
            out = data
        await self._write_behind_held(out)

    async def _end_body(self) -> None:
        if self.ours != SENDING:
            self._refuse_send("the end of a body")
            return
        if self.body == LENGTH and self.body_left:
            self.ours = FAILED
            raise Unsendable("Too little data for declared Content-Length")
        out = LAST_CHUNK if self.body == CHUNKED else b""
        self.ours = SENT
        await self._write_behind_held(out)

    async def _write_behind_held(self, out: bytes) -> None:
        """Write `out`, behind a held head if there is one (a send stays a checkpoint)."""
        held = self.held
        if held is not None:
            self.held = None
            self.held_streamed = False
            out = held + out
        if out:
            await self._write(out)
        else:
            # Nothing to write (a Content-Length body's end, its bytes written already): no
            # yield to the loop for it, a cancellation still seen.
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _write(self, data: bytes) -> None:
        await self.send(RawData(data=data))

    async def _send_error_response(self, status: int) -> None:
        # Built whole before the one write: the application may be answering the same
        # request concurrently (a trailer can be refused after its head was dispatched).
        headers, body = refusal(status)
        headers.extend(self.config.response_headers("h11"))
        head = self.head
        framed = frame_response(
            status,
            headers,
            None if head is None else head.method,
            None if head is None else head.http_version,
            self.keep_alive,
        )
        self.ours = SENT
        self.keep_alive = False
        await self._write(framed.head + body)

    async def _maybe_recycle(self) -> None:
        await self._close_stream()
        if (
            not self.context.terminated.is_set()
            and self.ours == SENT
            and self.their == DONE
            and self.keep_alive
        ):
            self.their = self.ours = IDLE
            self.head = None
            self.held = None
            self.held_streamed = False
            await self.can_read.set()
            await self.send(Updated(idle=True))
        else:
            if self.held_streamed and not self.gone:
                # The application ended (raised) between a streamed head and its first
                # piece: the head goes out, as it would have without BODY_FOLLOWS.
                await self._write_behind_held(b"")
            await self.can_read.set()
            await self.send(Closed())

    async def _close_stream(self) -> None:
        stream = self.stream
        if stream is None:
            return
        if (
            type(stream) is HTTPStream
            and stream.state is _COMPLETE
            and not stream.closed
            and stream.app_put is not None
        ):
            # Its answer is complete (nobody left: pooler.client_gone has nothing to say):
            # what HTTPStream.handle does for StreamClosed, the application's
            # `http.disconnect` queued without the channel send's yield to the loop (run
            # in the application's task right after its answer's last write, before the
            # keep-alive bookkeeping). A full queue takes the ordinary way.
            try:
                stream.app_put.__self__.send_nowait({"type": "http.disconnect"})  # type: ignore[attr-defined]
            except trio.WouldBlock:
                pass
            else:
                stream.closed = True
                self.stream = None
                return
        await stream.handle(StreamClosed(stream_id=STREAM_ID))
        self.stream = None
