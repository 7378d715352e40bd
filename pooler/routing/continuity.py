"""The continuity map: conversation key -> the account that holds its prompt cache.

In memory with a TTL; pure (the caller passes `now`). Keys are already digests.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Pin:
    account_id: str
    expires_at: float


class ContinuityMap:
    def __init__(self, ttl: float = 3600.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._pins: OrderedDict[bytes, Pin] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def get(self, key: bytes, now: float) -> str | None:
        pin = self._pins.get(key)
        if pin is None:
            return None
        if pin.expires_at <= now:
            del self._pins[key]
            return None
        return pin.account_id

    def pin(self, key: bytes, account_id: str, now: float, ttl: float | None = None) -> bool:
        """Pin `key` to `account_id`; whether that is news (a new pin, or a move) rather
        than a use of the pin that was there."""
        expires_at = now + (self.ttl if ttl is None else ttl)
        pin = self._pins.get(key)
        if pin is not None:
            moved = pin.account_id != account_id or pin.expires_at <= now
            pin.account_id = account_id
            pin.expires_at = max(pin.expires_at, expires_at)
            self._pins.move_to_end(key)
            return moved
        self._pins[key] = Pin(account_id, expires_at)
        while len(self._pins) > self.max_entries:
            self._pins.popitem(last=False)
        return True

    def restore(self, key: bytes, account_id: str, expires_at: float, now: float) -> None:
        """A pin read back from storage (this node's earlier life, or another node). The
        later expiry is the later use of the conversation, so it wins; an expired one is
        ignored."""
        if expires_at <= now:
            return
        pin = self._pins.get(key)
        if pin is not None:
            if pin.expires_at < expires_at:
                pin.account_id, pin.expires_at = account_id, expires_at
            return
        self._pins[key] = Pin(account_id, expires_at)
        while len(self._pins) > self.max_entries:
            self._pins.popitem(last=False)

    def forget_account(self, account_id: str) -> None:
        for key in [k for k, p in self._pins.items() if p.account_id == account_id]:
            del self._pins[key]

    def items(self) -> list[tuple[bytes, Pin]]:
        return list(self._pins.items())
