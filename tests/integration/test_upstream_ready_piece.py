"""`UpstreamResponse.ready_piece`: the next body piece if it is at hand without waiting
(issue 17: a streamed answer's head and first piece in one write). No I/O wait, no turn of
the loop; what it does not find, the iteration still reads."""

from __future__ import annotations

import trio

from tests.integration.test_upstream_first_byte_turns import DEADLINE, event_in_socket, serving

EVENT = b"data: {}\n\n"


async def test_a_piece_that_came_with_the_head_is_at_hand() -> None:
    with trio.fail_after(DEADLINE):
        async with serving() as (origin, pool):
            origin.together = True  # head, event and end in one write
            async with pool.request("POST", "/responses", [], b"{}") as response:
                assert response.ready_piece() == EVENT  # (synchronous: no wait, no turn)
                assert response.ready_piece() is None  # nothing more, and not a wait
                assert [chunk async for chunk in response] == []
            assert pool.idle_connections == 1  # read to its end: kept


async def test_a_piece_not_come_yet_is_left_to_the_iteration() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serving() as (origin, pool),
            pool.request("POST", "/responses", [], b"{}") as response,
        ):
            assert response.ready_piece() is None  # the origin holds its event back
            origin.release.set()
            assert [chunk async for chunk in response] == [EVENT]


async def test_a_piece_in_the_socket_is_taken_at_once() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serving() as (origin, pool),
            pool.request("POST", "/responses", [], b"{}") as response,
        ):
            await event_in_socket(origin, response)
            assert response.ready_piece() == EVENT
            assert [chunk async for chunk in response] == []
