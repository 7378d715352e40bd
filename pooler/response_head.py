"""One write for a response of known length: its head goes out with its body.

Hypercorn's h11 protocol (0.18) writes a response's head the moment the application starts
it, then its body in a second write: two turns of the connection's send lock and two system
calls for every JSON answer. A response with a `Content-Length` has its body right behind
its head (the gateway's JSON answers and errors, the console's pages), so its head is held
and goes out with the first body bytes, or with the end of a body-less answer (HEAD, 204,
304). Holding it still takes the send's checkpoint (an MCP SDK task relies on one there to
end). A response without a `Content-Length` (SSE, chunked) gets its head at once: its first
event may be seconds away.

If the application fails between its start and its body, the held head is dropped with the
connection, which Hypercorn closes then anyway (before, the client got a head and a closed
connection; now only the closed connection: an error either way).

`coalesce_fixed_length_heads` replaces `H11Protocol._send_h11_event`, checking first that
it still has the shape this relies on; tests/unit/test_response_head.py drives Hypercorn's
own protocol class.
"""

from __future__ import annotations

from typing import Any

import h11
import trio

from pooler.dependency_shape import missing_texts, refuse_if_moved

HELD_HEAD = "_pooler_held_head"  # the attribute holding it (pooler.chunked_body reads it)


def fixed_length(event: object) -> bool:
    """Whether `event` is a final response head announcing its body's length."""
    return (
        type(event) is h11.Response
        and event.status_code >= 200
        and any(name == b"content-length" for name, _ in event.headers)
    )


def coalesce_fixed_length_heads() -> None:
    """Install the held head (see the module doc). Idempotent."""
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol

    original = H11Protocol._send_h11_event
    if getattr(original, "_coalesced", False):
        return
    expected = ("self.connection.send(event)", "h11.LocalProtocolError", "RawData(data=data)")
    missing = missing_texts({original: expected})
    refuse_if_moved(missing, "Hypercorn", "pooler.response_head")

    async def _send_h11_event(self: Any, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if fixed_length(event):
            setattr(self, HELD_HEAD, data)
            await trio.lowlevel.checkpoint()  # a send's checkpoint, as before, not its write
            return
        held = getattr(self, HELD_HEAD, None)
        if held is not None:
            setattr(self, HELD_HEAD, None)
            data = held + (data or b"")
        await self.send(RawData(data=data))

    _send_h11_event._coalesced = True  # type: ignore[attr-defined]
    _send_h11_event.__wrapped__ = original  # type: ignore[attr-defined]
    H11Protocol._send_h11_event = _send_h11_event  # type: ignore[method-assign]
