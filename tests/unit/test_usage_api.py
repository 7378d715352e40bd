"""The `/wham/usage` poll (protocol §1.6): the pure parser, and the fetch against scripted
transports and the real emulator."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from pooler.emulator import EmulatorState, serve_emulator
from pooler.protocol.ratelimit import Credits, RateLimitSnapshot, ReportedWindow
from pooler.upstream.usage_api import (
    UsageUnauthorized,
    UsageUnavailable,
    fetch_usage,
    parse_usage_payload,
    usage_url,
)

NOW = 1_760_000_000.0


def window(used: Any, seconds: Any = 18000, after: Any = 600, at: Any = None) -> dict[str, Any]:
    return {
        "used_percent": used,
        "limit_window_seconds": seconds,
        "reset_after_seconds": after,
        "reset_at": at,
    }


def test_full_payload() -> None:
    payload = {
        "plan_type": "pro",
        "rate_limit": {
            "allowed": True,
            "limit_reached": False,
            "primary_window": window(12, 18000, 999, 1_760_003_600),
            "secondary_window": window(40, 604800, 86400),
        },
        "credits": {"has_credits": True, "unlimited": False, "balance": "12.50"},
        "additional_rate_limits": [
            {
                "limit_name": "GPT-5.2-Codex-Sonic",
                "metered_feature": "Codex-Bengalfox",
                "rate_limit": {"primary_window": window(80, 18000, 60)},
            },
            {
                "limit_name": "Other-Model",
                "metered_feature": None,
                "rate_limit": {"primary_window": window(5, 1440 * 60, 30)},
            },
        ],
    }
    assert parse_usage_payload(payload, NOW) == RateLimitSnapshot(
        primary=ReportedWindow(12.0, 300, 1_760_003_600.0),  # reset_at wins over reset_after
        secondary=ReportedWindow(40.0, 10080, NOW + 86400),
        credits=Credits(has_credits=True, unlimited=False, balance="12.50"),
        extra={
            "codex_bengalfox": (ReportedWindow(80.0, 300, NOW + 60), None),
            "other_model": (ReportedWindow(5.0, 1440, NOW + 30), None),
        },
        plan_type="pro",
        active_limit=None,
        limit_names={"codex_bengalfox": "GPT-5.2-Codex-Sonic", "other_model": "Other-Model"},
    )


def test_older_keys_and_a_lone_weekly_window() -> None:
    payload = {"rate_limit": {"primary": window(7, 604800, 100), "secondary": None}}
    snapshot = parse_usage_payload(payload, NOW)
    assert snapshot is not None
    assert snapshot.primary is None
    assert snapshot.secondary == ReportedWindow(7.0, 10080, NOW + 100)
    # With the secondary slot taken, a weekly primary stays where it is.
    both = {"rate_limit": {"primary": window(7, 604800), "secondary": window(9, 604800)}}
    snapshot = parse_usage_payload(both, NOW)
    assert snapshot is not None and snapshot.primary is not None
    assert snapshot.primary.window_minutes == 10080


def test_default_family_in_additional_limits_fills_primary() -> None:
    payload = {
        "additional_rate_limits": [
            {
                "limit_name": "codex",
                "metered_feature": "codex",
                "rate_limit": {"primary_window": window(3)},
            },
        ]
    }
    snapshot = parse_usage_payload(payload, NOW)
    assert snapshot is not None
    assert snapshot.primary == ReportedWindow(3.0, 300, NOW + 600)
    assert snapshot.extra == {} and snapshot.limit_names == {}


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"plan_type": "plus"},
        {"rate_limit": None, "credits": None, "additional_rate_limits": None},
        {"rate_limit": {"primary_window": {"used_percent": "lots"}}},
        {"rate_limit": {"primary_window": window(True)}},
        {"credits": {"has_credits": "yes", "unlimited": False}},
        {"additional_rate_limits": [{"limit_name": "x", "rate_limit": {}}, 3, None]},
        {"additional_rate_limits": [{"rate_limit": {"primary_window": window(1)}}]},
    ],
)
def test_payloads_without_evidence(payload: dict[str, Any]) -> None:
    assert parse_usage_payload(payload, NOW) is None


def test_malformed_values_are_ignored() -> None:
    payload = {
        "plan_type": 5,
        "rate_limit": {
            "primary_window": window(10, seconds=-5, after="soon", at=float("nan")),
            "secondary_window": window(10, seconds=None, after=-30, at=0),
        },
        "credits": {"has_credits": False, "unlimited": True, "balance": 3},
    }
    assert parse_usage_payload(payload, NOW) == RateLimitSnapshot(
        primary=ReportedWindow(10.0, None, None),
        secondary=ReportedWindow(10.0, None, NOW),
        credits=Credits(False, True, "3"),
        extra={},
        plan_type=None,
        active_limit=None,
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["primary", "codex", "10080"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "plan_type",
                    "rate_limit",
                    "primary_window",
                    "secondary_window",
                    "primary",
                    "secondary",
                    "used_percent",
                    "limit_window_seconds",
                    "reset_after_seconds",
                    "reset_at",
                    "credits",
                    "has_credits",
                    "unlimited",
                    "balance",
                    "additional_rate_limits",
                    "limit_name",
                    "metered_feature",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


@given(JSON)
def test_arbitrary_input_never_raises(payload: Any) -> None:
    result = parse_usage_payload(payload, NOW)
    assert result is None or isinstance(result, RateLimitSnapshot)


@given(
    st.fixed_dictionaries(
        {
            "used_percent": st.integers(0, 100),
            "limit_window_seconds": st.integers(0, 10**6),
            "reset_after_seconds": st.integers(0, 10**6),
        }
    )
)
def test_any_numeric_window_is_kept(raw: dict[str, int]) -> None:
    snapshot = parse_usage_payload({"rate_limit": {"secondary_window": raw}}, NOW)
    assert snapshot is not None and snapshot.secondary is not None
    assert snapshot.secondary.window_minutes == raw["limit_window_seconds"] // 60
    assert snapshot.secondary.reset_at == NOW + raw["reset_after_seconds"]


def test_usage_url() -> None:
    expected = "https://chatgpt.com/backend-api/wham/usage"
    assert usage_url("https://chatgpt.com") == expected
    assert usage_url("https://chatgpt.com/") == expected
    assert usage_url("https://chatgpt.com/backend-api") == expected


# -- fetch_usage ------------------------------------------------------------------------------


def scripted(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_fetch_sends_the_account_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"rate_limit": {"primary_window": window(1)}})

    with scripted(handler) as http:
        snapshot = fetch_usage(http, "https://up.test", "tok-123", "acct-9", now=NOW)
    assert snapshot is not None and snapshot.primary == ReportedWindow(1.0, 300, NOW + 600)
    (request,) = seen
    assert request.method == "GET"
    assert str(request.url) == "https://up.test/backend-api/wham/usage"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["chatgpt-account-id"] == "acct-9"
    assert request.headers["user-agent"].startswith("codex-pooler")
    assert request.extensions["timeout"]["read"] == 10.0


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(503, json={"error": "down"}), "http_503"),
        (httpx.Response(429), "http_429"),
        (httpx.Response(200, content=b"<html>"), "invalid_json"),
        (httpx.Response(200, json=[1, 2]), "invalid_json"),
    ],
)
def test_fetch_failures(response: httpx.Response, code: str) -> None:
    with scripted(lambda request: response) as http, pytest.raises(UsageUnavailable) as caught:
        fetch_usage(http, "https://up.test", "tok", "acct", now=NOW)
    assert caught.value.code == code


def test_fetch_network_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for handler, code in ((refuse, "network_error"), (slow, "timeout")):
        with scripted(handler) as http, pytest.raises(UsageUnavailable) as caught:
            fetch_usage(http, "https://up.test", "tok", "acct", now=NOW)
        assert caught.value.code == code


def test_fetch_unauthorized() -> None:
    with scripted(lambda request: httpx.Response(401)) as http, pytest.raises(UsageUnauthorized):
        fetch_usage(http, "https://up.test", "tok", "acct", now=NOW)


async def test_fetch_from_the_emulator(nursery: trio.Nursery) -> None:
    state = EmulatorState(accounts=2)
    port = await nursery.start(serve_emulator, state)
    base = f"http://127.0.0.1:{port}"
    account = state.accounts[0]
    state.set_usage(account, 25.0, 60.0, time.time())

    def poll(token: str, account_id: str) -> RateLimitSnapshot | None:
        with httpx.Client() as http:
            return fetch_usage(http, base, token, account_id, now=time.time())

    with trio.fail_after(10):
        snapshot = await trio.to_thread.run_sync(poll, account.access_token, account.account_id)
        assert snapshot is not None
        assert snapshot.plan_type == account.plan_type
        assert snapshot.primary is not None and snapshot.secondary is not None
        assert (snapshot.primary.used_percent, snapshot.primary.window_minutes) == (25.0, 300)
        assert (snapshot.secondary.used_percent, snapshot.secondary.window_minutes) == (
            60.0,
            10080,
        )
        assert snapshot.primary.reset_at is not None and snapshot.primary.reset_at > time.time()
        assert snapshot.credits == Credits(False, False, "0")

        with pytest.raises(UsageUnauthorized):
            await trio.to_thread.run_sync(poll, "forged", account.account_id)
        other = state.accounts[1]
        with pytest.raises(UsageUnauthorized):  # the token of one account, the id of another
            await trio.to_thread.run_sync(poll, account.access_token, other.account_id)

        log = [r for r in state.requests if r["path"] == "/backend-api/wham/usage"]
        assert [r["status"] for r in log] == [200, 401, 401]
        assert account.access_token not in json.dumps(list(state.requests))
