"""LogWriter: batches metadata-only request rows into Postgres, off the hot path.

`enqueue` never waits. A row is written promptly: when rows arrive while the writer is
idle it wakes, lingers 50 ms to gather what else arrives, and writes them in
one transaction; under load the rows that arrive during a write make the next batch,
written once the oldest of them is 50 ms old, so batches grow with the load and no row
waits longer than the linger plus a write (and the one in progress when it came). Writing
those rows at once instead, in a batch of the one or two that came during the write, cost
PostgreSQL a whole transaction each (~300 µs of its CPU, on the gateway's core) and made
half the batches under load. That
is what a crash (`kill -9`) can lose (a crash of PostgreSQL or of the machine, also the
batches of its last 600 ms: their commits do not wait for the WAL flush, `store.logs`); a
graceful stop (cancellation) writes every buffered row before returning, within a bounded
time. The buffer belongs to the object, not to a run of `run`, so a supervisor restarting
`run` after a crash loses nothing of it.

A batch that fails because the database is away stays in the buffer and is retried with
backoff, so an outage loses nothing until the buffer is full, and what overflows then is
counted, never silent. A batch the database refuses for its values (a data error) is split
until the refused rows are alone (`write_split`); each of those is written again in its
reduced form (`reduce`: the row without the fields a client chose), and counted; a row
refused even so is dropped and counted. One row can never wedge the writer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

from pooler.actors.write_split import is_data_error, write_splitting

log = logging.getLogger("pooler.actors.log_writer")

Row = TypeVar("Row")

FINAL_FLUSH_S = 5.0


class LogWriter(Generic[Row]):
    def __init__(
        self,
        write_batch: Callable[[Sequence[Row]], Awaitable[None]],
        *,
        reduce: Callable[[Row], Row] | None = None,
        capacity: int = 100_000,
        batch_size: int = 500,
        linger: float = 0.05,
        max_backoff: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write_batch = write_batch
        self._reduce = reduce
        self._buffer: deque[Row] = deque()
        # When each buffered row was enqueued (monotonic), in step with `_buffer`: the age
        # of the oldest is the writer's lag (`lag_seconds`).
        self._enqueued: deque[float] = deque()
        self._clock = clock
        self.capacity = capacity
        self.batch_size = batch_size
        self.linger = linger
        self.max_backoff = max_backoff
        self.dropped = 0  # buffer full
        self.reduced = 0  # refused by the database, written in reduced form
        self.refused = 0  # refused by the database even reduced: dropped
        self.written = 0
        self.failed_batches = 0
        self._wakeup = trio.Event()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def lag_seconds(self) -> float:
        """How long the oldest row not yet written has waited (0 when none waits)."""
        return self._clock() - self._enqueued[0] if self._enqueued else 0.0

    def enqueue(self, row: Row) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("request-log buffer full: %d rows dropped so far", self.dropped)
            return
        self._buffer.append(row)
        self._enqueued.append(self._clock())
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # A restart (by the gateway's supervisor) reuses this object and its buffer: rows
        # kept from the last incarnation are written now, not when the next one arrives.
        if self._buffer:
            self._wakeup.set()
        backoff = 0.0
        try:
            while True:
                if backoff:
                    await trio.sleep(backoff)
                else:
                    await self._wakeup.wait()
                    # The linger counts from the oldest row's arrival: the rows that came
                    # during the last write have waited part of it already.
                    await trio.sleep(min(self.linger, max(0.0, self.linger - self.lag_seconds())))
                self._wakeup = trio.Event()
                backoff = await self._flush_once(backoff)
        finally:
            with trio.move_on_after(FINAL_FLUSH_S, shield=True):
                while self._buffer:
                    if await self._flush_once(0.0) != 0.0:
                        break
            if self._buffer:
                log.error("request-log: %d rows not written at stop", len(self._buffer))

    async def _flush_once(self, backoff: float) -> float:
        """Write what the buffer holds now (rows enqueued meanwhile wait for the next
        flush); the backoff before the next try (0: all written)."""
        left = len(self._buffer)
        while left:
            batch = [self._buffer[i] for i in range(min(self.batch_size, left))]
            try:
                refused = await write_splitting(self._write_batch, batch)
                if refused:
                    await self._write_refused(refused)
            except Exception as exc:  # the database is away: keep the rows, back off
                self.failed_batches += 1
                log.warning("request-log batch failed (%s); will retry", type(exc).__name__)
                return min(self.max_backoff, max(0.2, backoff * 2))
            for _ in batch:
                self._buffer.popleft()
                self._enqueued.popleft()
            left -= len(batch)
            self.written += len(batch) - len(refused)
        return 0.0

    async def _write_refused(self, rows: list[Row]) -> None:
        """Rows the database refused alone: each in reduced form, else dropped (counted)."""
        for row in rows:
            reduced = self._reduce(row) if self._reduce is not None else None
            if reduced is not None:
                try:
                    await self._write_batch([reduced])
                except Exception as exc:
                    if not is_data_error(exc):
                        raise
                else:
                    self.reduced += 1
                    self.written += 1
                    log.error("request-log row refused by the database; stored reduced")
                    continue
            self.refused += 1
            log.error("request-log row refused by the database; dropped (%d so far)", self.refused)
