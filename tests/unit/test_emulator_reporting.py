"""How the emulator reports quota: extra model-scoped families, quiet headers, the
`codex.rate_limits` event on SSE, fault options, and the control API that sets them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from pooler.emulator import inbound
from pooler.emulator.app import build_emulator_app
from pooler.emulator.control import arm_fault, set_reporting, set_usage
from pooler.emulator.rejections import Rejection
from pooler.emulator.state import EmulatorState
from pooler.emulator.usage import model_key
from pooler.protocol.ratelimit import parse_rate_limit_headers, parse_rate_limits_event
from pooler.upstream.usage_api import parse_usage_payload

T0 = 1_800_000_000.0
FIVE_HOURS = 300 * 60
SPARK = "GPT-5.3-Codex-Spark"
FAMILY = "codex_bengalfox"


def spark_state(percent: float = 100.0) -> EmulatorState:
    state = EmulatorState(now=T0)
    state.set_family_usage(state.accounts[0], FAMILY, SPARK, percent, None, T0)
    return state


def test_model_key_matches_spellings_of_one_model() -> None:
    assert model_key("GPT-5.3-Codex-Spark") == model_key("gpt-5.3-codex-spark")
    assert model_key("gpt 5.3 codex_spark") == model_key(SPARK)
    assert model_key("gpt-5.3-codex") != model_key(SPARK)


def test_family_is_reported_in_headers_usage_and_events() -> None:
    state = spark_state(40)
    a = state.accounts[0]
    headers = dict(state.rate_limit_headers(a, T0 + 10))
    assert headers[b"x-codex-bengalfox-primary-used-percent"] == b"40"
    assert headers[b"x-codex-bengalfox-primary-window-minutes"] == b"300"
    assert headers[b"x-codex-bengalfox-primary-reset-at"] == str(int(T0) + FIVE_HOURS).encode()
    assert headers[b"x-codex-bengalfox-limit-name"] == SPARK.encode()
    assert headers[b"x-codex-primary-used-percent"] == b"0"  # the default family stays
    parsed = parse_rate_limit_headers(list(headers.items()), T0 + 10)
    assert parsed is not None and parsed.limit_names == {FAMILY: SPARK}
    primary, _ = parsed.extra[FAMILY]
    assert primary is not None and primary.used_percent == 40

    payload = state.usage_payload(a, T0 + 10)
    [entry] = payload["additional_rate_limits"]
    assert entry["limit_name"] == SPARK and entry["metered_feature"] == FAMILY
    assert entry["rate_limit"]["primary_window"]["used_percent"] == 40
    from_usage = parse_usage_payload(payload, T0 + 10)
    assert from_usage is not None and set(from_usage.extra) == {FAMILY}

    default, spark = state.rate_limits_events(a, T0 + 10)
    assert default["metered_limit_name"] == "codex"
    assert spark["metered_limit_name"] == FAMILY and spark["limit_name"] == SPARK
    event = parse_rate_limits_event(spark, T0 + 10)
    assert event is not None and event.primary is None and FAMILY in event.extra
    # Another account has no family.
    assert state.usage_payload(state.accounts[1], T0)["additional_rate_limits"] == []


def test_family_limit_blocks_only_its_model_and_is_charged_by_it() -> None:
    state = spark_state(100)
    a = state.accounts[0]
    refused = state.quota_rejection(a, T0 + 1, "gpt-5.3-codex-spark")
    assert refused is not None and refused.status == 429
    assert refused.error["type"] == "usage_limit_reached"
    assert refused.error["resets_at"] == int(T0) + FIVE_HOURS
    assert (b"x-codex-active-limit", FAMILY.encode()) in refused.headers
    assert state.quota_rejection(a, T0 + 1, "gpt-5.5") is None
    assert state.quota_rejection(a, T0 + 1) is None

    state.set_family_usage(a, FAMILY, None, 10, None, T0 + 2)
    state.charge(a, T0 + 2, SPARK)
    state.charge(a, T0 + 2, "gpt-5.5")
    assert a.families[FAMILY].primary.used_percent == 12
    assert a.primary.used_percent == 2  # each model charges its own windows


def test_family_validation() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    for bad in ("codex", "", "codex-bengalfox", "x y"):
        with pytest.raises(ValueError):
            state.set_family_usage(a, bad, SPARK, 1, None, T0)
    with pytest.raises(ValueError, match="limit_name"):
        state.set_family_usage(a, FAMILY, None, 1, None, T0)


def test_quiet_headers_hide_every_quota_header() -> None:
    state = spark_state(100)
    a = state.accounts[0]
    assert state.rate_limit_headers(a, T0, quiet=True) == []
    refused = state.quota_rejection(a, T0, SPARK, quiet=True)
    assert refused is not None and refused.headers == []
    a.reporting.quiet_headers = True
    assert state.rate_limit_headers(a, T0) == []
    state.set_usage(a, 100, None, T0)
    refused = state.quota_rejection(a, T0)
    assert refused is not None and refused.headers == [] and refused.error["resets_at"] > T0


def test_fault_options_reset_time_and_retry_after() -> None:
    state = EmulatorState(now=T0)
    a = state.accounts[0]
    state.arm_fault(a.label, "usage_limit_429", times=2, resets_in=30)
    refused, fault = state.admit_response(a, T0 + 1)
    assert fault is not None and fault.resets_in == 30
    assert refused is not None and refused.error["resets_at"] == int(T0) + 31
    assert (b"x-codex-primary-reset-at", str(int(T0) + 31).encode()) in refused.headers
    refused, _ = state.admit_response(a, T0 + 1, quiet=True)
    assert refused is not None and refused.headers == []
    state.arm_fault(a.label, "rate_limit_429", retry_after=7)
    refused, _ = state.admit_response(a, T0 + 1)
    assert refused is not None and (b"retry-after", b"7") in refused.headers
    with pytest.raises(ValueError):
        state.arm_fault(a.label, "usage_limit_429", resets_in=0)
    with pytest.raises(ValueError):
        state.arm_fault(a.label, "rate_limit_429", retry_after=-1)


def test_knobs_for_quiet_headers_and_stream_events() -> None:
    meta = {"x-emulator-quiet-headers": "1", "x-emulator-rate-limits-event": "true"}
    knobs = inbound.knobs_from({}, {"client_metadata": meta})
    assert knobs.quiet_headers and knobs.rate_limits_event
    knobs = inbound.knobs_from({b"x-emulator-quiet-headers": "yes"}, {})
    assert knobs.quiet_headers and not knobs.rate_limits_event
    assert not inbound.knobs_from({b"x-emulator-quiet-headers": "0"}).quiet_headers


def test_control_api_bodies() -> None:
    state = EmulatorState(now=T0)
    view = set_usage(
        state,
        {
            "account_id": "account-2",
            "family": FAMILY,
            "limit_name": SPARK,
            "primary_used_percent": 100,
        },
        T0,
    )
    assert not isinstance(view, Rejection)
    assert view["families"][0]["family"] == FAMILY
    assert view["families"][0]["primary_used_percent"] == 100
    assert view["primary_used_percent"] == 0
    for bad in (
        {"account_id": "account-2", "family": "codex", "limit_name": SPARK},
        {"account_id": "account-2", "family": 3},
        {"account_id": "nobody", "primary_used_percent": 1},
    ):
        assert isinstance(set_usage(state, bad, T0), Rejection)

    view = set_reporting(
        state,
        {"account_id": "account-2", "quiet_headers": True, "usage_delay_ms": 250},
        T0,
    )
    assert not isinstance(view, Rejection)
    assert view["quiet_headers"] and not view["rate_limits_event"]
    assert view["usage_delay_ms"] == 250
    for bad in (
        {"account_id": "account-2", "quiet_headers": "yes"},
        {"account_id": "account-2", "usage_delay_ms": -1},
    ):
        assert isinstance(set_reporting(state, bad, T0), Rejection)

    armed = arm_fault(
        state, {"account_id": "account-1", "kind": "usage_limit_429", "resets_in_seconds": 5}
    )
    assert not isinstance(armed, Rejection)
    bad_fault = {"account_id": "account-1", "kind": "rate_limit_429", "retry_after_seconds": 1.5}
    assert isinstance(arm_fault(state, bad_fault), Rejection)

    state.reset()  # everything back to the start
    fresh = state.accounts_view(T0)[1]
    assert fresh["families"] == [] and not fresh["quiet_headers"]
    assert fresh["usage_delay_ms"] == 0


# --- over ASGI: what the wire carries ----------------------------------------------------


def sse_types(text: str) -> list[str]:
    return [json.loads(line[5:])["type"] for line in text.splitlines() if line.startswith("data:")]


async def post_turn(
    client: httpx.AsyncClient, state: EmulatorState, index: int, **extra: Any
) -> httpx.Response:
    account = state.accounts[index]
    body = {"model": "gpt-5.5", "stream": True, "store": False, "input": "hi", **extra}
    headers = {
        "authorization": f"Bearer {account.access_token}",
        "chatgpt-account-id": account.account_id,
    }
    return await client.post("/backend-api/codex/responses", json=body, headers=headers)


async def test_the_wire_carries_events_and_no_quiet_headers() -> None:
    state = EmulatorState()
    transport = httpx.ASGITransport(app=build_emulator_app(state))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        loud = await post_turn(client, state, 0)
        assert "x-codex-primary-used-percent" in loud.headers
        assert sse_types(loud.text)[0] == "response.created"

        meta = {"x-emulator-quiet-headers": "1", "x-emulator-rate-limits-event": "1"}
        quiet = await post_turn(client, state, 0, client_metadata=meta)
        assert not any(name.startswith("x-codex-primary") for name in quiet.headers)
        types = sse_types(quiet.text)
        assert types[:2] == ["codex.rate_limits", "response.created"]
        assert types[-1] == "response.completed"

        await client.post(
            "/_emulator/accounts",
            json={"account_id": "account-2", "rate_limits_event": True, "quiet_headers": True},
        )
        await client.post(
            "/_emulator/usage",
            json={"account_id": "account-2", "family": FAMILY, "limit_name": SPARK,
                  "primary_used_percent": 100},
        )  # fmt: skip
        answer = await post_turn(client, state, 1)
        assert sse_types(answer.text)[:3] == [
            "codex.rate_limits",
            "codex.rate_limits",
            "response.created",
        ]
        assert "x-codex-bengalfox-limit-name" not in answer.headers
        refused = await post_turn(client, state, 1, model="gpt-5.3-codex-spark")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "usage_limit_reached"


async def test_a_slow_usage_endpoint() -> None:
    state = EmulatorState()
    account = state.accounts[0]
    transport = httpx.ASGITransport(app=build_emulator_app(state))  # type: ignore[arg-type]
    headers = {
        "authorization": f"Bearer {account.access_token}",
        "chatgpt-account-id": account.account_id,
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        await client.post(
            "/_emulator/accounts", json={"account_id": "account-1", "usage_delay_ms": 300}
        )
        began = trio.current_time()
        response = await client.get("/backend-api/wham/usage", headers=headers)
        assert response.status_code == 200
        assert trio.current_time() - began >= 0.3
