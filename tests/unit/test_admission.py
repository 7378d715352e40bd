"""Per-route-class bulkheads: immediate admission, a FIFO queue with a deadline, refusal."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from pooler.errors import ServerOverloaded
from pooler.instance_settings import DEFAULT_BULKHEADS, Bulkhead
from pooler.web.admission import QUEUE_TIME_BUCKETS, Admission, BulkheadStats


def gate(concurrency: int, queue: int = 10, timeout: float = 10.0) -> Admission:
    return Admission({"x": Bulkhead(concurrency, queue, timeout)})


class Occupant:
    """A request that takes a slot of class "x", notes when it got in, and leaves on cue."""

    def __init__(self, admission: Admission, name: str, admitted: list[str]) -> None:
        self.admission = admission
        self.name = name
        self.admitted = admitted
        self.leave = trio.Event()
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            try:
                async with self.admission.admit("x"):
                    self.admitted.append(self.name)
                    await self.leave.wait()
            except ServerOverloaded as exc:
                self.error = exc


async def arrive(
    nursery: trio.Nursery, admission: Admission, name: str, admitted: list[str]
) -> Occupant:
    """Start an occupant and wait until it is running or parked in the queue."""
    occupant = Occupant(admission, name, admitted)
    nursery.start_soon(occupant.run)
    await wait_all_tasks_blocked()
    return occupant


def stats(admission: Admission) -> BulkheadStats:
    return admission.stats()["x"]


async def test_admits_immediately_under_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(2)
    start = trio.current_time()
    async with admission.admit("x"):
        async with admission.admit("x"):
            assert (stats(admission).in_flight, stats(admission).queued) == (2, 0)
        assert stats(admission).in_flight == 1
    assert stats(admission).in_flight == 0
    assert trio.current_time() == start


async def test_waiters_are_admitted_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            occupants = [await arrive(nursery, admission, str(i), admitted) for i in range(5)]
            assert admitted == ["0"] and stats(admission).queued == 4
            occupants[0].leave.set()
            await wait_all_tasks_blocked()
            # The slot went straight to the oldest waiter: a newcomer now queues behind.
            late = await arrive(nursery, admission, "late", admitted)
            assert stats(admission).queued == 4
            for occupant in [*occupants[1:], late]:
                occupant.leave.set()
                await wait_all_tasks_blocked()
    assert admitted == ["0", "1", "2", "3", "4", "late"]
    assert stats(admission).in_flight == 0


async def test_a_full_queue_refuses_at_once_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1, queue=1)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await arrive(nursery, admission, "first", admitted)
            second = await arrive(nursery, admission, "second", admitted)
            start = trio.current_time()
            with pytest.raises(ServerOverloaded) as info:
                async with admission.admit("x"):
                    pytest.fail("admitted past a full queue")
            assert trio.current_time() == start
            assert (stats(admission).rejected_total, stats(admission).queued) == (1, 1)
            first.leave.set()
            second.leave.set()
    error = info.value
    assert error.status == 503 and error.retry_after == 1.0
    assert error.body()["error"]["code"] == "server_is_overloaded"
    assert error.body()["error"]["type"] == "server_error"
    assert (b"retry-after", b"1") in error.headers()
    assert admitted == ["first", "second"] and stats(admission).in_flight == 0


async def test_no_queue_means_no_waiting() -> None:
    admission = gate(1, queue=0)
    async with admission.admit("x"):
        with pytest.raises(ServerOverloaded):
            async with admission.admit("x"):
                pass
    assert stats(admission).rejected_total == 1 and stats(admission).timed_out_total == 0


async def test_a_waiter_times_out_after_the_queue_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1, timeout=2.5)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            holder = await arrive(nursery, admission, "holder", admitted)
            start = trio.current_time()
            with pytest.raises(ServerOverloaded, match="waited too long"):
                async with admission.admit("x"):
                    pytest.fail("admitted although the slot was never free")
            assert trio.current_time() - start == pytest.approx(2.5)
            snapshot = stats(admission)
            assert (snapshot.timed_out_total, snapshot.rejected_total) == (1, 0)
            assert (snapshot.in_flight, snapshot.queued) == (1, 0)
            holder.leave.set()
    assert stats(admission).in_flight == 0
    async with admission.admit("x"):  # the slot is free again, no wait
        assert trio.current_time() - start == pytest.approx(2.5)


async def test_a_cancelled_waiter_leaves_the_queue_and_leaks_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            holder = await arrive(nursery, admission, "holder", admitted)
            quitter = await arrive(nursery, admission, "quitter", admitted)
            patient = await arrive(nursery, admission, "patient", admitted)
            quitter.scope.cancel()
            await wait_all_tasks_blocked()
            assert quitter.scope.cancelled_caught
            assert (stats(admission).queued, stats(admission).in_flight) == (1, 1)
            holder.leave.set()
            await wait_all_tasks_blocked()
            assert admitted == ["holder", "patient"]
            patient.leave.set()
    assert stats(admission).in_flight == 0 and stats(admission).timed_out_total == 0


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_goes_to_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            door = admission.admit("x")
            await door.__aenter__()
            unlucky = await arrive(nursery, admission, "unlucky", admitted)
            next_one = await arrive(nursery, admission, "next", admitted)
            # Leave (the slot goes to "unlucky") and cancel "unlucky" before it runs again.
            await door.__aexit__(None, None, None)
            unlucky.scope.cancel()
            await wait_all_tasks_blocked()
            assert unlucky.scope.cancelled_caught
            assert admitted == ["next"]  # "unlucky" never ran its block
            assert (stats(admission).in_flight, stats(admission).queued) == (1, 0)
            next_one.leave.set()
    assert stats(admission).in_flight == 0


async def test_raising_concurrency_admits_waiters_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            occupants = [await arrive(nursery, admission, str(i), admitted) for i in range(4)]
            admission.configure({"x": Bulkhead(3, 10, 10.0)})
            await wait_all_tasks_blocked()
            # The two oldest waiters got in together (they then run in any order).
            assert admitted[0] == "0" and sorted(admitted) == ["0", "1", "2"]
            assert (stats(admission).in_flight, stats(admission).queued) == (3, 1)
            for occupant in occupants:
                occupant.leave.set()
    assert admitted[3] == "3" and stats(admission).in_flight == 0


async def test_lowering_concurrency_lets_running_work_finish_and_new_work_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(3)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            running = [await arrive(nursery, admission, str(i), admitted) for i in range(3)]
            admission.configure({"x": Bulkhead(1, 10, 10.0)})
            newcomer = await arrive(nursery, admission, "new", admitted)
            assert (stats(admission).in_flight, stats(admission).queued) == (3, 1)
            for expected_in_flight in (2, 1):
                running.pop().leave.set()
                await wait_all_tasks_blocked()
                assert stats(admission).in_flight == expected_in_flight
                assert admitted == ["0", "1", "2"]
            running.pop().leave.set()
            await wait_all_tasks_blocked()
            assert admitted == ["0", "1", "2", "new"] and stats(admission).in_flight == 1
            newcomer.leave.set()


async def test_configure_changes_the_queue_and_its_timeout_for_new_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1, queue=5, timeout=10.0)
    admitted: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            holder = await arrive(nursery, admission, "holder", admitted)
            admission.configure({"x": Bulkhead(1, 1, 1.0)})
            waiter = await arrive(nursery, admission, "waiter", admitted)
            with pytest.raises(ServerOverloaded):
                async with admission.admit("x"):
                    pass
            await trio.sleep(1.5)
            assert isinstance(waiter.error, ServerOverloaded)
            holder.leave.set()
    assert stats(admission).rejected_total == 1 and stats(admission).timed_out_total == 1


async def test_classes_are_independent_and_unknown_classes_are_refused() -> None:
    admission = Admission(DEFAULT_BULKHEADS)
    assert set(admission.stats()) == set(DEFAULT_BULKHEADS)
    admission.configure({"files": Bulkhead(1, 0, 1.0)})
    async with admission.admit("files"), admission.admit("audio"):
        all_stats = admission.stats()
    waited = (0,) * (len(QUEUE_TIME_BUCKETS) + 1)
    assert all_stats["files"] == BulkheadStats(1, 0, 1.0, 1, 0, 0, 0, 1, waited, 0.0)
    assert all_stats["audio"].in_flight == 1 and all_stats["audio"].concurrency == 4
    assert all_stats["stream"].concurrency == DEFAULT_BULKHEADS["stream"].concurrency
    with pytest.raises(ValueError, match="nope"):
        admission.admit("nope")


async def test_an_already_cancelled_request_is_not_admitted() -> None:
    admission, ran = gate(1), False
    with trio.CancelScope() as scope:
        scope.cancel()
        async with admission.admit("x"):
            ran = True
    assert not ran and stats(admission).in_flight == 0


def test_server_overloaded_defaults() -> None:
    error = ServerOverloaded()
    assert error.status == 503 and error.retry_after == 1.0
    assert math.isclose(ServerOverloaded("busy", retry_after=2.5).retry_after or 0, 2.5)
    assert (b"retry-after", b"3") in ServerOverloaded("busy", retry_after=2.5).headers()


async def test_queue_time_is_counted_in_fixed_buckets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = gate(1, timeout=5.0)
    admitted: list[str] = []
    first, second = Occupant(admission, "a", admitted), Occupant(admission, "b", admitted)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run)
        await wait_all_tasks_blocked()
        nursery.start_soon(second.run)
        await wait_all_tasks_blocked()
        await trio.sleep(0.3)  # virtual time: "b" waits 0.3 s for the slot
        first.leave.set()
        await wait_all_tasks_blocked()
        second.leave.set()
    stats = admission.stats()["x"]
    assert stats.admitted_at_once == 1
    expected = [0] * (len(QUEUE_TIME_BUCKETS) + 1)
    expected[QUEUE_TIME_BUCKETS.index(0.5)] = 1  # 0.25 < 0.3 <= 0.5
    assert list(stats.waited) == expected
    assert math.isclose(stats.waited_seconds, 0.3, abs_tol=1e-6)
