"""Who may read /metrics: anyone, until an operator creates a token (`pooler admin settings
metrics-token create`); from then on only a scraper sending `Authorization: Bearer <token>`.

Only the token's digest is kept (HMAC-SHA256 under the instance's secret key, as Pool API
keys are: `pooler.crypto.key_digest`), in the instance settings, so every node (web, worker,
scheduler) learns a new token on the settings' NOTIFY. The check hashes what the client
sent and compares digests in constant time; every refusal is the same 401 (no hint whether
the header was missing, malformed or wrong).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pooler.crypto import key_digest

# Longer Authorization headers are refused without hashing (a token is ~55 characters).
MAX_AUTHORIZATION_BYTES = 512


def metrics_token_digest(secret_key: bytes, token: str) -> str:
    """The stored form of a metrics token: its keyed digest, in hex."""
    return key_digest(secret_key, token).hex()


class MetricsAuth:
    def __init__(self, secret_key: bytes) -> None:
        self._secret = secret_key
        self._digest: bytes | None = None

    @property
    def required(self) -> bool:
        return self._digest is not None

    def configure(self, digest_hex: str | None) -> None:
        """The digest in force now (from the instance settings); None opens /metrics."""
        self._digest = bytes.fromhex(digest_hex) if digest_hex else None

    def allows(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether a request with these (raw ASGI) headers may read /metrics."""
        expected = self._digest
        if expected is None:
            return True
        given = [value for name, value in headers if name == b"authorization"]
        if len(given) != 1 or len(given[0]) > MAX_AUTHORIZATION_BYTES:
            return False
        scheme, _, token = bytes(given[0]).decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(key_digest(self._secret, token), expected)
