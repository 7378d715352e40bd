"""How the gateway's Quart-trio app meets an HTTP request: three places where Quart's
defaults fight a gateway, configured here (DESIGN §1, §8).

- **The body is read when the handler asks for it** (`PulledBody`). Quart-trio reads
  every body at once into memory in a second task, before the handler runs; the gateway
  reads it only after it has authenticated the caller and taken an admission slot, so the
  bodies in memory at once are bounded by a bulkhead, and an unread body keeps the
  server's flow control (Hypercorn stops reading the socket).
- **A relay answers by pushing** (`request.send`, then `return PUSHED`). Quart sends a
  response's head when the handler returns, then iterates its body. A relay decides its
  status on the upstream's first byte, holding the lease, the admission slot and the
  upstream socket in `async with` blocks of one function (failover happens before that
  byte, DESIGN §2), and an SSE event costs one `send` with nothing in between. So the
  relays write to the ASGI `send` themselves; every other answer is an ordinary Quart
  response, and every error raised before an answer started goes through the app's error
  handlers.
- **No per-request tasks and no response timeout.** Quart-trio opens a nursery with two
  tasks per request and cancels a response after `RESPONSE_TIMEOUT` (a Codex turn can
  stream for many minutes); here the handler runs in the request's own task. A relay
  learns that its client left from the server, synchronously (pooler.client_gone), with
  no task of its own; a page that holds a response open (the console's live views) waits
  for `http.disconnect` (`wait_for_disconnect`), which the server still sends.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Generator, Iterable
from typing import IO, Any, cast
from urllib.parse import urlsplit

import orjson
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.formparser import FormDataParser
from quart.globals import _cv_request
from quart.helpers import _split_blueprint_path
from quart.wrappers import Response
from quart.wrappers.base import BaseRequestWebsocket
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.datastructures import Headers
from werkzeug.datastructures import headers as werkzeug_headers
from werkzeug.sansio.request import Request as SansIORequest
from werkzeug.sansio.utils import get_content_length
from werkzeug.utils import cached_property

from pooler.dependency_shape import missing_texts, refuse_if_moved
from pooler.errors import BodyTooLarge, PoolerError
from pooler.web.asgi import ClientDisconnected, Message, Receive, Scope, Send


class PulledBody(TrioBody):
    """A request body that asks the server for each chunk only when it is read.

    Iterated (Quart's form parser does) or awaited whole; refused with BodyTooLarge as
    soon as it passes `limit` bytes (set by the route before reading; Quart's own
    `max_content_length` is unused)."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        self.receive: Receive | None = None
        # The server's queue of messages when `receive` is a trio memory channel's (as
        # Hypercorn's trio worker gives it): a message already queued (a short request's
        # whole body, which came with its head) is taken without the receive's yield to
        # the loop, a cancellation still checked first. See `_next_chunk`.
        self.queue: trio.MemoryReceiveChannel[Message] | None = None
        self.limit = max_content_length
        self.size = 0
        self.done = False
        self._whole: bytes | None = None
        self._handed = False

    def __aiter__(self) -> PulledBody:
        return self

    async def __anext__(self) -> bytes:
        if self._whole is not None:  # read whole already (see `read`): handed over once
            if self._handed:
                raise StopAsyncIteration
            self._handed = True
            return self._whole
        while not self.done:
            chunk = await self._next_chunk()
            if chunk:
                return chunk
        raise StopAsyncIteration

    async def _next_chunk(self) -> bytes:
        assert self.receive is not None, "the connection sets receive before the handler runs"
        queue = self.queue
        message: Message | None = None
        if queue is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            with contextlib.suppress(trio.WouldBlock):
                message = queue.receive_nowait()
        if message is None:
            message = await self.receive()
        if message["type"] == "http.disconnect":
            self.done = True
            raise ClientDisconnected
        if not message.get("more_body", False):
            self.done = True
        chunk: bytes = message.get("body", b"")
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise BodyTooLarge(f"request body is larger than {self.limit} bytes")
        return chunk

    def __await__(self) -> Generator[Any, None, bytes]:
        return self.read().__await__()

    async def read(self) -> bytes:
        """The whole body (read once; later calls return the same bytes, and iterating
        it then yields them as one chunk).

        A form is parsed from the whole body, never from the chunks as they arrived:
        werkzeug's multipart decoder (3.1) hands a part a stray CR when a chunk ends
        inside the closing `--boundary--` (tests/unit/test_v1_multipart.py)."""
        if self._whole is None:
            chunks: list[bytes] = []
            while not self.done:
                chunk = await self._next_chunk()
                if chunk:
                    chunks.append(chunk)
            self._whole = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._whole

    def append(self, data: bytes) -> None:  # Quart's push API: nothing pushes here
        raise NotImplementedError("PulledBody is read from the server, not pushed to")

    def set_complete(self) -> None:
        raise NotImplementedError("PulledBody is read from the server, not pushed to")

    def clear(self) -> None:
        self._whole = None


class SoleTaskLock:
    """Quart's per-request form-parsing lock, for a request handled by one task (a
    `trio.Lock` per request cost ~0.8 KiB for as long as a stream is held)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def in_memory_stream(
    total_content_length: int | None,
    content_type: str | None,
    filename: str | None,
    content_length: int | None = None,
) -> IO[bytes]:
    """Where Quart's form parser puts an uploaded file: memory, never a temporary file
    (file bytes are never written anywhere; the body's size is already bounded)."""
    return io.BytesIO()


class GatewayRequest(TrioRequest):
    """Quart's request, with a body read on demand and the server's `send` for relays."""

    body_class = PulledBody
    lock_class = SoleTaskLock  # type: ignore[assignment]
    body: PulledBody
    scope: Scope  # type: ignore[assignment]  # the plain dict the server passes
    send: Send
    receive: Receive

    def make_form_data_parser(self) -> FormDataParser:
        return self.form_data_parser_class(
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.parameter_storage_class,
            stream_factory=in_memory_stream,
        )

    # Quart reads `blueprints` three times a request (before-request, after-request and
    # teardown functions), each time re-deriving it from the endpoint through three
    # properties; the chain depends only on the endpoint, so it is computed once per
    # endpoint (`_blueprint_chain`). Same values as Quart's (tests/unit/test_quart_hot_path.py).
    @property
    def blueprint(self) -> str | None:
        rule = self.url_rule
        return None if rule is None else _blueprint_chain(rule.endpoint)[0]

    @property
    def blueprints(self) -> list[str]:
        rule = self.url_rule
        return _NO_BLUEPRINTS if rule is None else _blueprint_chain(rule.endpoint)[1]

    async def wait_for_disconnect(self) -> None:
        """Return when the client goes away (call it once the body has been read; any
        body left unread is discarded)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass


class Pushed(Response):
    """What a handler returns when it has answered through `request.send` itself."""


PUSHED = Pushed(b"", status=200)


async def _no_push_promise(path: str, headers: Headers) -> None:
    """HTTP/2 server push: the gateway never pushes."""


class GatewayHTTPConnection(TrioASGIHTTPConnection):
    """One HTTP request: the handler runs in this task, its body unread until asked for."""

    def _create_request_from_scope(self, send: ASGISendCallable) -> GatewayRequest:
        """Quart's request, its header names decoded once per process (`header_name`), its
        header list and content length each built in one pass (werkzeug's `Headers.add`
        re-checked every value; its content length scanned the headers twice)."""
        scope = self.scope
        headers = Headers()
        raw = scope["headers"]
        pairs = [
            ("Remote-Addr", (scope.get("client") or ["<local>"])[0]),
            *[(_header_name(name), value.decode("latin-1")) for name, value in raw],
        ]
        values = b"".join([value for _, value in raw])
        if b"\n" not in values and b"\r" not in values:
            # What `Headers.add` would store, without its per-value checks: no value here
            # holds a CR or LF (the one thing it refuses), and names and values are str.
            headers._list = pairs  # shape checked at import (HEADERS_SHAPE)
        else:
            for name_str, value_str in pairs:
                headers.add(name_str, value_str)  # raises as Quart's own request would
        if scope["http_version"] < "1.1":
            headers.setdefault("Host", self.app.config["SERVER_NAME"] or "")
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if path[:1] != "/":
            path = urlsplit(path).path
        if root_path:
            path = path.removeprefix(root_path) if path.startswith(root_path) else " "
        request_class = self.app.request_class
        request = request_class.__new__(request_class)
        # werkzeug's `content_length` (a cached_property, which Quart's Request.__init__
        # reads) set beforehand from the headers at hand: one first-wins dict, not two
        # `Headers.get` scans (the second, for a Transfer-Encoding nearly never sent,
        # lowers every name and raises and catches a KeyError). Names here are title case.
        first = dict(reversed(headers._list))
        request.__dict__["content_length"] = get_content_length(
            first.get("Content-Length"), first.get("Transfer-Encoding")
        )
        request.__init__(  # type: ignore[misc]
            scope["method"],
            scope["scheme"],
            path,
            scope["query_string"],
            headers,
            root_path,
            scope["http_version"],
            max_content_length=None,
            body_timeout=None,
            send_push_promise=_no_push_promise,
            scope=scope,
        )
        return cast(GatewayRequest, request)

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        request.receive = request.body.receive = receive  # type: ignore[assignment]
        queue = getattr(receive, "__self__", None)
        if type(queue) is trio.MemoryReceiveChannel:
            request.body.queue = queue
        request.send = send  # type: ignore[assignment]
        response = await self.app.handle_request(request)
        if response is PUSHED:
            return
        # A handler that failed after pushing its head leaves the error handler's answer
        # nowhere to go: the server refuses a second head, and the connection closes.
        with contextlib.suppress(Exception):
            await self._send_response(send, response)


def current_request() -> GatewayRequest:
    """The request being handled (one context lookup, not Quart's proxy per attribute)."""
    return _cv_request.get().request  # type: ignore[return-value]


def error_response(
    error: PoolerError, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> Response:
    """`error` as the client's JSON error answer."""
    headers = Headers()
    for name, value in (*error.headers(), *extra_headers):
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    return Response(error.body_bytes(), status=error.status, headers=headers)


def json_response(
    payload: Any, status: int = 200, extra_headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """`payload` as a JSON answer (orjson, like every other body the gateway writes)."""
    headers = Headers([("content-type", "application/json"), *extra_headers])
    return Response(orjson.dumps(payload), status=status, headers=headers)


_NO_BLUEPRINTS: list[str] = []  # shared, like Quart's own lists: callers only read it


@functools.lru_cache(maxsize=1024)
def _blueprint_chain(endpoint: str) -> tuple[str | None, list[str]]:
    """An endpoint's blueprint and its chain of blueprint names, innermost first, as
    Quart's `BaseRequestWebsocket.blueprint` and `.blueprints` give them (endpoints are
    the app's registered rules: the cache holds each once)."""
    if "." not in endpoint:
        return None, _NO_BLUEPRINTS
    blueprint = endpoint.rsplit(".", 1)[0]
    return blueprint, _split_blueprint_path(blueprint)


@functools.lru_cache(maxsize=512)
def _header_name(raw: bytes) -> str:
    """A header name as Quart's request keeps it (title case), decoded once per process
    (a bounded cache: a client inventing names cannot grow it)."""
    return raw.decode("latin-1").title()


# What the request construction and `GatewayRequest.blueprint(s)` rely on: Headers keep
# their (name, value) pairs in `_list` and refuse only a value with a CR or LF; a request's
# `content_length` is werkzeug's function of its first two such headers, cached in the
# instance's __dict__; Quart derives a request's blueprints from its endpoint as
# `_blueprint_chain` does.
HEADERS_SHAPE: dict[Any, tuple[str, ...]] = {
    Headers.__init__: ("self._list: list[tuple[str, str]] = []",),
    Headers.add: ("value_str = _str_header_value(value)", "self._list.append((key, value_str))"),
    werkzeug_headers._str_header_value: (
        "if _newline_re.search(value) is not None:",
        "return value",
    ),
    vars(SansIORequest)["content_length"].fget: (
        "return get_content_length(",
        'http_content_length=self.headers.get("Content-Length"),',
        'http_transfer_encoding=self.headers.get("Transfer-Encoding"),',
    ),
    cached_property.__get__: ("value: _T = obj_dict.get(self.__name__, _missing)",),
    vars(BaseRequestWebsocket)["blueprint"].fget: ('return self.endpoint.rsplit(".", 1)[0]',),
    vars(BaseRequestWebsocket)["blueprints"].fget: (
        "if self.blueprint is not None:",
        "return _split_blueprint_path(self.blueprint)",
    ),
}
refuse_if_moved(missing_texts(HEADERS_SHAPE), "Quart or werkzeug", "pooler.web.quart_http")
