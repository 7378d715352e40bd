"""`/admin/api-keys` against the real stack: a key created in the console is shown once and
works through the gateway; rotate (the old secret refused at once, the new one works, the
record kept), pause/resume, revoke, edit (a duplicate name refused beside the field), CSRF,
escaping, an admin scoped to their Pools (another Pool's key: 404, nothing changed), and no
raw key in the logs, the audit trail or anywhere in the database."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import trio
import trio_websocket
from console_support import (
    OWNER_EMAIL,
    OWNER_PASSWORD,
    browser,
    csrf_of,
    once_of,
    post_form,
    sign_in,
)
from harness import POOL, Stack, open_stack, responses_body
from test_key_policy_admin import WITHIN_A_SECOND, Cli, stack_env, use_env
from test_privacy import dump_database
from test_websocket_responses import auth, turn, ws_url

from pooler import store
from pooler.store import key_lifecycle, operators

RESPONSES = "/backend-api/codex/responses"
RAW_KEY_RE = re.compile(r'id="raw-key"[^>]* value="(sk-cxp-[A-Za-z0-9_-]+)"')
XSS = "<script>alert(1)</script>"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"


async def gateway_status(stack: Stack, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as client:
        response = await client.post(RESPONSES, json=responses_body())
        return response.status_code


async def key_row(stack: Stack, key_id: str) -> dict[str, Any]:
    def read(conn: Any) -> dict[str, Any]:
        cur = conn.execute(
            "SELECT name, status, key_prefix, key_digest, allowed_models, reasoning_effort,"
            " reasoning_effort_mode, previous_prefixes FROM pool_api_keys WHERE id = %s",
            (key_id,),
        )
        names = [column.name for column in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))

    return await stack.database.run(read)


async def key_count(stack: Stack) -> int:
    found = await stack.database.run(
        lambda conn: conn.execute("SELECT count(*) FROM pool_api_keys").fetchone()[0]
    )
    return int(found)


async def pool_id(stack: Stack, name: str = POOL) -> str:
    return str(await stack.database.run(lambda conn: store.get_pool(conn, name).id))


async def create_key(client: httpx.AsyncClient, stack: Stack, **fields: str) -> httpx.Response:
    data = {"pool": await pool_id(stack), "allowed_models": "", "reasoning_effort": "none"}
    return await post_form(client, "/admin/api-keys", {**data, **fields})


async def logged_requests(stack: Stack, prefixes: list[str], count: int) -> None:
    """Wait until the LogWriter stored `count` requests made with these key prefixes."""
    with trio.fail_after(15):
        while True:
            found = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT count(*) FROM request_logs WHERE key_prefix = ANY(%s)"
                    " AND status_code = 200",
                    (prefixes,),
                ).fetchone()[0]
            )
            if found >= count:
                return
            await trio.sleep(0.05)


def shown_key(page: httpx.Response) -> str:
    found = RAW_KEY_RE.search(page.text)
    assert found, "the page shows no key"
    return found.group(1)


def key_id_of(page: httpx.Response) -> str:
    found = re.search(r'href="/admin/api-keys/([0-9a-f-]{36})"', page.text)
    assert found
    return found.group(1)


async def test_create_use_edit_rotate_pause_revoke(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    raw_keys: list[str] = []
    async with open_stack(db_url, tmp_path) as stack:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        async with browser(stack) as client:
            await sign_in(client)
            listed = await client.get("/admin/api-keys")
            assert listed.status_code == 200 and listed.text.count("<h1") == 1
            assert stack.key[:12] in listed.text  # the seeded key, by its prefix

            # Create: shown once, escaped, with the snippets for this gateway.
            before = await key_count(stack)
            created = await create_key(
                client, stack, name=XSS, allowed_models="gpt-5.5", reasoning_effort="max:high"
            )
            assert created.status_code == 200
            assert created.headers["cache-control"] == "no-store"
            raw = shown_key(created)
            raw_keys.append(raw)
            assert (
                XSS not in created.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in created.text
            )
            shown = html.unescape(created.text)
            assert f'base_url = "{stack.url}/backend-api/codex"' in shown
            assert 'env_key = "CODEX_POOLER_API_KEY"' in shown
            assert 'wire_api = "responses"' in shown
            assert f"export CODEX_POOLER_API_KEY={raw}" in shown
            assert f'OpenAI(base_url="{stack.url}/v1", api_key="{raw}")' in shown
            assert f"curl -N {stack.url}/backend-api/codex/responses" in shown
            assert 'src="/admin/static/copy.js"' in created.text
            key_id = key_id_of(created)
            assert await key_count(stack) == before + 1
            row = await key_row(stack, key_id)
            assert row["allowed_models"] == ["gpt-5.5"]
            assert (row["reasoning_effort_mode"], row["reasoning_effort"]) == ("max", "high")
            # Not shown again: neither the list nor the key's page holds it.
            for page in ("/admin/api-keys", f"/admin/api-keys/{key_id}"):
                again = await client.get(page)
                assert again.status_code == 200 and raw not in again.text
                assert XSS not in again.text
            script = await client.get("/admin/static/copy.js")
            assert script.status_code == 200 and "clipboard" in script.text

            # It works through the gateway at once.
            assert await gateway_status(stack, raw) == 200

            # CSRF: refused, nothing created.
            count = await key_count(stack)
            forged = await client.post(
                "/admin/api-keys", data={"pool": await pool_id(stack), "name": "forged"}
            )
            assert forged.status_code == 403 and await key_count(stack) == count

            # A duplicate name: refused beside the field, nothing created.
            dup = await create_key(client, stack, name=XSS)
            assert dup.status_code == 400 and await key_count(stack) == count
            assert re.search(
                r'class="field-error" id="f-name-error">[^<]*already has an active key', dup.text
            )
            bad = await create_key(client, stack, name="x", reasoning_effort="max:extreme")
            assert bad.status_code == 400 and 'id="f-reasoning_effort-error"' in bad.text

            # Edit: name and policy; a duplicate name refused beside the field.
            page = f"/admin/api-keys/{key_id}"
            edited = await post_form(
                client,
                page,
                {"name": "renamed", "allowed_models": "any", "reasoning_effort": "enforce:low"},
                f"{page}/edit",
            )
            assert edited.status_code == 303
            row = await key_row(stack, key_id)
            assert (row["name"], row["allowed_models"]) == ("renamed", None)
            assert (row["reasoning_effort_mode"], row["reasoning_effort"]) == ("enforce", "low")
            await stack.database.run(
                lambda conn: store.create_key(conn, stack.config.secret_key, POOL, "taken")
            )
            clash = await post_form(
                client,
                page,
                {"name": "taken", "allowed_models": "", "reasoning_effort": "none"},
                f"{page}/edit",
            )
            assert clash.status_code == 400 and 'id="f-name-error"' in clash.text
            assert (await key_row(stack, key_id))["name"] == "renamed"

            # Rotate: the same record, a new secret; the old one refused at once.
            confirm = await client.get(f"{page}/rotate")
            assert confirm.status_code == 200 and "Rotate key" in confirm.text
            old_prefix = row["key_prefix"]
            rotated = await post_form(client, f"{page}/rotate", {})
            assert rotated.status_code == 200
            assert rotated.headers["cache-control"] == "no-store"
            new_raw = shown_key(rotated)
            raw_keys.append(new_raw)
            assert new_raw != raw and key_id_of(rotated) == key_id
            assert await gateway_status(stack, raw) == 401
            assert await gateway_status(stack, new_raw) == 200
            row = await key_row(stack, key_id)
            assert row["name"] == "renamed" and row["reasoning_effort"] == "low"
            assert row["previous_prefixes"] == [old_prefix]
            # Its requests of the last 24 h count both secrets' requests (prefix history).
            await logged_requests(stack, [old_prefix, new_raw[:12]], 2)
            listed = await client.get("/admin/api-keys")
            found = re.search(
                rf'{re.escape(new_raw[:12])}….*?data-label="Requests 24 h" class="num">(\d+)<',
                listed.text,
                re.S,
            )
            assert found and int(found.group(1)) == 2

            # Pause: refused with the gateway's own error; resume: works again.
            assert (await post_form(client, page, {}, f"{page}/pause")).status_code == 303
            assert (await key_row(stack, key_id))["status"] == "paused"
            headers = {"Authorization": f"Bearer {new_raw}"}
            async with httpx.AsyncClient(base_url=stack.url, headers=headers) as api:
                paused = await api.post(RESPONSES, json=responses_body())
            assert paused.status_code == 401
            assert paused.json()["error"]["code"] == "api_key_invalid"
            assert (await post_form(client, page, {}, f"{page}/resume")).status_code == 303
            assert await gateway_status(stack, new_raw) == 200

            # Without the CSRF token every action is refused and changes nothing.
            unchanged = await key_row(stack, key_id)
            for action in ("rotate", "pause", "revoke", "edit"):
                forged = await client.post(f"{page}/{action}", data={"name": "forged"})
                assert forged.status_code == 403, action
            assert await key_row(stack, key_id) == unchanged

            # Revoke, after a confirm page.
            assert "cannot be undone" in (await client.get(f"{page}/revoke")).text
            assert (await post_form(client, page, {}, f"{page}/revoke")).status_code == 303
            assert (await key_row(stack, key_id))["status"] == "revoked"
            assert await gateway_status(stack, new_raw) == 401
            revoked_rotate = await post_form(
                client, page, {"form_once": "r" * 22}, f"{page}/rotate"
            )
            assert revoked_rotate.status_code == 409

            actions = await stack.database.run(
                lambda conn: [
                    r[0]
                    for r in conn.execute(
                        "SELECT action FROM audit_events WHERE target_id = %s AND actor = %s"
                        " ORDER BY created_at",
                        (key_id, OWNER_EMAIL),
                    )
                ]
            )
            assert actions == [
                "api_key.create",
                "api_key.update",
                "api_key.rotate",
                "api_key.pause",
                "api_key.resume",
                "api_key.revoke",
            ]
    tables = await trio.to_thread.run_sync(dump_database, db_url)
    logs = caplog.text
    assert caplog.records
    for secret in raw_keys:
        assert secret not in logs, "a raw key was logged"
        for table, text in tables.items():
            assert secret not in text, f"a raw key is stored in {table}"


async def test_an_admin_sees_and_changes_only_keys_of_their_pools(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Any) -> tuple[UUID, str, UUID, str]:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            mine = store.create_pool(conn, "mine")
            theirs = store.create_pool(conn, "theirs")
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")
            secret = stack.config.secret_key
            _, my_key = store.create_key(conn, secret, "mine", "my key")
            _, their_key = store.create_key(conn, secret, "theirs", "their key")
            return mine.id, str(my_key.id), theirs.id, str(their_key.id)

        mine, my_key, theirs, their_key = await stack.database.run(setup)
        before = await key_row(stack, their_key)
        async with browser(stack) as admin:
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            listed = await admin.get("/admin/api-keys")
            assert listed.status_code == 200
            assert "my key" in listed.text and "their key" not in listed.text
            assert stack.key[:12] not in listed.text  # the 'demo' Pool is not theirs
            assert (await admin.get(f"/admin/api-keys?pool={theirs}")).status_code == 404
            assert (await admin.get(f"/admin/api-keys?pool={mine}")).status_code == 200

            token = csrf_of(listed.text)
            page = f"/admin/api-keys/{their_key}"
            for path in (page, f"{page}/rotate", f"{page}/revoke"):
                assert (await admin.get(path)).status_code == 404, path
            for action in ("rotate", "pause", "resume", "revoke", "edit"):
                refused = await admin.post(
                    f"{page}/{action}",
                    data={
                        "csrf_token": token,
                        "form_once": f"{action}-once-token-of-22",
                        "name": "stolen",
                        "reasoning_effort": "none",
                    },
                )
                assert refused.status_code == 404, action
            count = await key_count(stack)
            created = await admin.post(
                "/admin/api-keys",
                data={
                    "csrf_token": token,
                    "form_once": once_of(listed.text, "/admin/api-keys") or "",
                    "pool": str(theirs),
                    "name": "sneaky",
                },
            )
            assert created.status_code == 400 and 'id="f-pool-error"' in created.text
            assert await key_count(stack) == count
            assert await key_row(stack, their_key) == before

            # Their own Pool's key: they may act on it.
            own = f"/admin/api-keys/{my_key}"
            assert (await post_form(admin, own, {}, f"{own}/pause")).status_code == 303
            assert (await key_row(stack, my_key))["status"] == "paused"

        # The CLI's parity: `pooler admin key rotate/pause/resume`, applied by NOTIFY.
        use_env(monkeypatch, stack_env(stack.config, db_url))
        cli = Cli(capsys)
        new_raw = (await cli.ok("key", "rotate", before["key_prefix"])).strip()
        assert new_raw.startswith("sk-cxp-")
        after = await key_row(stack, their_key)
        assert after["name"] == "their key" and after["previous_prefixes"] == [before["key_prefix"]]
        # (The Pool has no account: an accepted key gets 503, a refused one 401.)
        with trio.fail_after(WITHIN_A_SECOND * 5):
            while await gateway_status(stack, new_raw) == 401:
                await trio.sleep(0.05)
        assert await gateway_status(stack, new_raw) == 503
        await cli.ok("key", "pause", "their key", "--pool", "theirs")
        assert (await key_row(stack, their_key))["status"] == "paused"
        await cli.ok("key", "resume", after["key_prefix"])
        assert (await key_row(stack, their_key))["status"] == "active"
        await cli.ok("key", "update", after["key_prefix"], "--name", "renamed by cli")
        assert (await key_row(stack, their_key))["name"] == "renamed by cli"


async def test_rotating_a_key_closes_the_sockets_opened_with_the_old_secret(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(stack.key)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
                new_raw, _ = await stack.database.run(
                    lambda conn: key_lifecycle.rotate_key(
                        conn, stack.config.secret_key, stack.key[:12], actor="test"
                    )
                )
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                reason = closed.value.reason
                assert reason is not None and reason.code == 1008
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=auth(new_raw)
            ) as ws:
                events = await turn(ws, **responses_body())
                assert events[-1]["type"] == "response.completed"
