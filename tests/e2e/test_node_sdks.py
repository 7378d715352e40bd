"""The real OpenAI Node SDK (npm `openai`) and Vercel AI SDK (npm `ai` + `@ai-sdk/openai`)
against the gateway's `/v1`, each driven by a Node script under `node/` that prints one JSON
object of what it saw. Everything reaches the emulator through the Pool."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from harness import Stack, open_stack, require_tool, run_client

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "node"
MODEL = "gpt-5.5"
PARIS = {"city": "Paris"}


def require_node(*packages: str) -> str:
    """The path of `node`, once `npm install` has put `packages` in node_modules; else a
    skip (a failure when POOLER_REQUIRE_E2E=1)."""
    node: str = require_tool("node", "installing Node.js 20 or later (then npm install)")
    missing = [name for name in packages if not (ROOT / "node_modules" / name).is_dir()]
    if not missing:
        return node
    reason = (
        f"npm packages {', '.join(missing)} are not installed:"
        " npm install (package.json pins them) enables this test"
    )
    if os.environ.get("POOLER_REQUIRE_E2E") == "1":
        pytest.fail(reason + " and POOLER_REQUIRE_E2E=1")
    pytest.skip(reason)


async def run_script(node: str, stack: Stack, script: str) -> dict[str, Any]:
    """`node <script>` with the gateway's `/v1` and the Pool key; the JSON it printed."""
    env = {**os.environ, "POOLER_BASE_URL": f"{stack.url}/v1", "POOLER_KEY": stack.key}
    code, stdout, stderr = await run_client([node, str(SCRIPTS / script)], env, 120, ROOT)
    assert code == 0, stderr[-3000:]
    found: dict[str, Any] = json.loads(stdout)
    return found


async def upstream_statuses(stack: Stack) -> list[int]:
    return [request["status"] for request in await stack.upstream_requests()]


async def test_the_openai_node_sdk_through_v1(db_url: str, tmp_path: Path) -> None:
    node = require_node("openai")
    async with open_stack(db_url, tmp_path) as stack:
        found = await run_script(node, stack, "openai_sdk.mjs")
        responses, chat = found["responses"], found["chat"]
        assert responses["plain"] == "node plain" and responses["plain_usage"] > 0
        assert responses["streamed"] == "node streamed" and responses["streamed_usage"] > 0
        types = responses["types"]
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert "response.output_text.delta" in types
        assert not [t for t in types if t.startswith("codex.")]
        assert responses["helper"] == responses["helper_deltas"] == "node helper"
        assert responses["call"] == {"name": "get_weather", "arguments": PARIS}
        assert responses["after_call"].startswith("Tool output: sunny")
        assert (chat["plain"], chat["plain_finish"]) == ("node chat", "stop")
        assert chat["plain_usage"] > 0
        assert chat["streamed"] == "node chat stream"
        assert (chat["first_role"], chat["stream_finish"]) == ("assistant", "stop")
        assert chat["usage_chunk"] > 0 and chat["usage_chunk_choices"] == 0
        assert chat["call_finish"] == "tool_calls"
        assert chat["call"] == {"type": "function", "name": "get_weather", "arguments": PARIS}
        assert chat["after_call"].startswith("Tool output: sunny")
        assert chat["after_call_finish"] == "stop"
        assert chat["streamed_call"] == {
            "name": "get_weather",
            "arguments": PARIS,
            "finish": "tool_calls",
        }
        assert MODEL in found["models"]
        # Five Responses calls and five Chat calls, each one upstream turn through the Pool.
        assert await upstream_statuses(stack) == [200] * 10


def assert_tool_round_trip(found: dict[str, Any], prefix: str) -> None:
    """The SDK got a get_weather call, ran the tool itself and sent its result back."""
    steps = found[f"{prefix}_steps"]
    assert [step["finish"] for step in steps] == ["tool-calls", "stop"]
    assert steps[0]["calls"] == [{"name": "get_weather", "input": PARIS}]
    assert steps[0]["results"] == ["sunny in Paris"]
    assert steps[1]["calls"] == []
    assert found[f"{prefix}_executed"] == ["Paris"]
    assert found[f"{prefix}_text"].startswith("Tool output: sunny in Paris")
    assert steps[1]["text"] == found[f"{prefix}_text"]


def assert_ai_sdk_model(found: dict[str, Any], tag: str) -> None:
    assert found["generated"] == f"{tag} generated"
    assert found["generated_finish"] == "stop"
    assert found["streamed"] == f"{tag} streamed"
    assert found["streamed_finish"] == "stop"
    for usage in (found["generated_usage"], found["streamed_usage"]):
        assert usage["input"] > 0 and usage["output"] > 0
        assert usage["total"] == usage["input"] + usage["output"]
    assert found["tool_finish"] == "stop"
    assert_tool_round_trip(found, "tool")
    assert_tool_round_trip(found, "stream_tool")


async def test_the_vercel_ai_sdk_through_v1(db_url: str, tmp_path: Path) -> None:
    node = require_node("ai", "@ai-sdk/openai", "zod")
    async with open_stack(db_url, tmp_path) as stack:
        found = await run_script(node, stack, "ai_sdk.mjs")
        assert_ai_sdk_model(found["responses"], "responses")
        assert_ai_sdk_model(found["chat"], "chat")
        assert found["default_model"] == "default"
        # Per model: generateText, streamText, two tool round trips of two turns each;
        # plus one generateText on the default (Responses) model.
        assert await upstream_statuses(stack) == [200] * 13
