"""The sign-in client (`pooler.upstream.oauth_login`) against the emulator's auth server over
real sockets: the code exchange and its refusals as the server shapes them, and one device
sign-in step by step."""

from __future__ import annotations

import httpx
import pytest
import trio

from pooler.emulator import EmulatorState, serve_emulator
from pooler.protocol.jwt import auth_claims, decode_jwt_claims
from pooler.upstream.oauth import refresh_tokens
from pooler.upstream.oauth_login import (
    SignInError,
    SignInExpired,
    exchange_code,
    finish_browser_sign_in,
    parse_callback_url,
    poll_device_sign_in,
    start_browser_sign_in,
    start_device_sign_in,
)


async def served(nursery: trio.Nursery, accounts: int = 2) -> tuple[EmulatorState, str]:
    state = EmulatorState(accounts=accounts)
    port = await nursery.start(serve_emulator, state)
    return state, f"http://127.0.0.1:{port}"


def browse(url: str) -> str:
    with httpx.Client(timeout=10) as browser:
        answer = browser.get(url, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return str(answer.headers["location"])


async def test_code_exchange_and_its_refusals(nursery: trio.Nursery) -> None:
    state, base = await served(nursery)

    def run() -> None:
        with httpx.Client(timeout=10) as http:
            sign_in = start_browser_sign_in(base)
            landed = browse(sign_in.authorize_url + "&emulator_account=account-2")
            tokens = finish_browser_sign_in(http, base, sign_in, landed)
            claims = auth_claims(decode_jwt_claims(tokens.access_token))
            assert claims["chatgpt_account_id"] == state.accounts[1].account_id
            # what a sign-in gives refreshes like any token of the account
            assert refresh_tokens(http, base, tokens.refresh_token).access_token

            code = parse_callback_url(landed, sign_in.state)
            with pytest.raises(SignInError) as replay:  # single use
                exchange_code(http, base, code, sign_in.code_verifier)
            assert replay.value.code == "invalid_grant" and not replay.value.retryable

            other = start_browser_sign_in(base)
            code = parse_callback_url(browse(other.authorize_url), other.state)
            with pytest.raises(SignInError) as stolen:  # someone else's verifier
                exchange_code(http, base, code, sign_in.code_verifier)
            assert stolen.value.code == "invalid_grant"

            late = start_browser_sign_in(base)
            code = parse_callback_url(browse(late.authorize_url), late.state)
            state.sign_ins.expire_codes()
            with pytest.raises(SignInError, match="invalid_grant"):
                exchange_code(http, base, code, late.code_verifier)

            with pytest.raises(SignInError) as down:  # nobody listening: worth a retry
                exchange_code(http, "http://127.0.0.1:9", code, late.code_verifier)
            assert down.value.retryable and down.value.code == "network_error"

    await trio.to_thread.run_sync(run)


async def test_device_sign_in_step_by_step(nursery: trio.Nursery) -> None:
    state, base = await served(nursery)

    def run() -> None:
        with httpx.Client(timeout=10) as http:
            device = start_device_sign_in(http, base)
            assert device.verification_url == base + "/codex/device"
            assert device.interval == 5.0 and 890 < device.seconds_left() <= 900
            assert "deviceauth_" not in repr(device)
            assert poll_device_sign_in(http, base, device) is None  # pending
            found = state.sign_ins.find_device(device.user_code)
            assert found is not None
            found.account = state.accounts[0]
            tokens = poll_device_sign_in(http, base, device)
            assert tokens is not None
            claims = auth_claims(decode_jwt_claims(tokens.id_token))
            assert claims["chatgpt_account_id"] == state.accounts[0].account_id
            assert poll_device_sign_in(http, base, device) is None  # over: unknown now

            expired = start_device_sign_in(http, base)
            found = state.sign_ins.find_device(expired.user_code)
            assert found is not None
            found.expires_at = 0.0
            with pytest.raises(SignInExpired):
                poll_device_sign_in(http, base, expired)

    await trio.to_thread.run_sync(run)
