"""Counting how often a task is rescheduled (each time it yields to trio's loop and is
woken again), for tests that pin how many turns a path takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio


class Reschedules(trio.abc.Instrument):
    """How many times `task` was rescheduled while counting."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


@contextmanager
def counting_reschedules() -> Iterator[Reschedules]:
    """The current task's reschedules inside the block."""
    counter = Reschedules(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


def awaiting(task: trio.lowlevel.Task) -> list[str]:
    """The function names down the task's chain of awaits, outermost first."""
    names = []
    coro: Any = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            names.append(frame.f_code.co_name)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return names
