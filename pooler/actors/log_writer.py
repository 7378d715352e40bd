"""LogWriter: batches metadata-only request rows into Postgres, off the hot path.

`enqueue` never waits. Rows wait in a bounded buffer; a batch that fails because the
database is away stays in the buffer and is retried with backoff, so an outage loses
nothing until the buffer is full, and what overflows then is counted, never silent.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

log = logging.getLogger("pooler.actors.log_writer")

Row = TypeVar("Row")


class LogWriter(Generic[Row]):
    def __init__(
        self,
        write_batch: Callable[[Sequence[Row]], Awaitable[None]],
        *,
        capacity: int = 100_000,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        max_backoff: float = 10.0,
    ) -> None:
        self._write_batch = write_batch
        self._buffer: deque[Row] = deque()
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.dropped = 0
        self.written = 0
        self.failed_batches = 0
        self._wakeup = trio.Event()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def enqueue(self, row: Row) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("request-log buffer full: %d rows dropped so far", self.dropped)
            return
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_size:
            self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = 0.0
        try:
            while True:
                with trio.move_on_after(backoff or self.flush_interval):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                backoff = await self._flush_once(backoff)
        finally:
            with trio.move_on_after(5, shield=True):
                while self._buffer:
                    if await self._flush_once(0.0) != 0.0:
                        break

    async def _flush_once(self, backoff: float) -> float:
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(self.batch_size, len(self._buffer)))]
            try:
                await self._write_batch(batch)
            except Exception as exc:  # the database is away: keep the rows, back off
                self.failed_batches += 1
                log.warning("request-log batch failed (%s); will retry", type(exc).__name__)
                return min(self.max_backoff, max(0.2, backoff * 2))
            for _ in batch:
                self._buffer.popleft()
            self.written += len(batch)
        return 0.0
