"""A request through the whole stack gets its lease without a turn of the event loop
while the actors are idle (issue 17: under load each turn is a pass over every runnable
task, and the lease was three on the way to the first byte: to the PoolSupervisor, to the
AccountActor, back to the request). Counted with a trio Instrument: the steps of the
gateway's application tasks that ended suspended in a lease, i.e. waiting for an actor's
answer. Nothing here depends on timing, but for an actor found busy with another message
(a periodic job's) by a request, which then waits as before."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.harness import open_stack
from tests.integration.test_short_request_yields import DEADLINE, ROUTES, requests_counted
from tests.turn_counts import awaiting

REQUESTS = 20


class LeaseWaits(trio.abc.Instrument):
    """Steps of the gateway's application tasks that ended waiting inside a lease."""

    def __init__(self) -> None:
        self.waits = 0
        self.steps = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if "task_group._handle" not in task.name:
            return
        self.steps += 1
        if "lease_account" in awaiting(task):
            self.waits += 1


async def test_a_request_is_leased_without_waiting_for_an_actor(
    db_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_stack(db_url, tmp_path) as stack:
            port = int(stack.url.rsplit(":", 1)[1])
            for route in ROUTES:
                counter = LeaseWaits()
                await requests_counted(port, stack.key, route, counter, REQUESTS)
                assert counter.steps >= REQUESTS  # the instrument saw the requests
                # Before: every request waited (REQUESTS). An actor now and then busy with
                # something else (a periodic job's message) makes a request wait as before.
                assert counter.waits <= REQUESTS // 4, (route, counter.waits / REQUESTS)
