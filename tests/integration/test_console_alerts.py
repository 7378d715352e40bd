"""`/admin/alerts`: incidents (with their notifications), rules and channels of the
operator's Pools only; rules added and deleted from the page; operator- and upstream-chosen
text (an account label, a channel name) escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from alert_support import QUIET, job, keyring, leading
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, csrf_of, post_form, sign_in
from harness import POOL, open_stack

from pooler import store
from pooler.store import alerts as alert_store
from pooler.store import operators
from pooler.store.accounts import set_lifecycle

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
MARKUP = "<img src=x onerror=alert(1)>"


async def test_alerts_page_shows_only_the_operators_pools_escaped(
    db_url: str, tmp_path: Path
) -> None:
    with leading(db_url):
        async with open_stack(db_url, tmp_path, accounts=1, instance_settings=QUIET) as stack:
            ring = keyring(stack)

            def setup(conn: Any) -> tuple[UUID, UUID, UUID]:
                operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
                mine = store.get_pool(conn, POOL)
                theirs = store.create_pool(conn, "theirs")
                admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
                operators.assign_pools(conn, admin.id, [mine.id], actor="test")
                (account_id,) = [r[0] for r in conn.execute("SELECT id FROM upstream_accounts")]
                conn.execute(
                    "UPDATE upstream_accounts SET label = %s WHERE id = %s", (MARKUP, account_id)
                )
                set_lifecycle(conn, account_id, "reauth_required", "test", actor="test")
                alert_store.add_rule(conn, mine.id, "reauth_required", None, actor="test")
                alert_store.add_webhook(
                    conn, ring, mine.id, "<b>ops</b>", "http://127.0.0.1:9/x", actor="test"
                )
                theirs_rule = alert_store.add_rule(conn, theirs.id, "usable_below", 1, actor="t")
                return mine.id, theirs.id, theirs_rule.id

            mine, theirs, theirs_rule = await stack.database.run(setup)
            await job(stack, attempt_timeout_s=1.0).run_pass()

            async with browser(stack) as admin, browser(stack) as owner:
                await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
                await sign_in(owner)
                page = await admin.get("/admin/alerts")
                assert page.status_code == 200
                assert 'href="/admin/alerts"' in page.text  # in the nav
                assert MARKUP not in page.text and "&lt;img src=x" in page.text
                assert "<b>ops</b>" not in page.text and "&lt;b&gt;ops&lt;/b&gt;" in page.text
                assert "needs a new login" in page.text
                assert "usable accounts below 1" not in page.text  # theirs: not shown
                assert "theirs" not in page.text

                everything = (await owner.get("/admin/alerts")).text
                assert "usable accounts below 1" in everything and "theirs" in everything

                # Another Pool's rule: as if it did not exist, and untouched.
                token = csrf_of(page.text)
                gone = await admin.post(
                    f"/admin/alerts/rules/{theirs_rule}/delete", data={"csrf_token": token}
                )
                assert gone.status_code == 404
                other = await admin.post(
                    "/admin/alerts/rules",
                    data={"csrf_token": token, "pool": str(theirs), "kind": "reauth_required"},
                )
                assert other.status_code == 404
                rules = await stack.database.run(lambda conn: alert_store.list_rules(conn))
                assert len(rules) == 2

                bad = await post_form(
                    admin,
                    "/admin/alerts",
                    {"pool": str(mine), "kind": "quota_above", "threshold": "500"},
                    "/admin/alerts/rules",
                )
                assert bad.status_code == 400 and "between 1 and 100" in bad.text
                added = await post_form(
                    admin,
                    "/admin/alerts",
                    {"pool": str(mine), "kind": "quota_above", "threshold": "90"},
                    "/admin/alerts/rules",
                )
                assert added.status_code == 303
                shown = (await admin.get("/admin/alerts")).text
                assert "a quota window at or above 90 %" in shown
                rules = await stack.database.run(lambda conn: alert_store.list_rules(conn))
                quota_rule = next(r for r in rules if r.kind == "quota_above")
                deleted = await post_form(
                    admin, "/admin/alerts", {}, f"/admin/alerts/rules/{quota_rule.id}/delete"
                )
                assert deleted.status_code == 303
                rules = await stack.database.run(lambda conn: alert_store.list_rules(conn))
                assert len(rules) == 2
