"""A Pool's /v1 switch and a key's model and reasoning-effort policy, decided without I/O."""

from __future__ import annotations

import copy
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pooler.store.common import InvalidInputError
from pooler.store.keys import (
    REASONING_EFFORTS,
    EffortPolicy,
    parse_allowed_models,
    parse_effort_policy,
)
from pooler.store.models import KeyEntry
from pooler.web.key_policy import (
    ModelNotAllowed,
    ReasoningEffortNotAllowed,
    V1Disabled,
    apply_key_policy,
    check_v1_enabled,
    model_allowed,
)
from pooler.web.keys import KeyInfo, PoolInfo, key_info

efforts = st.sampled_from(REASONING_EFFORTS)
# What a client may put in reasoning.effort: known efforts, absent, or junk.
asked_efforts = st.one_of(
    efforts, st.none(), st.sampled_from(["max", "ultra", "HIGH", ""]), st.integers()
)


def key(
    models: list[str] | None = None, effort: str | None = None, mode: str | None = None
) -> KeyInfo:
    entry = KeyEntry(
        uuid4(),
        uuid4(),
        "sk-cxp-abc",
        "k",
        tuple(models) if models is not None else None,
        effort,
        mode,
    )
    return key_info(entry)


def body(effort: Any = None, **reasoning: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": "gpt-5.5", "input": "hi"}
    if effort is not None:
        reasoning["effort"] = effort
    if reasoning:
        payload["reasoning"] = reasoning
    return payload


def rank(effort: str) -> int:
    return REASONING_EFFORTS.index(effort)


# --- the Pool's /v1 switch -----------------------------------------------------------------


def test_v1_disabled_pool_is_refused_with_403() -> None:
    check_v1_enabled(PoolInfo("p", "team", "active"))
    with pytest.raises(V1Disabled) as caught:
        check_v1_enabled(PoolInfo("p", "team", "active", v1_enabled=False))
    error = caught.value.body()["error"]
    assert caught.value.status == 403
    assert (error["type"], error["code"]) == ("permission_error", "v1_compatibility_disabled")


# --- models -------------------------------------------------------------------------------


def test_any_model_without_a_list() -> None:
    payload = body()
    assert apply_key_policy(key(), payload) is False
    assert payload == body()


def test_allowed_models_compare_normalized() -> None:
    k = key(["GPT-5.5", "gpt_5.3_codex"])
    assert model_allowed(k, "gpt-5.5") and model_allowed(k, "gpt-5.3-codex")
    assert not model_allowed(k, "gpt-5.4")
    assert apply_key_policy(k, {"model": "gpt 5.5"}) is False


@pytest.mark.parametrize("model", ["gpt-5.4", None, 42])
def test_other_models_are_refused_with_403(model: Any) -> None:
    payload: dict[str, Any] = {"input": "hi"} if model is None else {"model": model}
    with pytest.raises(ModelNotAllowed) as caught:
        apply_key_policy(key(["gpt-5.5"]), payload)
    error = caught.value.body()["error"]
    assert caught.value.status == 403
    assert (error["code"], error["param"]) == ("model_not_allowed", "model")


# --- enforce ------------------------------------------------------------------------------


def test_enforce_creates_reasoning_and_keeps_other_keys() -> None:
    payload = body()
    assert apply_key_policy(key(effort="high", mode="enforce"), payload) is True
    assert payload["reasoning"] == {"effort": "high"}
    payload = body("low", summary="auto")
    original = payload["reasoning"]
    assert apply_key_policy(key(effort="high", mode="enforce"), payload) is True
    assert payload["reasoning"] == {"effort": "high", "summary": "auto"}
    assert original == {"effort": "low", "summary": "auto"}  # the client's dict untouched


def test_enforce_reports_no_change_when_already_there() -> None:
    payload = body("high")
    assert apply_key_policy(key(effort="high", mode="enforce"), payload) is False


@given(effort=efforts, asked=asked_efforts, summary=st.booleans())
def test_enforce_always_yields_its_effort(effort: str, asked: Any, summary: bool) -> None:
    payload = body(asked, **({"summary": "auto"} if summary else {}))
    before = copy.deepcopy(payload)
    changed = apply_key_policy(key(effort=effort, mode="enforce"), payload)
    assert payload["reasoning"]["effort"] == effort
    assert changed == (payload != before)
    if summary:
        assert payload["reasoning"]["summary"] == "auto"


# --- max ----------------------------------------------------------------------------------


def test_max_refuses_an_effort_above_with_400() -> None:
    with pytest.raises(ReasoningEffortNotAllowed) as caught:
        apply_key_policy(key(effort="medium", mode="max"), body("high"))
    error = caught.value.body()["error"]
    assert caught.value.status == 400
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "reasoning_effort_not_allowed",
        "reasoning.effort",
    )


def test_max_names_the_callers_param() -> None:
    with pytest.raises(ReasoningEffortNotAllowed) as caught:
        apply_key_policy(
            key(effort="low", mode="max"), body("xhigh"), effort_param="reasoning_effort"
        )
    assert caught.value.param == "reasoning_effort"


def test_max_without_an_effort_fills_in_a_ceiling_below_the_default() -> None:
    payload = body()
    assert apply_key_policy(key(effort="medium", mode="max"), payload) is False
    assert "reasoning" not in payload
    payload = body()
    assert apply_key_policy(key(effort="low", mode="max"), payload) is True
    assert payload["reasoning"] == {"effort": "low"}


@given(ceiling=efforts, asked=asked_efforts)
def test_max_never_lets_an_effort_above_through(ceiling: str, asked: Any) -> None:
    payload = body(asked)
    before = copy.deepcopy(payload)
    try:
        changed = apply_key_policy(key(effort=ceiling, mode="max"), payload)
    except ReasoningEffortNotAllowed:
        assert not (asked in REASONING_EFFORTS and rank(asked) <= rank(ceiling))
        assert payload == before
        return
    sent = payload.get("reasoning", {}).get("effort")
    if sent is None:  # the upstream default, medium at most
        assert rank(ceiling) >= rank("medium")
    else:
        assert rank(sent) <= rank(ceiling)
    assert changed == (payload != before)
    if asked is not None:
        assert payload == before  # an allowed effort is passed on as asked


# --- parsing the operator's flags ---------------------------------------------------------


def test_parse_effort_policy() -> None:
    assert parse_effort_policy("enforce:high") == EffortPolicy("enforce", "high")
    assert parse_effort_policy(" MAX:medium ") == EffortPolicy("max", "medium")
    assert parse_effort_policy("none") is None
    for bad in ("high", "cap:high", "max:ultra", "enforce:"):
        with pytest.raises(InvalidInputError):
            parse_effort_policy(bad)


def test_parse_allowed_models() -> None:
    assert parse_allowed_models("any") is None
    assert parse_allowed_models(" gpt-5.5, gpt-5.4 ,gpt-5.5,") == ["gpt-5.5", "gpt-5.4"]
    with pytest.raises(InvalidInputError):
        parse_allowed_models(" , ")
