"""The suite's `free_port`: a port a child process binds later must not be one the kernel
may hand to an outgoing connection in the meantime."""

from __future__ import annotations

import random
import socket

import pytest
from harness import LOWEST_TEST_PORT, _ports_given, ephemeral_port_range, free_port


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low, _ = ephemeral_port_range()
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert LOWEST_TEST_PORT <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        _ports_given.discard(taken)
        picks = iter([taken, taken + 1])
        monkeypatch.setattr(random, "choice", lambda _candidates: next(picks))
        assert free_port() == taken + 1
