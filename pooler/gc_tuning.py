"""Python's cyclic garbage collector, settled while the gateway serves (issue 17).

Why: a full (oldest-generation) collection traverses every tracked container in the
process, and after start-up that is the whole of Quart, Werkzeug, Hypercorn, psycopg,
trio, prometheus_client and our own modules: ~154,000 objects that live as long as the
gateway. On one event loop that traversal is one turn of the loop during which nothing
else runs: ~100 ms of CPU, once every 10 to 30 s under SSE load at c=50, the longest
turn there is (ops/bench/loop_turns.py measures it).

What: once start-up is done (imports, app, actors, listener), collect what start-up left
and `gc.freeze()` the rest into the permanent generation, which no collection looks at;
a full collection then traverses only what requests created since (~2 ms). Frozen
objects are still freed by reference counting; only a cycle among them is not collected
while frozen, and start-up's objects live until the gateway stops, when they are unfrozen
(a process that runs gateways one after another, as the tests do, leaks nothing).
CPython's thresholds stay: a young threshold ten times higher made collections rarer but
each one longer (p50 0.6 -> 4.4 ms of CPU), closer to the 5 ms loop-lag budget.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_serving = 0  # gateways of this process that settled the collector and still run


def freeze_what_lives() -> None:
    """Collect the garbage there is, then freeze every object left."""
    gc.collect()
    gc.freeze()


@contextmanager
def collector_settled() -> Iterator[Callable[[], None]]:
    """Yield `settle`, to call once start-up is done: collect start-up's garbage and
    freeze what is left. On the way out, unfreeze when no other gateway here serves."""
    global _serving
    settled = False

    def settle() -> None:
        global _serving
        nonlocal settled
        if settled:
            return
        settled = True
        _serving += 1
        freeze_what_lives()

    try:
        yield settle
    finally:
        if settled:
            _serving -= 1
            if _serving == 0:
                gc.unfreeze()
