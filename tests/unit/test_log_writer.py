"""LogWriter: one row the database refuses never wedges it; rows are written promptly;
a graceful stop (cancellation) writes every buffered row. The database boundary is a fake
`write_batch` that refuses a poison row, as PostgreSQL refuses a NUL."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import trio
import trio.testing

from pooler.actors.log_writer import LogWriter
from pooler.actors.restart import RestartBudget
from pooler.actors.runtime import open_supervisor
from pooler.actors.write_split import write_splitting
from pooler.db import DatabaseDataError, DatabaseUnavailable


@dataclasses.dataclass(frozen=True)
class Row:
    n: int
    text: str = "ok"


class FakeTable:
    """Stores rows like an idempotent INSERT; refuses a batch holding a poison text (a
    data error), or everything while `away` (the database unreachable)."""

    def __init__(self, poison: str = "\x00") -> None:
        self.rows: dict[int, Row] = {}
        self.poison = poison
        self.away = False
        self.writes = 0

    async def write(self, batch: Sequence[Row]) -> None:
        await trio.lowlevel.checkpoint()
        self.writes += 1
        if self.away:
            raise DatabaseUnavailable("database unavailable")
        if any(self.poison in row.text for row in batch):
            raise DatabaseDataError("database refused the values (22021: ...)")
        for row in batch:
            self.rows.setdefault(row.n, row)


BUDGET = RestartBudget(5, 60.0)


def reduce(row: Row) -> Row:
    return Row(row.n, "reduced")


async def test_split_writes_everything_but_the_refused_rows() -> None:
    table = FakeTable()
    rows = [Row(i, "x\x00" if i in (3, 77) else "ok") for i in range(100)]
    refused = await write_splitting(table.write, rows)
    assert [r.n for r in refused] == [3, 77]
    assert sorted(table.rows) == [i for i in range(100) if i not in (3, 77)]
    assert table.writes < 40  # halves, not one write per row


async def test_split_leaves_an_outage_to_the_caller() -> None:
    table = FakeTable()
    table.away = True
    try:
        await write_splitting(table.write, [Row(1)])
    except DatabaseUnavailable:
        pass
    else:
        raise AssertionError("an outage must propagate")


async def test_a_poison_row_is_stored_reduced_and_the_rest_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table = FakeTable()
    writer: LogWriter[Row] = LogWriter(table.write, reduce=reduce)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.enqueue(Row(1))
        writer.enqueue(Row(2, "model x\x00"))
        writer.enqueue(Row(3))
        await trio.sleep(1)
        assert writer.pending == 0
        assert table.rows[2].text == "reduced" and writer.reduced == 1
        writer.enqueue(Row(4))  # the writer is not wedged: the next row goes in
        await trio.sleep(1)
        assert sorted(table.rows) == [1, 2, 3, 4]
        nursery.cancel_scope.cancel()


async def test_a_row_refused_even_reduced_is_dropped_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table = FakeTable(poison="!")
    writer: LogWriter[Row] = LogWriter(table.write, reduce=lambda row: row)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(10):
            writer.enqueue(Row(i, "!" if i == 5 else "ok"))
        await trio.sleep(1)
        assert writer.pending == 0 and writer.refused == 1
        assert sorted(table.rows) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        nursery.cancel_scope.cancel()


async def test_rows_are_written_promptly_when_idle(autojump_clock: trio.testing.MockClock) -> None:
    table = FakeTable()
    writer: LogWriter[Row] = LogWriter(table.write)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.enqueue(Row(1))
        start = trio.current_time()
        while 1 not in table.rows:
            await trio.sleep(0.001)
        # Virtual time: the row waited the linger (50 ms), not a 0.25 s flush interval.
        assert trio.current_time() - start <= writer.linger + 0.002
        nursery.cancel_scope.cancel()


async def test_an_outage_keeps_rows_and_a_stop_writes_them_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table = FakeTable()
    writer: LogWriter[Row] = LogWriter(table.write, reduce=reduce, batch_size=7)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        table.away = True
        for i in range(50):
            writer.enqueue(Row(i, "x\x00" if i == 20 else "ok"))
        await trio.sleep(3)
        assert writer.pending == 50 and not table.rows
        table.away = False
        nursery.cancel_scope.cancel()  # a graceful stop: the final flush writes them all
    assert writer.pending == 0
    assert sorted(table.rows) == list(range(50)) and table.rows[20].text == "reduced"


async def test_a_stop_right_after_enqueue_loses_nothing() -> None:
    table = FakeTable()
    writer: LogWriter[Row] = LogWriter(table.write)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for i in range(1234):
                writer.enqueue(Row(i))
            nursery.cancel_scope.cancel()
    assert len(table.rows) == 1234


async def test_a_restarted_writer_writes_the_rows_its_crashed_run_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The gateway's supervisor restarts `run` on the same LogWriter after a crash: rows
    the crashed run could not write (the database was away) are written by the next run
    once the database is back, without waiting for another row to arrive."""
    table = FakeTable()
    writer = LogWriter(table.write, reduce=reduce)
    table.away = True
    async with open_supervisor() as supervisor:
        child = await supervisor.start_child("log-writer", writer.run, budget=BUDGET)
        for i in range(10):
            writer.enqueue(Row(i))
        await trio.sleep(1.0)  # a failed batch, and the writer backing off
        assert writer.failed_batches >= 1 and writer.pending == 10
        supervisor.crash_child("log-writer", RuntimeError("writer bug"))
        await trio.sleep(30.0)  # the crashed run's final flush fails too; then a restart
        assert child.stats.restarts == 1 and writer.pending == 10
        table.away = False
        with trio.fail_after(60):
            while writer.pending:
                await trio.sleep(0.1)
        assert sorted(table.rows) == list(range(10))
        await supervisor.stop_all()


async def test_lag_is_the_age_of_the_oldest_row_not_yet_written() -> None:
    table = FakeTable()
    table.away = True
    now = [100.0]
    writer: LogWriter[Row] = LogWriter(table.write, linger=0.0, clock=lambda: now[0])
    assert writer.lag_seconds() == 0.0
    writer.enqueue(Row(1))
    now[0] = 101.0
    writer.enqueue(Row(2))
    now[0] = 103.5
    assert writer.lag_seconds() == 3.5  # row 1 has waited since 100
    table.away = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        with trio.fail_after(5):
            while writer.pending:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert writer.lag_seconds() == 0.0 and set(table.rows) == {1, 2}


async def test_rows_that_arrive_during_a_write_wait_for_the_next_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under load, the rows that come while a batch is being written are gathered with those
    that follow them for the linger, not written at once in a batch of their own (each
    batch costs the database a transaction whatever its size)."""
    batches: list[list[int]] = []
    first_written = trio.Event()

    async def write(batch: Sequence[Row]) -> None:
        await trio.lowlevel.checkpoint()
        batches.append([row.n for row in batch])
        if len(batches) == 1:
            writer.enqueue(Row(100))  # arrives while the first batch is being written
            first_written.set()

    writer: LogWriter[Row] = LogWriter(write)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for n in range(10):
                writer.enqueue(Row(n))
            await first_written.wait()
            for n in range(101, 106):  # the next rows, within the linger
                writer.enqueue(Row(n))
            while writer.pending:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    # The old writer wrote [100] alone right after the first batch, then [101..105].
    assert batches == [list(range(10)), list(range(100, 106))]
