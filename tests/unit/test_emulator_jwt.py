import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.emulator.tokens import Identity, mint_token_set, mint_unsigned_jwt
from pooler.protocol.jwt import (
    AUTH_CLAIMS,
    auth_claims,
    b64url_decode,
    b64url_encode,
    decode_jwt_claims,
    jwt_expiry,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_mint_then_decode_round_trips(claims: dict[str, object]) -> None:
    token = mint_unsigned_jwt(claims)
    assert decode_jwt_claims(token) == claims
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": "none", "typ": "JWT"}


@given(st.binary(max_size=64))
def test_base64url_round_trips(raw: bytes) -> None:
    encoded = b64url_encode(raw)
    assert "=" not in encoded
    assert b64url_decode(encoded) == raw


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "x..y",
        "x.!!!.y",
        "x." + b64url_encode(b"not json") + ".y",
        "x." + b64url_encode(b"[1, 2]") + ".y",
        "x." + b64url_encode(b"\xff\xfe") + ".y",
        "x.a.y",
    ],
)
def test_garbage_raises_value_error(token: str) -> None:
    with pytest.raises(ValueError):
        decode_jwt_claims(token)


@given(st.text(max_size=40))
def test_decode_never_raises_anything_but_value_error(token: str) -> None:
    with contextlib.suppress(ValueError):
        decode_jwt_claims(token)


def test_expiry() -> None:
    assert jwt_expiry(mint_unsigned_jwt({"exp": 1700000000})) == 1700000000.0
    assert jwt_expiry(mint_unsigned_jwt({"exp": 17.5})) == 17.5
    assert jwt_expiry(mint_unsigned_jwt({"exp": "soon"})) is None
    assert jwt_expiry(mint_unsigned_jwt({"exp": True})) is None
    assert jwt_expiry(mint_unsigned_jwt({})) is None
    assert jwt_expiry("opaque-token") is None


def test_minted_tokens_carry_the_codex_claims() -> None:
    who = Identity("acc-1", "user-1", "user1@emulator.test", "plus")
    tokens = mint_token_set(who, now=1000.0, ttl=60)
    access = decode_jwt_claims(tokens.access_token)
    assert access["exp"] == 1060 and access["iat"] == 1000
    assert access["email"] == "user1@emulator.test"
    assert access["sub"]
    assert auth_claims(access) == {
        "chatgpt_account_id": "acc-1",
        "chatgpt_plan_type": "plus",
        "chatgpt_user_id": "user-1",
        "user_id": "user-1",
    }
    id_claims = decode_jwt_claims(tokens.id_token)
    assert id_claims["email"] == "user1@emulator.test"
    assert id_claims[AUTH_CLAIMS]["chatgpt_account_id"] == "acc-1"
    assert tokens.expires_at == 1060.0
    again = mint_token_set(who, now=1000.0, ttl=60)
    assert again.access_token != tokens.access_token  # random jti
    assert again.refresh_token != tokens.refresh_token
    with pytest.raises(ValueError):
        decode_jwt_claims(tokens.refresh_token)
