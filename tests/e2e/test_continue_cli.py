"""The Continue CLI (npm `@continuedev/cli`, `cn`, pinned in package.json) in headless mode
against the gateway's `/v1`, with the README's `config.yaml`: the `openai` provider, `apiBase`
the gateway, the Pool key read from the environment as a secret. A plain prompt, then a
round trip through one of its own tools (`Read`): the CLI reads the file and sends the
content back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import open_stack, require_tool, run_client

CN_VERSION = "1.5.47"


@pytest.fixture
def cn() -> str:
    """A sync fixture, so a skip keeps its reason."""
    return require_tool("cn", f"npm install; package.json pins @continuedev/cli {CN_VERSION}")


def config_yaml(base_url: str) -> str:
    return f"""\
name: pooler
version: 0.0.1
schema: v1
models:
  - name: pooler
    provider: openai
    model: gpt-5.5
    apiBase: {base_url}
    apiKey: ${{{{ secrets.CODEX_POOLER_API_KEY }}}}
    roles: [chat]
"""


async def run_cn(cn: str, env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    return await run_client([cn, *args], env, 90, cwd)


async def test_continue_cli_plain_and_with_its_read_tool(
    cn: str, db_url: str, tmp_path: Path
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "note.txt").write_text("pooled note 42\n")
    async with open_stack(db_url, tmp_path / "stack") as stack:
        config = home / "config.yaml"
        config.write_text(config_yaml(f"{stack.url}/v1"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CONTINUE_"))}
        env |= {
            "HOME": str(home),
            "CONTINUE_GLOBAL_DIR": str(home / ".continue"),
            "CONTINUE_CLI_ENABLE_TELEMETRY": "0",
            "CODEX_POOLER_API_KEY": stack.key,
        }

        rc, version, err = await run_cn(cn, env, work, "--version")
        assert (rc, version) == (0, CN_VERSION), err[-2000:]
        rc, out, err = await run_cn(
            cn, env, work, "-p", "--config", str(config), "Reply with exactly: continue ok"
        )
        assert (rc, out) == (0, "continue ok"), err[-2000:]
        rc, out, err = await run_cn(
            cn, env, work, "-p", "--config", str(config), 'Call Read with {"filepath": "note.txt"}'
        )
        assert rc == 0, err[-2000:]
        assert out.startswith("Tool output:") and "pooled note 42" in out, out

        # Continue speaks the Responses API to a gpt-5.x model: three turns, all through
        # the Pool.
        await stack.wait_for_logs(3)
        rows = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT route, status_code, outcome FROM request_logs WHERE status_code = 200"
            ).fetchall()
        )
        assert [tuple(row) for row in rows] == [("v1_responses", 200, "completed")] * 3
