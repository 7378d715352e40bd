"""The pure parts of the ChatGPT sign-in client: PKCE, the authorize URL, the pasted
callback URL, the device code's interval and expiry, and the polling loop's deadline."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
import trio.testing

from pooler.upstream.oauth_login import (
    CODEX_CLIENT_ID,
    DEFAULT_DEVICE_TTL_S,
    MAX_CALLBACK_CHARS,
    MIN_POLL_INTERVAL_S,
    REDIRECT_URI,
    SignInDenied,
    SignInError,
    SignInExpired,
    SignInTokens,
    StateMismatch,
    build_authorize_url,
    device_expiry,
    new_pkce,
    parse_callback_url,
    pkce_challenge,
    poll_interval,
    poll_until_done,
    start_browser_sign_in,
)


def test_pkce_pair_is_s256_of_a_long_random_verifier() -> None:
    one, two = new_pkce(), new_pkce()
    assert one.verifier != two.verifier
    assert 43 <= len(one.verifier) <= 128 and "=" not in one.verifier
    digest = hashlib.sha256(one.verifier.encode()).digest()
    assert one.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    # RFC 7636 appendix B
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert one.verifier not in repr(one)


def test_authorize_url_carries_what_the_codex_cli_sends() -> None:
    url = build_authorize_url("https://auth.example/", state="st@te", code_challenge="ch")
    split = urlsplit(url)
    assert (split.scheme, split.netloc, split.path) == ("https", "auth.example", "/oauth/authorize")
    params = {k: v[0] for k, v in parse_qs(split.query).items()}
    assert params == {
        "response_type": "code",
        "client_id": CODEX_CLIENT_ID,
        "redirect_uri": "http://localhost:1455/auth/callback",
        "scope": "openid profile email offline_access",
        "code_challenge": "ch",
        "code_challenge_method": "S256",
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
        "state": "st@te",
        "originator": "codex_cli_rs",
    }
    assert "%20" in split.query and "+" not in split.query  # spaces as %20, like the CLI


def test_browser_sign_in_keeps_its_secrets_out_of_repr() -> None:
    sign_in = start_browser_sign_in("http://auth.test")
    params = {k: v[0] for k, v in parse_qs(urlsplit(sign_in.authorize_url).query).items()}
    assert params["state"] == sign_in.state and len(sign_in.state) >= 43
    assert params["code_challenge"] == pkce_challenge(sign_in.code_verifier)
    assert sign_in.redirect_uri == REDIRECT_URI
    assert sign_in.code_verifier not in repr(sign_in)
    assert start_browser_sign_in("http://auth.test").state != sign_in.state
    tokens = SignInTokens("access-secret", "refresh-secret", "id-secret")
    assert "secret" not in repr(tokens)


CALLBACK = "http://localhost:1455/auth/callback"


@pytest.mark.parametrize(
    "pasted",
    [
        f"{CALLBACK}?code=abc&scope=openid&state=S1",
        f"  {CALLBACK}?state=S1&code=abc\n",
        "?code=abc&state=S1",
        "code=abc&state=S1",
        f"{CALLBACK}?code=abc&state=S1#frag",
    ],
)
def test_callback_url_gives_the_code(pasted: str) -> None:
    assert parse_callback_url(pasted, "S1") == "abc"


@pytest.mark.parametrize(
    "pasted",
    [
        f"{CALLBACK}?code=abc&state=S2",
        f"{CALLBACK}?code=abc",
        f"{CALLBACK}?code=abc&state=",
        # the state is checked before the error, as the Codex CLI does: a forged callback
        # cannot make us report anything
        f"{CALLBACK}?error=access_denied&state=other",
    ],
)
def test_callback_url_of_another_sign_in_is_refused(pasted: str) -> None:
    with pytest.raises(StateMismatch) as caught:
        parse_callback_url(pasted, "S1")
    assert caught.value.code == "state_mismatch" and "S2" not in caught.value.message


def test_callback_error_is_surfaced() -> None:
    with pytest.raises(SignInDenied) as denied:
        parse_callback_url(f"{CALLBACK}?error=access_denied&state=S1", "S1")
    assert denied.value.code == "access_denied"
    with pytest.raises(SignInDenied, match="Codex is not enabled"):
        parse_callback_url(
            f"{CALLBACK}?error=access_denied&error_description=missing_codex_entitlement&state=S1",
            "S1",
        )
    with pytest.raises(SignInError) as other:
        parse_callback_url(f"{CALLBACK}?error=server_error&state=S1", "S1")
    assert other.value.code == "server_error" and not isinstance(other.value, SignInDenied)
    with pytest.raises(SignInError) as odd:  # an error code is echoed only when it is a word
        parse_callback_url(f"{CALLBACK}?error=%1B%5B31m&state=S1", "S1")
    assert odd.value.code == "unknown_error" and "\x1b" not in odd.value.message


@pytest.mark.parametrize(
    ("pasted", "code"),
    [
        (f"{CALLBACK}?state=S1", "missing_code"),
        (f"{CALLBACK}?code=&state=S1", "missing_code"),
        ("not a url", "invalid_callback"),
        ("", "invalid_callback"),
        (f"{CALLBACK}?code=a&code=b&state=S1", "invalid_callback"),
        (f"{CALLBACK}?code=a&state=S1&pad=" + "x" * MAX_CALLBACK_CHARS, "invalid_callback"),
    ],
)
def test_callback_url_without_a_code(pasted: str, code: str) -> None:
    with pytest.raises(SignInError) as caught:
        parse_callback_url(pasted, "S1")
    assert caught.value.code == code


def test_device_expiry_and_interval() -> None:
    now = 1_800_000_000.0
    assert device_expiry({"expires_at": "2027-01-15T08:00:00Z"}, now) == datetime(
        2027, 1, 15, 8, tzinfo=UTC
    )
    assert device_expiry({"expires_at": "2027-01-15T08:00:00"}, now).tzinfo is not None
    assert device_expiry({"expires_in": 60}, now).timestamp() == now + 60
    for body in ({}, {"expires_at": "soon"}, {"expires_in": True}, {"expires_in": -5}):
        assert device_expiry(body, now).timestamp() == now + DEFAULT_DEVICE_TTL_S
    assert poll_interval("5") == 5.0
    assert poll_interval(" 7 ") == 7.0
    assert poll_interval(3) == 3.0
    for hot in ("0", 0, "-1", "nan", "inf", "soon", None):
        assert MIN_POLL_INTERVAL_S <= poll_interval(hot) <= 60.0


async def test_polling_waits_for_the_answer_at_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked: list[float] = []
    answers: list[str | None] = [None, None, "done"]

    async def poll() -> str | None:
        asked.append(trio.current_time())
        return answers.pop(0)

    start = trio.current_time()
    assert await poll_until_done(poll, 5.0, 900.0) == "done"
    assert [round(t - start) for t in asked] == [0, 5, 10]


async def test_polling_rides_out_a_transient_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers: list[object] = [SignInError("network_error", "down", retryable=True), "done"]

    async def poll() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await poll_until_done(poll, 1.0, 60.0) == "done"


async def test_polling_stops_at_a_refusal(autojump_clock: trio.testing.MockClock) -> None:
    async def poll() -> None:
        raise SignInDenied("access_denied", "the sign-in was denied")

    with pytest.raises(SignInDenied):
        await poll_until_done(poll, 1.0, 60.0)


async def test_polling_gives_up_at_expiry(autojump_clock: trio.testing.MockClock) -> None:
    polls = 0

    async def poll() -> None:
        nonlocal polls
        polls += 1

    start = trio.current_time()
    with pytest.raises(SignInExpired):
        await poll_until_done(poll, 5.0, 30.0)
    assert trio.current_time() - start == pytest.approx(30.0)
    assert polls == 6
