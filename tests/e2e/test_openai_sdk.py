"""The real OpenAI Python SDK against the gateway's Codex route."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import trio
from harness import open_stack


def stream_with_sdk(base_url: str, key: str) -> tuple[str, list[str], int]:
    client = openai.OpenAI(base_url=f"{base_url}/backend-api/codex", api_key=key, max_retries=0)
    text: list[str] = []
    types: list[str] = []
    total = 0
    with client.responses.create(
        model="gpt-5.5",
        input="Reply with exactly: streamed through the pool",
        stream=True,
        store=False,
        prompt_cache_key="sdk-conversation",
    ) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type == "response.completed":
                assert event.response.usage is not None
                total = event.response.usage.total_tokens
    return "".join(text), types, total


def sdk_with_bad_key(base_url: str) -> None:
    client = openai.OpenAI(
        base_url=f"{base_url}/backend-api/codex", api_key="sk-cxp-wrong", max_retries=0
    )
    client.responses.create(model="gpt-5.5", input="hi", stream=True, store=False)


async def test_openai_sdk_streams_a_response(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(30):
            text, types, total = await trio.to_thread.run_sync(
                stream_with_sdk, stack.url, stack.key
            )
        assert text == "streamed through the pool"
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert total > 0
        with trio.fail_after(30), pytest.raises(openai.AuthenticationError) as raised:
            await trio.to_thread.run_sync(sdk_with_bad_key, stack.url)
        assert raised.value.code == "api_key_invalid"
