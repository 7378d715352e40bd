"""The leader election (`pooler.actors.leader`) against a real PostgreSQL: one of two
candidates leads, its jobs stop the moment its connection dies, the other takes over
within its retry interval, and cancelling a candidate releases the lock."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import trio

from pooler.actors.leader import Leader

RETRY_S = 0.2
CHECK_S = 0.1
KEY = 0x7465_7374_6C65_6164  # not the production key: tests may share a server


class Candidate:
    """A Leader whose `lead()` counts how many terms ran and which are running."""

    def __init__(self, db_url: str, name: str) -> None:
        self.running = 0
        self.stopped = 0
        self.leader = Leader(
            db_url, self.lead, key=KEY, node=name, retry_s=RETRY_S, check_s=CHECK_S
        )

    async def lead(self) -> None:
        self.running += 1
        try:
            await trio.sleep_forever()
        finally:
            self.running -= 1
            self.stopped += 1


async def until(check: Any, seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not check():
            await trio.sleep(0.02)


def lock_holders(db_url: str) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (KEY,),
        ).fetchall()
    return [row[0] for row in rows]


def terminate_leader_backend(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'pooler-leader' AND pid IN"
            " (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_one_leads_and_the_other_takes_over_when_its_connection_dies(db_url: str) -> None:
    a, b = Candidate(db_url, "a"), Candidate(db_url, "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.leader.run)
        await nursery.start(b.leader.run)
        await until(lambda: a.leader.is_leader or b.leader.is_leader)
        await trio.sleep(RETRY_S * 3)  # the other asked again meanwhile, and was refused
        assert [a.leader.is_leader, b.leader.is_leader].count(True) == 1
        assert a.running + b.running == 1
        first, second = (a, b) if a.leader.is_leader else (b, a)

        # The leader's backend dies (as when its process is killed): its jobs stop at
        # once, and the other candidate leads within its retry interval.
        assert await trio.to_thread.run_sync(terminate_leader_backend, db_url) == 1
        await until(lambda: second.leader.is_leader and second.running == 1, 3.0)
        assert first.stopped == 1
        assert first.running == 0
        await trio.sleep(RETRY_S * 3)
        assert not first.leader.is_leader  # the lock is held: it stays a follower
        nursery.cancel_scope.cancel()


async def test_cancelling_the_leader_stops_its_jobs_and_releases_the_lock(db_url: str) -> None:
    a = Candidate(db_url, "a")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def candidate() -> None:
                with scope:
                    await a.leader.run()

            nursery.start_soon(candidate)
            await until(lambda: a.leader.is_leader)
            assert len(await trio.to_thread.run_sync(lock_holders, db_url)) == 1
            scope.cancel()
        assert a.running == 0
        assert a.stopped == 1
        assert not a.leader.is_leader
        await until(lambda: not lock_holders(db_url), 3.0)


async def test_a_database_that_cannot_be_reached_is_retried_not_fatal() -> None:
    a = Candidate("postgresql://nobody@127.0.0.1:1/none", "a")
    with trio.move_on_after(1.0):
        await a.leader.run()  # logs and retries; never raises, never leads
    assert not a.leader.is_leader
    assert a.running == 0


class FreezableProxy:
    """A TCP relay to PostgreSQL that can stop relaying while keeping its sockets open: a
    database that stops answering without closing anything (a network partition)."""

    def __init__(self, upstream_host: str, upstream_port: str) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.frozen = trio.Event()
        self.client_left = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        host, port = self.upstream
        if host.startswith("/"):  # the embedded server listens on a Unix socket
            server: trio.SocketStream = await trio.open_unix_socket(f"{host}/.s.PGSQL.{port}")
        else:
            server = await trio.open_tcp_stream(host, int(port))
        async with client, server, trio.open_nursery() as nursery:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while data := await source.receive_some(65536):
                        if not self.frozen.is_set():  # frozen: read, and drop
                            await sink.send_all(data)
                if source is client:
                    self.client_left.set()  # the leader shut its socket down
                nursery.cancel_scope.cancel()  # and the server sees the connection end

            nursery.start_soon(pump, client, server)
            nursery.start_soon(pump, server, client)


async def test_a_leader_whose_database_stops_answering_stops_leading(db_url: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    proxy = FreezableProxy(str(info.get("host") or "127.0.0.1"), str(info.get("port") or 5432))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve)
            a = Candidate(psycopg.conninfo.make_conninfo(db_url, host="127.0.0.1", port=port), "a")
            a.leader.check_timeout_s = 0.5
            await nursery.start(a.leader.run)
            await until(lambda: a.leader.is_leader)
            b = Candidate(db_url, "b")
            await nursery.start(b.leader.run)

            proxy.frozen.set()  # nothing more reaches the server, nothing comes back
            await until(lambda: not a.leader.is_leader, 3.0)
            assert a.running == 0 and a.stopped == 1  # its jobs stopped at once
            await proxy.client_left.wait()  # it let go of the connection
            await until(lambda: b.leader.is_leader, 5.0)  # so the server freed the lock
            nursery.cancel_scope.cancel()
