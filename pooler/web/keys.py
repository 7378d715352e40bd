"""Pool API key authentication against the in-memory key cache (no database on the hot path)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from pooler.errors import ApiKeyInvalid, ApiKeyMissing, PoolDisabled
from pooler.routing.snapshot import normalize_scope
from pooler.store.models import KeyEntry, Pool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    pool_id: str
    prefix: str
    name: str | None
    # Policy, applied by pooler.web.key_policy: the normalized (normalize_scope) model slugs
    # the key may use, None for any; a reasoning effort and its mode ('enforce' or 'max'),
    # both None or both set.
    allowed_models: frozenset[str] | None = None
    reasoning_effort: str | None = None
    reasoning_effort_mode: str | None = None


@dataclass(frozen=True, slots=True)
class PoolInfo:
    pool_id: str
    name: str
    status: str
    v1_enabled: bool = True


def key_info(entry: KeyEntry) -> KeyInfo:
    """The cached form of a runtime-snapshot key (model names normalized once, here)."""
    models = entry.allowed_models
    return KeyInfo(
        str(entry.key_id),
        str(entry.pool_id),
        entry.prefix,
        entry.name,
        frozenset(normalize_scope(m) for m in models) if models is not None else None,
        entry.reasoning_effort,
        entry.reasoning_effort_mode,
    )


def pool_info(pool: Pool) -> PoolInfo:
    return PoolInfo(str(pool.id), pool.name, pool.status, bool(pool.v1_enabled))


_BLOCK = 64  # SHA-256's block size, in bytes


class KeyedDigest:
    """`pooler.crypto.key_digest(secret, raw)` (HMAC-SHA256, RFC 2104) with the secret's
    two padded hash states computed once: per key checked, two copies and two updates in
    C instead of an `hmac.HMAC` built from scratch (its pads re-derived from the secret on
    every request). It holds only what the secret derives, never a raw key."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret_key: bytes) -> None:
        if len(secret_key) > _BLOCK:
            secret_key = hashlib.sha256(secret_key).digest()
        padded = secret_key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __call__(self, raw: str) -> bytes:
        inner = self._inner.copy()
        inner.update(raw.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class KeyCache:
    """digest -> key; replaced whole on every configuration reload."""

    def __init__(self, secret_key: bytes) -> None:
        self._digest = KeyedDigest(secret_key)
        self._keys: dict[bytes, KeyInfo] = {}
        self._pools: dict[str, PoolInfo] = {}
        # key id -> its current display prefix, for the keys that authenticate now
        self._valid: dict[str, str] = {}
        # Called after each replace, e.g. to close the websockets of a revoked key.
        self.on_replace: list[Callable[[], None]] = []

    def replace(self, keys: dict[bytes, KeyInfo], pools: dict[str, PoolInfo]) -> None:
        self._keys = keys
        self._pools = pools
        self._valid = {
            k.key_id: k.prefix
            for k in keys.values()
            if (pool := pools.get(k.pool_id)) is not None and pool.status == "active"
        }
        for listener in self.on_replace:
            listener()

    def v1_enabled(self, pool_id: str) -> bool:
        """Whether the Pool (by id) still serves `/v1`."""
        pool = self._pools.get(pool_id)
        return pool is not None and pool.v1_enabled

    def is_valid(self, key: KeyInfo) -> bool:
        """Whether the key still authenticates with the secret it was given with: active, in
        an active Pool, not rotated since (a rotation changes the display prefix)."""
        return self._valid.get(key.key_id) == key.prefix

    def digest(self, raw: str) -> bytes:
        return self._digest(raw)

    def authenticate(self, authorization: bytes | None) -> tuple[KeyInfo, PoolInfo]:
        if not authorization:
            raise ApiKeyMissing("missing Pool API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, raw = authorization.decode("latin-1").strip().partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw:
            raise ApiKeyMissing("missing Pool API key: send it as 'Authorization: Bearer <key>'")
        key = self._keys.get(self.digest(raw))
        if key is None:
            raise ApiKeyInvalid("the Pool API key is not valid")
        pool = self._pools.get(key.pool_id)
        if pool is None or pool.status != "active":
            raise PoolDisabled("the Pool of this API key is disabled")
        return key, pool
