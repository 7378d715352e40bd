"""What the Quart-trio app costs per request, against a bare ASGI route table, in-process.

The gateway's app (`pooler.web.app.GatewayApp` with its connection class, request class
and error handlers) and a raw ASGI dispatcher like the one it replaced (a dict of paths to
handlers) serve the same handler: read a 1 KB JSON body, push a small JSON answer. Both are
called directly with an ASGI scope carrying the headers a Codex CLI sends, so the figure
is the framework's own CPU per request, free of sockets, the upstream and the database
(which the full bench adds in equal measure to both). A relayed SSE event costs the same
on both by construction: a relay pushes each event through the server's `send`.

    python ops/bench/app_overhead.py [--requests 20000] [--rounds 5] [--calls]

`--calls` adds the Python function calls per request of each app under cProfile, a
figure that does not move with the machine's noise.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio
from quart import Blueprint
from quart.wrappers import Response

from pooler.web.app import GatewayApp, install_error_handlers
from pooler.web.quart_http import PUSHED, current_request

PATH = "/backend-api/codex/responses"
BODY = orjson.dumps({"model": "gpt-5.5", "input": "x" * 1000, "stream": False})
ANSWER = orjson.dumps({"id": "resp_1", "status": "completed"})
HEADERS = [
    (b"host", b"127.0.0.1:4000"),
    (b"authorization", b"Bearer sk-cxp-" + b"a" * 40),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"accept", b"text/event-stream"),
    (b"user-agent", b"codex_cli_rs/0.169.0 (Linux 6.1; x86_64) xterm"),
    (b"originator", b"codex_cli_rs"),
    (b"version", b"0.169.0"),
    (b"session-id", b"0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    (b"conversation_id", b"0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    (b"openai-beta", b"responses=experimental"),
    (b"accept-encoding", b"gzip, br, zstd"),
]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


async def answer(send: Send) -> None:
    start = {"type": "http.response.start", "status": 200}
    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"req_1")]
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER, "more_body": False})


def quart_app() -> GatewayApp:
    app = GatewayApp()
    codex = Blueprint("codex", __name__)

    @codex.post(PATH)
    async def responses() -> Response:
        request = current_request()
        request.body.limit = 64 * 1024 * 1024
        orjson.loads(await request.body.read())
        await answer(request.send)
        return PUSHED

    app.register_blueprint(codex)
    install_error_handlers(app)
    return app


def raw_app() -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    async def responses(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        orjson.loads(b"".join(chunks))
        await answer(send)

    routes = {PATH: {"POST": responses}}

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        handler = routes.get(scope["path"], {}).get(scope["method"])
        assert handler is not None
        await handler(scope, receive, send)

    return app


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4000),
        "extensions": {},
    }


async def cpu_per_request(app: Any, requests: int) -> float:
    """Microseconds of CPU per request, `requests` served one after the other."""
    sent: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(1)

    for _ in range(200):  # warm-up
        await app(scope(), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await app(scope(), receive, send)
    elapsed = time.process_time() - started
    assert len(sent) == 2 * (requests + 200), "every request must be answered"
    return elapsed / requests * 1e6


async def calls_per_request(app: Any, requests: int) -> float:
    """Python function calls per request under cProfile (after the same warm-up)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(200):
        await app(scope(), receive, send)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        await app(scope(), receive, send)
    profile.disable()
    table: dict[Any, tuple[Any, ...]] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls: int = sum(entry[1] for entry in table.values())
    return calls / requests


async def main(args: argparse.Namespace) -> None:
    apps = {"raw": raw_app(), "quart": quart_app()}
    figures: dict[str, list[float]] = {name: [] for name in apps}
    for round_ in range(args.rounds):
        for name, app in apps.items():
            figures[name].append(await cpu_per_request(app, args.requests))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{n} {v[-1]:.1f} µs" for n, v in figures.items()),
            file=sys.stderr,
        )
    raw, quart = (statistics.median(figures[n]) for n in ("raw", "quart"))
    print("| app | CPU per request (median of rounds) |")
    print("|---|---:|")
    print(f"| raw ASGI route table | {raw:.1f} µs |")
    print(f"| Quart-trio GatewayApp | {quart:.1f} µs |")
    print(f"| difference | {quart - raw:+.1f} µs |")
    if args.calls:
        for name, app in apps.items():
            print(f"{name}: {await calls_per_request(app, 1000):.0f} Python calls per request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", action="store_true", help="count calls under cProfile too")
    trio.run(main, parser.parse_args())
