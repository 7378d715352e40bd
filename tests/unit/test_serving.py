"""Hypercorn hardening: one connection's failure stays with that connection."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypercorn.trio import tcp_server

from pooler.serving import contained, hypercorn_config


async def test_a_connection_handler_failure_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    async def failing_run(self: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep, 0)
            raise trio.BusyResourceError("another task is currently sending data")

    await contained(failing_run)(object())  # returns instead of raising
    assert "BusyResourceError" in caplog.text


async def test_cancellation_still_ends_a_contained_handler() -> None:
    async def waiting_run(self: Any) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await contained(waiting_run)(object())
    assert scope.cancelled_caught


def test_the_server_config_installs_the_containment() -> None:
    hypercorn_config("127.0.0.1", 0)
    assert getattr(tcp_server.TCPServer.run, "_contained", False)
