"""Request smuggling shapes (RFC 9112 §2.2, §5.2, §6.1, §6.3) against the real gateway.

Each malformed request is sent on a raw socket with a second, honest-looking request behind
it: the gateway answers once (400, or h11's 501 for an unknown Transfer-Encoding), closes
the connection, and the request behind it never reaches the upstream.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h11
import pytest
import trio
from harness import Stack, open_stack, parse_sse, responses_body

from pooler.http_server.request_reader import END, Head, Refused, RequestReader
from pooler.serving import hypercorn_config

DEADLINE = 30
STATUS_LINE = re.compile(rb"(?:^|\n)HTTP/1\.1 (\d{3}) ")


def smuggled(stack: Stack) -> bytes:
    """A complete request a confused parser would serve after the front one."""
    body = json.dumps(responses_body("smuggled")).encode()
    return (
        b"POST /backend-api/codex/responses HTTP/1.1\r\nHost: pooler\r\n"
        + f"Authorization: Bearer {stack.key}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def front(head: bytes, body: bytes = b"") -> bytes:
    return b"POST /backend-api/codex/responses HTTP/1.1\r\nHost: pooler\r\n" + head + body


# name: (bytes before the smuggled request, expected status)
SHAPES: dict[str, tuple[bytes, int]] = {
    # Content-Length and Transfer-Encoding together: h11 framed it as chunked (CL.TE/TE.CL).
    "cl_te": (front(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"), 400),
    "te_cl": (front(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", b"0\r\n\r\n"), 400),
    # Bare LF line endings, in the head or only at its end.
    "bare_lf": (b"GET /healthz HTTP/1.1\nHost: pooler\n\n", 400),
    "bare_lf_end": (b"GET /healthz HTTP/1.1\r\nHost: pooler\r\nX-A: b\n\r\n", 400),
    "bare_cr": (b"GET /healthz HTTP/1.1\r\nHost: pooler\r\nX-A: b\rc\r\n\r\n", 400),
    # obs-fold: a header continued on the next line.
    "obs_fold": (b"GET /healthz HTTP/1.1\r\nHost: pooler\r\nX-A: b\r\n c\r\n\r\n", 400),
    "obs_fold_tab": (
        front(b"Content-Length: 0\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n", b"0\r\n\r\n"),
        400,
    ),
    # Chunked trailers end where a proxy sees them end too.
    "trailer_bare_lf": (
        front(
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"0\r\nX-T: 1\n\n",
        ),
        400,
    ),
    # Transfer-Encoding in HTTP/1.0 (§6.1: faulty framing).
    "te_http10": (
        b"POST /backend-api/codex/responses HTTP/1.0\r\nHost: pooler\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # Refused by h11 itself; kept here so an upgrade cannot loosen them unnoticed.
    "cl_conflict": (front(b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", b"{}   "), 400),
    "cl_list_conflict": (front(b"Content-Length: 5, 6\r\n\r\n", b"{}   "), 400),
    "cl_negative": (front(b"Content-Length: -1\r\n\r\n"), 400),
    "cl_plus": (front(b"Content-Length: +5\r\n\r\n", b"{}   "), 400),
    "cl_hex": (front(b"Content-Length: 0x5\r\n\r\n", b"{}   "), 400),
    "te_gzip_chunked": (front(b"Transfer-Encoding: gzip, chunked\r\n\r\n", b"0\r\n\r\n"), 501),
    "te_chunked_twice": (
        front(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"),
        501,
    ),
    "te_not_chunked": (front(b"Transfer-Encoding: xchunked\r\n\r\n", b"0\r\n\r\n"), 501),
    "space_before_colon": (
        front(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n", b"0\r\n\r\n"),
        400,
    ),
}


async def exchange(stack: Stack, data: bytes) -> bytes:
    """Send `data` on a fresh connection; everything the gateway answers until it closes."""
    port = int(stack.url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    async with stream:
        await stream.send_all(data)
        while chunk := await stream.receive_some(65536):
            received += chunk
    return bytes(received)


async def test_smuggling_shapes_are_refused_and_closed(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            for name, (data, status) in SHAPES.items():
                # The read ends only when the gateway closes the connection.
                answer = await exchange(stack, data + smuggled(stack))
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(f"HTTP/1.1 {status} ".encode()), (name, answer[:200])
                assert len(STATUS_LINE.findall(answer)) == 1, (name, answer)  # one answer only
                assert b"connection: close" in head.lower(), name
                assert body, (name, answer)
                error = json.loads(body)["error"]
                assert error["type"] == "invalid_request_error", name
                assert error["code"] in (
                    "malformed_http_request",
                    "unsupported_transfer_encoding",
                ), name
                assert error["param"] is None and error["message"], name
            # Nothing behind a refused request was served.
            assert await stack.upstream_requests() == []

            # The next honest request, on a new connection, works and is logged.
            async with stack.client() as client:
                response = await client.post("/backend-api/codex/responses", json=responses_body())
                assert response.status_code == 200, response.text
                assert parse_sse(response.text)[-1]["type"] == "response.completed"
            await stack.wait_for_logs(1)
            assert len(await stack.upstream_requests()) == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_honest_framing_still_works_on_a_raw_socket(
    db_url: str, tmp_path: Path, chunked: bool
) -> None:
    """CRLF heads, a chunked body with a trailer, and keep-alive: served, twice on one
    connection (the strict reader refuses only what RFC 9112 says to)."""
    async with open_stack(db_url, tmp_path) as stack:
        body = json.dumps(responses_body()).encode()
        framing = (
            b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
            if chunked
            else f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        request = (
            b"POST /backend-api/codex/responses HTTP/1.1\r\nHost: pooler\r\n"
            + f"Authorization: Bearer {stack.key}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + framing
        )
        last = request.replace(b"Host: pooler\r\n", b"Host: pooler\r\nConnection: close\r\n")
        with trio.fail_after(DEADLINE):
            answer = await exchange(stack, request + last)
        assert [m.group(1) for m in STATUS_LINE.finditer(answer)] == [b"200"] * 2, answer[:300]
        assert answer.count(b"response.completed") >= 2


def read_events(data: bytes, *, piece: int) -> list[object]:
    """What the server's request reader reads from `data` fed in pieces of `piece` bytes:
    its head, its body pieces, END."""
    reader = RequestReader(16 * 1024)
    events: list[object] = []
    for start in range(0, len(data), piece):
        reader.buffer += data[start : start + piece]
        while True:
            event = reader.read_body() if events else reader.read_head()
            if event is None:
                break
            events.append(event)
            if event is END:
                return events
    return events


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_a_head_arriving_in_pieces_is_checked_whole(piece: int) -> None:
    honest = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    events = read_events(honest, piece=piece)
    assert isinstance(events[0], Head) and events[-1] is END
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"abc"
    for name in ("bare_lf_end", "obs_fold", "cl_te", "trailer_bare_lf"):
        with pytest.raises(Refused) as refused:
            read_events(SHAPES[name][0], piece=piece)
        assert refused.value.status == 400, name


def test_the_containments_are_installed_once() -> None:
    import hypercorn.protocol as wrapper_module
    from hypercorn.protocol import ws_stream

    hypercorn_config("127.0.0.1", 0)
    patched = (getattr(wrapper_module, "H11Protocol"), ws_stream.WSStream._handle_events)  # noqa: B009
    hypercorn_config("127.0.0.1", 0)
    assert (getattr(wrapper_module, "H11Protocol"), ws_stream.WSStream._handle_events) == patched  # noqa: B009


async def read_response(stream: trio.SocketStream, client: h11.Connection) -> h11.Response:
    """The next whole response on `stream` (its body read and dropped)."""
    response: h11.Response | None = None
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response


async def test_an_answer_before_the_whole_body_says_it_closes(db_url: str, tmp_path: Path) -> None:
    """Hypercorn closes a connection whose response ended before the request body did; the
    response must say so, or a client that then finishes its body reuses a dead connection.
    A response that does not say so leaves the connection usable (tried many times: whether
    a small body has been read when the 401 starts is a race)."""
    async with open_stack(db_url, tmp_path) as stack:
        partial = front(
            b"Authorization: Bearer sk-cxp-forged\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n",
            b'{"model":',
        )
        with trio.fail_after(DEADLINE):
            answer = await exchange(stack, partial)  # ends only when the gateway closes
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 401 "), answer[:200]
        assert b"connection: close" in head

        post = h11.Request(
            method="POST",
            target="/backend-api/codex/responses",
            headers=[
                ("host", "pooler"),
                ("authorization", "Bearer sk-cxp-forged"),
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
        )
        health = h11.Request(method="GET", target="/healthz", headers=[("host", "pooler")])
        with trio.fail_after(DEADLINE):
            for _ in range(30):
                stream = await trio.open_tcp_stream("127.0.0.1", stack.running.port)
                async with stream:
                    client = h11.Connection(h11.CLIENT)
                    for event in (post, h11.Data(data=b"{}"), h11.EndOfMessage()):
                        await stream.send_all(client.send(event) or b"")
                    response = await read_response(stream, client)
                    assert response.status_code == 401
                    if dict(response.headers).get(b"connection") == b"close":
                        continue
                    client.start_next_cycle()
                    for event in (health, h11.EndOfMessage()):
                        await stream.send_all(client.send(event) or b"")
                    assert (await read_response(stream, client)).status_code == 200
