"""`/mcp` refuses, with a JSON-RPC error and the right HTTP status, every request that
lacks an MCP token or whose gates are closed, and says which one; an admin's token sees
only its Pools and no owner-only tool."""

from __future__ import annotations

from pathlib import Path

import trio
from console_support import bootstrap_owner, browser
from harness import open_stack
from mcp_support import (
    ACCEPT,
    enable_instance,
    mcp_session,
    operator_token,
    post_mcp,
    rpc_error,
)

from pooler.mcp.registry import ALL_TOOLS
from pooler.store import mcp_tokens, operators, pools
from pooler.store.common import Conn


async def test_every_gate_and_credential_failure_is_refused_in_json_rpc(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        token = await operator_token(stack, "owner@example.com")

        # The instance's gate, off by default: 403, naming it.
        off = await post_mcp(stack, token=token)
        assert off.status_code == 403
        assert "turned off for this instance" in rpc_error(off)["message"]
        await enable_instance(stack)
        assert (await post_mcp(stack, token=token)).status_code == 200

        # No header, a Pool API key, a token in the query string: 401 with a challenge.
        missing = await post_mcp(stack)
        assert missing.status_code == 401 and missing.headers["www-authenticate"]
        assert "bearer token is required" in rpc_error(missing)["message"]
        pool_key = await post_mcp(stack, token=stack.key)
        assert pool_key.status_code == 401
        assert "not an MCP token" in rpc_error(pool_key)["message"]
        query = await post_mcp(stack, path=f"/mcp?token={token}")
        assert query.status_code == 401 and "query string" in rpc_error(query)["message"]
        unknown = await post_mcp(stack, token=token[:-4] + "AAAA")
        assert unknown.status_code == 401 and "unknown" in rpc_error(unknown)["message"]

        # The operator's own gate: 403, naming it (and the CLI words to open it).
        await stack.database.run(
            lambda conn: mcp_tokens.set_operator_mcp(conn, "owner@example.com", False, actor="t")
        )
        closed = await post_mcp(stack, token=token)
        assert closed.status_code == 403
        assert "turned off for this operator" in rpc_error(closed)["message"]
        await stack.database.run(
            lambda conn: mcp_tokens.set_operator_mcp(conn, "owner@example.com", True, actor="t")
        )

        # A deactivated operator's token.
        admin_token = await operator_token(stack, "admin@example.com", "admin", ("demo",))

        def deactivate(conn: Conn) -> None:
            found = operators.find_operator(conn, "admin@example.com")
            operators.set_status(conn, found.id, "disabled", actor="t")

        await stack.database.run(deactivate)
        disabled = await post_mcp(stack, token=admin_token)
        assert disabled.status_code == 403 and "deactivated" in rpc_error(disabled)["message"]

        # A revoked token, a deleted one.
        spare = await operator_token(stack, "spare@example.com")
        await stack.database.run(
            lambda conn: mcp_tokens.revoke_mcp_token(conn, spare[:12], actor="t")
        )
        revoked = await post_mcp(stack, token=spare)
        assert revoked.status_code == 401 and "revoked" in rpc_error(revoked)["message"]
        await stack.database.run(lambda conn: mcp_tokens.delete_mcp_token(conn, token[:12]))
        deleted = await post_mcp(stack, token=token)
        assert deleted.status_code == 401

        # Nothing about a token's use is stored.
        columns = await stack.database.run(
            lambda conn: [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'operator_mcp_tokens'"
                ).fetchall()
            ]
        )
        assert not {"last_used_at", "last_ip", "user_agent"} & set(columns)


async def test_a_console_cookie_is_not_an_mcp_credential(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        await enable_instance(stack)
        assert owner.cookies, "signed in"
        answer = await owner.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": ACCEPT},
        )
        assert answer.status_code == 401
        assert "bearer token is required" in rpc_error(answer)["message"]


async def test_an_admin_sees_only_its_pools_and_no_owner_only_tool(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await enable_instance(stack)
        await stack.database.run(lambda conn: pools.create_pool(conn, "other", actor="t"))
        admin = await operator_token(stack, "admin@example.com", "admin", ("other",))
        owner = await operator_token(stack, "owner@example.com")
        with trio.fail_after(30):
            async with mcp_session(stack, owner) as session:
                result = await session.call_tool("list_pools", {})
                names = [p["name"] for p in result.structured_content["pools"]]  # type: ignore[index]
                assert names == ["demo", "other"]
            async with mcp_session(stack, admin) as session:
                tools = [t.name for t in (await session.list_tools()).tools]
                assert tools == [s.name for s in ALL_TOOLS if not s.owner_only]
                result = await session.call_tool("list_pools", {})
                names = [p["name"] for p in result.structured_content["pools"]]  # type: ignore[index]
                assert names == ["other"]
                status = (await session.call_tool("service_status", {})).structured_content
                assert status is not None and status["pools"] == 1 and status["accounts"] == 0
                hidden = await session.call_tool("get_pool", {"pool": "demo"})
                assert hidden.is_error and "no such Pool" in hidden.content[0].text  # type: ignore[union-attr]
