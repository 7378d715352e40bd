"""A connection's keep-alive timer restarted without waiting for its task to start.

Hypercorn's trio worker (0.18) times an idle keep-alive connection with a task it stops when
a request arrives and starts again when the answer is done (`TrioSingleTask`, in
`TCPServer.protocol_send`): twice per request. Its `restart` starts that task with
`nursery.start`, which makes the caller wait, over scheduler turns, for the new task to
hand back its cancel scope before going on. That scope is just `trio.CancelScope()`, made
by the task before it does anything else, so `restart` here makes it itself and starts
the task with `start_soon`: the task runs the same timer (Hypercorn's `_idle_timeout`:
`keep_alive_timeout`, or until the server terminates) inside that scope; `stop` and the
next `restart` cancel it as before, and a scope cancelled before its task entered it
cancels the task at its first checkpoint, before its timer starts.

`restart` keeps its lock, so it is still a checkpoint. This relies on `TrioSingleTask`'s
`_handle` and `_lock` and `_cancel_wrapper`'s shape as of Hypercorn 0.18:
`start_idle_timers_soon` refuses to start if they moved; tests/unit/test_idle_timer.py
drives Hypercorn's own server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pooler.dependency_shape import missing_texts, refuse_if_moved


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


def start_idle_timers_soon() -> None:
    """Install the `restart` described in the module doc. Idempotent."""
    from hypercorn.trio import worker_context

    single_task = worker_context.TrioSingleTask
    original = single_task.restart
    if getattr(original, "_soon", False):
        return
    expected: dict[Any, tuple[str, ...]] = {
        original: (
            "async with self._lock:",
            "self._handle.cancel()",
            "self._handle = await task_group._nursery.start(_cancel_wrapper(action))",
        ),
        worker_context._cancel_wrapper: (
            "cancel_scope = trio.CancelScope()\n        task_status.started(cancel_scope)\n"
            "        with cancel_scope:\n            await func()",
        ),
        single_task.stop: ("async with self._lock:", "self._handle.cancel()"),
    }
    refuse_if_moved(missing_texts(expected), "Hypercorn", "pooler.idle_timer")

    async def restart(self: Any, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        async with self._lock:
            if self._handle is not None:
                self._handle.cancel()
            scope = trio.CancelScope()
            task_group._nursery.start_soon(_run_in, scope, action)
            self._handle = scope

    restart._soon = True  # type: ignore[attr-defined]
    restart.__wrapped__ = original  # type: ignore[attr-defined]
    single_task.restart = restart  # type: ignore[method-assign]
