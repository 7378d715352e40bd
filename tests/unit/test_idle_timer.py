"""pooler.idle_timer: Hypercorn's keep-alive timer is one task across requests (another
action is restarted without `nursery.start`), and still does what it did: an idle
keep-alive connection is closed after `keep_alive_timeout`, one serving a request longer
than that is not, and a server shutting down closes its idle connections at once. Driven
through Hypercorn's own server (`hypercorn.trio.serve`)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.trio import serve
from hypercorn.trio.worker_context import TrioSingleTask

from pooler import idle_timer
from pooler.idle_timer import start_idle_timers_soon
from pooler.serving import ServerConfig, hypercorn_config, serve_lifespan

DEADLINE = 20
REQUEST = b"GET /%s HTTP/1.1\r\nhost: x\r\n\r\n"


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["path"] == "/slow":
        await trio.sleep(0.6)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def config(keep_alive_s: float) -> ServerConfig:
    made = hypercorn_config("127.0.0.1", 0)
    made.bind = ["127.0.0.1:0"]
    made.keep_alive_timeout = keep_alive_s
    return made


async def connect(port: int) -> trio.socket.SocketType:
    plain = socket.create_connection(("127.0.0.1", port))
    plain.setblocking(False)
    return trio.socket.from_stdlib_socket(plain)


async def ask(sock: trio.socket.SocketType, path: bytes) -> bytes:
    await sock.send(REQUEST % path)
    answer = b""
    while not answer.endswith(b"\r\n\r\nok"):
        data = await sock.recv(65536)
        assert data, answer
        answer += data
    return answer


async def closed_by_server(sock: trio.socket.SocketType) -> bool:
    return await sock.recv(65536) == b""


def test_restart_does_not_wait_for_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    start_idle_timers_soon()

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the timer's task was started with nursery.start")

    monkeypatch.setattr(trio.Nursery, "start", refuse)
    ran: list[str] = []

    async def timer() -> None:  # as Hypercorn's: its first await is a checkpoint
        await trio.lowlevel.checkpoint()
        ran.append("timing")
        await trio.sleep_forever()

    async def main() -> None:
        with trio.fail_after(DEADLINE):
            await in_a_nursery()

    async def in_a_nursery() -> None:
        async with trio.open_nursery() as nursery:
            group: Any = type("Group", (), {"_nursery": nursery})()
            single = TrioSingleTask()
            await single.restart(group, timer)
            await single.stop()  # before its task ran: it ends at its first checkpoint
            await single.restart(group, timer)
            await trio.testing.wait_all_tasks_blocked()
            assert ran == ["timing"]
            await single.stop()

    trio.run(main)


def test_an_idle_connection_is_closed_and_a_busy_one_is_not() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config(0.3))
            port = int(binds[0].rsplit(":", 1)[1])
            with trio.fail_after(DEADLINE):
                sock = await connect(port)
                assert (await ask(sock, b"a")).startswith(b"HTTP/1.1 200")
                # Busy twice as long as the timeout, then kept alive: the timer was stopped.
                assert (await ask(sock, b"slow")).startswith(b"HTTP/1.1 200")
                assert (await ask(sock, b"b")).startswith(b"HTTP/1.1 200")
                assert await closed_by_server(sock)  # idle: closed by its timer
                sock.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_shutdown_closes_idle_connections_at_once() -> None:
    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:

            async def run_server(task_status: Any) -> None:
                await serve(
                    app, config(75.0), shutdown_trigger=shutdown.wait, task_status=task_status
                )

            binds = await nursery.start(run_server)
            port = int(binds[0].rsplit(":", 1)[1])
            with trio.fail_after(DEADLINE):
                sock = await connect(port)
                assert (await ask(sock, b"a")).startswith(b"HTTP/1.1 200")
                shutdown.set()
                assert await closed_by_server(sock)  # long before its 75 s
                sock.close()

    trio.run(main)


class SpawnedTimers(trio.abc.Instrument):
    """Counts the keep-alive timer tasks started (by their coroutine's name)."""

    def __init__(self) -> None:
        self.count = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        name = task.coro.cr_code.co_name
        self.count += name in ("_keep_alive", "_run_in", "wrapper", "_idle_timeout")


def timer_tasks() -> int:
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += task.coro.cr_code.co_name in ("_keep_alive", "_run_in")
            nurseries.extend(task.child_nurseries)
    return count


def test_one_timer_task_serves_many_requests() -> None:
    """Hypercorn started (and cancelled) a timer task per request."""
    spawned = SpawnedTimers()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config(75.0))
            sock = await connect(int(binds[0].rsplit(":", 1)[1]))
            with trio.fail_after(DEADLINE):
                trio.lowlevel.add_instrument(spawned)
                for _ in range(20):
                    assert (await ask(sock, b"a")).startswith(b"HTTP/1.1 200")
                while timer_tasks() != 1:  # idle now: timed, once the answer is done
                    await trio.sleep(0.01)
                trio.lowlevel.remove_instrument(spawned)
                sock.close()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert spawned.count <= 1


def test_a_long_request_keeps_no_timer_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped timer's task ends after LINGER; the connection is timed again once idle."""
    monkeypatch.setattr(idle_timer, "LINGER", 0.05)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config(0.3))
            sock = await connect(int(binds[0].rsplit(":", 1)[1]))
            with trio.fail_after(DEADLINE):
                await sock.send(REQUEST % b"slow")  # busy for 0.6 s, twice the timeout
                while timer_tasks():  # stopped: its task ends well before the answer
                    await trio.sleep(0.01)
                answer = b""
                while not answer.endswith(b"ok"):
                    answer += await sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200")  # not closed while busy
                while timer_tasks() != 1:  # idle: timed again, once the answer is done
                    await trio.sleep(0.01)
                assert (await ask(sock, b"b")).startswith(b"HTTP/1.1 200")
                assert await closed_by_server(sock)  # and closed by its timer
                sock.close()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_refuses_to_start_if_hypercorn_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercorn.trio import tcp_server, worker_context

    start_idle_timers_soon()  # installed
    restart = worker_context.TrioSingleTask.restart
    monkeypatch.setattr(worker_context.TrioSingleTask, "restart", restart.__wrapped__)  # type: ignore[attr-defined]

    async def idle_timeout(self: Any) -> None:  # a timer of another shape
        pass

    monkeypatch.setattr(tcp_server.TCPServer, "_idle_timeout", idle_timeout)
    with pytest.raises(RuntimeError, match="Hypercorn changed"):
        start_idle_timers_soon()
