"""The actor runtime: bounded mailboxes, request/reply under a deadline, the `Actor` base.

An actor is one Trio task that owns its state and a bounded `Mailbox`; other tasks only send
it messages. `call()` sends a request carrying a `ReplyTo` and waits for the answer under a
deadline. An `Actor` looks each message up by type in its dispatch table. Supervision
(`supervise`, `Supervisor`) lives in `pooler.actors.supervision`, re-exported here.

    Exception
    ├── ActorDead             the actor's mailbox is closed, or it dropped the request
    ├── CallTimeout           no reply within the deadline given to call()
    └── SupervisorEscalation  a child crashed more often than its budget allows

A message of a type an actor lists in `Actor.inline` (handlers that decide without awaiting)
is handled in the sender's task while the actor is idle (`Mailbox.handle_now`): a lease
then reaches its requester without a turn of the event loop.

Convention: a request message keeps its `ReplyTo` in a field named ``reply_to``. `Actor`
then answers ActorDead for a request whose handler died, and `Mailbox.close` does the same
for requests still queued, so their callers do not wait for their deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

import trio
from trio._channel import MemoryChannelState
from trio._core._run import CancelStatus

from pooler.actors.supervision import (
    ChildHandle,
    CrashHook,
    Supervisor,
    SupervisorEscalation,
    SupervisorStats,
    open_supervisor,
    supervise,
)
from pooler.dependency_shape import missing_texts, refuse_if_moved

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

# `call` asks whether its caller is already cancelled as trio's `current_effective_deadline`
# does, without walking every enclosing cancel scope (`effective_deadline`) to learn it;
# `Mailbox.handle_now` reads who waits on a channel as its `statistics()` does.
refuse_if_moved(
    missing_texts(
        {
            trio.current_effective_deadline: ["current_task()._cancel_status.effective_deadline()"],
            CancelStatus.effective_deadline: ["if self.effectively_cancelled:"],
            MemoryChannelState.statistics: ["tasks_waiting_receive=len(self.receive_tasks)"],
            trio.MemorySendChannel.send_nowait: ["self._state.receive_tasks.popitem("],
            trio.MemoryReceiveChannel.receive: [
                "self._state.receive_tasks[task] = None",
                "del self._state.receive_tasks[task]",
            ],
        }
    ),
    "trio",
    "pooler.actors.runtime",
)

M = TypeVar("M")
R = TypeVar("R")

logger = logging.getLogger("pooler.actors")


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
        # The owning actor while its serve loop is parked on an empty mailbox (`handle_now`).
        self._idle_owner: Actor[M] | None = None
        # The tasks waiting in `receive_channel.receive()`: what its `statistics()` counts,
        # read without building the statistics (~1.4 µs, on every lease's path).
        self._receive_tasks: dict[Any, None] = self.receive_channel._state.receive_tasks

    async def send(self, message: M) -> None:
        """Deliver ``message``, waiting while the mailbox is full."""
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            raise ActorDead(self.name) from None

    def deliver_now(self, message: M) -> bool:
        """Deliver ``message`` if the mailbox has room, without a checkpoint; False if it is
        full (not counted: the caller then waits in `send`). Raises ActorDead if closed."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            raise ActorDead(self.name) from None
        return True

    def handle_now(self, message: M) -> bool:
        """Have the owning actor handle ``message`` at once, in the calling task, when the
        actor is parked on its empty mailbox and ``message`` is of a type it takes inline
        (`Actor.inline`); False otherwise (then send it as usual).

        Why: under load a message to an idle actor costs a pass of the event loop over every
        runnable task before the actor runs, and its reply another before the sender does
        (a lease: three passes on each request's path to its first byte). What it relies
        on: trio runs one task at a time and an inline handler decides without awaiting, so
        handling it here is what the parked actor would do if it ran next; messages sent
        before it would have woken the actor (it is then no longer waiting on its channel,
        so none is taken inline until it has handled them), and one sent by the handler to
        this mailbox meanwhile is queued. A handler that raises crashes the actor in its
        own task, as if it had run there (`_InlineCrash`).
        """
        owner = self._idle_owner
        if (
            owner is None
            or type(message) not in owner.inline
            or not self._receive_tasks  # the owner is not waiting on the channel
        ):
            return False
        self._idle_owner = None  # busy: what the handler sends here meanwhile is queued
        try:
            if owner.dispatch(message) is not None:
                raise TypeError(f"inline handler for {type(message).__name__} has an effect")
        except Exception as exc:
            # The parked actor takes it as its next message and raises it (see `unknown`).
            crash = _InlineCrash(exc, getattr(message, "reply_to", None))
            try:
                self._send.send_nowait(cast(M, crash))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # Its mailbox filled (or closed) meanwhile: the crash is logged, not raised
                # into the sender, as a crash of the actor's task would not be either.
                logger.error("actor %s: inline handler failed", self.name, exc_info=exc)
            return True
        self._idle_owner = owner
        return True

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
        self._idle_owner = None
        while True:
            try:
                message = self.receive_channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            _drop_request(message)
        self.receive_channel.close()


class _InlineCrash:
    """What `Mailbox.handle_now` queues when an inline handler raised: the actor raises
    ``exc`` in its own task, so it crashes (and its request is dropped) as if it had
    handled the message itself."""

    __slots__ = ("exc", "reply_to")

    def __init__(self, exc: Exception, reply_to: object) -> None:
        self.exc = exc
        self.reply_to = reply_to


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class ReplyTo(Generic[R]):
    """The one-shot answer slot of a call(). Answering never blocks and never raises.

    The caller's task parks on the slot itself and the answer reschedules it: what a memory
    channel of one did here, without its state, two channel objects and their locks per
    call (a call is on every request's path: the lease).
    """

    __slots__ = ("_answered", "_gone", "_item", "_waiter")

    def __init__(self) -> None:
        self._answered = False  # answered, failed or closed: later answers are refused
        self._gone = False  # the caller left (deadline, cancelled): nobody will look
        self._item: object = _NO_ANSWER
        self._waiter: trio.lowlevel.Task | None = None

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
            self._deliver(_CLOSED)

    def _put(self, item: object) -> bool:
        if self._answered:
            return False
        self._answered = True
        return self._deliver(item)

    def _deliver(self, item: object) -> bool:
        if self._gone:
            return False  # the caller passed its deadline or was cancelled
        self._item = item
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)
        return True

    async def _wait(self) -> object:
        """The answer (or `_CLOSED`), waiting for it if need be. One already here is taken
        without a yield: it is the caller's (a lease, say), and a cancellation raised here
        would drop it; the caller's next checkpoint sees the cancellation instead."""
        if self._item is _NO_ANSWER:
            self._waiter = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                self._waiter = None
                self._gone = True
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        return self._item

    def _leave(self) -> None:
        self._gone = True
        self._waiter = None


_NO_ANSWER = object()
_CLOSED = object()


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
    reply_to: ReplyTo[R] = ReplyTo()
    message = make_message(reply_to)
    # An idle actor that takes this message inline has answered on return
    # (`Mailbox.handle_now`): the answer is taken without a turn of the loop and without
    # a deadline (nothing was waited for). Not for a caller already cancelled: its request
    # is delivered and its late answer refused, as before (a lease is then released by
    # its actor).
    cancelled = trio.lowlevel.current_task()._cancel_status.effectively_cancelled
    inline = not cancelled and mailbox.handle_now(message)
    if inline and reply_to.answered:
        reply_to._leave()
        reply = reply_to._item
    else:  # queued, or passed on by the actor to another that is not idle
        reply = None
        try:
            with trio.move_on_after(timeout) as deadline:
                # With room in the mailbox the request goes in at once: waiting for the
                # answer is the call's checkpoint (a checkpoint in `send` too cost a task
                # switch per lease). A caller cancelled now leaves the slot, as one
                # cancelled while it waits for the answer does: a late answer finds nobody
                # and is dropped.
                if not inline and not mailbox.deliver_now(message):
                    await mailbox.send(message)
                reply = await reply_to._wait()
        finally:
            reply_to._leave()
        if deadline.cancelled_caught:
            raise CallTimeout(mailbox.name, timeout)
    if reply is _CLOSED:
        raise ActorDead(mailbox.name)
    if isinstance(reply, _Failure):
        raise reply.exc
    return cast(R, reply)


# How many queued messages an actor takes between two checkpoints (Actor.serve).
MAX_IN_A_ROW = 32

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
        # Message types whose handlers return no effect and may run in the sender's task
        # while this actor is idle (`Mailbox.handle_now`).
        self.inline: frozenset[type] = frozenset()
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
        if type(message) is _InlineCrash:
            raise message.exc
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
        in_a_row = 0
        while True:
            try:
                # Messages already queued are taken without a checkpoint each (a task
                # switch per message was most of an actor's cost under load), up to
                # MAX_IN_A_ROW, so a busy actor still lets other tasks run and sees its
                # cancellation.
                if in_a_row < MAX_IN_A_ROW:
                    try:
                        message = receive.receive_nowait()
                        in_a_row += 1
                    except trio.WouldBlock:
                        message = await self._receive_idle(receive)
                        in_a_row = 0
                else:
                    message = await receive.receive()
                    in_a_row = 0
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            handled = False
            try:
                await self.handle(message)
                handled = True
            finally:
                if not handled:
                    _drop_request(message)

    async def _receive_idle(self, receive: trio.MemoryReceiveChannel[M]) -> M:
        """Wait on the empty mailbox, open to `Mailbox.handle_now` meanwhile."""
        mailbox = self.mailbox
        mailbox._idle_owner = self
        try:
            return await receive.receive()
        finally:
            mailbox._idle_owner = None
