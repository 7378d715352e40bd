"""Settings → System (`/admin/system`, owner only): every instance setting of `pooler admin
settings show`, validated like the CLI (the error beside the field, 400, nothing saved),
audited, reset to its default, and applied by the running gateway within a second."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio
from console_support import bootstrap_owner, browser, csrf_of, post_form, sign_in
from harness import QUIET_POLLS, Stack, open_stack

from pooler import store
from pooler.admin_ui.system_page import all_keys
from pooler.cli import admin_settings
from pooler.store import operators
from pooler.store.instance_settings import get_instance_settings

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"


async def stored(stack: Stack) -> dict[str, Any]:
    raw, _ = await stack.database.run(get_instance_settings)
    return dict(raw)


async def applied(stack: Stack, check: Any) -> None:
    """The running gateway holds settings passing `check` within a second."""
    with trio.fail_after(1):
        while not check(stack.gateway.instance_settings):
            await trio.sleep(0.01)


def field_error(html: str, key: str) -> str:
    fid = "f-" + key.replace(".", "-") + "-error"
    found = re.search(rf'<p class="field-error" id="{re.escape(fid)}">([^<]*)</p>', html)
    assert found, f"no error beside {key}"
    return found.group(1)


async def test_every_setting_is_shown_and_a_change_reaches_the_gateway(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        page = await owner.get("/admin/system")
        assert page.status_code == 200
        keys = all_keys()
        # The keys `pooler admin settings show` lists, every one.
        assert set(keys) == set(admin_settings._defaults())
        for key in keys:
            assert f'name="{key}"' in page.text, key
            assert f'for="f-{key.replace(".", "-")}"' in page.text, key

        saved = await post_form(
            owner,
            "/admin/system",
            {
                "circuit_open_seconds": "30",
                "bulkheads.stream.concurrency": "64",
                "trusted_proxies": "10.0.0.0/8\n192.168.1.1",
            },
        )
        assert saved.status_code == 200 and "Saved" in saved.text, saved.text
        await applied(
            stack,
            lambda s: (
                s.circuit_open_seconds == 30
                and s.bulkheads["stream"].concurrency == 64
                and s.trusted_proxies == ("10.0.0.0/8", "192.168.1.1/32")
            ),
        )
        assert await stored(stack) == {
            **QUIET_POLLS,
            "circuit_open_seconds": 30,
            "bulkheads": {"stream": {"concurrency": 64}},
            "trusted_proxies": ["10.0.0.0/8", "192.168.1.1"],
        }
        events = await stack.database.run(lambda conn: store.list_audit_events(conn, 20))
        [event] = [
            e for e in events if e.action == "settings.update" and e.actor == "owner@example.com"
        ]
        assert set(event.details["after"]) == {
            "circuit_open_seconds",
            "bulkheads.stream.concurrency",
            "trusted_proxies",
        }
        assert event.details["after"]["circuit_open_seconds"] == 30
        assert set(event.details["before"]) == set(event.details["after"])

        # Submitting the page unchanged saves nothing.
        same = await owner.get("/admin/system")
        form = dict(re.findall(r'name="([a-z_.]+)" type="text"[^>]*value="([^"]*)"', same.text))
        form["trusted_proxies"] = "10.0.0.0/8\n192.168.1.1/32"
        unchanged = await owner.post(
            "/admin/system", data={"csrf_token": csrf_of(same.text), **form}
        )
        assert unchanged.status_code == 200 and "Nothing changed" in unchanged.text

        # Back to the default.
        reset = await post_form(
            owner,
            "/admin/system",
            {"key": "circuit_open_seconds"},
            action="/admin/system/reset",
        )
        assert reset.status_code == 303
        await applied(stack, lambda s: s.circuit_open_seconds == 60)
        assert "circuit_open_seconds" not in await stored(stack)


async def test_refused_values_are_shown_beside_their_field_and_nothing_is_saved(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        refused = await post_form(
            owner,
            "/admin/system",
            {
                "circuit_open_seconds": "0",
                "circuit_failure_threshold": "2.5",
                "demotion_seconds": "soon",
                "bulkheads.admin.queue": "-1",
                "trusted_proxies": "<script>alert(1)</script>",
                "console_idle_timeout_minutes": "",
                "quota_freshness_seconds": "120",  # valid, but not saved with the others
            },
        )
        assert refused.status_code == 400
        html = refused.text
        assert field_error(html, "circuit_open_seconds") == (
            "Open for (seconds) must be between 1 and 86400"
        )
        assert "whole number" in field_error(html, "circuit_failure_threshold")
        assert "must be a number" in field_error(html, "demotion_seconds")
        assert "between 0 and" in field_error(html, "bulkheads.admin.queue")
        assert "not an IP address" in field_error(html, "trusted_proxies")
        assert "required" in field_error(html, "console_idle_timeout_minutes")
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;" in html
        assert 'value="soon"' in html  # what was typed stays in the form
        assert await stored(stack) == QUIET_POLLS
        assert stack.gateway.instance_settings.quota_freshness_seconds == 900

        no_csrf = await owner.post("/admin/system", data={"circuit_open_seconds": "30"})
        assert no_csrf.status_code == 403
        bad_reset = await post_form(
            owner, "/admin/system", {"key": "secret_key"}, action="/admin/system/reset"
        )
        assert bad_reset.status_code == 400
        assert await stored(stack) == QUIET_POLLS


async def test_an_admin_is_refused_the_system_page(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.database.run(
            lambda conn: operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
        )
        async with browser(stack) as admin:
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert (await admin.get("/admin/system")).status_code == 403
            token = csrf_of((await admin.get("/admin/settings")).text)
            for path in ("/admin/system", "/admin/system/reset"):
                answer = await admin.post(
                    path,
                    data={"csrf_token": token, "circuit_open_seconds": "30", "key": "bulkheads"},
                )
                assert answer.status_code == 403
            assert await stored(stack) == QUIET_POLLS
