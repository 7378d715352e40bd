"""The "MCP access" section of `/admin/settings`: an operator turns its own MCP switch on
and off (audited; `/mcp` then admits or refuses its token), creates a token (shown once,
with the Codex CLI snippet; a reload of the form makes no second one), deletes one of its
own (then `/mcp` answers 401), and cannot touch another operator's token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from console_support import (
    OWNER_EMAIL,
    bootstrap_owner,
    browser,
    csrf_of,
    once_of,
    post_form,
    sign_in,
)
from harness import Stack, open_stack
from mcp_support import enable_instance, post_mcp, rpc_error

from pooler.store import audit, mcp_tokens, operators
from pooler.store.common import Conn

SETTINGS = "/admin/settings"
CREATE = "/admin/settings/mcp/tokens"
SWITCH = "/admin/settings/mcp/switch"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin password of the tests"
RAW_RE = re.compile(r'id="raw-token"[^>]*value="([^"]+)"')


def raw_token_of(html: str) -> str:
    found = RAW_RE.search(html)
    assert found, "the page shows no token"
    return found.group(1)


async def create_token(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await post_form(client, SETTINGS, {"name": name}, CREATE)


async def tokens_of(stack: Stack, email: str) -> list[Any]:
    def read(conn: Conn) -> list[Any]:
        return [t for t in mcp_tokens.list_mcp_tokens(conn) if t.operator_email == email]

    found: list[Any] = await stack.database.run(read)
    return found


async def actions(stack: Stack) -> list[tuple[str, str]]:
    events = await stack.database.run(lambda conn: audit.list_audit_events(conn, 200))
    return [(e.action, e.actor) for e in events]


async def test_own_switch_is_audited_and_opens_and_closes_mcp(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        await enable_instance(stack)
        created = await create_token(owner, "laptop")
        assert created.status_code == 200
        token = raw_token_of(created.text)
        assert "you turn on your MCP access" in created.text  # the page says why it won't work yet

        closed = await post_mcp(stack, token=token)
        assert closed.status_code == 403
        assert "turned off for this operator" in rpc_error(closed)["message"]

        on = await post_form(owner, SETTINGS, {"state": "on"}, SWITCH)
        assert on.status_code == 303 and on.headers["location"] == "/admin/settings#mcp"
        assert (await post_mcp(stack, token=token)).status_code == 200
        assert ("mcp.operator_enable", OWNER_EMAIL) in await actions(stack)
        shown = (await owner.get(SETTINGS)).text
        assert "Turn my MCP access off" in shown

        off = await post_form(owner, SETTINGS, {"state": "off"}, SWITCH)
        assert off.status_code == 303
        closed = await post_mcp(stack, token=token)
        assert closed.status_code == 403
        assert "turned off for this operator" in rpc_error(closed)["message"]
        assert ("mcp.operator_disable", OWNER_EMAIL) in await actions(stack)

        bad = await post_form(owner, SETTINGS, {"state": "maybe"}, SWITCH)
        assert bad.status_code == 400


async def test_a_token_is_shown_once_works_and_a_reload_makes_no_second(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        await enable_instance(stack)
        await post_form(owner, SETTINGS, {"state": "on"}, SWITCH)
        page = await owner.get(SETTINGS)
        form = {
            "csrf_token": csrf_of(page.text),
            "form_once": once_of(page.text, CREATE) or "",
            "name": "laptop codex",
        }
        created = await owner.post(CREATE, data=form)
        assert created.status_code == 200
        assert created.headers["cache-control"] == "no-store"
        token = raw_token_of(created.text)
        assert token.startswith("cxp-mcp-")
        assert "[mcp_servers.codex_pooler]" in created.text
        assert f"url = &#34;{stack.url}/mcp&#34;" in created.text
        assert "bearer_token_env_var = &#34;POOLER_MCP_TOKEN&#34;" in created.text
        assert f"export POOLER_MCP_TOKEN={token}" in created.text
        assert "MCP token created" in created.text

        answer = await post_mcp(stack, token=token)
        assert answer.status_code == 200 and "result" in answer.json()

        # The list shows the name and prefix, never the token.
        listed = (await owner.get(SETTINGS)).text
        assert "laptop codex" in listed and token[:12] in listed
        assert token not in listed

        # The same rendered form again (a reload): 409, nothing made.
        again = await owner.post(CREATE, data=form)
        assert again.status_code == 409
        assert "already sent" in again.text and "laptop codex" in again.text
        assert token not in again.text
        assert len(await tokens_of(stack, OWNER_EMAIL)) == 1
        assert ("mcp.token_create", OWNER_EMAIL) in await actions(stack)

        # A refused name makes nothing and the same form may be sent again.
        page = await owner.get(SETTINGS)
        form = {
            "csrf_token": csrf_of(page.text),
            "form_once": once_of(page.text, CREATE) or "",
            "name": "x" * 101,
        }
        refused = await owner.post(CREATE, data=form)
        assert refused.status_code == 400 and "at most 100 characters" in refused.text
        assert len(await tokens_of(stack, OWNER_EMAIL)) == 1
        second = await owner.post(CREATE, data={**form, "name": "second"})
        assert second.status_code == 200
        assert len(await tokens_of(stack, OWNER_EMAIL)) == 2


async def test_delete_own_token_and_not_another_operators(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        await enable_instance(stack)
        await post_form(owner, SETTINGS, {"state": "on"}, SWITCH)
        token = raw_token_of((await create_token(owner, "to delete")).text)
        assert (await post_mcp(stack, token=token)).status_code == 200
        [mine] = await tokens_of(stack, OWNER_EMAIL)

        await stack.database.run(
            lambda conn: operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
        )
        async with browser(stack) as admin:
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            shown = (await admin.get(SETTINGS)).text
            assert "to delete" not in shown and mine.token_prefix not in shown
            # The instance's state, read-only for an admin: no link to System.
            assert "An owner turns it on or off." in shown
            assert 'href="/admin/system"' not in shown
            csrf = csrf_of(shown)
            for target in (str(mine.id), "not-a-uuid", str(UUID(int=1))):
                refused = await admin.post(
                    f"/admin/settings/mcp/tokens/{target}/delete", data={"csrf_token": csrf}
                )
                assert refused.status_code == 404, target
        assert [t.id for t in await tokens_of(stack, OWNER_EMAIL)] == [mine.id]
        assert (await post_mcp(stack, token=token)).status_code == 200

        shown = (await owner.get(SETTINGS)).text
        assert 'href="/admin/system"' in shown  # the owner changes the instance's gate there
        deleted = await owner.post(
            f"/admin/settings/mcp/tokens/{mine.id}/delete", data={"csrf_token": csrf_of(shown)}
        )
        assert deleted.status_code == 303
        assert await tokens_of(stack, OWNER_EMAIL) == []
        gone = await post_mcp(stack, token=token)
        assert gone.status_code == 401 and "unknown" in rpc_error(gone)["message"]
        assert ("mcp.token_delete", OWNER_EMAIL) in await actions(stack)


async def test_every_mcp_form_needs_its_csrf_token(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        token = raw_token_of((await create_token(owner, "kept")).text)
        [kept] = await tokens_of(stack, OWNER_EMAIL)
        page = (await owner.get(SETTINGS)).text
        posts = [
            (SWITCH, {"state": "on"}),
            (CREATE, {"name": "new", "form_once": once_of(page, CREATE) or ""}),
            (f"/admin/settings/mcp/tokens/{kept.id}/delete", {"confirm": "1"}),
        ]
        for path, data in posts:
            assert (await owner.post(path, data=data)).status_code == 403, path
        assert [t.id for t in await tokens_of(stack, OWNER_EMAIL)] == [kept.id]
        enabled = await stack.database.run(
            lambda conn: mcp_tokens.operator_mcp_enabled(conn, kept.operator_id)
        )
        assert not enabled
        assert token not in page


async def test_a_token_name_with_markup_is_escaped(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        name = '<script>alert("x")</script><b>'
        created = await create_token(owner, name)
        assert created.status_code == 200
        listed = await owner.get(SETTINGS)
        for html in (created.text, listed.text):
            assert "<script>alert" not in html and "<b>" not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;" in html
