"""`/admin/audit-logs` against the real stack: each filter (actor, action exact and prefix,
target type and id, Pool, instance-wide, outcome, time range), keyset paging through ties
in created_at without a repeat or a skip, the before/after of a Pool policy edit and a key
policy edit made in the console, secret-looking details masked, markup shown as text, a
bad filter a 400 beside the form, and an admin scoped to its Pools (list and detail)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID, uuid4

import httpx
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, csrf_of, post_form, sign_in
from harness import POOL, Stack, open_stack
from psycopg.types.json import Jsonb

from pooler import store
from pooler.store import operators

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
ROW_RE = re.compile(r'<a href="/admin/audit-logs/([0-9a-f-]{36})">')
NEXT_RE = re.compile(r'href="([^"]+)" rel="next"')
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OLD = {"until": "2026-02-01T00:00"}


async def add_event(stack: Stack, **fields: Any) -> str:
    """An audit row written as given (created_at included), its id."""
    row = {
        "id": uuid4(),
        "created_at": T0,
        "actor": "seed@example.com",
        "action": "pool.update",
        "target_type": "pool",
        "target_id": str(uuid4()),
        "details": {},
        "pool_id": None,
        "outcome": "ok",
        **fields,
    }
    row["details"] = Jsonb(row["details"])
    columns = ", ".join(row)
    values = ", ".join(f"%({c})s" for c in row)
    await stack.database.run(
        lambda conn: conn.execute(f"INSERT INTO audit_events ({columns}) VALUES ({values})", row)
    )
    return str(row["id"])


async def shown_ids(client: httpx.AsyncClient, **query: str) -> list[str]:
    """Every event id the list shows for `query`, following the pages to the end."""
    page = await client.get("/admin/audit-logs?" + urlencode(query))
    ids: list[str] = []
    for _ in range(100):
        assert page.status_code == 200, page.text
        ids += ROW_RE.findall(page.text)
        more = NEXT_RE.search(page.text)
        if more is None:
            return ids
        assert "OFFSET" not in more.group(1)
        page = await client.get(html.unescape(more.group(1)))
    raise AssertionError("too many pages")


async def sign_in_owner(stack: Stack, client: httpx.AsyncClient) -> None:
    await stack.database.run(lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD))
    assert (await sign_in(client)).status_code == 303


async def test_each_filter_and_keyset_paging_through_ties(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        demo = await stack.database.run(lambda conn: store.get_pool(conn, POOL).id)
        async with browser(stack) as client:
            await sign_in_owner(stack, client)
            # 120 events at only 7 distinct times (ties), newest first by (created_at, id).
            tied: list[tuple[datetime, str]] = []
            for i in range(120):
                at = T0 + timedelta(seconds=i % 7)
                tied.append((at, await add_event(stack, created_at=at, actor="tied@example.com")))
            expected = [
                event_id for _, event_id in sorted(tied, key=lambda t: (t[0], t[1]), reverse=True)
            ]
            paged = await shown_ids(client, actor="tied@example.com")
            assert paged == expected  # 50 + 50 + 20: no repeat, no skip, in order

            key_event = await add_event(
                stack,
                action="api_key.rotate",
                target_type="api_key",
                target_id="k-1",
                pool_id=demo,
                created_at=T0 + timedelta(days=1),
            )
            key_update = await add_event(
                stack,
                action="api_key.update",
                target_type="api_key",
                target_id="k-2",
                pool_id=demo,
                created_at=T0 + timedelta(days=2),
            )
            failed = await add_event(
                stack,
                action="console.sign_in_failed",
                target_type="operator",
                outcome="failed",
                created_at=T0 + timedelta(days=3),
            )
            refused = await add_event(
                stack,
                action="console.sign_in_failed",
                target_type="operator",
                outcome="refused",
                created_at=T0 + timedelta(days=3, hours=1),
            )
            # A look-alike the prefix filter must not take: `_` is no LIKE wildcard here.
            lookalike = await add_event(
                stack, action="apixkey.rotate", created_at=T0 + timedelta(days=4)
            )

            # (OLD: the events seeded here, not those the stack wrote as it started)
            assert await shown_ids(client, action="api_key.rotate") == [key_event]
            assert await shown_ids(client, **OLD, action="api_key.") == [key_update, key_event]
            assert await shown_ids(client, **OLD, action="api_key*") == [key_update, key_event]
            assert lookalike in await shown_ids(client, **OLD, action="apixkey.")
            assert await shown_ids(client, **OLD, target_type="api_key") == [key_update, key_event]
            assert await shown_ids(client, **OLD, target_id="k-1") == [key_event]
            assert await shown_ids(client, **OLD, target_type="api_key", target_id="k-2") == [
                key_update
            ]
            assert await shown_ids(client, **OLD, pool=str(demo), action="api_key.") == [
                key_update,
                key_event,
            ]
            assert key_event not in await shown_ids(client, **OLD, pool="instance")
            assert failed in await shown_ids(client, **OLD, pool="instance")
            assert await shown_ids(client, **OLD, outcome="failed") == [failed]
            assert await shown_ids(client, **OLD, outcome="refused") == [refused]
            # From is inclusive, Until is not; no offset means UTC.
            window = {"since": "2026-01-03T03:04:05", "until": "2026-01-05T04:04:05Z"}
            assert await shown_ids(client, **window) == [failed, key_update, key_event]
            window = {"since": "2026-01-03T03:04:06", "until": "2026-01-05T04:04:06+00:00"}
            assert await shown_ids(client, **window) == [refused, failed, key_update]
            inclusive = {"since": (T0 + timedelta(days=2)).isoformat()}
            assert key_update in await shown_ids(client, **inclusive)
            assert key_event not in await shown_ids(client, **inclusive)

            # The filter is kept in the page's form and in its next-page link.
            page = await client.get("/admin/audit-logs?actor=tied@example.com&outcome=ok")
            assert 'value="tied@example.com"' in page.text
            next_link = html.unescape(NEXT_RE.search(page.text).group(1))  # type: ignore[union-attr]
            assert "actor=tied%40example.com" in next_link and "outcome=ok" in next_link

            # Bad values: a 400 naming the field, beside the form; never a 500.
            for query, field in [
                ({"outcome": "maybe"}, "outcome"),
                ({"pool": "not-a-uuid"}, "pool"),
                ({"since": "yesterday"}, "since"),
                ({"since": "2026-01-05T00:00", "until": "2026-01-01T00:00"}, "since"),
                ({"action": "DROP TABLE"}, "action"),
                ({"target_type": "<b>"}, "target_type"),
                ({"actor": "x\x1b[31m"}, "actor"),
                ({"actor": "a" * 400}, "actor"),
                ({"actor": "a\x00b"}, "actor"),
                ({"target_id": "\x00"}, "target_id"),
                ({"before": "12_nope"}, "before"),
                ({"before": "999999999999999999_" + str(uuid4())}, "before"),
            ]:
                bad = await client.get("/admin/audit-logs?" + urlencode(query))
                assert bad.status_code == 400, (query, bad.status_code)
                assert 'role="alert"' in bad.text and f'id="f-{field}-error"' in bad.text, query
                assert "<form" in bad.text and bad.text.count("<h1") == 1
            # An unknown event (or not a uuid) is a 404.
            assert (await client.get(f"/admin/audit-logs/{uuid4()}")).status_code == 404
            assert (await client.get("/admin/audit-logs/nope")).status_code == 404


async def test_before_after_of_console_edits_and_masked_secrets(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        demo = await stack.database.run(lambda conn: store.get_pool(conn, POOL))
        async with browser(stack) as client:
            await sign_in_owner(stack, client)
            # A Pool policy edit through the console's form.
            form = {
                "strategy": demo.strategy,
                "quota_threshold_percent": f"{demo.quota_threshold_percent:g}",
                "retry_budget": str(demo.retry_budget + 3),
                "max_in_flight_per_account": str(demo.max_in_flight_per_account),
                "continuity_enabled": "on" if demo.continuity_enabled else "",
            }  # v1_enabled left unchecked: turned off
            assert demo.v1_enabled
            saved = await post_form(client, f"/admin/pools/{demo.id}", form)
            assert saved.status_code == 303
            [pool_event] = await shown_ids(client, action="pool.update")
            detail = await client.get(f"/admin/audit-logs/{pool_event}")
            assert detail.status_code == 200 and detail.text.count("<h1") == 1
            diff = diff_table(detail.text)
            assert diff == {
                "retry_budget": (str(demo.retry_budget), str(demo.retry_budget + 3)),
                "v1_enabled": ("on", "off"),
            }
            assert f'href="/admin/pools/{demo.id}"' in detail.text  # the target, linked
            assert OWNER_EMAIL in detail.text

            # A key policy edit through the console's key page.
            key = await stack.database.run(lambda conn: store.list_keys(conn, POOL)[0])
            edited = await post_form(
                client,
                f"/admin/api-keys/{key.id}",
                {"name": "renamed", "allowed_models": "gpt-5.5", "reasoning_effort": "max:low"},
                action=f"/admin/api-keys/{key.id}/edit",
            )
            assert edited.status_code == 303
            [key_event] = await shown_ids(client, action="api_key.update")
            detail = await client.get(f"/admin/audit-logs/{key_event}")
            assert diff_table(detail.text) == {
                "name": (key.name or "(empty)", "renamed"),
                "allowed_models": ("—", "gpt-5.5"),
                "reasoning_effort": ("—", "low"),
                "reasoning_effort_mode": ("—", "max"),
            }
            assert f'href="/admin/api-keys/{key.id}"' in detail.text

            # Secret-looking details are masked wherever they sit, whoever wrote them.
            raw_key = "sk-cxp-" + "A" * 43
            leaked = await add_event(
                stack,
                pool_id=demo.id,
                details={
                    "password": "hunter2-hunter2",
                    "nested": {"refresh_token": "rt-very-secret", "key_hash": "abcdef0123"},
                    "totp_ciphertext": "c1ph3r",
                    "note": f"pasted {raw_key}",
                    "before": {"client_secret": "cs-old"},
                    "after": {"client_secret": "cs-new"},
                },
            )
            page = await client.get(f"/admin/audit-logs/{leaked}")
            assert page.status_code == 200
            for secret in ("hunter2", "rt-very-secret", "abcdef0123", "c1ph3r", raw_key, "cs-"):
                assert secret not in page.text, secret
            assert page.text.count("(hidden)") >= 5
            listed = await client.get("/admin/audit-logs")
            assert raw_key not in listed.text and "hunter2" not in listed.text

            # Markup typed into an actor or a target name is shown as text.
            markup = await add_event(
                stack,
                actor="<script>alert(1)</script>",
                target_id="<img src=x onerror=alert(2)>",
                details={"name": "<b>bold</b>"},
            )
            for path in ("/admin/audit-logs", f"/admin/audit-logs/{markup}"):
                page = await client.get(path)
                assert "<script>alert(1)" not in page.text and "<img src=x" not in page.text
                assert "<b>bold" not in page.text
                assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
                assert "&lt;b&gt;bold&lt;/b&gt;" in page.text


def diff_table(page: str) -> dict[str, tuple[str, str]]:
    """The "What changed" table: {field: (before, after)}."""
    found = re.search(r'<table class="table audit-diff">(.*?)</table>', page, re.S)
    assert found, "no diff table"
    rows = re.findall(
        r'<th scope="row" class="mono">(.*?)</th>\s*<td class="before">(.*?)</td>\s*'
        r'<td class="after">(.*?)</td>',
        found.group(1),
        re.S,
    )
    return {html.unescape(f): (html.unescape(b), html.unescape(a)) for f, b, a in rows}


async def test_an_admin_sees_only_its_pools_events(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Any) -> tuple[UUID, UUID]:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            mine = store.create_pool(conn, "mine", actor=OWNER_EMAIL)
            theirs = store.create_pool(conn, "theirs", actor=OWNER_EMAIL)
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor=OWNER_EMAIL)
            return mine.id, theirs.id

        mine, theirs = await stack.database.run(setup)
        async with browser(stack) as owner, browser(stack) as admin:
            await sign_in(owner)
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            # The admin's own sign-in and the owner's are instance-wide events.
            all_events = await shown_ids(owner)
            events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
            by_id = {str(e.id): e for e in events}
            assert set(all_events) == set(by_id)
            seen = await shown_ids(admin)
            assert seen and all(by_id[i].pool_id == mine for i in seen)
            assert {by_id[i].action for i in seen} == {"pool.create"}
            assert {e.action for e in events if e.pool_id is None} >= {
                "console.sign_in",
                "operator.create",
                "operator.assign_pools",
            }
            # Another Pool's event and an instance-wide one: 404 to the admin, shown to the owner.
            theirs_event = next(str(e.id) for e in events if e.pool_id == theirs)
            sign_in_event = next(
                str(e.id)
                for e in events
                if e.action == "console.sign_in" and e.actor == ADMIN_EMAIL
            )
            for event_id in (theirs_event, sign_in_event):
                assert (await admin.get(f"/admin/audit-logs/{event_id}")).status_code == 404
                assert (await owner.get(f"/admin/audit-logs/{event_id}")).status_code == 200
            assert (await admin.get(f"/admin/audit-logs/{seen[0]}")).status_code == 200
            # Filtering by another Pool is a 404; "instance-wide" shows the admin nothing.
            assert (await admin.get(f"/admin/audit-logs?pool={theirs}")).status_code == 404
            assert await shown_ids(admin, pool="instance") == []
            page = await admin.get("/admin/audit-logs")
            assert ADMIN_EMAIL not in page.text.split("<main", 1)[1].split("</form>", 1)[1]
            assert "theirs" not in page.text
            # The owner's changes to the admin's Pool are audited there with before/after.
            await post_form(
                owner,
                f"/admin/pools/{mine}",
                {
                    "strategy": "round_robin",
                    "quota_threshold_percent": "90",
                    "retry_budget": "2",
                    "max_in_flight_per_account": "8",
                    "continuity_enabled": "on",
                    "v1_enabled": "on",
                },
            )
            [edit] = await shown_ids(admin, action="pool.update")
            detail = await admin.get(f"/admin/audit-logs/{edit}")
            assert detail.status_code == 200
            assert diff_table(detail.text)["strategy"] == ("least_used", "round_robin")
            assert csrf_of(detail.text)  # a full console page (the sign-out form)
