"""Counting how often a task is rescheduled (each time it yields to trio's loop and is
woken again), for tests that pin how many turns a path takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from tests.unit.bench_support import load_bench


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


# The function names down a task's chain of awaits, outermost first: the benchmark's own
# reader (`ops/bench/ttfb_phases.py`), so the two cannot drift apart.
awaiting: Callable[[trio.lowlevel.Task], list[str]] = load_bench("ttfb_phases").awaiting
