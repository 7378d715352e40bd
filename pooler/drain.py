"""Draining a gateway process on SIGTERM: the flag /readyz and the websocket route read,
and the schedule (a grace during which the listener still accepts, then a deadline for the
work in flight). Owned by the Gateway; `run_gateway` starts it from the shutdown trigger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

# After the trigger, new connections are still accepted this long: a load balancer keeps
# routing to a node until its readiness probe fails, and those requests should land.
ACCEPT_GRACE_S = 3.0
# The websocket route closes its sockets this long before the HTTP server's own deadline,
# so that each gets its close frame (1012) and its turn's row rather than a cut connection.
SOCKET_MARGIN_S = 1.0


@dataclass(slots=True)
class Drain:
    """`draining` is set once, when the trigger fires; `on_start` callbacks run then (idle
    websockets close), `on_deadline` callbacks when the time for work in flight is up."""

    seconds: float = 30.0
    grace_s: float = ACCEPT_GRACE_S
    draining: bool = False
    deadline_passed: bool = False
    on_start: list[Callable[[], None]] = field(default_factory=list)
    on_deadline: list[Callable[[], None]] = field(default_factory=list)

    @property
    def accept_grace(self) -> float:
        return min(self.grace_s, self.seconds)

    @property
    def server_timeout(self) -> float:
        """Hypercorn's graceful timeout: from the listener's close to the drain deadline."""
        return max(0.0, self.seconds - self.accept_grace)

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        for callback in self.on_start:
            callback()

    def deadline(self) -> None:
        self.deadline_passed = True
        for callback in self.on_deadline:
            callback()


async def deadline_after(drain: Drain) -> None:
    """Fire the drain's deadline callbacks a margin before the HTTP server's own deadline."""
    await trio.sleep(max(0.0, drain.seconds - SOCKET_MARGIN_S))
    drain.deadline()
