"""The gateway takes its start-up objects out of Python's cyclic collections while it
serves (pooler.gc_tuning, issue 17): a full collection would otherwise traverse all of
them (~154,000: Quart, Hypercorn, psycopg, trio, ours) in one turn of the event loop; and
it raises the young generation's threshold. When the gateway stops both are undone, so
a process running gateways one after another (the tests) does not keep them."""

from __future__ import annotations

import gc
from pathlib import Path

from pooler.gc_tuning import YOUNG_THRESHOLD
from tests.harness import open_stack


def collectable(obj: object) -> bool:
    """Whether `obj` is in a generation collections traverse (not frozen)."""
    return any(found is obj for found in gc.get_objects())


async def test_start_up_objects_are_frozen_while_serving_and_released_after(
    db_url: str, tmp_path: Path
) -> None:
    before = gc.get_threshold()
    assert before[0] != YOUNG_THRESHOLD
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        gateway = stack.running.gateway
        assert gc.is_tracked(gateway)  # else "not collectable" would say nothing
        assert gc.get_freeze_count() > 10_000
        assert not collectable(gateway)
        assert not collectable(gateway.loop_lag)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    assert collectable(gateway)
