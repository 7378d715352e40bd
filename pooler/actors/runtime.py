"""The actor runtime: bounded mailboxes, request/reply under a deadline, restarting supervisors.

An actor is one Trio task that owns its state and a bounded `Mailbox`; other tasks only send
it messages. `call()` sends a request carrying a `ReplyTo` and waits for the answer under a
deadline. `supervise()` runs a child again after it raises, within a `RestartBudget`, and
escalates with `SupervisorEscalation` when the budget is spent; a `Supervisor` does the same
for a changing set of named children (the gateway adds and removes account actors at run
time), each in its own cancel scope.

    Exception
    ├── ActorDead             the actor's mailbox is closed, or it dropped the request
    ├── CallTimeout           no reply within the deadline given to call()
    └── SupervisorEscalation  a child crashed more often than its budget allows

Convention: a request message keeps its `ReplyTo` in a field named ``reply_to``. `Actor`
then answers ActorDead for a request whose handler died, and `Mailbox.close` does the same
for requests still queued, so their callers do not wait for their deadline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar, cast

import trio

from pooler.actors.restart import RestartBudget, backoff

__all__ = [
    "Actor",
    "ActorDead",
    "CallTimeout",
    "ChildHandle",
    "CrashHook",
    "Handler",
    "Mailbox",
    "ReplyTo",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorStats",
    "call",
    "open_supervisor",
    "supervise",
]

M = TypeVar("M")
R = TypeVar("R")

logger = logging.getLogger("pooler.actors")

# on_crash(actor name, exception, crashes so far of that child, 1-based)
CrashHook = Callable[[str, BaseException, int], None]


class ActorDead(Exception):
    """The actor is gone: its mailbox is closed, or it dropped the request unanswered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"actor {name!r} is not running")
        self.name = name


class CallTimeout(Exception):
    """A call() was not delivered and answered within its deadline."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"no reply from actor {name!r} within {timeout:g}s")
        self.name = name
        self.timeout = timeout


class SupervisorEscalation(Exception):
    """A child crashed more often than its `RestartBudget` allows; raised from the last crash."""

    def __init__(self, name: str, last_exc: BaseException) -> None:
        super().__init__(f"actor {name!r} spent its restart budget ({_describe(last_exc)})")
        self.name = name
        self.last_exc = last_exc


# ---------------------------------------------------------------- mailboxes and calls


class Mailbox(Generic[M]):
    """A bounded queue of messages for one actor; the actor reads `receive_channel`."""

    def __init__(self, capacity: int, *, name: str = "actor") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("a mailbox needs a finite capacity >= 0")
        self.name = name
        self.capacity = capacity
        self.overflows = 0
        self.closed = False
        self._send, self.receive_channel = trio.open_memory_channel[M](capacity)

    async def send(self, message: M) -> None:
        """Deliver ``message``, waiting while the mailbox is full."""
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            raise ActorDead(self.name) from None

    def try_send(self, message: M) -> bool:
        """Deliver ``message`` without waiting; False if full (counted in `overflows`) or closed.

        For fire-and-forget messages (a lease release, a snapshot push) sent from a loop
        that must not stall on one slow or dead actor.
        """
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.overflows += 1
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return False
        return True

    def close(self) -> None:
        """Stop for good: later sends raise ActorDead, queued requests are answered ActorDead."""
        self.closed = True
        while True:
            try:
                message = self.receive_channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            _drop_request(message)
        self.receive_channel.close()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class ReplyTo(Generic[R]):
    """The one-shot answer slot of a call(). Answering never blocks and never raises."""

    __slots__ = ("_answered", "_channel")

    def __init__(self, channel: trio.MemorySendChannel[object]) -> None:
        self._channel = channel
        self._answered = False

    @property
    def answered(self) -> bool:
        return self._answered

    def send(self, value: R) -> bool:
        """Answer with ``value``; False if already answered or the caller went away."""
        return self._put(value)

    def fail(self, exc: Exception) -> bool:
        """Make the caller's call() raise ``exc``; False if nobody will see it."""
        return self._put(_Failure(exc))

    def close(self) -> None:
        """Give up on the request: the caller's call() raises ActorDead."""
        if not self._answered:
            self._answered = True
            self._channel.close()

    def _put(self, item: object) -> bool:
        if self._answered:
            return False
        self._answered = True
        try:
            self._channel.send_nowait(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the caller passed its deadline or was cancelled
        return True


def _drop_request(message: object) -> None:
    reply_to = getattr(message, "reply_to", None)
    if isinstance(reply_to, ReplyTo):
        reply_to.close()


# call() is the edge where a request meets an actor, so its deadline is a parameter here and
# nowhere else (STYLE 5): the value comes from settings, applied by the caller.
async def call(
    mailbox: Mailbox[M],
    make_message: Callable[[ReplyTo[R]], M],
    *,
    timeout: float,  # noqa: ASYNC109
) -> R:
    """Send ``make_message(reply_to)`` and return the answer, all within ``timeout`` seconds.

    Raises:
        CallTimeout: not delivered or not answered in time.
        ActorDead: the mailbox is closed, or the request was dropped unanswered.
        Exception: whatever the actor passed to ``reply_to.fail()``.
    """
    reply_send, reply_receive = trio.open_memory_channel[object](1)
    reply: object = None
    with reply_receive:  # closed on the way out, so a late answer finds nobody and is dropped
        with trio.move_on_after(timeout) as deadline:
            await mailbox.send(make_message(ReplyTo(reply_send)))
            try:
                reply = await reply_receive.receive()
            except trio.EndOfChannel:
                raise ActorDead(mailbox.name) from None
        if deadline.cancelled_caught:
            raise CallTimeout(mailbox.name, timeout)
    if isinstance(reply, _Failure):
        raise reply.exc
    return cast(R, reply)


# A handler decides without awaiting; it may return an effect (an awaitable) that the actor
# awaits before its next message, e.g. starting children on a new configuration.
Handler = Callable[[Any], Awaitable[None] | None]


class Actor(Generic[M]):
    """One task, one mailbox, one dispatch table. Subclasses fill `handlers`.

    `run` is what a supervisor runs: `setup`, then readiness, then one message at a time,
    each looked up by its exact type in `handlers`. A message of a type not in the table is
    logged (its type, never its content) and dropped; a request among those is answered
    ActorDead at once. The mailbox outlives incarnations, so requests queued during a
    restart are served by the next one; `Supervisor.start_actor` closes it when the actor
    stops for good. A request whose handler raised or was cancelled is answered ActorDead.
    """

    def __init__(self, name: str, *, capacity: int = 0, mailbox: Mailbox[M] | None = None) -> None:
        """A new mailbox of ``capacity``, or ``mailbox`` when the owner made it already."""
        self.name = name
        self.mailbox: Mailbox[M] = mailbox if mailbox is not None else Mailbox(capacity, name=name)
        self.handlers: dict[type, Handler] = {}
        self.unknown_messages = 0

    async def setup(self) -> None:
        """Get ready to serve (load a token, restore state). Runs before readiness."""

    async def handle(self, message: M) -> None:
        """Dispatch ``message`` and perform the effect its handler returned, if any."""
        effect = self.dispatch(message)
        if effect is not None:
            await effect

    def dispatch(self, message: object) -> Awaitable[None] | None:
        """The decision for ``message`` (no await): its handler's result."""
        handler = self.handlers.get(type(message))
        if handler is None:
            self.unknown(message)
            return None
        return handler(message)

    def unknown(self, message: object) -> None:
        """The one policy for a message nobody handles: count, log the type, drop."""
        self.unknown_messages += 1
        logger.warning("actor %s: unknown message %s dropped", self.name, type(message).__name__)
        _drop_request(message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.setup()
        task_status.started()
        await self.serve()

    async def serve(self) -> None:
        """Handle messages one at a time until the mailbox is closed."""
        receive = self.mailbox.receive_channel
        while True:
            try:
                message = await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            handled = False
            try:
                await self.handle(message)
                handled = True
            finally:
                if not handled:
                    _drop_request(message)


# ---------------------------------------------------------------- supervision


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
