"""Supervision under faults: crashes, escalation, stopping children, cancelling the tree."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from pooler.actors.restart import RestartBudget
from pooler.actors.runtime import (
    Actor,
    ActorDead,
    Mailbox,
    ReplyTo,
    Supervisor,
    SupervisorEscalation,
    call,
    open_supervisor,
    supervise,
)

BUDGET = RestartBudget(10, 60.0)


@dataclass(frozen=True)
class Echo:
    text: str
    reply_to: ReplyTo[str]


@dataclass(frozen=True)
class Boom:
    reply_to: ReplyTo[str]


@dataclass(frozen=True)
class Stall:
    reply_to: ReplyTo[str]


Msg = Echo | Boom | Stall


class EchoActor(Actor[Msg]):
    """Echoes; Boom raises in the handler; Stall blocks the handler forever.

    Like an account actor it owns a nursery with a helper task, and its setup can fail.
    """

    def __init__(self, name: str, *, fail_setups: int = 0, setup_seconds: float = 0.0) -> None:
        super().__init__(name, capacity=8)
        self.incarnations = 0
        self.fail_setups = fail_setups
        self.setup_seconds = setup_seconds
        self.exits = 0  # incarnations that ended, for any reason

    async def setup(self) -> None:
        self.incarnations += 1
        await trio.sleep(self.setup_seconds)
        if self.fail_setups:
            self.fail_setups -= 1
            raise ConnectionError("cannot load the token")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)  # e.g. a refresh-ahead timer
                await super().run(task_status=task_status)
                nursery.cancel_scope.cancel()
        finally:
            self.exits += 1

    async def handle(self, message: Msg) -> None:
        if isinstance(message, Boom):
            raise RuntimeError("handler bug")
        if isinstance(message, Stall):
            await trio.sleep_forever()
        else:
            message.reply_to.send(f"{self.name}:{message.text}")


async def echo(actor: EchoActor | Mailbox[Msg], text: str = "ping") -> str:
    mailbox = actor.mailbox if isinstance(actor, EchoActor) else actor
    return await call(mailbox, lambda r: Echo(text, r), timeout=5.0)


async def keep_calling(actor: EchoActor, served: list[float], stop: trio.Event) -> None:
    """A client that must be served every 10 ms while its neighbour misbehaves."""
    while not stop.is_set():
        assert await echo(actor) == f"{actor.name}:ping"
        served.append(trio.current_time())
        await trio.sleep(0.01)


async def test_crashing_child_is_restarted_while_its_sibling_keeps_serving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky, steady = EchoActor("flaky"), EchoActor("steady")
    crashes: list[tuple[str, str, int]] = []
    served: list[float] = []
    stop = trio.Event()
    with trio.fail_after(60):
        async with open_supervisor(
            on_crash=lambda name, exc, n: crashes.append((name, type(exc).__name__, n))
        ) as sup:
            flaky_handle = await sup.start_actor(flaky, budget=BUDGET)
            await sup.start_actor(steady, budget=BUDGET)
            async with trio.open_nursery() as clients:
                clients.start_soon(keep_calling, steady, served, stop)
                for round_ in range(3):
                    # A crash injected from outside, exactly as if the actor had raised...
                    sup.crash_child("flaky", OSError("injected"))
                    assert await echo(flaky, f"r{round_}") == f"flaky:r{round_}"
                    # ...and a real one from inside its handler.
                    with pytest.raises(ActorDead):
                        await call(flaky.mailbox, Boom, timeout=1.0)
                    assert await echo(flaky) == "flaky:ping"
                    await trio.sleep(1.0)
                stop.set()
            assert flaky_handle.stats.crashes == flaky_handle.stats.restarts == 6
            assert sup.children["steady"].stats.crashes == 0
            assert set(sup.children) == {"flaky", "steady"}
            await sup.stop_all()
            assert not sup.children
    assert flaky.incarnations == 7 and steady.incarnations == 1
    # The handler's error comes wrapped by the actor's own nursery; the injected one is bare.
    assert [c[:2] for c in crashes] == [("flaky", "OSError"), ("flaky", "ExceptionGroup")] * 3
    assert flaky_handle.stats.last_crash == "ExceptionGroup[RuntimeError]"
    assert [c[2] for c in crashes] == [1, 2, 3, 4, 5, 6]
    # The sibling never missed a beat: no gap between its calls beyond its own 10 ms pace.
    assert len(served) > 100
    assert max(b - a for a, b in itertools.pairwise(served)) == pytest.approx(0.01)


async def test_a_call_in_flight_when_the_actor_crashes_gets_actor_dead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = EchoActor("stuck")
    async with open_supervisor() as sup:
        await sup.start_actor(actor, budget=BUDGET)
        async with trio.open_nursery() as nursery:

            async def crash_soon() -> None:
                await trio.sleep(1.0)
                sup.crash_child("stuck", OSError("injected"))

            nursery.start_soon(crash_soon)
            with pytest.raises(ActorDead):
                await call(actor.mailbox, Stall, timeout=30.0)
            assert trio.current_time() == pytest.approx(1.0)
        assert await echo(actor) == "stuck:ping"  # the next incarnation serves
        await sup.stop_child("stuck")


async def test_crash_child_needs_a_running_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor() as sup:
        handle = await sup.start_actor(EchoActor("a"), budget=BUDGET)
        assert handle.running
        sup.crash_child("a", OSError("injected"))
        await trio.testing.wait_all_tasks_blocked()
        assert not handle.running  # backing off
        with pytest.raises(RuntimeError, match="no running incarnation"):
            sup.crash_child("a", OSError("again"))
        with pytest.raises(KeyError):
            sup.crash_child("nobody", OSError())
        await sup.stop_child("a")


async def test_too_many_crashes_escalate_and_cancel_the_siblings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    doomed, sibling = EchoActor("doomed"), EchoActor("sibling")
    with trio.fail_after(60), pytest.RaisesGroup(SupervisorEscalation) as group:
        async with open_supervisor() as sup:
            await sup.start_actor(doomed, budget=RestartBudget(2, 60.0))
            await sup.start_actor(sibling, budget=BUDGET)
            for _ in range(3):
                with pytest.raises(ActorDead):
                    await call(doomed.mailbox, Boom, timeout=5.0)
                await trio.sleep(1.0)
            pytest.fail("the escalation should have cancelled this block")
    (escalation,) = group.value.exceptions
    assert escalation.name == "doomed"
    assert pytest.RaisesGroup(RuntimeError).matches(escalation.__cause__)
    assert doomed.incarnations == 3
    assert sibling.exits == 1 and sibling.incarnations == 1  # cancelled, not crashed
    # Both stopped for good: their mailboxes are closed, callers learn it at once.
    for actor in (doomed, sibling):
        with pytest.raises(ActorDead):
            await echo(actor)


async def test_an_escalation_restarts_the_subtree_under_a_parent_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    subtrees: list[EchoActor] = []

    async def pool_supervisor(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        actor = EchoActor(f"account-{len(subtrees)}")
        subtrees.append(actor)
        async with open_supervisor() as sup:
            await sup.start_actor(actor, budget=RestartBudget(0, 60.0))
            task_status.started()

    crashes: list[BaseException] = []
    async with trio.open_nursery() as root:
        await root.start(
            lambda task_status: supervise(
                "pool",
                pool_supervisor,
                budget=BUDGET,
                on_crash=lambda name, exc, n: crashes.append(exc),
                task_status=task_status,
            )
        )
        with pytest.raises(ActorDead):
            await call(subtrees[0].mailbox, Boom, timeout=5.0)
        await trio.sleep(1.0)
        assert len(subtrees) == 2
        assert await echo(subtrees[1]) == "account-1:ping"
        root.cancel_scope.cancel()
    (crash,) = crashes
    assert isinstance(crash, ExceptionGroup)
    assert crash.subgroup(SupervisorEscalation) is not None


async def test_a_stopped_child_is_gone_and_its_siblings_still_serve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exits: list[str] = []
    gone, stays = EchoActor("gone"), EchoActor("stays")
    async with open_supervisor() as sup:
        handle = await sup.start_actor(gone, budget=BUDGET)
        await sup.start_child(
            "stays", stays.run, budget=BUDGET, on_exit=lambda: exits.append("stays")
        )
        with pytest.raises(ValueError, match="already exists"):
            await sup.start_actor(EchoActor("gone"), budget=BUDGET)
        await sup.stop_child("gone")
        assert handle.done and not handle.running
        assert "gone" not in sup.children and list(sup.children) == ["stays"]
        assert gone.exits == gone.incarnations == 1
        start = trio.current_time()
        with pytest.raises(ActorDead):
            await echo(gone)
        assert trio.current_time() == start
        assert await echo(stays) == "stays:ping"
        with pytest.raises(KeyError):
            await sup.stop_child("gone")
        # The name can be used again, e.g. when an account comes back.
        again = EchoActor("gone")
        await sup.start_actor(again, budget=BUDGET)
        assert await echo(again) == "gone:ping"
        assert exits == []
        await sup.stop_all()
        assert exits == ["stays"]


async def test_a_child_stopped_while_backing_off_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = EchoActor("backoff")
    async with open_supervisor() as sup:
        handle = await sup.start_actor(actor, budget=BUDGET)
        sup.crash_child("backoff", OSError("injected"))
        await trio.testing.wait_all_tasks_blocked()
        assert not handle.running
        await sup.stop_child("backoff")
        assert not sup.children
    assert actor.incarnations == 1
    assert trio.current_time() == 0.0  # it never waited out the backoff


class Census(trio.abc.Instrument):
    """Every task spawned while installed, until it exits."""

    def __init__(self) -> None:
        self.live: set[trio.lowlevel.Task] = set()
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live.add(task)
        self.spawned += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live.discard(task)


def _all_tasks(nurseries: list[trio.Nursery]) -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    for nursery in nurseries:
        for task in nursery.child_tasks:
            found.add(task)
            found |= _all_tasks(list(task.child_nurseries))
    return found


async def test_cancelling_the_root_leaves_no_task_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    census = Census()
    root_task = trio.lowlevel.current_root_task()
    assert root_task is not None
    before = _all_tasks(list(root_task.child_nurseries))
    trio.lowlevel.add_instrument(census)
    try:
        actors = [EchoActor(f"acct-{i}") for i in range(4)]
        with trio.CancelScope() as root:
            async with trio.open_nursery() as clients, open_supervisor() as sup:
                for actor in actors:
                    await sup.start_actor(actor, budget=BUDGET)

                async def nested(
                    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                ) -> None:
                    async with open_supervisor() as inner:
                        await inner.start_actor(EchoActor("inner"), budget=BUDGET)
                        task_status.started()

                await sup.start_child("nested", nested, budget=BUDGET)
                sup.crash_child("acct-0", OSError("injected"))  # one is backing off
                stalled = Mailbox[Msg](1)
                clients.start_soon(echo, actors[1])
                clients.start_soon(echo, stalled)  # a call that will never be answered
                await trio.testing.wait_all_tasks_blocked()
                assert len(census.live) > 10
                root.cancel()
        assert root.cancelled_caught
    finally:
        trio.lowlevel.remove_instrument(census)
    assert census.live == set()
    assert _all_tasks(list(root_task.child_nurseries)) == before
    for actor in actors:
        assert actor.mailbox.closed


async def test_an_error_before_readiness_surfaces_from_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    crashes: list[str] = []
    async with open_supervisor(on_crash=lambda name, exc, n: crashes.append(name)) as sup:
        sibling = EchoActor("sibling")
        await sup.start_actor(sibling, budget=BUDGET)
        broken = EchoActor("broken", fail_setups=1)
        with pytest.RaisesGroup(ConnectionError):  # wrapped by the actor's own nursery
            await sup.start_actor(broken, budget=BUDGET)
        assert broken.incarnations == 1  # not restarted: nothing ever depended on it
        assert "broken" not in sup.children
        assert broken.mailbox.closed
        assert await echo(sibling) == "sibling:ping"  # the nursery did not fail

        slow = EchoActor("slow", setup_seconds=3.0)
        start = trio.current_time()
        await sup.start_actor(slow, budget=BUDGET)
        assert trio.current_time() - start == pytest.approx(3.0)  # returns once it can serve
        assert await echo(slow) == "slow:ping"
        await sup.stop_all()
    assert crashes == []


async def test_supervisor_runs_in_a_given_nursery(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery)
        actor = EchoActor("x")
        await sup.start_actor(actor, budget=BUDGET)
        assert await echo(actor) == "x:ping"
        await sup.stop_child("x")
    assert actor.mailbox.closed
