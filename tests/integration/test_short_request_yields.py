"""A short, non-streamed request through the whole stack yields to the event loop only
where it waits (issue 17: at c=1 every yield is a whole turn of the loop, an
epoll_wait(2) and trio's scheduling). The gateway application's task is suspended, per
request, in waits for something (the upstream's bytes, an actor's reply) and in bare
checkpoints (a yield with nothing to wait for); the bare ones are counted with a trio
Instrument, by where the task was suspended. Nothing here depends on timing."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import trio

from tests.harness import open_stack
from tests.turn_counts import awaiting

DEADLINE = 60
ROUTES = (b"/backend-api/codex/responses", b"/v1/chat/completions")
REQUESTS = 20


def _suspended_in(task: trio.lowlevel.Task) -> str:
    """The name of the trio trap function the task is suspended in (its awaits' chain)."""
    names = awaiting(task)
    return names[-2] if len(names) > 1 else ""


class BareYields(trio.abc.Instrument):
    """Steps of the gateway's application tasks that ended in a bare checkpoint."""

    def __init__(self) -> None:
        self.bare = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        frame = task.coro.cr_frame
        if frame is None or "task_group._handle" not in task.name:
            return
        if type(getattr(frame.f_locals.get("app"), "app", None)).__name__ != "GatewayApp":
            return
        if _suspended_in(task) == "cancel_shielded_checkpoint":
            self.bare += 1


def _body(route: bytes) -> bytes:
    if route.startswith(b"/v1/"):
        body: dict[str, Any] = {
            "model": "gpt-5.4",
            "messages": [{"role": "user", "content": "hi"}],
        }
    else:
        body = {
            "model": "gpt-5.4",
            "instructions": "x",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
            "stream": False,
        }
    return json.dumps(body).encode()


def _client(port: int, key: str, route: bytes, count: int) -> list[bytes]:
    """`count` requests one after another on one keep-alive connection (in a thread: the
    client takes no step in the loop); each answer's head."""
    body = _body(route)
    request = (
        b"POST " + route + b" HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + key.encode()
        + b"\r\ncontent-type: application/json\r\naccept: application/json\r\n"
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )  # fmt: skip
    heads = []
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        for _ in range(count):
            sock.sendall(request)
            buffer = b""
            while True:
                data = sock.recv(65536)
                assert data, "the gateway closed the connection"
                buffer += data
                if b"\r\n\r\n" in buffer:
                    head, rest = buffer.split(b"\r\n\r\n", 1)
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(rest) >= length:
                        heads.append(head)
                        break
    return heads


async def requests_counted(
    port: int, key: str, route: bytes, counter: trio.abc.Instrument, requests: int = REQUESTS
) -> None:
    """`requests` short requests on `route` (after two to warm it) while `counter` is
    installed; each answered 200."""
    await trio.to_thread.run_sync(_client, port, key, route, 2)
    trio.lowlevel.add_instrument(counter)
    try:
        heads = await trio.to_thread.run_sync(_client, port, key, route, requests)
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert all(head.startswith(b"HTTP/1.1 200") for head in heads), heads[0]


async def test_a_short_request_yields_bare_only_to_write_and_rearm_its_timer(
    db_url: str, tmp_path: Path
) -> None:
    """Per request, two bare yields are left: the answer's one write (the server's write
    is a checkpoint) and the keep-alive timer's restart (pooler.idle_timer, its lock).
    Before: ~7 in all on the Codex route (the body's two channel receives, the held
    head's checkpoint, the body end's, the disconnect's channel send besides)."""
    with trio.fail_after(DEADLINE):
        async with open_stack(db_url, tmp_path) as stack:
            port = int(stack.url.rsplit(":", 1)[1])
            for route in ROUTES:
                counter = BareYields()
                await requests_counted(port, stack.key, route, counter)
                assert counter.bare <= 2 * REQUESTS, (route, counter.bare / REQUESTS)
