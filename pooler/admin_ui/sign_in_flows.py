"""Sign-ins under way from the console (browser PKCE and device code), kept in the gateway's
memory with a time to live.

Why memory and not a table: the PKCE verifier, the `state` and the device auth id are
secrets that matter for at most fifteen minutes; in memory they never reach the database,
its WAL or its backups, and need no cleanup job. The cost: a gateway restart forgets the
sign-ins under way (the operator starts again), and with several gateway nodes the
console's requests for one sign-in must reach the node that started it (sticky sessions,
or one node for the console).

A flow belongs to the console session that started it: another session (even of the same
operator) gets a 404. The store is bounded (a few flows per session, a few hundred in
all; the oldest go first).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from pooler.upstream.oauth_login import BrowserSignIn, DeviceSignIn

FLOW_TTL_S: Final = 15 * 60.0
MAX_FLOWS: Final = 256
MAX_FLOWS_PER_SESSION: Final = 4
EXPIRED_SHOWN_S: Final = 120.0


@dataclass(slots=True)
class Flow:
    """One sign-in: for the Pool (`pool_id`, `pool_name`), re-linking `relink` when set."""

    session_id: UUID
    pool_id: UUID
    pool_name: str
    relink: UUID | None
    expires_at: float
    browser: BrowserSignIn | None = None
    device: DeviceSignIn | None = None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    next_poll_at: float = 0.0
    polling: bool = False
    # Once finished: the account added or re-linked, or the error shown (then nothing
    # more is asked of the auth server).
    account_id: UUID | None = None
    created: bool = False
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.account_id is not None or self.error is not None


class SignInFlows:
    def __init__(
        self,
        ttl_s: float = FLOW_TTL_S,
        max_flows: int = MAX_FLOWS,
        per_session: int = MAX_FLOWS_PER_SESSION,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_flows = max_flows
        self.per_session = per_session
        self._flows: dict[str, Flow] = {}  # insertion order: oldest first

    def start(
        self,
        session_id: UUID,
        pool_id: UUID,
        pool_name: str,
        relink: UUID | None,
        *,
        browser: BrowserSignIn | None = None,
        device: DeviceSignIn | None = None,
        now: float | None = None,
    ) -> Flow:
        now = time.time() if now is None else now
        self._prune(now)
        expires_at = now + self.ttl_s
        if device is not None:  # kept a little past the code's expiry, to say so
            expires_at = min(expires_at, device.expires_at.timestamp()) + EXPIRED_SHOWN_S
        flow = Flow(session_id, pool_id, pool_name, relink, expires_at, browser, device)
        mine = [f.id for f in self._flows.values() if f.session_id == session_id]
        for old in mine[: max(0, len(mine) - self.per_session + 1)]:
            del self._flows[old]
        while len(self._flows) >= self.max_flows:
            del self._flows[next(iter(self._flows))]
        self._flows[flow.id] = flow
        return flow

    def get(self, flow_id: str, session_id: UUID, now: float | None = None) -> Flow | None:
        """The session's flow (None: unknown, another session's, or gone)."""
        self._prune(time.time() if now is None else now)
        flow = self._flows.get(flow_id)
        return flow if flow is not None and flow.session_id == session_id else None

    def drop(self, flow_id: str) -> None:
        self._flows.pop(flow_id, None)

    def __len__(self) -> int:
        return len(self._flows)

    def _prune(self, now: float) -> None:
        for flow_id in [f.id for f in self._flows.values() if f.expires_at <= now]:
            del self._flows[flow_id]
