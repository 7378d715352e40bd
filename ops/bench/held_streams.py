"""Holding many idle streams open through a server (the idle-streams check in extras.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import h11
import trio
from loadgen import Connection, RequestFailed, Target

__all__ = ["HeldStreams", "hold_streams"]


@dataclass
class HeldStreams:
    """Streams opened by `hold_streams`: time to response headers of each, in order."""

    open_s: list[float] = field(default_factory=list)
    solo_open_s: list[float] = field(default_factory=list)  # opened alone, after each batch
    errors: Counter[str] = field(default_factory=Counter)


async def _hold_one(
    target: Target,
    held: HeldStreams,
    timeout_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    conn = Connection(target)
    try:
        await conn.open()
        started = trio.current_time()
        with trio.fail_after(timeout_s):
            status = await conn.send_and_read_head()
        if not 200 <= status < 300:
            raise RequestFailed(f"http_{status}")
        held.open_s.append(trio.current_time() - started)
    except trio.TooSlowError:
        held.errors["open_timeout"] += 1
    except RequestFailed as exc:
        held.errors[str(exc)] += 1
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        held.errors[type(exc).__name__] += 1
    else:
        task_status.started()
        try:
            await trio.sleep_forever()  # hold it open, reading nothing
        finally:
            conn.close()
    conn.close()
    task_status.started()


async def hold_streams(
    target: Target,
    count: int,
    held: HeldStreams,
    *,
    batch: int = 50,
    timeout_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open `count` streams, `batch` at a time, each batch followed by one stream opened
    alone (its time to open goes to `solo_open_s`); stop at the first failure; report
    started, then hold them all open until cancelled."""
    async with trio.open_nursery() as nursery:
        opened = 0
        while opened < count and not held.errors:
            size = min(batch, count - opened) - 1
            async with trio.open_nursery() as starting:
                for _ in range(size):
                    starting.start_soon(nursery.start, _hold_one, target, held, timeout_s)
            before = len(held.open_s)
            await nursery.start(_hold_one, target, held, timeout_s)
            if len(held.open_s) > before:
                held.solo_open_s.append(held.open_s[-1])
            opened += size + 1
        task_status.started()
