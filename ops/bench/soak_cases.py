"""The soak's traffic: honest requests and every hostile input of issue 11, one coroutine each.

Each case sends one request (or one connection's worth) to the gateway and returns a short
label for what came back (`"200"`, `"413"`, `"closed"`, `"error-frame"`, ...). A case whose
answer has an `x-request-id` adds it to `Tally.request_ids`: the gateway must have written a
request-log row for each. Websocket turns have no id on the wire, so they are counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
import trio_websocket
import wsproto
import wsproto.events as ws_events
import zstandard

CASE_TIMEOUT_S = 60.0
ROUTE = "/backend-api/codex/responses"


@dataclass
class Target:
    port: int
    key: str  # the Pool's plain key
    policy_key: str  # a key limited to gpt-5.5 at max:low

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)  # "case answer" -> count
    request_ids: set[str] = field(default_factory=set)
    ws_turns: int = 0  # turns the gateway answered (response.completed or an error frame)
    failures: list[str] = field(default_factory=list)  # unexpected answers, first few kept

    def saw(self, case: str, answer: str, *, expected: set[str]) -> None:
        self.answers[f"{case} {answer}"] += 1
        if answer not in expected and len(self.failures) < 50:
            self.failures.append(f"{case}: {answer} (expected {sorted(expected)})")


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def responses_body(model: str = "gpt-5.5", **extra: Any) -> dict[str, Any]:
    return {"model": model, "stream": True, "store": False, "input": [message("ok")], **extra}


def _note(tally: Tally, response: httpx.Response) -> str:
    rid = response.headers.get("x-request-id")
    if rid:
        tally.request_ids.add(rid)
    return str(response.status_code)


Case = Callable[[httpx.AsyncClient, Target, Tally], Awaitable[None]]


# --- honest traffic ----------------------------------------------------------------------


async def honest_sse(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    async with client.stream("POST", ROUTE, json=responses_body()) as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    answer = _note(tally, response)
    if b"response.completed" not in body:
        answer += "-incomplete"
    tally.saw("honest_sse", answer, expected={"200"})


async def honest_chat(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    body = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post("/v1/chat/completions", json=body)
    tally.saw("honest_chat", _note(tally, response), expected={"200"})


async def honest_websocket(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    url = f"ws://127.0.0.1:{target.port}{ROUTE}"
    headers = [("authorization", f"Bearer {target.key}")]
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
        for _ in range(3):
            await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
            kind = await _read_turn(ws)
            tally.ws_turns += 1
            tally.saw("honest_ws_turn", kind, expected={"response.completed"})


async def _read_turn(ws: trio_websocket.WebSocketConnection) -> str:
    while True:
        kind = json.loads(await ws.get_message()).get("type", "")
        if kind in ("response.completed", "response.failed", "error"):
            return str(kind)


# --- hostile: bodies and headers ---------------------------------------------------------


async def nul_in_model(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    chat = {"model": "x\u0000", "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post("/v1/chat/completions", json=chat)
    tally.saw("nul_model_v1", _note(tally, response), expected={"400", "404"})
    response = await client.post(ROUTE, json=responses_body("gpt-5.5\u0000\x1b[31m"))
    tally.saw("nul_model_codex", _note(tally, response), expected={"400", "404"})


async def unknown_model(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    chat = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post("/v1/chat/completions", json=chat)
    tally.saw("unknown_model", _note(tally, response), expected={"400", "404"})


async def malformed_input(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    response = await client.post(ROUTE, json={**responses_body(), "input": 5})
    tally.saw("input_5", _note(tally, response), expected={"400"})


async def zstd_bomb(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    headers = {"content-type": "application/json", "content-encoding": "zstd"}
    response = await client.post(ROUTE, content=_BOMB, headers=headers)
    tally.saw("zstd_bomb", _note(tally, response), expected={"413"})


_BOMB: bytes = b""


def prepare() -> None:
    """Build the zstd bomb once (compressing 60 MiB takes a moment)."""
    global _BOMB
    inner = b'{"model":"gpt-5.5","input":"' + b"a" * (60 * 1024 * 1024) + b'"}'
    _BOMB = zstandard.ZstdCompressor(level=3).compress(inner)


async def oversize_body(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    body = json.dumps({**responses_body(), "pad": "a" * (80 * 1024 * 1024)}).encode()
    try:
        response = await client.post(
            ROUTE, content=body, headers={"content-type": "application/json"}
        )
        answer = _note(tally, response)
    except httpx.TransportError:
        answer = "closed"  # the gateway may close before reading the rest: fine
    tally.saw("oversize_body", answer, expected={"413", "closed"})


async def deep_nesting(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    body = b'{"model":"gpt-5.5","input":' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = await client.post(ROUTE, content=body, headers={"content-type": "application/json"})
    tally.saw("deep_nesting", _note(tally, response), expected={"400"})


async def forged_keys(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=target.base, timeout=CASE_TIMEOUT_S) as anon:
        for auth in (None, "Bearer sk-cxp-forged", "Bearer " + target.key[:-2] + "xx", "Basic x"):
            headers = {"authorization": auth} if auth else {}
            response = await anon.post(ROUTE, json=responses_body(), headers=headers)
            tally.saw("forged_key", _note(tally, response), expected={"401"})


BAD_FILE_IDS = ("x%3Fpurpose=evil&a=", "..", "file-a%2F..%2Fb", "file%20a", "file-\u00e9", "a#b")


async def bad_file_ids(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    for bad in BAD_FILE_IDS:
        response = await client.post(f"/backend-api/files/{bad}/uploaded", json={})
        tally.saw("bad_file_id", _note(tally, response), expected={"400", "404"})


async def nul_filename(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    files = {"file": ("a\x00b\x1b.txt", b"hello", "text/plain")}
    response = await client.post("/v1/files", files=files, data={"purpose": "user_data"})
    tally.saw("nul_filename", _note(tally, response), expected={"400"})


# --- hostile: raw connections --------------------------------------------------------------


async def _raw_exchange(target: Target, request: bytes, *, wait_s: float = 10.0) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", target.port)
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.move_on_after(wait_s):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received


def _status_of(raw: bytes) -> str:
    if not raw:
        return "closed"
    statuses = [
        line.split()[1].decode() for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")
    ]
    return "+".join(statuses) or "garbled"


SMUGGLING = {
    "cl_and_te": (
        b"POST /backend-api/codex/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "bare_lf": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "obs_fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
}


async def smuggling(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    for name, request in SMUGGLING.items():
        answer = _status_of(await _raw_exchange(target, request))
        tally.saw(f"smuggling_{name}", answer, expected={"400", "closed"})


async def slow_body(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    """One byte a second of a 2,000-byte body: the gateway must answer (408) and close
    before the client finishes, long before 2,000 s."""
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {target.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", target.port)
    answer = "still-open"
    async with stream:
        await stream.send_all(head)
        with trio.move_on_after(120):
            async with trio.open_nursery() as nursery:

                async def drip() -> None:
                    for _ in range(2000):
                        await stream.send_all(b" ")
                        await trio.sleep(1)

                nursery.start_soon(drip)
                received = b""
                try:
                    while chunk := await stream.receive_some(65536):
                        received += chunk
                except trio.BrokenResourceError:
                    pass
                answer = _status_of(received)
                for line in received.split(b"\r\n"):
                    if line.lower().startswith(b"x-request-id:"):
                        tally.request_ids.add(line.split(b":", 1)[1].strip().decode())
                nursery.cancel_scope.cancel()
    tally.saw("slow_body", answer, expected={"408", "closed"})


async def websocket_fragments(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    """A text message that never ends: 64 KiB continuation fragments until the gateway
    closes the socket, at most 256 MiB. Answer: how many MiB it took."""
    connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", target.port)
    sent = 0
    answer = "never-closed"
    async with stream:
        request = ws_events.Request(
            host="127.0.0.1",
            target=ROUTE,
            extra_headers=[(b"authorization", f"Bearer {target.key}".encode())],
        )
        await stream.send_all(connection.send(request))
        connection.receive_data(await stream.receive_some(65536))
        if not any(isinstance(e, ws_events.AcceptConnection) for e in connection.events()):
            tally.saw("ws_fragments", "refused-handshake", expected={"closed"})
            return
        fragment = "a" * 65536
        try:
            while sent < 256 * 1024 * 1024:
                data = connection.send(ws_events.TextMessage(fragment, message_finished=False))
                await stream.send_all(data)
                sent += len(fragment)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            answer = "closed"
    tally.saw("ws_fragments", answer, expected={"closed"})
    tally.answers[f"ws_fragments MiB-before-close<={(sent >> 20) + 1}"] += 1


BAD_FRAMES = (
    '{"type":"response.create","model":"gpt-5.4","reasoning":{"effort":"xhigh"},"x":NaN}',
    '{"type":"response.create","model":"gpt-5.4","x":Infinity}',
    '{"type":"response.create","model":"gpt-5.4","x":"\\ud800"}',
    '{"type":"response.create","model":"gpt-5.4","x":' + "[" * 1200 + "]" * 1200 + "}",
)


async def websocket_bad_frames(client: httpx.AsyncClient, target: Target, tally: Tally) -> None:
    """Frames orjson cannot parse, on a key limited to gpt-5.5 at max:low: each must be
    refused in band (an error frame), never run on gpt-5.4."""
    url = f"ws://127.0.0.1:{target.port}{ROUTE}"
    headers = [("authorization", f"Bearer {target.policy_key}")]
    for frame in BAD_FRAMES:
        try:
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                await ws.send_message(frame)
                kind = await _read_turn(ws)
                tally.ws_turns += 1
        except trio_websocket.ConnectionClosed:
            kind = "closed"
        tally.saw("ws_bad_frame", kind, expected={"error"})


HONEST: tuple[Case, ...] = (honest_sse, honest_chat, honest_websocket)
HOSTILE: tuple[Case, ...] = (
    nul_in_model,
    unknown_model,
    malformed_input,
    zstd_bomb,
    oversize_body,
    deep_nesting,
    forged_keys,
    bad_file_ids,
    nul_filename,
    smuggling,
    websocket_fragments,
    websocket_bad_frames,
)
