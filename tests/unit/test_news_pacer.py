"""NewsPacer (the continuity pins' news write-behind): steady news costs one write per
`spacing`, not one per `gather` (at 10 ms that was a hundred transactions a second under
steady traffic); an isolated piece of news is still written `gather` after it came; none
waits longer than `spacing` plus a write. Virtual time (trio's MockClock): nothing here
depends on the machine's speed."""

from __future__ import annotations

import trio
import trio.testing

from pooler.web.gateway import PIN_NEWS_GATHER_S, PIN_NEWS_SPACING_S
from pooler.web.news_pacer import NewsPacer

WRITE_S = 0.003  # what a write takes (virtual)


class Writes:
    def __init__(self) -> None:
        self.pending: list[float] = []  # when each unwritten piece of news came
        self.waits: list[float] = []  # how long each piece waited for its write's start
        self.count = 0

    def news(self, pacer: NewsPacer) -> None:
        self.pending.append(trio.current_time())
        pacer.news()

    async def flush(self) -> None:
        now = trio.current_time()
        self.waits.extend(now - came for came in self.pending)
        self.pending.clear()
        self.count += 1
        await trio.sleep(WRITE_S)


async def test_steady_news_is_written_once_per_spacing_and_none_waits_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writes = Writes()
    pacer = NewsPacer(writes.flush, gather=PIN_NEWS_GATHER_S, spacing=PIN_NEWS_SPACING_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pacer.run)
        for _ in range(1000):  # a response pinned every millisecond for a second
            writes.news(pacer)
            await trio.sleep(0.001)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert not writes.pending
    # One write per 50 ms, 20 in this second (the old loop, 10 ms gather and no spacing,
    # wrote ~75 times).
    assert PIN_NEWS_SPACING_S >= 0.05
    assert writes.count <= 22
    assert max(writes.waits) <= PIN_NEWS_SPACING_S + WRITE_S + 1e-9


async def test_isolated_news_is_written_after_the_gather_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writes = Writes()
    pacer = NewsPacer(writes.flush, gather=PIN_NEWS_GATHER_S, spacing=PIN_NEWS_SPACING_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pacer.run)
        for _ in range(3):  # quiet seconds between pins
            writes.news(pacer)
            await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert writes.count == 3
    assert [round(wait, 9) for wait in writes.waits] == [PIN_NEWS_GATHER_S] * 3
