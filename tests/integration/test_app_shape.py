"""The gateway's Quart-trio app where Quart's defaults would fight a gateway: no response
timeout on a long stream, a body read only when the handler asks for it, errors in the
client's JSON shape (routing, methods, a bug in a handler), no redirects, no `Server`
header. Served by Hypercorn with the gateway's own configuration, on a test blueprint
(the runtime routes are covered by the other tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
from hypercorn.trio import serve
from quart import Blueprint
from quart.wrappers import Response

from pooler.serving import bound_port, hypercorn_config
from pooler.web.app import APP_CONFIG, GatewayApp, install_error_handlers
from pooler.web.quart_http import PUSHED, current_request, json_response

DEADLINE = 20
STREAM_EVENTS, EVENT_GAP_S = 6, 0.25


def shape_app(body_read: trio.Event) -> GatewayApp:
    app = GatewayApp()
    probe = Blueprint("probe", __name__)

    @probe.post("/stream")
    async def stream() -> Response:
        send = current_request().send
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(STREAM_EVENTS):
            await trio.sleep(EVENT_GAP_S)
            event = b"data: %d\n\n" % i
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return PUSHED

    @probe.post("/early")
    async def early() -> Response:
        await trio.sleep(0.3)  # the client has sent a part of its body meanwhile
        return json_response({"received": current_request().body.size})

    @probe.post("/read")
    async def read() -> Response:
        request = current_request()
        request.body.limit = 1024
        body = await request.body
        body_read.set()
        seen = {"bytes": len(body), "agent": request.headers.get("User-Agent")}
        return json_response({**seen, "host": request.host, "path": request.path})

    @probe.get("/bug")
    async def bug() -> Response:
        raise RuntimeError("a bug in a handler")

    app.register_blueprint(probe)
    install_error_handlers(app)
    # Quart's own timeouts, tiny: the gateway's connection must not apply them.
    app.config.update(RESPONSE_TIMEOUT=0.5, BODY_TIMEOUT=0.5)
    return app


@asynccontextmanager
async def served(app: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        config = hypercorn_config("127.0.0.1", 0)
        binds = await nursery.start(partial(serve, app, config, mode="asgi"))
        base = f"http://127.0.0.1:{bound_port(binds)}"
        async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as client:
            yield client
        nursery.cancel_scope.cancel()


def test_the_app_turns_off_quarts_timeouts_and_caps() -> None:
    assert APP_CONFIG["RESPONSE_TIMEOUT"] is None and APP_CONFIG["BODY_TIMEOUT"] is None
    assert APP_CONFIG["MAX_CONTENT_LENGTH"] is None
    assert GatewayApp().url_map.merge_slashes is False


async def test_a_stream_outlasts_quarts_response_timeout() -> None:
    async with served(shape_app(trio.Event())) as client:
        with trio.fail_after(DEADLINE):
            answer = await client.post("/stream")
    assert answer.status_code == 200
    assert answer.text.count("data: ") == STREAM_EVENTS  # 1.5 s of events, not 0.5 s


async def test_the_body_is_read_only_when_the_handler_asks() -> None:
    """A handler that answers first never makes the server read the body: none of the
    64 KiB the client sent reached the app (Quart reads every body at once, in a second
    task), and the answer says the connection closes."""
    body_read = trio.Event()
    async with served(shape_app(body_read)) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000000\r\n\r\n" + b" " * 65536
                )
                answer = b""
                while chunk := await stream.receive_some(65536):  # the server closes
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert b"connection: close" in answer and answer.endswith(b'{"received":0}')
            too_big = await client.post("/read", content=b"x" * 2048)
            assert too_big.status_code == 413
            assert too_big.json()["error"]["code"] == "request_too_large"
            honest = await client.post("/read", content=b"x" * 10, headers={"user-agent": "t/1"})
            assert honest.json() == {
                "bytes": 10,
                "agent": "t/1",  # Quart's own view of the headers is whole
                "host": f"{host}:{port}",
                "path": "/read",
            }
            assert body_read.is_set()


async def test_errors_are_json_in_the_clients_shape(caplog: pytest.LogCaptureFixture) -> None:
    async with served(shape_app(trio.Event())) as client:
        with trio.fail_after(DEADLINE):
            missing = await client.get("/nowhere")
            wrong_method = await client.get("/stream")
            options = await client.options("/stream")
            doubled = await client.post("//stream")
            with caplog.at_level(logging.ERROR, logger="pooler.web"):
                bug = await client.get("/bug")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unsupported_endpoint")
    assert "/nowhere" in missing.json()["error"]["message"]
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    assert options.status_code == 405  # no automatic OPTIONS answers
    assert doubled.status_code == 404, doubled.headers  # not a redirect to /stream
    assert bug.status_code == 500 and bug.json()["error"]["message"] == (
        "internal error in the gateway"
    )
    assert "Traceback" not in bug.text and "a bug in a handler" not in bug.text
    assert any("unhandled error on GET /bug" in r.getMessage() for r in caplog.records)
    for answer in (missing, wrong_method, bug):
        assert answer.headers["content-type"] == "application/json"
        assert "server" not in answer.headers and "date" in answer.headers
