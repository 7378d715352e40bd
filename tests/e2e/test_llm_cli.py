"""Simon Willison's `llm` CLI (PyPI `llm`, pinned in the `test` extra) against the gateway's
`/v1`, configured exactly as the README's "Agent tools" section says: two models in
`extra-openai-models.yaml` (Chat Completions, and `responses: true` for the Responses API),
the Pool key stored with `llm keys set`. Each model answers a plain prompt and runs a
function-calling round trip (llm runs the tool and sends its output back)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from harness import Stack, open_stack, run_client

LLM_VERSION = "0.36"
WEATHER = 'def get_weather(city: str) -> str:\n    return "sunny in " + city'


@pytest.fixture
def llm() -> str:
    """The `llm` executable installed beside this Python (or on PATH); else a skip (a
    failure when POOLER_REQUIRE_E2E=1). A sync fixture, so a skip keeps its reason."""
    beside = Path(sys.executable).parent / "llm"
    found = str(beside) if beside.exists() else shutil.which("llm")
    if found:
        return found
    reason = f"llm not installed (pip install llm=={LLM_VERSION}, or pip install -e '.[test]')"
    if os.environ.get("POOLER_REQUIRE_E2E") == "1":
        pytest.fail(reason + " and POOLER_REQUIRE_E2E=1")
    pytest.skip(reason)


def models_yaml(base_url: str) -> str:
    """The README's `extra-openai-models.yaml`, plus one model missing `api_key_name`."""
    return f"""\
- model_id: pooler
  model_name: gpt-5.5
  api_base: {base_url}
  api_key_name: pooler
  supports_tools: true
- model_id: pooler-responses
  model_name: gpt-5.5
  api_base: {base_url}
  api_key_name: pooler
  responses: true
  supports_tools: true
- model_id: pooler-no-key-name
  model_name: gpt-5.5
  api_base: {base_url}
"""


async def run_llm(llm: str, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_client([llm, *args], env, 60)


async def test_llm_chat_and_responses_models_with_a_tool_round_trip(
    llm: str, db_url: str, tmp_path: Path
) -> None:
    user_dir = tmp_path / "llm"
    user_dir.mkdir()
    async with open_stack(db_url, tmp_path / "stack") as stack:
        (user_dir / "extra-openai-models.yaml").write_text(models_yaml(f"{stack.url}/v1"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))}
        # No plugins from the environment: only llm's own OpenAI models and tools.
        env |= {"LLM_USER_PATH": str(user_dir), "LLM_LOAD_PLUGINS": ""}

        rc, version, err = await run_llm(llm, env, "--version")
        assert rc == 0, err
        assert version.endswith(LLM_VERSION), version
        rc, _, err = await run_llm(llm, env, "keys", "set", "pooler", "--value", stack.key)
        assert rc == 0, err

        for model in ("pooler", "pooler-responses"):
            rc, out, err = await run_llm(llm, env, "-m", model, f"Reply with exactly: {model} ok")
            assert (rc, out) == (0, f"{model} ok"), err[-2000:]
            rc, out, err = await run_llm(
                llm,
                env,
                "-m",
                model,
                "--functions",
                WEATHER,
                'Call get_weather with {"city": "Paris"}',
            )
            assert (rc, out) == (0, "Tool output: sunny in Paris"), err[-2000:]

        # Without `api_key_name` llm sends a placeholder, not the key (even with --key).
        rc, _, err = await run_llm(
            llm, env, "-m", "pooler-no-key-name", "--key", stack.key, "Reply with exactly: x"
        )
        assert rc != 0 and "401" in err, err[-2000:]

        await assert_logged(stack)


async def assert_logged(stack: Stack) -> None:
    """Each model turn went through the Pool on its own route: per model one plain turn
    and the two turns of the tool round trip."""
    await stack.wait_for_logs(6)
    rows = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT route, status_code, outcome FROM request_logs"
            " WHERE status_code = 200 ORDER BY created_at"
        ).fetchall()
    )
    assert [tuple(row) for row in rows] == [("v1_chat", 200, "completed")] * 3 + [
        ("v1_responses", 200, "completed")
    ] * 3
    assert [r["status"] for r in await stack.upstream_requests()] == [200] * 6
