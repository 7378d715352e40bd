"""Task switches an actor exchange costs (issue 17: each is a turn of the event loop on a
request's path). Counted with a trio Instrument, so the figures do not depend on timing."""

from __future__ import annotations

import cProfile
import pstats
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from pooler.actors.runtime import MAX_IN_A_ROW, Actor, ActorDead, Mailbox, ReplyTo, call
from tests.turn_counts import counting_reschedules


@dataclass
class Note:
    value: int


@dataclass
class Ask:
    reply_to: ReplyTo[int]


class Steps(trio.abc.Instrument):
    """Task steps per task."""

    def __init__(self) -> None:
        self.by_task: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.by_task[task] = self.by_task.get(task, 0) + 1


class Recorder(Actor[object]):
    def __init__(self) -> None:
        super().__init__("recorder", capacity=1000)
        self.seen: list[int] = []
        self.task: trio.lowlevel.Task | None = None
        self.handlers = {Note: self._note, Ask: self._ask}

    async def setup(self) -> None:
        self.task = trio.lowlevel.current_task()

    def _note(self, message: Note) -> None:
        self.seen.append(message.value)

    def _ask(self, message: Ask) -> None:
        message.reply_to.send(len(self.seen))


async def test_queued_messages_are_handled_in_one_step_in_order() -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        count = 10
        for value in range(count):
            assert actor.mailbox.try_send(Note(value))
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(steps)
        assert actor.seen == list(range(count))
        assert actor.task is not None
        # Woken once for the first message, the nine behind it taken without a switch
        # each (ten steps before), then parked again.
        assert steps.by_task[actor.task] == 1
        nursery.cancel_scope.cancel()


async def test_a_busy_actor_still_checkpoints() -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        count = 3 * MAX_IN_A_ROW
        for value in range(count):
            assert actor.mailbox.try_send(Note(value))
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(steps)
        assert actor.seen == list(range(count))
        assert actor.task is not None
        assert steps.by_task[actor.task] >= count // (MAX_IN_A_ROW + 1)
        nursery.cancel_scope.cancel()


async def test_a_call_to_an_idle_actor_costs_the_caller_one_step() -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        with trio.fail_after(5):
            answer = await call(actor.mailbox, Ask, timeout=5)
        trio.lowlevel.remove_instrument(steps)
        assert answer == 0
        # One switch to wait for the answer (a checkpoint in the send too made it two).
        assert steps.by_task[trio.lowlevel.current_task()] == 1
        nursery.cancel_scope.cancel()


async def test_a_call_into_a_full_mailbox_waits_for_room() -> None:
    mailbox: Mailbox[object] = Mailbox(1, name="full")
    assert mailbox.try_send(Note(0))

    async def serve_later() -> None:
        await trio.sleep(0.01)
        assert isinstance(await mailbox.receive_channel.receive(), Note)
        ask = await mailbox.receive_channel.receive()
        assert isinstance(ask, Ask)
        ask.reply_to.send(7)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_later)
        with trio.fail_after(5):
            assert await call(mailbox, Ask, timeout=5) == 7


async def test_a_call_waits_on_its_reply_slot_not_a_channel() -> None:
    """A call's answer comes through its `ReplyTo` alone: no memory channel (its state,
    two channel objects, their locks) per call. Counted with cProfile, not timed."""
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(20):
            assert await call(actor.mailbox, Ask, timeout=5) == 0
        profile.disable()
        opened = [
            key
            for key in pstats.Stats(profile).stats
            if key[0].endswith("trio/_channel.py") and key[2] == "__new__"
        ]
        assert opened == []  # the mailbox's own channel is used, no new one
        nursery.cancel_scope.cancel()


async def test_a_cancelled_caller_refuses_the_late_answer() -> None:
    mailbox: Mailbox[object] = Mailbox(4, name="slow")
    with trio.CancelScope() as scope:
        scope.cancel()
        await call(mailbox, Ask, timeout=5)
    (request,) = [mailbox.receive_channel.receive_nowait()]
    assert isinstance(request, Ask)
    assert request.reply_to.send(1) is False
    assert request.reply_to.answered


class InlineRecorder(Recorder):
    """A Recorder that takes `Ask` inline while idle (`Mailbox.handle_now`)."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.inline = frozenset({Ask})
        self.fail = fail

    def _ask(self, message: Ask) -> None:
        if self.fail:
            raise RuntimeError("handler broke")
        super()._ask(message)


async def test_a_call_to_an_idle_actor_that_takes_it_inline_costs_no_step() -> None:
    """Issue 17: the answer of an idle actor comes without a turn of the loop, neither
    the actor's nor the caller's (each was a pass over every runnable task under load)."""
    actor = InlineRecorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        assert actor.mailbox.try_send(Note(1))
        await trio.testing.wait_all_tasks_blocked()
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        with counting_reschedules() as turns, trio.fail_after(5):
            answer = await call(actor.mailbox, Ask, timeout=5)
        trio.lowlevel.remove_instrument(steps)
        assert answer == 1
        assert turns.count == 0
        assert actor.task not in steps.by_task
        # Still idle after: the next call is inline too, a Note is still queued as usual.
        with counting_reschedules() as turns, trio.fail_after(5):
            assert await call(actor.mailbox, Ask, timeout=5) == 1
        assert turns.count == 0
        nursery.cancel_scope.cancel()


async def test_a_message_queued_before_is_handled_before_an_inline_one() -> None:
    actor = InlineRecorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        assert actor.mailbox.try_send(Note(1))  # the actor is woken, not yet run
        assert actor.mailbox.try_send(Note(2))
        with trio.fail_after(5):
            assert await call(actor.mailbox, Ask, timeout=5) == 2  # after both notes
        nursery.cancel_scope.cancel()


async def test_a_cancelled_caller_is_not_answered_inline() -> None:
    actor = InlineRecorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        answered: list[ReplyTo[int]] = []

        def ask(reply: ReplyTo[int]) -> Ask:
            answered.append(reply)
            return Ask(reply)

        with trio.CancelScope() as scope:
            scope.cancel()
            await call(actor.mailbox, ask, timeout=5)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        # Delivered and answered by the actor's task, the answer refused (nobody waits).
        assert answered[0].answered
        assert answered[0].send(3) is False
        nursery.cancel_scope.cancel()


async def test_an_inline_handler_that_raises_crashes_the_actor_in_its_own_task() -> None:
    actor = InlineRecorder(fail=True)
    crashed: list[BaseException] = []

    async def run_actor(task_status: trio.TaskStatus[None]) -> None:
        try:
            await actor.run(task_status=task_status)
        except RuntimeError as exc:
            crashed.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_actor)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ActorDead), trio.fail_after(5):
            await call(actor.mailbox, Ask, timeout=5)
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
    assert [str(exc) for exc in crashed] == ["handler broke"]
    assert actor.unknown_messages == 0


async def test_an_inline_answer_opens_no_cancel_scope() -> None:
    """The call's deadline is for waiting: an answer given inline waited for nothing, so
    no cancel scope is entered for it (counted with cProfile, not timed)."""
    actor = InlineRecorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.testing.wait_all_tasks_blocked()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(20):
            assert await call(actor.mailbox, Ask, timeout=5) == 0
        profile.disable()
        scopes = [
            key
            for key in pstats.Stats(profile).stats  # type: ignore[attr-defined]
            if key[0].endswith("trio/_core/_run.py") and key[2] == "__enter__"
        ]
        assert scopes == []
        nursery.cancel_scope.cancel()
