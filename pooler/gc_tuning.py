"""Python's cyclic garbage collector, settled while the gateway serves (issue 17).

Why: a full (oldest-generation) collection traverses every tracked container in the
process, and after start-up that is the whole of Quart, Werkzeug, Hypercorn, psycopg,
trio, prometheus_client and our own modules: ~154,000 objects that live as long as the
gateway. On one event loop that traversal is one turn of the loop during which nothing
else runs: ~100 ms of CPU, once every 10 to 30 s under SSE load at c=50, the longest
turn there is (ops/bench/loop_turns.py measures it).

What: once start-up is done (imports, app, actors, listener), collect the young garbage
start-up left and `gc.freeze()` the rest into the permanent generation, which no
collection looks at; a full collection then traverses only what requests created since
(~4 ms). Frozen objects are still freed by reference counting; only a cycle among them
is not collected while frozen, and start-up's objects live until the gateway stops, when
they are unfrozen (a process that runs gateways one after another, as the tests do, leaks
nothing).

And the young generation's threshold goes from CPython's 700 to YOUNG_THRESHOLD. What a
request allocates is almost all freed by reference counting, which lowers the count a
young collection waits for; at 700 the count's swings under load still started ~23
young and ~2 middle collections a second at SSE c=50 (18 ms of CPU a second, pauses up to
~4 ms); at 7,000 one young collection every ~4 s (0.6 ms of CPU a second, pauses ~4 ms).
The price: cyclic garbage (a cancelled task's frames, an exception's traceback) waits
longer to be freed, a few seconds under load.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

YOUNG_THRESHOLD: Final = 7000  # CPython's default: 700

_serving = 0  # gateways of this process that settled the collector and still run
_saved_thresholds: list[int] = []  # the thresholds before the first of them settled


def freeze_what_lives() -> None:
    """Collect the young garbage, then freeze every object left.

    Not a full collection: it would traverse every object of the process once more, which
    costs a process that starts gateway after gateway (the test suite, tens of millions of
    objects traversed per start) far more than it saves. What a full collection would
    have freed is start-up's own cyclic garbage in the oldest generation: bounded, once,
    and freed when the gateway stops (unfreeze)."""
    gc.collect(1)
    gc.freeze()


@contextmanager
def collector_settled() -> Iterator[Callable[[], None]]:
    """Yield `settle`, to call once start-up is done: collect start-up's garbage and
    freeze what is left, raise the young threshold. On the way out, when no other
    gateway here serves: unfreeze and put the threshold back."""
    global _serving
    settled = False

    def settle() -> None:
        global _serving
        nonlocal settled
        if settled:
            return
        settled = True
        if _serving == 0:
            _saved_thresholds[:] = gc.get_threshold()
        _serving += 1
        freeze_what_lives()
        gc.set_threshold(YOUNG_THRESHOLD, *_saved_thresholds[1:])

    try:
        yield settle
    finally:
        if settled:
            _serving -= 1
            if _serving == 0:
                gc.unfreeze()
                gc.set_threshold(*_saved_thresholds)
