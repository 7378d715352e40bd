"""What an established wsproto connection keeps for a held websocket session, cut down.

wsproto's `Connection` keeps a queue of pending events, a `deque` (~600 bytes even when
empty), which only ever holds the close event that `receive_data(None)` queues; every
other event is made from the frames as `events()` is iterated. A held session has two
such connections (the client's, in Hypercorn's `WSStream`, and the upstream's, in
`pooler.upstream.ws_client`), so `lean_events` swaps the queue for an empty list with a
`popleft` (56 bytes), which serves the same three uses. This reaches into wsproto's
internals: the module refuses to load if they moved (ops/bench/idle_memory.py --kind
websocket measures what a held session keeps).
"""

from __future__ import annotations

from typing import Any

from wsproto.connection import Connection

from pooler.dependency_shape import missing_texts, refuse_if_moved

refuse_if_moved(
    missing_texts(
        {
            Connection.__init__: ("self._events: deque[Event] = deque()",),
            Connection.receive_data: (
                "self._events.append(CloseConnection(code=CloseReason.ABNORMAL_CLOSURE))",
            ),
            Connection.events: ("while self._events:", "yield self._events.popleft()"),
        }
    ),
    "wsproto",
    "pooler.wsproto_lean",
)


class LeanEvents(list[Any]):
    """wsproto's pending-event queue as a list: `append`, truth and `popleft`."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def lean_events(connection: Connection) -> Connection:
    """`connection` with its pending-event queue swapped for a `LeanEvents` (events
    already queued kept, in order). Idempotent."""
    pending = connection._events
    if type(pending) is not LeanEvents:
        connection._events = LeanEvents(pending)  # type: ignore[assignment]
    return connection
