"""How fast MCP calls may come: per token, and for the whole process.

An MCP call costs about 6 ms of the gateway's CPU (`ops/bench/README.md`, "MCP clients
beside the gateway"); the `mcp` bulkhead bounds how many run at once, not how many a
second, so a few agents calling in a loop took most of the core the gateway's requests
need. Past a burst, a call waits for its slot (waiting costs no CPU); one whose slot is
more than `MAX_WAIT_S` away is refused (429) before any database work. An agent asking a
few questions never meets either bound.
"""

from __future__ import annotations

import hashlib
from typing import Final

import trio

from pooler.admin_ui.page_pace import PagePace

PER_TOKEN_PER_S: Final = 5.0
PER_TOKEN_BURST: Final = 20.0
PER_PROCESS_PER_S: Final = 40.0
PER_PROCESS_BURST: Final = 80.0
MAX_WAIT_S: Final = 2.0
_PROCESS: Final = 0


class CallPace:
    def __init__(self) -> None:
        self.per_token = PagePace(PER_TOKEN_PER_S, PER_TOKEN_BURST)
        self.per_process = PagePace(PER_PROCESS_PER_S, PER_PROCESS_BURST, limit=1)

    def reserve(self, token: str, now: float) -> float | None:
        """Seconds until this token's next call may run (its slots reserved), or None when
        that is more than MAX_WAIT_S away."""
        key = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
        token_wait = self.per_token.reserve(key, now, MAX_WAIT_S)
        if token_wait is None:
            return None
        process_wait = self.per_process.reserve(_PROCESS, now, MAX_WAIT_S)
        return None if process_wait is None else max(token_wait, process_wait)

    async def wait_for_slot(self, token: str) -> bool:
        """Wait for this token's slot; False (nothing waited) when it is too far away."""
        wait_s = self.reserve(token, trio.current_time())
        if wait_s is None:
            return False
        await trio.sleep(wait_s)
        return True
