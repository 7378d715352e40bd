"""A connection's keep-alive timer, kept across requests instead of a task per request.

Hypercorn's trio worker (0.18) times an idle keep-alive connection with a task it stops when
a request arrives and starts again when the answer is done (`TrioSingleTask`, from
`TCPServer.protocol_send`): twice per request. Each `restart` started a new task with
`nursery.start` (waiting over scheduler turns for it to hand back its cancel scope), under
a lock; the task ran `TCPServer._idle_timeout` (`keep_alive_timeout`, or until the server
terminates, then `_initiate_server_close`, shielded); each `stop` cancelled it. At c=1
that was ~330 Python calls and a task's life per request.

For Hypercorn's own timer (`restart` given a server's `_idle_timeout`) one task now serves
many requests: `restart` sets the deadline (now + `keep_alive_timeout`) on the scope the
running task waits in, and starts a task only when none runs; `stop` marks the timer
stopped and pulls the scope's deadline in to at most `LINGER` s ahead. The task, woken by
its deadline or the server's termination, closes the connection exactly when Hypercorn's
would have (timer running, and its deadline passed or the server terminated) and
otherwise, stopped, ends: a connection serving a long request (a held SSE stream or
websocket session) keeps no timer task past `LINGER`, as before it kept none. A timer
restarted after the server terminated closes the connection at once, as Hypercorn's did.
`end` (from pooler.closed_connections, when the connection can no longer be read) ends the
task at once. `restart` and `stop` no longer checkpoint (nothing awaits in them).

Any other action is run as before, in a task per `restart`, started with `start_soon` in a
scope made here (the scope `_cancel_wrapper` made first thing), so `restart` does not wait
for it. This relies on `TrioSingleTask`'s `_handle` and `_lock`, `_cancel_wrapper`'s and
`TCPServer._idle_timeout`'s shape as of Hypercorn 0.18: `start_idle_timers_soon` refuses
to start if they moved; tests/unit/test_idle_timer.py drives Hypercorn's own server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pooler.dependency_shape import missing_texts, refuse_if_moved

# How long a stopped keep-alive timer's task waits for a restart before it ends: longer than
# a short request takes, short against a held stream's life.
LINGER = 1.0


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


async def _keep_alive(timer: Any, server: Any) -> None:
    """Hypercorn's `_idle_timeout` over many idle periods (see the module doc). On `timer`,
    the connection's TrioSingleTask: `_deadline` is None while stopped, `_alive` the scope
    this task waits in, `_running` whether this task is alive, `_ended` set by `end`."""
    terminated = server.context.terminated
    try:
        while True:
            deadline = timer._deadline
            if deadline is not None and terminated.is_set():
                break
            if deadline is None:
                deadline = trio.current_time() + LINGER
            scope = timer._alive = trio.CancelScope(deadline=deadline)
            with scope:
                await terminated.wait()
            timer._alive = None
            if timer._ended:
                return
            if timer._deadline is None:  # stopped
                if terminated.is_set() or trio.current_time() >= scope.deadline:
                    return  # and not restarted: ends, as Hypercorn's stopped task did
            elif terminated.is_set() or trio.current_time() >= timer._deadline:
                break  # idle until its deadline, or the server terminated
    finally:
        timer._running = False
        timer._alive = None
    with trio.CancelScope(shield=True):
        await server._initiate_server_close()


def end(timer: Any) -> None:
    """End a connection's timer now, whichever kind runs (the connection is over)."""
    timer._ended = True
    timer._deadline = None
    for scope in (timer._alive, timer._handle):
        if scope is not None:
            scope.cancel()
    timer._handle = None


def start_idle_timers_soon() -> None:
    """Install the `restart` and `stop` described in the module doc. Idempotent."""
    from hypercorn.trio import tcp_server, worker_context

    single_task = worker_context.TrioSingleTask
    original = single_task.restart
    if getattr(original, "_soon", False):
        return
    idle_timeout = tcp_server.TCPServer._idle_timeout
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
        single_task.__init__: ("self._handle: trio.CancelScope | None = None",),
        idle_timeout: (
            "with trio.move_on_after(self.config.keep_alive_timeout):\n"
            "            await self.context.terminated.wait()\n\n"
            "        with trio.CancelScope(shield=True):\n"
            "            await self._initiate_server_close()",
        ),
    }
    refuse_if_moved(missing_texts(expected), "Hypercorn", "pooler.idle_timer")
    # The keep-alive timer's state, as class defaults: stopped, no task.
    single_task._deadline = None  # type: ignore[attr-defined]
    single_task._alive = None  # type: ignore[attr-defined]
    single_task._running = False  # type: ignore[attr-defined]
    single_task._ended = False  # type: ignore[attr-defined]

    async def restart(self: Any, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        if getattr(action, "__func__", None) is idle_timeout:
            server: Any = action.__self__  # type: ignore[attr-defined]
            self._deadline = trio.current_time() + server.config.keep_alive_timeout
            if self._running:
                scope = self._alive
                if scope is not None and not scope.cancel_called:
                    scope.deadline = self._deadline
                # else the task, woken, finds the new deadline and waits again
            elif not self._ended:
                self._running = True
                task_group._nursery.start_soon(_keep_alive, self, server)
            return
        async with self._lock:
            if self._handle is not None:
                self._handle.cancel()
            scope = trio.CancelScope()
            task_group._nursery.start_soon(_run_in, scope, action)
            self._handle = scope

    async def stop(self: Any) -> None:
        self._deadline = None
        scope = self._alive
        if scope is not None:
            scope.deadline = min(scope.deadline, trio.current_time() + LINGER)
        if self._handle is None:
            return
        async with self._lock:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = None

    restart._soon = True  # type: ignore[attr-defined]
    restart.__wrapped__ = original  # type: ignore[attr-defined]
    single_task.restart = restart  # type: ignore[method-assign]
    single_task.stop = stop  # type: ignore[method-assign]
