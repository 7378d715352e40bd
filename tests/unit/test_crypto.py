import hashlib
import hmac
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.crypto import (
    CryptoError,
    Keyring,
    display_prefix,
    generate_mcp_token,
    generate_pool_key,
    hash_password,
    hash_password_scrypt,
    key_digest,
    key_version,
    password_needs_rehash,
    verify_password,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=64))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    ring = Keyring(KEY_A)
    version, nonce, ciphertext = ring.encrypt(plaintext, aad)
    assert version == ring.current_version
    assert len(nonce) == 12
    assert len(ciphertext) == len(plaintext) + 16
    assert ring.decrypt(version, nonce, ciphertext, aad) == plaintext


@given(plaintext=st.binary(min_size=1, max_size=256), data=st.data())
def test_any_flipped_bit_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    ring = Keyring(KEY_A)
    version, nonce, ciphertext = ring.encrypt(plaintext, b"aad")
    blob = bytearray(nonce + ciphertext)
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CryptoError):
        ring.decrypt(version, bytes(blob[:12]), bytes(blob[12:]), b"aad")


def test_wrong_aad_fails() -> None:
    ring = Keyring(KEY_A)
    version, nonce, ciphertext = ring.encrypt(b"token", b"acct-1:access_token")
    with pytest.raises(CryptoError):
        ring.decrypt(version, nonce, ciphertext, b"acct-1:refresh_token")
    with pytest.raises(CryptoError):
        ring.decrypt(version, nonce, ciphertext, b"acct-2:access_token")


def test_old_key_still_decrypts_and_is_flagged_for_reencryption() -> None:
    old_ring = Keyring(KEY_A)
    version, nonce, ciphertext = old_ring.encrypt(b"secret", b"aad")
    rotated = Keyring(KEY_B, old=[KEY_A])
    assert rotated.decrypt(version, nonce, ciphertext, b"aad") == b"secret"
    assert rotated.needs_reencrypt(version)
    new_version, _, _ = rotated.encrypt(b"secret", b"aad")
    assert not rotated.needs_reencrypt(new_version)
    assert new_version != version
    with pytest.raises(CryptoError, match="no key with version"):
        Keyring(KEY_B).decrypt(version, nonce, ciphertext, b"aad")


def test_key_versions_are_stable_and_fit_a_postgres_integer() -> None:
    assert Keyring(KEY_A).current_version == Keyring(KEY_A).current_version == key_version(KEY_A)
    assert key_version(KEY_A) != key_version(KEY_B)
    for _ in range(100):
        assert 0 <= key_version(os.urandom(32)) < 2**31


def test_nonces_are_fresh() -> None:
    ring = Keyring(KEY_A)
    nonces = {ring.encrypt(b"x", b"")[1] for _ in range(1000)}
    assert len(nonces) == 1000


@pytest.mark.parametrize("bad", [b"", b"short", bytes(31), bytes(33)])
def test_keys_must_be_32_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError):
        Keyring(bad)
    with pytest.raises(ValueError):
        Keyring(KEY_A, old=[bad])


@given(secret=st.binary(min_size=32, max_size=32), raw=st.text())
def test_key_digest_is_hmac_sha256(secret: bytes, raw: str) -> None:
    digest = key_digest(secret, raw)
    assert digest == hmac.new(secret, raw.encode(), hashlib.sha256).digest()
    assert len(digest) == 32
    assert key_digest(bytes(32) if secret != bytes(32) else bytes([1]) * 32, raw) != digest


def test_pool_keys_and_mcp_tokens_have_their_shapes() -> None:
    keys = {generate_pool_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"sk-cxp-[A-Za-z0-9_-]{43}", key)
        assert display_prefix(key) == key[:12]
        assert display_prefix(key).startswith("sk-cxp-")
    token = generate_mcp_token()
    assert re.fullmatch(r"cxp-mcp-[A-Za-z0-9_-]{43}", token)
    assert generate_mcp_token() != token


def test_password_hash_round_trip() -> None:
    encoded = hash_password("correct horse battery staple")
    assert encoded.startswith("$argon2id$")
    assert "correct horse" not in encoded
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapl", encoded)
    assert not verify_password("", encoded)


def test_scrypt_hashes_of_earlier_versions_still_verify_and_want_a_rehash() -> None:
    old = hash_password_scrypt("correct horse battery staple")
    assert verify_password("correct horse battery staple", old)
    assert not verify_password("correct horse battery stapl", old)
    assert password_needs_rehash(old)
    assert not password_needs_rehash(hash_password("correct horse battery staple"))


def test_password_hashes_are_salted() -> None:
    assert hash_password("same password") != hash_password("same password")


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "$argon2id$v=19$m=1,t=1,p=1$!!$??",
        "bcrypt$1$2$3$4$5",
        "scrypt$14$8$1$!!$??",
        "scrypt$99$8$1$AAAA$AAAA",
        "a$b",
    ],
)
def test_malformed_password_hash_never_matches(encoded: str) -> None:
    assert not verify_password("anything", encoded)
