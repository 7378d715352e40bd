"""One-time console forms against the real stack: every form whose answer shows a secret once
(key create and rotate, invite, operator create, password reset, recovery codes, TOTP
confirm), sent twice as a reload re-POSTs it, acts once; the second answer is a 409 page
that links to what the first made and shows no secret. The same token in another session is
its own; a form without its token, or with a malformed one, is a 400 and does nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pyotp
import trio
from console_support import (
    OWNER_EMAIL,
    OWNER_PASSWORD,
    bootstrap_owner,
    browser,
    csrf_of,
    once_of,
    post_form,
    sign_in,
)
from harness import Stack, open_stack
from test_console_api_keys import gateway_status, key_count, key_id_of, key_row, pool_id, shown_key
from test_console_invites import LINK_RE
from test_console_operators import TEMP_RE, operator_id
from test_console_totp import CODE_RE, SECRET_RE, second_factor

from pooler.store import operators

KEYS = "/admin/api-keys"
SETTINGS = "/admin/settings"


async def form_fields(client: httpx.AsyncClient, page: str, action: str) -> dict[str, str]:
    """The hidden fields of `page`'s form for `action`, as the browser keeps them."""
    shown = await client.get(page)
    assert shown.status_code == 200, (page, shown.status_code)
    once = once_of(shown.text, action)
    assert once, f"the form for {action} has no one-time token"
    return {"csrf_token": csrf_of(shown.text), "form_once": once}


async def sent_twice(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    """The form for `action` on `page` sent, then sent again as a reload does."""
    fields = {**await form_fields(client, page, action), **data}
    first = await client.post(action, data=fields)
    again = await client.post(action, data=fields)
    return first, again


def assert_already_sent(page: httpx.Response, link: str, secrets: list[str]) -> None:
    assert page.status_code == 409, page.status_code
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count("<h1") == 1 and "This form was already sent" in page.text
    assert f'href="{link}"' in page.text
    for secret in secrets:
        assert secret not in page.text


async def count(stack: Stack, sql: str) -> int:
    return int(await stack.database.run(lambda conn: conn.execute(sql).fetchone()[0]))


async def test_key_create_and_rotate_act_once_per_form(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        assert (await bootstrap_owner(owner)).status_code == 303
        before = await key_count(stack)
        data = {"pool": await pool_id(stack), "name": "", "reasoning_effort": "none"}
        fields = {**await form_fields(owner, KEYS, KEYS), **data}
        first = await owner.post(KEYS, data=fields)
        assert first.status_code == 200
        raw, key_id = shown_key(first), key_id_of(first)
        again = await owner.post(KEYS, data=fields)
        assert_already_sent(again, f"{KEYS}/{key_id}", [raw])
        assert f"Key {raw[:12]}… was created then" in again.text
        assert await key_count(stack) == before + 1  # an unnamed key: nothing else stops it
        assert await gateway_status(stack, raw) == 200

        # The same token from another session is that session's own form.
        async with browser(stack) as other:
            await sign_in(other)
            page = await other.get(KEYS)
            theirs = await other.post(KEYS, data={**fields, "csrf_token": csrf_of(page.text)})
            assert theirs.status_code == 200 and await key_count(stack) == before + 2

        # Without the token, or with a malformed one: a 400, nothing created.
        for broken in ({}, {"form_once": "short"}, {"form_once": "x" * 30 + "!"}):
            sent = {k: v for k, v in fields.items() if k != "form_once"} | broken
            refused = await owner.post(KEYS, data={**sent, "name": "never"})
            assert refused.status_code == 400, broken
            assert "one-time token" in refused.text
        assert await key_count(stack) == before + 2

        # Rotate: one rotation; the secret the first answer showed keeps working.
        key_page = f"{KEYS}/{key_id}"
        rotated, again = await sent_twice(owner, f"{key_page}/rotate", f"{key_page}/rotate", {})
        assert rotated.status_code == 200
        new_raw = shown_key(rotated)
        assert_already_sent(again, key_page, [new_raw, raw])
        assert "was rotated then" in again.text
        assert len((await key_row(stack, key_id))["previous_prefixes"]) == 1
        assert await gateway_status(stack, new_raw) == 200
        assert await gateway_status(stack, raw) == 401
        rows = await count(stack, "SELECT count(*) FROM console_form_uses")
        assert rows == 3  # create, the other session's create, rotate

        # Sent twice at once (a double click, two nodes): one key, one 409.
        fields = {**await form_fields(owner, KEYS, KEYS), **data}
        answers: list[int] = []

        async def send() -> None:
            answers.append((await owner.post(KEYS, data=fields)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(send)
        assert sorted(answers) == [200, 409]
        assert await key_count(stack) == before + 3

        # A named key reads by name; a key refused (its name taken) leaves the form usable.
        named = {**data, "name": "<b>ci</b>"}
        made, again = await sent_twice(owner, KEYS, KEYS, named)
        assert made.status_code == 200
        assert "Key &#39;&lt;b&gt;ci&lt;/b&gt;&#39;" in again.text and "<b>ci</b>" not in again.text
        fields = {**await form_fields(owner, KEYS, KEYS), **named}
        assert (await owner.post(KEYS, data=fields)).status_code == 400  # the name is taken
        renamed = await owner.post(KEYS, data={**fields, "name": "ci 2"})
        assert renamed.status_code == 200


async def test_invite_operator_and_reset_act_once_per_form(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        assert (await bootstrap_owner(owner)).status_code == 303
        invites = "/admin/invites"
        data = {"pool": await pool_id(stack)}
        first, again = await sent_twice(owner, invites, invites, data)
        link = LINK_RE.search(first.text)
        assert first.status_code == 200 and link
        token = link.group(2)
        assert_already_sent(again, invites, [token])
        assert "An invite link to Pool &#39;demo&#39; was created then" in again.text
        assert await count(stack, "SELECT count(*) FROM pool_invites") == 1

        people = "/admin/operators"
        data = {"email": "admin@example.com", "display_name": "", "role": "admin", **data}
        created, again = await sent_twice(owner, people, people, data)
        assert created.status_code == 200
        temp = TEMP_RE.search(created.text)
        assert temp
        admin_id = await operator_id(stack, "admin@example.com")
        assert_already_sent(again, f"{people}/{admin_id}", [temp.group(1)])
        assert "Operator admin@example.com was created then" in again.text
        assert await count(stack, "SELECT count(*) FROM operators") == 2

        page = f"{people}/{admin_id}"
        reset_fields = await form_fields(owner, page, f"{page}/reset-password")
        reset = await owner.post(f"{page}/reset-password", data=reset_fields)
        again = await owner.post(f"{page}/reset-password", data=reset_fields)
        reset_temp = TEMP_RE.search(reset.text)
        assert reset.status_code == 200 and reset_temp
        assert_already_sent(again, page, [reset_temp.group(1), temp.group(1)])
        assert "The password of admin@example.com was reset then" in again.text
        resets = await count(
            stack, "SELECT count(*) FROM audit_events WHERE action = 'operator.password_reset'"
        )
        assert resets == 1
        async with browser(stack) as admin:  # the password the first answer showed works
            signed = await sign_in(admin, "admin@example.com", reset_temp.group(1))
            assert (signed.status_code, signed.headers["location"]) == (303, "/")

        # A missing token does nothing: no invite, no operator, no reset.
        listing = await owner.get(invites)
        plain = {"csrf_token": csrf_of(listing.text)}
        assert (await owner.post(invites, data={**plain, **data})).status_code == 400
        other = {**plain, "email": "b@example.com", "role": "admin"}
        assert (await owner.post(people, data=other)).status_code == 400
        assert (await owner.post(f"{page}/reset-password", data=plain)).status_code == 400
        assert await count(stack, "SELECT count(*) FROM pool_invites") == 1
        assert await count(stack, "SELECT count(*) FROM operators") == 2
        async with browser(stack) as admin:
            signed = await sign_in(admin, "admin@example.com", reset_temp.group(1))
            assert signed.status_code == 303

        # What the form made is gone since: the page says so and links to the list.
        await stack.database.run(
            lambda conn: operators.delete_operator(conn, admin_id, actor="test")
        )
        gone = await owner.post(f"{page}/reset-password", data=reset_fields)
        assert_already_sent(gone, people, [reset_temp.group(1)])
        assert "no longer there" in gone.text


async def test_totp_confirm_and_recovery_codes_act_once_per_form(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(client)
        await post_form(client, SETTINGS, {}, f"{SETTINGS}/totp/start")
        enrol = await client.get(f"{SETTINGS}/totp")
        secret = SECRET_RE.search(enrol.text)
        assert secret
        generator = pyotp.TOTP(secret.group(1).replace(" ", ""))
        confirm = f"{SETTINGS}/totp/confirm"
        fields = {
            "csrf_token": csrf_of(enrol.text),
            "form_once": once_of(enrol.text, confirm) or "",
        }
        code = generator.now()
        wrong = await client.post(confirm, data={**fields, "code": "abcdef"})
        assert wrong.status_code == 400  # a wrong code keeps the form usable
        done = await client.post(confirm, data={**fields, "code": code})
        codes = CODE_RE.findall(done.text)
        assert done.status_code == 200 and len(codes) == 10
        again = await client.post(confirm, data={**fields, "code": code})
        assert_already_sent(again, SETTINGS, codes)
        assert "Two-factor sign-in was turned on then" in again.text

        regenerate = f"{SETTINGS}/recovery-codes"
        wrong_password = {"password": "not the password"}
        fields = await form_fields(client, SETTINGS, regenerate)
        refused = await client.post(regenerate, data={**fields, **wrong_password})
        assert refused.status_code == 400  # before the claim: the form stays usable
        right = {**fields, "password": OWNER_PASSWORD}
        fresh = await client.post(regenerate, data=right)
        new_codes = CODE_RE.findall(fresh.text)
        assert fresh.status_code == 200 and len(new_codes) == 10
        again = await client.post(regenerate, data=right)
        assert_already_sent(again, SETTINGS, new_codes + codes)
        assert "New recovery codes were made then" in again.text
        plain = {"csrf_token": fields["csrf_token"], "password": OWNER_PASSWORD}
        assert (await client.post(regenerate, data=plain)).status_code == 400
        async with browser(stack) as other:  # the codes the first answer showed still work
            await sign_in(other)
            assert (await second_factor(other, new_codes[0])).status_code == 303


async def test_form_uses_go_with_the_session_and_stay_bounded(db_url: str, tmp_path: Path) -> None:
    from pooler.store import form_uses

    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        assert (await bootstrap_owner(owner)).status_code == 303
        data = {"pool": await pool_id(stack)}
        for _ in range(2):
            await post_form(owner, "/admin/invites", data)

        def fill(conn: Any) -> None:
            session = conn.execute("SELECT id FROM console_sessions").fetchone()[0]
            for n in range(form_uses.KEEP_PER_SESSION + 5):
                digest = n.to_bytes(32, "big")
                form_uses.claim(conn, session, digest, "invite.create", "invite")

        await stack.database.run(fill)
        kept = await count(stack, "SELECT count(*) FROM console_form_uses")
        assert kept == form_uses.KEEP_PER_SESSION
        page = await owner.get("/admin/pools")
        out = await owner.post("/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303  # the session is deleted: its claims go with it
        assert await count(stack, "SELECT count(*) FROM console_form_uses") == 0
