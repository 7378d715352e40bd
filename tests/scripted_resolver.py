"""A scripted DNS for tests: trio's hostname resolver hook answers the names given (with
the addresses given) and nothing else, so a test can make a name resolve to a local address
without touching the machine's resolver. Numeric hosts never reach it (trio reads them
itself)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio


class ScriptedResolver(trio.abc.HostnameResolver):
    """Names resolve to the addresses given; anything else does not resolve."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        self.asked.append(name)
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "no such name")
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, int(port), 0, 0) if ":" in a else (a, int(port)),
            )
            for a in self.answers[name]
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
        raise NotImplementedError


@contextmanager
def scripted_resolver(answers: dict[str, list[str]]) -> Iterator[ScriptedResolver]:
    scripted = ScriptedResolver(answers)
    previous = trio.socket.set_custom_hostname_resolver(scripted)
    try:
        yield scripted
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
