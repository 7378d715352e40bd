"""Restarting supervisors: `supervise` one child, or a `Supervisor` of named children.

`supervise()` runs a child again after it raises, within a `RestartBudget`, and escalates
with `SupervisorEscalation` when the budget is spent; a `Supervisor` does the same for a
changing set of named children (the gateway adds and removes account actors at run time),
each in its own cancel scope. `Cancelled` passes through untouched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from pooler.actors.restart import RestartBudget, backoff

if TYPE_CHECKING:
    from pooler.actors.runtime import Actor

__all__ = [
    "ChildHandle",
    "CrashHook",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorStats",
    "open_supervisor",
    "supervise",
]

logger = logging.getLogger("pooler.actors")

# on_crash(actor name, exception, crashes so far of that child, 1-based)
CrashHook = Callable[[str, BaseException, int], None]


class SupervisorEscalation(Exception):
    """A child crashed more often than its `RestartBudget` allows; raised from the last crash."""

    def __init__(self, name: str, last_exc: BaseException) -> None:
        super().__init__(f"actor {name!r} spent its restart budget ({_describe(last_exc)})")
        self.name = name
        self.last_exc = last_exc


@dataclass
class SupervisorStats:
    """What a supervisor saw of one child; read by metrics and the admin UI."""

    name: str
    crashes: int = 0
    restarts: int = 0
    last_crash: str | None = None  # exception type(s), never the message
    last_crash_at: float | None = None  # trio.current_time()


class _ReportOnce:
    """Forwards the first readiness of a child to whoever started its supervisor."""

    def __init__(self, outer: trio.TaskStatus[None]) -> None:
        self._outer = outer
        self.reported = False

    def started(self, value: object = None) -> None:
        if not self.reported:
            self.reported = True
            self._outer.started()


class _Incarnations:
    """The restart loop of one child, with a handle on the incarnation now running."""

    def __init__(
        self,
        name: str,
        child: Callable[..., Awaitable[None]],
        budget: RestartBudget,
        on_crash: CrashHook | None,
        stats: SupervisorStats,
    ) -> None:
        self.name = name
        self.stats = stats
        self._child = child
        self._budget = budget.fresh()
        self._on_crash = on_crash
        self._scope: trio.CancelScope | None = None
        self._injected: Exception | None = None

    @property
    def running(self) -> bool:
        return self._scope is not None

    def crash(self, exc: Exception) -> None:
        """Make the running incarnation end by raising ``exc``, as if the child had."""
        if self._scope is None:
            raise RuntimeError(f"actor {self.name!r} has no running incarnation")
        self._injected = exc
        self._scope.cancel()

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        readiness = _ReportOnce(task_status)
        while True:
            try:
                await self._incarnation(readiness)
                return
            except Exception as exc:
                if not readiness.reported:
                    raise  # never served: the error belongs to whoever awaits start()
                delay = self._crashed(exc)
            await trio.sleep(delay)
            self.stats.restarts += 1

    async def _incarnation(self, readiness: _ReportOnce) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                await self._child(task_status=readiness)
            finally:
                self._scope = None
        injected, self._injected = self._injected, None
        if injected is not None:
            raise injected

    def _crashed(self, exc: Exception) -> float:
        """Count and log a crash; the backoff before the next run, or escalate."""
        now = trio.current_time()
        self.stats.crashes += 1
        self.stats.last_crash = _describe(exc)
        self.stats.last_crash_at = now
        allowed = self._budget.record(now)
        logger.warning(
            "actor %s crashed: %s at %s (crash %d, %s)",
            self.name,
            self.stats.last_crash,
            _where(exc),
            self.stats.crashes,
            "restarting" if allowed else "restart budget spent, escalating",
        )
        if self._on_crash is not None:
            self._on_crash(self.name, exc, self.stats.crashes)
        if not allowed:
            raise SupervisorEscalation(self.name, exc) from exc
        return backoff(self._budget.recent(now) - 1)


async def supervise(
    name: str,
    child: Callable[..., Awaitable[None]],
    *,
    budget: RestartBudget,
    on_crash: CrashHook | None = None,
    stats: SupervisorStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``child(task_status=...)`` and run it again each time it raises an Exception.

    Reports started once the first incarnation is ready; an error before that is raised
    as is (from ``nursery.start``). A clean return ends supervision. A crash is logged
    (name and exception type, never the message), counted in ``stats``, passed to
    ``on_crash`` and charged to a fresh copy of ``budget`` (a policy, shareable between
    children); when the budget is spent this raises `SupervisorEscalation` from the last
    crash. Cancellation passes through untouched.
    """
    loop = _Incarnations(name, child, budget, on_crash, stats or SupervisorStats(name))
    await loop.run(task_status)


class ChildHandle:
    """One child of a `Supervisor`, from start until it stops for good."""

    def __init__(self, loop: _Incarnations, on_exit: Callable[[], None] | None) -> None:
        self.name = loop.name
        self.stats = loop.stats
        self._loop = loop
        self._on_exit = on_exit
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    def __repr__(self) -> str:
        return f"<ChildHandle {self.name!r} running={self.running} stats={self.stats}>"

    @property
    def running(self) -> bool:
        """An incarnation is running now (False while backing off between two)."""
        return self._loop.running

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def crash(self, exc: Exception) -> None:
        """Make the running incarnation raise ``exc`` (fault injection)."""
        self._loop.crash(exc)


class Supervisor:
    """Supervises named children in one nursery; each can be started and stopped alone.

    An escalation from any child propagates out of the nursery and cancels the others.
    """

    def __init__(self, nursery: trio.Nursery, *, on_crash: CrashHook | None = None) -> None:
        self._nursery = nursery
        self._on_crash = on_crash
        self._children: dict[str, ChildHandle] = {}

    @property
    def children(self) -> Mapping[str, ChildHandle]:
        return MappingProxyType(self._children)

    async def start_child(
        self,
        name: str,
        fn: Callable[..., Awaitable[None]],
        *,
        budget: RestartBudget,
        on_crash: CrashHook | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> ChildHandle:
        """Supervise ``fn`` under ``name``; returns once it is ready to serve.

        An error before the child is ready is raised here. ``on_exit`` runs once the
        child stops for good (stopped, returned, escalated or cancelled).
        """
        if name in self._children:
            raise ValueError(f"a child named {name!r} already exists")
        loop = _Incarnations(name, fn, budget, on_crash or self._on_crash, SupervisorStats(name))
        handle = ChildHandle(loop, on_exit)
        self._children[name] = handle
        started = False
        try:
            await self._nursery.start(self._run_child, handle)
            started = True
        finally:
            if not started:
                self._forget(handle)
        return handle

    async def start_actor(
        self, actor: Actor[Any], *, budget: RestartBudget, on_crash: CrashHook | None = None
    ) -> ChildHandle:
        """`start_child` for an `Actor`; its mailbox is closed when it stops for good."""
        return await self.start_child(
            actor.name, actor.run, budget=budget, on_crash=on_crash, on_exit=actor.mailbox.close
        )

    async def stop_child(self, name: str) -> None:
        """Cancel the child ``name`` and wait until it is gone. KeyError if unknown."""
        handle = self._children[name]
        handle._scope.cancel()
        await handle._done.wait()

    async def stop_all(self) -> None:
        """Stop every child and wait until all are gone (a graceful shutdown)."""
        handles = list(self._children.values())
        for handle in handles:
            handle._scope.cancel()
        for handle in handles:
            await handle._done.wait()

    def crash_child(self, name: str, exc: Exception) -> None:
        """Make the running incarnation of ``name`` raise ``exc``, for fault tests."""
        self._children[name].crash(exc)

    async def _run_child(self, handle: ChildHandle, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with handle._scope:
                await handle._loop.run(task_status)
        finally:
            self._forget(handle)
            handle._done.set()
            if handle._on_exit is not None:
                handle._on_exit()

    def _forget(self, handle: ChildHandle) -> None:
        if self._children.get(handle.name) is handle:
            del self._children[handle.name]


@asynccontextmanager
async def open_supervisor(*, on_crash: CrashHook | None = None) -> AsyncIterator[Supervisor]:
    """A `Supervisor` over a new nursery; leaving the block waits for every child."""
    async with trio.open_nursery() as nursery:
        yield Supervisor(nursery, on_crash=on_crash)


def _describe(exc: BaseException) -> str:
    """The exception's type, with the types inside a group; never its message."""
    if isinstance(exc, BaseExceptionGroup):
        inner = ", ".join(_describe(e) for e in exc.exceptions)
        return f"{type(exc).__name__}[{inner}]"
    return type(exc).__name__


def _where(exc: BaseException) -> str:
    """file:line where the exception was raised, without any of its content."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _where(exc.exceptions[0])  # the group's own frame is the nursery's
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
