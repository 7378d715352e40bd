"""The fake auth server's sign-in decisions (no I/O): authorize, the code exchange with PKCE,
device codes, and the tokens a sign-in issues."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from pooler.emulator.rejections import Rejection
from pooler.emulator.signin import DeviceGrant, s256
from pooler.emulator.signin_http import authorize, device_control
from pooler.emulator.state import EmulatorState
from pooler.emulator.tokens import CODEX_CLIENT_ID

T0 = 1_800_000_000.0
REDIRECT = "http://localhost:1455/auth/callback"
DEVICE_REDIRECT = "http://auth.test/deviceauth/callback"
VERIFIER = "v" * 64


def authorize_params(**extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": CODEX_CLIENT_ID,
        "redirect_uri": REDIRECT,
        "scope": "openid profile email offline_access",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
        "state": "S1",
        **extra,
    }


def query_of(location: str | Rejection) -> dict[str, str]:
    assert isinstance(location, str), location
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_authorize_redirects_with_a_code_for_the_chosen_account() -> None:
    state = EmulatorState(accounts=3, now=T0)
    back = query_of(authorize(state, authorize_params(emulator_account="account-2"), T0))
    assert back["state"] == "S1" and back["code"]
    account = state.sign_ins.redeem(back["code"], CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0 + 1)
    assert account is state.accounts[1]


def test_authorize_without_a_choice_takes_each_account_in_turn() -> None:
    state = EmulatorState(accounts=2, now=T0)
    found = []
    for _ in range(3):
        code = query_of(authorize(state, authorize_params(), T0))["code"]
        found.append(state.sign_ins.redeem(code, CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0))
    assert found == [state.accounts[0], state.accounts[1], state.accounts[0]]


def test_authorize_refusals() -> None:
    state = EmulatorState(accounts=1, now=T0)
    denied = query_of(authorize(state, authorize_params(emulator_deny="1"), T0))
    assert denied["error"] == "access_denied" and denied["state"] == "S1" and "code" not in denied
    no_pkce = query_of(authorize(state, authorize_params(code_challenge_method="plain"), T0))
    assert no_pkce["error"] == "invalid_request"
    token = query_of(authorize(state, authorize_params(response_type="token"), T0))
    assert token["error"] == "unsupported_response_type"
    # never a redirect to a URI the client did not register, nor for another client
    for params in (
        authorize_params(redirect_uri="https://evil.example/cb"),
        authorize_params(client_id="app_other"),
        authorize_params(emulator_account="nobody"),
    ):
        refused = authorize(state, params, T0)
        assert isinstance(refused, Rejection) and refused.status == 400
    assert state.sign_ins.codes == {}


def test_a_code_is_single_use_bound_to_its_verifier_and_expires() -> None:
    state = EmulatorState(accounts=1, now=T0)
    desk = state.sign_ins

    def code() -> str:
        return query_of(authorize(state, authorize_params(), T0))["code"]

    def refused(found: object) -> str | None:
        assert isinstance(found, Rejection) and found.status == 400
        return found.code

    first = code()
    assert desk.redeem(first, CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0) is state.accounts[0]
    assert refused(desk.redeem(first, CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0)) == "invalid_grant"
    wrong = code()
    assert refused(desk.redeem(wrong, CODEX_CLIENT_ID, REDIRECT, "w" * 64, T0)) == "invalid_grant"
    # a code shown with a wrong verifier is spent: it may have been stolen
    assert refused(desk.redeem(wrong, CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0)) == "invalid_grant"
    other_uri = code()
    elsewhere = "http://localhost:1457/auth/callback"
    assert refused(desk.redeem(other_uri, CODEX_CLIENT_ID, elsewhere, VERIFIER, T0))
    late = code()
    assert refused(desk.redeem(late, CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0 + desk.code_ttl))
    expired = code()
    assert desk.expire_codes() == 1
    assert refused(desk.redeem(expired, CODEX_CLIENT_ID, REDIRECT, VERIFIER, T0))


def test_device_code_pending_approved_then_spent() -> None:
    state = EmulatorState(accounts=2, now=T0)
    desk = state.sign_ins
    device = desk.start_device(CODEX_CLIENT_ID, T0)
    assert device.expires_at == T0 + 900 and desk.device_interval == 5

    def poll(user_code: str = device.user_code, now: float = T0) -> DeviceGrant | Rejection:
        return desk.poll_device(device.device_auth_id, user_code, DEVICE_REDIRECT, now)

    pending = poll()
    assert isinstance(pending, Rejection) and pending.status == 403
    assert isinstance(poll("WRONG-CODE"), Rejection) and poll("WRONG-CODE").status == 404
    approved = device_control(state, "approve", {"account_id": "account-2"})
    assert approved == {
        "user_code": device.user_code,
        "status": "approved",
        "account_id": state.accounts[1].account_id,
    }
    grant = poll(device.user_code.lower())
    assert isinstance(grant, DeviceGrant)
    assert grant.code_challenge == s256(grant.code_verifier)
    account = desk.redeem(
        grant.authorization_code, CODEX_CLIENT_ID, DEVICE_REDIRECT, grant.code_verifier, T0
    )
    assert account is state.accounts[1]
    gone = poll()
    assert isinstance(gone, Rejection) and gone.status == 404


def test_device_code_denied_or_expired() -> None:
    state = EmulatorState(accounts=1, now=T0)
    desk = state.sign_ins
    denied = desk.start_device(CODEX_CLIENT_ID, T0)
    assert device_control(state, "deny", {"user_code": denied.user_code})["status"] == "denied"
    answer = desk.poll_device(denied.device_auth_id, denied.user_code, DEVICE_REDIRECT, T0)
    assert isinstance(answer, Rejection) and (answer.status, answer.code) == (400, "access_denied")

    late = desk.start_device(CODEX_CLIENT_ID, T0)
    answer = desk.poll_device(late.device_auth_id, late.user_code, DEVICE_REDIRECT, T0 + 900)
    assert isinstance(answer, Rejection) and (answer.status, answer.code) == (400, "expired_token")

    cut = desk.start_device(CODEX_CLIENT_ID, T0)
    assert device_control(state, "expire", {})["user_code"] == cut.user_code  # the latest
    answer = desk.poll_device(cut.device_auth_id, cut.user_code, DEVICE_REDIRECT, T0)
    assert isinstance(answer, Rejection) and answer.code == "expired_token"
    missing = device_control(state, "approve", {"user_code": "NOPE-NOPE"})
    assert isinstance(missing, Rejection) and missing.status == 404


def test_a_sign_in_issues_tokens_the_account_can_use_and_refresh() -> None:
    state = EmulatorState(accounts=1, token_ttl=100, now=T0)
    account = state.accounts[0]
    old = account.tokens
    tokens = state.issue_sign_in(account, T0 + 10)
    assert tokens.access_token != old.access_token and account.tokens is tokens
    grant = state.authenticate(f"Bearer {tokens.access_token}", account.account_id, T0 + 20)
    assert not isinstance(grant, Rejection) and grant.account is account
    # the tokens it had before stay valid, as a second ChatGPT session would
    assert not isinstance(
        state.authenticate(f"Bearer {old.access_token}", account.account_id, T0 + 20), Rejection
    )
    refreshed = state.refresh(tokens.refresh_token, T0 + 30)
    assert not isinstance(refreshed, Rejection)
    state.reset()
    assert state.sign_ins.codes == {} and state.sign_ins.devices == {}
