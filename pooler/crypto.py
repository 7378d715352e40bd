"""Secrets at rest and the shapes of the secrets we hand out (DESIGN §3).

- `Keyring`: AES-256-GCM for upstream tokens. The current key encrypts; older keys still
  decrypt. A key's version is derived from the key itself, so it is stable across restarts
  and needs no configuration; rows under an old version are re-encrypted when touched.
- `key_digest`: the keyed digest (HMAC-SHA256 under the server secret) stored instead of a
  raw Pool API key, MCP token or /metrics token.
- `hash_password` / `verify_password`: argon2id for operator passwords; scrypt hashes of
  earlier versions still verify, and `password_needs_rehash` says when to replace a hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

POOL_KEY_PREFIX = "sk-cxp-"
MCP_TOKEN_PREFIX = "cxp-mcp-"
METRICS_TOKEN_PREFIX = "cxp-metrics-"
DISPLAY_PREFIX_LEN = 12
NONCE_LEN = 12
KEY_LEN = 32

# argon2id at OWASP's second recommendation (19 MiB, 2 passes, 1 lane): ~30 ms here, and the
# console's admission class bounds how many run at once (memory: 19 MiB each).
_ARGON2 = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)

# Earlier versions' scrypt cost (verified only, never written): n=2**14, r=8 uses 16 MiB and
# ~50 ms per hash on this class of machine.
_SCRYPT_LOG_N = 14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_DKLEN = 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class CryptoError(Exception):
    """A secret could not be decrypted (unknown key version, tampering, wrong context)."""


def key_version(key: bytes) -> int:
    """A stable 31-bit identifier of a key (fits a Postgres `integer`), revealing nothing."""
    digest = hashlib.sha256(b"codex-pooler keyring v1\x00" + key).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


class Keyring:
    """AES-256-GCM under a current key, with older keys kept for decryption only."""

    def __init__(self, current: bytes, old: Sequence[bytes] = ()) -> None:
        for key in (current, *old):
            if len(key) != KEY_LEN:
                raise ValueError("keyring keys must be 32 bytes")
        self.current_version = key_version(current)
        self._ciphers: dict[int, AESGCM] = {}
        for key in (*old, current):  # current last, so it wins a (2^-31) version collision
            self._ciphers[key_version(key)] = AESGCM(key)

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[int, bytes, bytes]:
        """Encrypt under the current key; returns (key_version, nonce, ciphertext+tag)."""
        nonce = os.urandom(NONCE_LEN)
        ciphertext = self._ciphers[self.current_version].encrypt(nonce, plaintext, aad)
        return self.current_version, nonce, ciphertext

    def decrypt(self, key_version: int, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        cipher = self._ciphers.get(key_version)
        if cipher is None:
            raise CryptoError(f"no key with version {key_version} in the keyring")
        try:
            return cipher.decrypt(bytes(nonce), bytes(ciphertext), aad)
        except (InvalidTag, ValueError) as exc:
            raise CryptoError("secret failed authentication (tampered or wrong context)") from exc

    def needs_reencrypt(self, key_version: int) -> bool:
        return key_version != self.current_version


def key_digest(secret_key: bytes, raw: str) -> bytes:
    """HMAC-SHA256 of a raw key or token under the server secret (32 bytes)."""
    return hmac.new(secret_key, raw.encode(), hashlib.sha256).digest()


def generate_pool_key() -> str:
    """A new raw Pool API key: `sk-cxp-` and 43 urlsafe characters (256 bits)."""
    return POOL_KEY_PREFIX + secrets.token_urlsafe(32)


def generate_mcp_token() -> str:
    """A new raw operator MCP token: `cxp-mcp-` and 43 urlsafe characters (256 bits)."""
    return MCP_TOKEN_PREFIX + secrets.token_urlsafe(32)


def generate_metrics_token() -> str:
    """A new raw /metrics bearer token: `cxp-metrics-` and 43 urlsafe characters (256 bits)."""
    return METRICS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def display_prefix(raw: str) -> str:
    """The short, non-secret part of a key shown in lists and logs."""
    return raw[:DISPLAY_PREFIX_LEN]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """An argon2id hash in PHC form (`$argon2id$v=19$m=...`), salted with random bytes."""
    return _ARGON2.hash(password)


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded` (argon2id, or an earlier version's scrypt);
    a malformed hash never matches."""
    if encoded.startswith("$argon2"):
        try:
            return _ARGON2.verify(encoded, password)
        except (VerificationError, InvalidHashError, ValueError):
            return False
    return _verify_scrypt(password, encoded)


def password_needs_rehash(encoded: str) -> bool:
    """Whether a hash that just verified should be replaced (scrypt, or older argon2 costs)."""
    if not encoded.startswith("$argon2id$"):
        return True
    try:
        return _ARGON2.check_needs_rehash(encoded)
    except (InvalidHashError, ValueError):
        return True


def hash_password_scrypt(password: str) -> str:
    """`scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`, the format of earlier versions (for tests
    that check an old hash still verifies and is upgraded)."""
    salt = os.urandom(16)
    derived = _scrypt(password, salt, _SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_LOG_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(derived)}"


def _verify_scrypt(password: str, encoded: str) -> bool:
    try:
        scheme, log_n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        derived = _scrypt(password, _unb64(salt), int(log_n), int(r), int(p))
        return hmac.compare_digest(derived, _unb64(expected))
    except ValueError:
        return False


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    if not 10 <= log_n <= 20 or not 1 <= r <= 32 or not 1 <= p <= 4:
        raise ValueError("scrypt parameters out of range")
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=2**log_n,
        r=r,
        p=p,
        maxmem=_SCRYPT_MAXMEM,
        dklen=_SCRYPT_DKLEN,
    )
