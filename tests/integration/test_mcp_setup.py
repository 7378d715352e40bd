"""Turning MCP on without a browser (`pooler admin settings set mcp.enabled=true`,
`pooler admin operator mcp on`, `pooler admin mcp-token create|list|delete`), audited; and
the owner's System page, which holds the instance's gate and host names."""

from __future__ import annotations

import json
from pathlib import Path

from console_support import bootstrap_owner, browser, post_form
from harness import open_stack, run_pooler
from mcp_support import PASSWORD, post_mcp, rpc_error
from test_account_login import cli_env

from pooler import store
from pooler.store import operators


async def test_the_cli_opens_both_gates_and_manages_tokens(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        env = cli_env(stack)
        await stack.database.run(
            lambda conn: operators.create_operator(conn, "ops@example.com", PASSWORD, "owner")
        )
        created = json.loads(
            await run_pooler(
                env, "admin", "mcp-token", "create", "--email", "ops@example.com",
                "--name", "laptop", "--json",
            )
        )  # fmt: skip
        token = created["token"]
        assert token.startswith("cxp-mcp-") and created["name"] == "laptop"
        plain = await run_pooler(env, "admin", "mcp-token", "create", "--email", "ops@example.com")
        assert plain.strip().startswith("cxp-mcp-")  # the raw token alone on stdout
        listed = await run_pooler(env, "admin", "mcp-token", "list", "--json")
        assert token not in listed and plain.strip() not in listed
        assert created["token_prefix"] in listed

        assert (await post_mcp(stack, token=token)).status_code == 403  # instance gate
        await run_pooler(env, "admin", "settings", "set", "mcp.enabled=true")
        await stack.gateway.reload()
        closed = await post_mcp(stack, token=token)
        assert closed.status_code == 403 and "operator" in rpc_error(closed)["message"]
        await run_pooler(env, "admin", "operator", "mcp", "on", "--email", "ops@example.com")
        assert (await post_mcp(stack, token=token)).status_code == 200
        await run_pooler(env, "admin", "operator", "mcp", "off", "--email", "ops@example.com")
        assert (await post_mcp(stack, token=token)).status_code == 403
        await run_pooler(env, "admin", "operator", "mcp", "on", "--email", "ops@example.com")

        await run_pooler(env, "admin", "mcp-token", "delete", created["token_prefix"])
        assert (await post_mcp(stack, token=token)).status_code == 401

        events = await stack.database.run(lambda conn: store.list_audit_events(conn, 50))
        actions = [e.action for e in events if e.action.startswith("mcp.")]
        assert actions.count("mcp.operator_enable") == 2
        assert actions.count("mcp.operator_disable") == 1
        assert "mcp.token_create" in actions and "mcp.token_delete" in actions
        assert token not in repr(events)


async def test_the_system_page_holds_the_instance_gate_and_host_names(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        page = await owner.get("/admin/system")
        assert 'name="mcp.enabled"' in page.text and 'name="mcp.allowed_hosts"' in page.text
        assert 'name="bulkheads.mcp.concurrency"' in page.text
        saved = await post_form(
            owner,
            "/admin/system",
            {"mcp.enabled": "true", "mcp.allowed_hosts": "localhost\n127.0.0.1\npooler.example"},
        )
        assert saved.status_code == 200 and "Saved" in saved.text, saved.text
        await stack.gateway.reload()
        mcp = stack.gateway.instance_settings.mcp
        assert mcp.enabled and mcp.allowed_hosts == ("localhost", "127.0.0.1", "pooler.example")
        refused = await post_form(owner, "/admin/system", {"mcp.allowed_hosts": "bad host"})
        assert refused.status_code == 400 and "not a host name" in refused.text
