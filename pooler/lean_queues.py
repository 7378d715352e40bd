"""The queues a held websocket session keeps empty for its life, as lists.

An empty `collections.deque` is ~760 bytes (its first block is allocated with it); an
empty list is 56. A held session has three that stay empty while it idles, each in a
dependency: wsproto's queue of pending events, in the client's connection (Hypercorn's
`WSStream`) and in the upstream's (`pooler.upstream.ws_client`), which only ever holds the
close event that `receive_data(None)` queues (every other event is made from the frames
as `events()` is iterated); and trio's memory channel between Hypercorn and the
application (`TaskGroup.spawn_app`, at most `max_app_queue_size` messages). Each is
swapped for a `LeanQueue`: a list with `popleft`, which serves every use they make of it
(append, popleft, len, truth, clear). This reaches into wsproto's and trio's internals:
the module refuses to load if they moved (ops/bench/idle_memory.py --kind websocket
measures what a held session keeps).
"""

from __future__ import annotations

from typing import Any

from trio import MemorySendChannel
from trio._channel import MemoryChannelState, MemoryReceiveChannel
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
    "pooler.lean_queues",
)
refuse_if_moved(
    missing_texts(
        {
            MemoryChannelState: ("data: deque[T] = attrs.Factory(deque)",),
            MemorySendChannel.send_nowait: ("self._state.data.append(value)",),
            MemoryReceiveChannel.receive_nowait: ("return self._state.data.popleft()",),
        }
    ),
    "trio",
    "pooler.lean_queues",
)


class LeanQueue(list[Any]):
    """A deque's first-in-first-out uses, on a list (for queues of a few items at most)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def lean_events(connection: Connection) -> Connection:
    """`connection` with its pending-event queue a `LeanQueue` (events already queued
    kept, in order). Idempotent."""
    pending: Any = connection._events
    if type(pending) is not LeanQueue:
        connection._events = LeanQueue(pending)  # type: ignore[assignment]
    return connection


def lean_channel(send: Any) -> None:
    """The buffer of the memory channel that `send` (a bound `MemorySendChannel.send`)
    writes to, as a `LeanQueue`; anything else is left as it is."""
    channel = getattr(send, "__self__", None)
    if type(channel) is MemorySendChannel:
        state = channel._state
        data: Any = state.data
        if type(data) is not LeanQueue:
            state.data = LeanQueue(data)  # type: ignore[assignment]
