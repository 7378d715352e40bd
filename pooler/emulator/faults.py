"""The scriptable fault plan: per account, a queue of faults each armed for N requests.

A fault kind belongs to one place where it can fire (a `/responses` turn, a refresh, a
websocket upgrade); `take` consumes one use of the oldest armed fault of that place.
A `usage_limit_429` may say when its limit resets (`resets_in`, default: the primary
window's reset), a `rate_limit_429` how long to wait (`retry_after`, default 1 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DEFAULT_STALL_SECONDS = 600.0

RESPONSE_FAULTS = frozenset(
    {
        "usage_limit_429",
        "rate_limit_429",
        "server_error_500",
        "unauthorized_401",
        "stall",
        "disconnect_mid_stream",
    }
)
REFRESH_FAULTS = frozenset({"refresh_token_reused"})
UPGRADE_FAULTS = frozenset({"ws_upgrade_426", "ws_upgrade_401"})
FAULT_KINDS = RESPONSE_FAULTS | REFRESH_FAULTS | UPGRADE_FAULTS


@dataclass
class Fault:
    kind: str
    remaining: int
    stall_seconds: float = DEFAULT_STALL_SECONDS
    resets_in: float | None = None  # usage_limit_429: seconds until the limit resets
    retry_after: int | None = None  # rate_limit_429: the Retry-After it sends


@dataclass
class FaultPlan:
    by_account: dict[str, list[Fault]] = field(default_factory=dict)

    def arm(
        self,
        account_id: str,
        kind: str,
        times: int = 1,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        *,
        resets_in: float | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if stall_seconds < 0:
            raise ValueError("stall_seconds must not be negative")
        if resets_in is not None and resets_in <= 0:
            raise ValueError("resets_in_seconds must be positive")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after_seconds must not be negative")
        fault = Fault(kind, times, stall_seconds, resets_in, retry_after)
        self.by_account.setdefault(account_id, []).append(fault)
        return fault

    def take(self, account_id: str, kinds: frozenset[str]) -> Fault | None:
        """Consume one use of the oldest armed fault of `kinds` for this account."""
        queue = self.by_account.get(account_id)
        if not queue:
            return None
        for index, fault in enumerate(queue):
            if fault.kind in kinds:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del queue[index]
                return replace(fault, remaining=1)
        return None

    def pending(self) -> list[dict[str, object]]:
        return [
            {"account_id": account_id, "kind": f.kind, "remaining": f.remaining}
            for account_id, queue in self.by_account.items()
            for f in queue
        ]

    def clear(self) -> None:
        self.by_account.clear()
