"""Every `/mcp` tool through the MCP Python SDK client, against a gateway with real traffic
in it (a prompt carrying a marker, a failover, an invite): each result is structured
content valid against the tool's declared output schema plus a readable text, and no
result holds the marker, a raw Pool key, the MCP token or an upstream token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import trio
from harness import open_stack, responses_body
from mcp_support import enable_instance, mcp_session, operator_token

from pooler.mcp.registry import ALL_TOOLS
from pooler.store import invites, pools

MARKER = "zebra-lantern-4417"


def first_item(content: Any) -> dict[str, Any]:
    """The first row of a list tool's structured content."""
    lists = [value for value in content.values() if isinstance(value, list) and value]
    assert lists, content
    row: dict[str, Any] = lists[0][0]
    return row


async def test_every_tool_answers_valid_metadata_only(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for _ in range(3):
            body = responses_body(f"Remember {MARKER} and reply ok", prompt_cache_key=MARKER)
            answer = await client.post("/backend-api/codex/responses", json=body)
            assert answer.status_code == 200
        await stack.database.run(
            lambda conn: invites.create_invite(
                conn, stack.config.secret_key, pools.get_pool(conn, "demo").id, actor="test"
            )
        )
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")
        with trio.fail_after(60):
            while True:  # the rows of the traffic are written behind
                rows = await stack.database.run(
                    lambda conn: conn.execute("SELECT count(*) FROM request_logs").fetchone()
                )
                if rows[0] >= 3:
                    break
                await trio.sleep(0.05)
            async with mcp_session(stack, token) as session:
                listed = await session.list_tools()
                schemas = {tool.name: tool.output_schema for tool in listed.tools}
                assert set(schemas) == {spec.name for spec in ALL_TOOLS}
                results: dict[str, Any] = {}

                async def call(name: str, arguments: dict[str, Any]) -> Any:
                    result = await session.call_tool(name, arguments)
                    assert not result.is_error, (name, result.content)
                    jsonschema.validate(result.structured_content, schemas[name])
                    assert result.content and result.content[0].type == "text", name
                    results[name] = result
                    return result.structured_content

                for name in ("service_status", "list_pools", "pool_capacity"):
                    await call(name, {})
                await call("get_pool", {"pool": "demo"})
                account = first_item(await call("list_upstream_accounts", {}))
                detail = await call("get_upstream_account", {"account_id": account["id"]})
                assert detail["state_source"] == "live"  # the console's verdict, from memory
                key = first_item(await call("list_pool_keys", {}))
                await call("get_pool_key", {"key_id": key["id"]})
                operator = first_item(await call("list_operators", {}))
                await call("get_operator", {"operator_id": operator["id"]})
                invite = first_item(await call("list_invites", {}))
                await call("get_invite", {"invite_id": invite["id"]})
                request = first_item(await call("list_request_logs", {}))
                await call("get_request_log", {"request_id": request["request_id"]})
                await call("explain_request", {"request_id": request["request_id"]})
                event = first_item(await call("list_audit_events", {}))
                await call("get_audit_event", {"event_id": event["id"]})
        assert set(results) == set(schemas)
        secrets = [MARKER, token, stack.key, "owner@example.com"]
        secrets += [a.access_token for a in stack.emulator.accounts]
        everything = repr({name: (r.structured_content, r.content) for name, r in results.items()})
        for secret in secrets:
            assert secret not in everything, secret
