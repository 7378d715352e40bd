import pytest

from pooler.emulator import inbound
from pooler.emulator.accounts import account_uuid
from pooler.emulator.faults import FaultPlan
from pooler.emulator.rejections import Rejection
from pooler.emulator.state import REQUEST_LOG_SIZE, EmulatorState, Grant, TurnLog
from pooler.emulator.tokens import TokenSet
from pooler.emulator.usage import EmulatedWindow
from pooler.protocol.jwt import auth_claims, decode_jwt_claims

T0 = 1_800_000_000.0
FIVE_HOURS = 300 * 60


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_accounts_are_deterministic() -> None:
    one, two = EmulatorState(accounts=2, now=T0), EmulatorState(accounts=2, now=T0 + 5)
    assert [a.account_id for a in one.accounts] == [a.account_id for a in two.accounts]
    assert one.accounts[0].account_id != one.accounts[1].account_id
    assert one.accounts[1].label == "account-2"
    assert one.accounts[1].email == "user2@emulator.test"
    assert one.accounts[0].account_id == account_uuid("emulator", 1)
    assert EmulatorState(seed="other").accounts[0].account_id != one.accounts[0].account_id
    claims = auth_claims(decode_jwt_claims(one.accounts[0].access_token))
    assert claims["chatgpt_account_id"] == one.accounts[0].account_id
    assert one.accounts[0].access_token != two.accounts[0].access_token


def test_authenticate() -> None:
    state = EmulatorState(token_ttl=100, now=T0)
    a, b = state.accounts[0], state.accounts[1]
    grant = state.authenticate(bearer(a.access_token), a.account_id, T0 + 1)
    assert isinstance(grant, Grant) and grant.account is a and not grant.fresh

    def code(auth: str | None, account: str | None, now: float = T0 + 1) -> str | None:
        result = state.authenticate(auth, account, now)
        assert isinstance(result, Rejection) and result.status == 401
        return result.code

    assert code(None, a.account_id) == "invalid_token"
    assert code("Bearer nope", a.account_id) == "invalid_token"
    assert code(a.access_token, a.account_id) == "invalid_token"  # no scheme
    assert code(bearer(a.access_token), b.account_id) == "account_mismatch"
    assert code(bearer(a.access_token), None) == "account_mismatch"
    assert code(bearer(a.access_token), a.account_id, T0 + 100) == "token_expired"


def test_refresh_rotates_and_detects_reuse() -> None:
    state = EmulatorState(token_ttl=100, now=T0)
    a = state.accounts[0]
    old_access, old_refresh = a.access_token, a.refresh_token
    tokens = state.refresh(old_refresh, T0 + 10)
    assert isinstance(tokens, TokenSet)
    assert a.access_token == tokens.access_token != old_access
    assert tokens.refresh_token != old_refresh
    fresh = state.authenticate(bearer(tokens.access_token), a.account_id, T0 + 20)
    assert isinstance(fresh, Grant) and fresh.fresh
    stale = state.authenticate(bearer(old_access), a.account_id, T0 + 20)
    assert isinstance(stale, Grant) and not stale.fresh  # valid until its own exp
    expired = state.authenticate(bearer(old_access), a.account_id, T0 + 100)
    assert isinstance(expired, Rejection) and expired.code == "token_expired"
    reused = state.refresh(old_refresh, T0 + 30)
    assert isinstance(reused, Rejection) and reused.code == "refresh_token_reused"
    unknown = state.refresh("rt_never_issued", T0 + 30)
    assert isinstance(unknown, Rejection) and unknown.code == "refresh_token_invalidated"
    again = state.refresh(tokens.refresh_token, T0 + 40)
    assert isinstance(again, TokenSet)


def test_refresh_reuse_fault_fails_once() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    state.arm_fault(a.label, "refresh_token_reused")
    failed = state.refresh(a.refresh_token, T0)
    assert isinstance(failed, Rejection) and failed.code == "refresh_token_reused"
    assert isinstance(state.refresh(a.refresh_token, T0), TokenSet)


def test_usage_moves_and_blocks_at_100() -> None:
    state = EmulatorState(percent_per_request=30, now=T0)
    a = state.accounts[0]
    for _ in range(3):
        assert state.quota_rejection(a, T0 + 1) is None
        state.charge(a, T0 + 1)
    primary, secondary = state.windows(a, T0 + 1)
    assert primary.used_percent == 90 and secondary.used_percent == pytest.approx(9)
    assert primary.minutes == 300 and secondary.minutes == 10080
    assert primary.reset_at == T0 + FIVE_HOURS
    state.charge(a, T0 + 2)
    refused = state.quota_rejection(a, T0 + 2)
    assert refused is not None and refused.status == 429
    assert refused.error["type"] == "usage_limit_reached"
    assert refused.error["resets_at"] == T0 + FIVE_HOURS
    assert refused.error["resets_in_seconds"] == FIVE_HOURS - 2
    assert refused.error["plan_type"] == "plus"
    assert (b"x-codex-primary-used-percent", b"100") in refused.headers
    # the window resets at origin + 300 min; the weekly one keeps counting
    assert state.quota_rejection(a, T0 + FIVE_HOURS) is None
    primary, secondary = state.windows(a, T0 + FIVE_HOURS)
    assert primary.used_percent == 0 and primary.reset_at == T0 + 2 * FIVE_HOURS
    assert secondary.used_percent == pytest.approx(12)


def test_quota_window_rolls_over_many_periods() -> None:
    window = EmulatedWindow(origin=0.0, minutes=1, used_percent=50)
    assert window.reset_at(59.0) == 60
    assert window.reset_at(600.5) == 660 and window.used_percent == 0
    window.add(150, 601)
    assert window.exhausted(601) and window.used_percent == 100


def test_usage_payload_and_headers() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    state.set_usage(a, 42.5, 7, T0)
    payload = state.usage_payload(a, T0 + 10)
    assert payload["plan_type"] == "plus"
    window = payload["rate_limit"]["primary_window"]
    assert window == {
        "used_percent": 42,
        "limit_window_seconds": 18000,
        "reset_after_seconds": FIVE_HOURS - 10,
        "reset_at": T0 + FIVE_HOURS,
    }
    assert payload["rate_limit"]["secondary_window"]["limit_window_seconds"] == 604800
    assert payload["rate_limit"]["allowed"] and not payload["rate_limit"]["limit_reached"]
    headers = dict(state.rate_limit_headers(a, T0 + 10))
    assert headers[b"x-codex-primary-used-percent"] == b"42.5"
    assert headers[b"x-codex-secondary-window-minutes"] == b"10080"
    assert headers[b"x-codex-primary-reset-after-seconds"] == str(FIVE_HOURS - 10).encode()
    event = state.rate_limits_event(a, T0)
    assert event["type"] == "codex.rate_limits"
    assert event["rate_limits"]["primary"]["used_percent"] == 42.5


def test_prompt_cache_is_per_account_and_cleared_by_reset() -> None:
    state = EmulatorState(now=T0)
    a, b = state.accounts[0], state.accounts[1]
    body = {"model": "gpt-5.5", "input": [{"type": "message", "role": "user", "content": "x"}]}
    assert inbound.read_prompt(body, 400, a).cached_tokens == 0
    warm = inbound.read_prompt(body, 400, a)
    assert warm.cached_tokens == warm.end.tokens > 0
    assert inbound.read_prompt(body, 400, b).cached_tokens == 0  # another account: cold
    state.reset()
    assert len(a.prompt_cache) == 0
    assert inbound.read_prompt(body, 400, a).cached_tokens == 0


def test_admit_response_consumes_faults_in_order() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    state.arm_fault(a.account_id, "rate_limit_429", times=2)
    state.arm_fault(a.label, "server_error_500")
    statuses = []
    for _ in range(4):
        refused, _fault = state.admit_response(a, T0)
        statuses.append(refused.status if refused else 200)
    assert statuses == [429, 429, 500, 200]
    state.arm_fault(a.label, "stall", stall_seconds=5)
    refused, fault = state.admit_response(a, T0)
    assert refused is None and fault is not None and fault.stall_seconds == 5
    state.arm_fault(a.label, "usage_limit_429")
    refused, _ = state.admit_response(a, T0)
    assert refused is not None and refused.error["code"] == "usage_limit_reached"
    assert (b"x-codex-primary-used-percent", b"100") in refused.headers
    assert state.windows(a, T0)[0].used_percent == 0  # the fault does not touch usage


def test_arm_fault_validation() -> None:
    state = EmulatorState(now=T0)
    with pytest.raises(ValueError):
        state.arm_fault("nobody", "stall")
    with pytest.raises(ValueError):
        state.arm_fault("account-1", "meteor_strike")
    with pytest.raises(ValueError):
        state.arm_fault("account-1", "stall", times=0)


def test_fault_plan_counting() -> None:
    plan = FaultPlan()
    plan.arm("a", "stall", times=2)
    plan.arm("a", "ws_upgrade_426")
    upgrade = frozenset({"ws_upgrade_426"})
    responses = frozenset({"stall"})
    assert plan.take("b", responses) is None
    taken = plan.take("a", upgrade)
    assert taken is not None and taken.kind == "ws_upgrade_426"
    assert plan.take("a", upgrade) is None
    assert plan.pending() == [{"account_id": "a", "kind": "stall", "remaining": 2}]
    assert plan.take("a", responses) is not None
    assert plan.take("a", responses) is not None
    assert plan.take("a", responses) is None
    assert plan.pending() == []


def test_request_log_is_bounded_and_reset_clears() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    grant = state.authenticate(bearer(a.access_token), a.account_id, T0)
    assert isinstance(grant, Grant)
    for i in range(REQUEST_LOG_SIZE + 5):
        state.record("POST", "/x", grant=grant, status=200, now=T0 + i)
    assert len(state.requests) == REQUEST_LOG_SIZE
    assert state.requests[-1]["time"] == T0 + REQUEST_LOG_SIZE + 4
    assert state.requests[-1]["account_id"] == a.account_id
    assert state.requests[-1]["token_fresh"] is False
    state.arm_fault("account-1", "stall")
    state.charge(a, T0)
    state.reset()
    assert not state.requests and not state.faults.pending()
    assert state.windows(a, T0)[0].used_percent == 0
    assert isinstance(state.authenticate(bearer(a.access_token), a.account_id, T0), Grant)


def test_request_log_turn_metadata() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    state.record("GET", "/backend-api/wham/usage", account=a, status=200, now=T0)
    turn = TurnLog(body_sha256="ab" * 32, session_hash="0123456789ab", input_tokens=9)
    state.record("POST", "/backend-api/codex/responses", account=a, status=200, turn=turn, now=T0)
    plain, logged = state.requests
    assert "body_sha256" not in plain and "cached_tokens" not in plain
    assert logged["body_sha256"] == "ab" * 32 and logged["session_hash"] == "0123456789ab"
    assert logged["input_tokens"] == 9 and logged["cached_tokens"] is None
    assert logged["account_id"] == a.account_id
