"""The emulator's per-account prefix cache (pooler/emulator/prompt_cache.py) and how a
`/responses` turn reads it (inbound.read_prompt)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pooler.emulator import inbound
from pooler.emulator.prompt_cache import (
    CacheRules,
    Context,
    PromptCache,
    extend_items,
    prompt_chain,
    serialize,
)
from pooler.emulator.state import EmulatorState

T0 = 1_800_000_000.0
TOOLS = [{"type": "function", "name": "shell", "parameters": {"type": "object"}}]


def message(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def body(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-5.5",
        "instructions": "You are a careful assistant.",
        "tools": TOOLS,
        "input": list(items),
        "stream": True,
        **extra,
    }


def size(value: dict[str, Any]) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def use(account_body: dict[str, Any], account: Any) -> inbound.PromptUse:
    return inbound.read_prompt(account_body, size(account_body), account)


def test_chain_counts_the_serialized_bytes() -> None:
    first, second = message("user", "héllo"), message("assistant", "hi")
    chain = prompt_chain(body(first, second))
    head = serialize(["gpt-5.5", "You are a careful assistant.", TOOLS])
    assert len(chain) == 3
    assert chain[0].size == len(head)
    assert chain[2].size == len(head) + len(serialize(first)) + len(serialize(second))
    assert "é".encode() in serialize(first)  # UTF-8, not \\u escapes
    assert chain[2].tokens == chain[2].size // 4
    assert prompt_chain(body(first, second)) == chain  # deterministic
    text_input = prompt_chain({"model": "m", "input": "hi"})
    assert text_input[1].size - text_input[0].size == len(b'"hi"')
    assert len(prompt_chain({"model": "m"})) == 1


def test_each_turn_hits_its_whole_previous_prompt() -> None:
    account = EmulatorState(accounts=1, now=T0).accounts[0]
    items = [message("user", "first question " * 20)]
    cold = use(body(*items), account)
    assert cold.cached_tokens == 0
    previous = cold.end
    for turn in range(2, 6):
        items += [message("assistant", f"answer {turn}"), message("user", f"question {turn}")]
        warm = use(body(*items), account)
        assert warm.cached_tokens == previous.tokens > 0
        assert warm.cached_tokens < warm.input_tokens
        previous = warm.end


def test_prompt_cache_key_is_not_needed_and_does_not_matter() -> None:
    account = EmulatorState(accounts=1, now=T0).accounts[0]
    items = [message("user", "x" * 800)]
    first = use(body(*items), account)
    again = use(body(*items, message("user", "more")), account)
    keyed = use(body(*items, prompt_cache_key="another-thread"), account)
    assert again.cached_tokens == first.end.tokens
    assert keyed.cached_tokens == first.end.tokens


def test_another_account_starts_cold() -> None:
    one, two = EmulatorState(accounts=2, now=T0).accounts
    items = [message("user", "x" * 800)]
    use(body(*items), one)
    assert use(body(*items, message("user", "next")), two).cached_tokens == 0
    assert use(body(*items, message("user", "next")), one).cached_tokens > 200


def test_key_order_or_content_changes_break_the_chain_from_that_item() -> None:
    account = EmulatorState(accounts=1, now=T0).accounts[0]
    items = [message("user", "a" * 400), message("assistant", "b" * 400), message("user", "c")]
    use(body(*items), account)
    head_and_first = prompt_chain(body(*items))[1]
    reordered = copy.deepcopy(items)
    reordered[1] = {k: reordered[1][k] for k in reversed(list(reordered[1]))}
    assert reordered[1] == items[1]  # equal as objects, not as bytes
    assert use(body(*reordered), account).cached_tokens == head_and_first.tokens
    changed = copy.deepcopy(items)
    changed[1]["content"][0]["text"] += "!"
    assert use(body(*changed), account).cached_tokens == head_and_first.tokens


def test_a_different_head_misses() -> None:
    account = EmulatorState(accounts=1, now=T0).accounts[0]
    items = [message("user", "a" * 400)]
    use(body(*items), account)
    assert use(body(*items, instructions="Other instructions."), account).cached_tokens == 0
    assert use(body(*items, model="gpt-5.4"), account).cached_tokens == 0
    assert use(body(*items, tools=[]), account).cached_tokens == 0
    # a new conversation with the same head reuses the head (as upstream does)
    fresh = use(body(message("user", "unrelated")), account)
    assert fresh.cached_tokens == prompt_chain(body())[0].tokens


def test_websocket_continuation_extends_the_previous_context() -> None:
    account = EmulatorState(accounts=1, now=T0).accounts[0]
    first = use(body(message("user", "q" * 400)), account)
    output = [message("assistant", "an answer")]
    context = Context.after(first.end, output)
    assert context.end == extend_items(first.end, output)
    tail = {"model": "gpt-5.5", "input": [message("user", "next")], "previous_response_id": "r"}
    turn = inbound.read_prompt(tail, size(tail), account, context)
    assert turn.cached_tokens == first.end.tokens  # as if the whole input were resent
    assert turn.input_tokens >= turn.end.tokens > context.end.tokens
    # the same conversation sent in full over HTTP hits all of it
    full = body(message("user", "q" * 400), *output, message("user", "next"), message("user", "!"))
    assert use(full, account).cached_tokens == turn.end.tokens


def test_cache_is_a_bounded_lru() -> None:
    cache = PromptCache(capacity=4)
    chains = [prompt_chain({"model": f"m{i}", "input": ["x"]}) for i in range(3)]  # 2 each
    cache.store(chains[0])
    cache.store(chains[1])
    assert len(cache) == 4
    assert cache.lookup(chains[0]) == chains[0][1].tokens
    cache.store(chains[0])  # touched: now the most recent
    cache.store(chains[2])
    assert len(cache) == 4
    assert cache.lookup(chains[1][1:]) == 0  # evicted
    assert cache.lookup(chains[0]) == chains[0][1].tokens
    cache.clear()
    assert len(cache) == 0 and cache.lookup(chains[0]) == 0


def test_rounding_rules() -> None:
    assert CacheRules().count(1000) == 1000
    realistic = CacheRules(block_tokens=128, min_tokens=1024)
    assert realistic.count(1000) == 0
    assert realistic.count(1024) == 1024
    assert realistic.count(1300) == 1280
    with pytest.raises(ValueError):
        CacheRules(block_tokens=0)
    state = EmulatorState(accounts=1, now=T0, cache_rules=CacheRules(block_tokens=128))
    account = state.accounts[0]
    items = [message("user", "z" * 2000)]
    first = use(body(*items), account)
    second = use(body(*items, message("user", "again")), account)
    assert second.cached_tokens == first.end.tokens - first.end.tokens % 128
    assert second.cached_tokens % 128 == 0


def test_plan_turn_reports_the_prompt_use() -> None:
    account = EmulatorState(accounts=1, now=T0).accounts[0]
    request = body(message("user", "w" * 800), reasoning={"effort": "medium"})
    use(request, account)
    prompt = use(request, account)
    _, turn = inbound.plan_turn(request, prompt, inbound.Knobs(), T0)
    assert (turn.input_tokens, turn.cached_tokens) == (prompt.input_tokens, prompt.cached_tokens)
    assert turn.input_tokens == size(request) // 4
    assert turn.reasoning_tokens > 0


def test_session_tag_is_short_and_not_the_value() -> None:
    tag = inbound.session_tag({b"session-id": "conversation-123"})
    assert tag is not None and len(tag) == 12 and "conversation" not in tag
    assert inbound.session_tag({b"session_id": "conversation-123"}) == tag
    assert inbound.session_tag({}) is None
    assert len(inbound.body_sha256(b"{}")) == 64
