"""The actor runtime: restart budget (pure), mailboxes, call(), the Actor base, supervise()."""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from pooler.actors.restart import RestartBudget, backoff
from pooler.actors.runtime import (
    Actor,
    ActorDead,
    CallTimeout,
    Mailbox,
    ReplyTo,
    SupervisorEscalation,
    SupervisorStats,
    call,
    supervise,
)

# ---------------------------------------------------------------- RestartBudget, backoff


def test_budget_allows_max_restarts_then_refuses() -> None:
    budget = RestartBudget(3, 10.0)
    assert [budget.record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert budget.record(3.0) is False
    assert budget.recent(3.0) == 4


def test_budget_recovers_when_crashes_age_out_of_the_window() -> None:
    budget = RestartBudget(2, 10.0)
    assert budget.record(0.0) and budget.record(5.0)
    assert budget.record(9.0) is False
    # At 10.0 the crash at 0.0 is exactly one window old and no longer counts.
    assert budget.recent(10.0) == 2
    assert budget.record(15.0) is True  # window (5, 15] holds 9.0 and 15.0
    assert budget.record(15.5) is False


def test_budget_of_zero_never_restarts() -> None:
    budget = RestartBudget(0, 1.0)
    assert budget.record(0.0) is False
    assert budget.record(100.0) is False


def test_budget_rejects_bad_arguments_and_time_going_backwards() -> None:
    with pytest.raises(ValueError):
        RestartBudget(-1, 1.0)
    with pytest.raises(ValueError):
        RestartBudget(1, 0.0)
    budget = RestartBudget(5, 1.0)
    budget.record(2.0)
    with pytest.raises(ValueError):
        budget.record(1.0)


def _reference_allowed(times: list[float], max_restarts: int, window: float) -> list[bool]:
    return [
        sum(1 for s in times[: i + 1] if s > t - window) <= max_restarts
        for i, t in enumerate(times)
    ]


@given(
    max_restarts=st.integers(min_value=0, max_value=6),
    window=st.floats(min_value=0.01, max_value=100.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=50.0), max_size=60),
)
def test_budget_never_allows_more_than_max_in_any_window(
    max_restarts: int, window: float, gaps: list[float]
) -> None:
    budget = RestartBudget(max_restarts, window)
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    verdicts = [budget.record(t) for t in times]
    allowed = [t for t, ok in zip(times, verdicts, strict=True) if ok]
    for t in allowed:  # any window holding allowed crashes fits in (t - window, t] of its last
        assert sum(1 for s in allowed if t - window < s <= t) <= max_restarts
    assert verdicts == _reference_allowed(times, max_restarts, window)


def test_fresh_budget_is_the_same_policy_with_no_history() -> None:
    policy = RestartBudget(1, 10.0)
    policy.record(0.0)
    copy = policy.fresh()
    assert (copy.max_restarts, copy.window_seconds) == (1, 10.0)
    assert copy.recent(0.0) == 0 and copy.record(0.0) and copy.record(0.0) is False
    assert policy.recent(0.0) == 1


async def test_children_sharing_a_budget_policy_count_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RestartBudget(1, 60)
    one, two = Script("crash", "return"), Script("crash", "return")
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: supervise("one", one, budget=policy))
            nursery.start_soon(lambda: supervise("two", two, budget=policy))
    assert len(one.starts) == len(two.starts) == 2  # neither escalated


def test_backoff_doubles_from_base_up_to_cap() -> None:
    assert [backoff(n) for n in range(4)] == [0.05, 0.1, 0.2, 0.4]
    assert backoff(7) == 5.0
    assert backoff(3, base=1.0, cap=100.0) == 8.0
    assert backoff(10_000) == 5.0  # no float overflow
    with pytest.raises(ValueError):
        backoff(-1)


# ---------------------------------------------------------------- mailboxes and call()


@dataclass(frozen=True)
class Echo:
    text: str
    reply_to: ReplyTo[str]


@dataclass(frozen=True)
class Fail:
    reply_to: ReplyTo[str]


@dataclass(frozen=True)
class Ignore:
    reply_to: ReplyTo[str]


Msg = Echo | Fail | Ignore


async def serve(mailbox: Mailbox[Msg], ignored: list[ReplyTo[str]]) -> None:
    """A plain actor loop: echoes, fails on request, keeps Ignore requests unanswered."""
    async for message in mailbox.receive_channel:
        if isinstance(message, Echo):
            message.reply_to.send(message.text)
        elif isinstance(message, Fail):
            message.reply_to.fail(LookupError("no such account"))
        else:
            ignored.append(message.reply_to)


def test_mailbox_needs_a_finite_capacity() -> None:
    for bad in (-1, math.inf, True, 1.5):
        with pytest.raises(ValueError):
            Mailbox(bad)  # type: ignore[arg-type]


async def test_try_send_counts_overflows_and_send_waits_for_room() -> None:
    mailbox: Mailbox[int] = Mailbox(2, name="a")
    assert mailbox.try_send(1) and mailbox.try_send(2)
    assert mailbox.try_send(3) is False
    assert mailbox.try_send(4) is False
    assert mailbox.overflows == 2
    delivered = trio.Event()

    async def sender() -> None:
        await mailbox.send(5)
        delivered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not delivered.is_set()  # full: the sender waits
        assert mailbox.receive_channel.receive_nowait() == 1
        await delivered.wait()
    assert [mailbox.receive_channel.receive_nowait() for _ in range(2)] == [2, 5]


async def test_closed_mailbox_refuses_sends() -> None:
    mailbox: Mailbox[int] = Mailbox(1, name="gone")
    mailbox.close()
    with pytest.raises(ActorDead, match="gone"):
        await mailbox.send(1)
    assert mailbox.try_send(1) is False
    assert mailbox.overflows == 0
    assert mailbox.closed


async def test_call_returns_the_reply(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[Msg] = Mailbox(4, name="echo")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, mailbox, [])
        assert await call(mailbox, lambda r: Echo("hi", r), timeout=1.0) == "hi"
        with pytest.raises(LookupError, match="no such account"):
            await call(mailbox, Fail, timeout=1.0)
        assert await call(mailbox, lambda r: Echo("again", r), timeout=1.0) == "again"
        nursery.cancel_scope.cancel()


async def test_call_times_out_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[Msg] = Mailbox(4, name="silent")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, mailbox, [])
        start = trio.current_time()
        with pytest.raises(CallTimeout, match="silent"):
            await call(mailbox, Ignore, timeout=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
        nursery.cancel_scope.cancel()


async def test_call_times_out_when_it_cannot_be_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[Msg] = Mailbox(0, name="busy")  # nobody reads it
    start = trio.current_time()
    with pytest.raises(CallTimeout):
        await call(mailbox, lambda r: Echo("x", r), timeout=1.0)
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_call_to_a_dead_actor_fails_fast(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[Msg] = Mailbox(4, name="dead")
    mailbox.receive_channel.close()  # the actor went away
    start = trio.current_time()
    with pytest.raises(ActorDead, match="dead"):
        await call(mailbox, lambda r: Echo("x", r), timeout=30.0)
    assert trio.current_time() == start


async def test_closing_a_mailbox_answers_queued_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[Msg] = Mailbox(4, name="closing")
    outcomes: list[str] = []

    async def caller() -> None:
        try:
            await call(mailbox, lambda r: Echo("x", r), timeout=30.0)
        except ActorDead:
            outcomes.append("dead")

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        mailbox.close()
    assert outcomes == ["dead"] * 3
    assert trio.current_time() == start


async def test_late_reply_does_not_hurt_the_actor(autojump_clock: trio.testing.MockClock) -> None:
    mailbox: Mailbox[Msg] = Mailbox(4, name="slow")
    ignored: list[ReplyTo[str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, mailbox, ignored)
        with pytest.raises(CallTimeout):
            await call(mailbox, Ignore, timeout=1.0)
        (late,) = ignored
        assert late.send("too late") is False  # no raise, no block
        assert late.answered
        assert await call(mailbox, lambda r: Echo("still here", r), timeout=1.0) == "still here"
        nursery.cancel_scope.cancel()


async def test_reply_to_answers_once_and_close_means_dead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[Msg] = Mailbox(4, name="shy")
    ignored: list[ReplyTo[str]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, mailbox, ignored)

        async def answer_twice() -> None:
            await trio.testing.wait_all_tasks_blocked()
            assert ignored[0].send("first") is True
            assert ignored[0].send("second") is False
            assert ignored[0].fail(RuntimeError()) is False

        nursery.start_soon(answer_twice)
        assert await call(mailbox, Ignore, timeout=5.0) == "first"

        async def drop() -> None:
            await trio.testing.wait_all_tasks_blocked()
            ignored[1].close()

        nursery.start_soon(drop)
        start = trio.current_time()
        with pytest.raises(ActorDead):
            await call(mailbox, Ignore, timeout=5.0)
        assert trio.current_time() == start
        nursery.cancel_scope.cancel()


async def test_call_round_trip_is_cheap() -> None:
    mailbox: Mailbox[Msg] = Mailbox(16, name="echo")
    rounds = 2000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, mailbox, [])
        start = trio.current_time()
        for _ in range(rounds):
            await call(mailbox, lambda r: Echo("x", r), timeout=5.0)
        per_call = (trio.current_time() - start) / rounds
        nursery.cancel_scope.cancel()
    # ~30 µs on a slow CI box; the bound only catches a regression (a sleep, a thread hop).
    assert per_call < 1e-3


# ---------------------------------------------------------------- the Actor base


class Counter(Actor[Echo | Fail]):
    def __init__(self) -> None:
        super().__init__("counter", capacity=8)
        self.setups = 0
        self.served = 0

    async def setup(self) -> None:
        self.setups += 1
        await trio.sleep(1.0)  # e.g. loading a token

    async def handle(self, message: Echo | Fail) -> None:
        if isinstance(message, Fail):
            raise RuntimeError("handler bug")
        self.served += 1
        message.reply_to.send(f"{message.text}#{self.served}")


async def test_actor_reports_ready_only_after_setup(autojump_clock: trio.testing.MockClock) -> None:
    actor = Counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        assert trio.current_time() == pytest.approx(1.0)
        assert await call(actor.mailbox, lambda r: Echo("a", r), timeout=1.0) == "a#1"
        actor.mailbox.close()  # a closed mailbox ends the actor cleanly
    assert actor.setups == 1


async def test_a_request_whose_handler_crashed_gets_actor_dead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Counter()
    stats = SupervisorStats("counter")
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: supervise(
                "counter",
                actor.run,
                budget=RestartBudget(3, 60),
                stats=stats,
                task_status=task_status,
            )
        )
        start = trio.current_time()
        with pytest.raises(ActorDead):
            await call(actor.mailbox, Fail, timeout=10.0)
        assert trio.current_time() == start  # answered at once, not at the deadline
        # Queued while the actor restarts (backoff + setup), served by the next incarnation.
        assert await call(actor.mailbox, lambda r: Echo("b", r), timeout=10.0) == "b#1"
        assert actor.setups == 2
        assert stats.crashes == 1 and stats.restarts == 1
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- supervise()


class Script:
    """A child that fails per a script: 'crash', 'early' (before ready), 'return', 'hang'."""

    def __init__(self, *steps: str) -> None:
        self.steps = list(steps)
        self.starts: list[float] = []

    async def __call__(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.starts.append(trio.current_time())
        step = self.steps.pop(0) if self.steps else "hang"
        if step == "early":
            raise ValueError("secret token abc")
        task_status.started()
        await trio.sleep(1.0)
        if step == "crash":
            raise KeyError("secret token abc")
        if step == "hang":
            await trio.sleep_forever()


async def test_clean_return_ends_supervision(autojump_clock: trio.testing.MockClock) -> None:
    child = Script("return")
    with trio.fail_after(600):
        await supervise("once", child, budget=RestartBudget(5, 60))
    assert len(child.starts) == 1


async def test_restarts_after_exponential_backoff(autojump_clock: trio.testing.MockClock) -> None:
    child = Script("crash", "crash", "crash", "return")
    crashes: list[tuple[str, str, int]] = []
    stats = SupervisorStats("flaky")
    with trio.fail_after(600):
        await supervise(
            "flaky",
            child,
            budget=RestartBudget(5, 60),
            stats=stats,
            on_crash=lambda name, exc, n: crashes.append((name, type(exc).__name__, n)),
        )
    gaps = [b - a for a, b in itertools.pairwise(child.starts)]
    assert gaps == pytest.approx([1.05, 1.1, 1.2])  # 1 s of life, then the backoff
    assert crashes == [("flaky", "KeyError", 1), ("flaky", "KeyError", 2), ("flaky", "KeyError", 3)]
    assert (stats.crashes, stats.restarts, stats.last_crash) == (3, 3, "KeyError")


async def test_escalates_when_the_budget_is_spent(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    child = Script("crash", "crash", "crash", "crash")
    caplog.set_level(logging.WARNING, logger="pooler.actors")
    with trio.fail_after(600), pytest.raises(SupervisorEscalation) as info:
        await supervise("acct-7", child, budget=RestartBudget(2, 60))
    assert info.value.name == "acct-7"
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.last_exc is info.value.__cause__
    assert len(child.starts) == 3
    assert "acct-7" in caplog.text and "KeyError" in caplog.text
    assert "secret" not in caplog.text  # exception messages never reach the log
    assert "secret" not in str(info.value)


async def test_spaced_out_crashes_never_escalate(autojump_clock: trio.testing.MockClock) -> None:
    child = Script(*(["crash"] * 6), "return")

    async def slow_crash(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(5.0)  # each incarnation lives longer than the window
        await child(task_status=task_status)

    with trio.fail_after(600):
        await supervise("slow", slow_crash, budget=RestartBudget(1, 5.0))
    assert len(child.starts) == 7


async def test_error_before_first_readiness_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = Script("early", "return")
    stats = SupervisorStats("early")
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError):
            await nursery.start(
                lambda task_status: supervise(
                    "early",
                    child,
                    budget=RestartBudget(5, 60),
                    stats=stats,
                    task_status=task_status,
                )
            )
    assert len(child.starts) == 1
    assert stats.crashes == 0


async def test_error_before_readiness_of_a_later_incarnation_is_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = Script("crash", "early", "return")
    stats = SupervisorStats("later")
    with trio.fail_after(600):
        await supervise("later", child, budget=RestartBudget(5, 60), stats=stats)
    assert len(child.starts) == 3
    assert stats.crashes == 2


async def test_cancellation_passes_through_and_is_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    child = Script("hang")
    crashes: list[int] = []
    stats = SupervisorStats("hang")
    with trio.move_on_after(10.0) as scope:
        await supervise(
            "hang",
            child,
            budget=RestartBudget(0, 60),
            stats=stats,
            on_crash=lambda *a: crashes.append(1),
        )
    assert scope.cancelled_caught
    assert crashes == [] and stats.crashes == 0
