"""A request's page says what happened in words, after real traffic through the gateway:
a request refused by its key's policy says that no attempt went upstream (not "one attempt
on the account above": it has no account), and a conversation moved off a paused account
says from which account and why, once (not again under the routing story's stored names).
The browser test `test_browser_request_story.py` reads the same pages after the real
clients; this one runs without a browser."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, sign_in
from harness import POOL, open_stack, responses_body
from routing_support import completed, log_row, pause, post, seen

from pooler import store
from pooler.store import operators
from pooler.store.keys import EffortPolicy

DEADLINE = 30


def text_of(page: str) -> str:
    """The page's visible words, tags dropped, spaces squeezed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


async def test_refused_and_moved_requests_read_true(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Any) -> str:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            policy = EffortPolicy("max", "low")
            return store.create_key(conn, stack.config.secret_key, POOL, "narrow", effort=policy)[0]

        narrow = await stack.database.run(setup)
        await stack.gateway.reload()  # the new key known now, not at its notification
        with trio.fail_after(DEADLINE):
            async with stack.client(headers={"Authorization": f"Bearer {narrow}"}) as client:
                refused = await post(client, responses_body(reasoning={"effort": "high"}))
            assert refused.status_code == 400, refused.text
            async with stack.client() as client:
                completed(await post(client, responses_body(prompt_cache_key="conv-m")))
                [first] = await seen(stack)
                await pause(stack, first["label"])
                moved = await post(client, responses_body(prompt_cache_key="conv-m"))
                completed(moved)
            rows = [await log_row(stack, r.headers["x-request-id"]) for r in (refused, moved)]
            async with browser(stack) as owner:
                await sign_in(owner)
                pages = [
                    text_of((await owner.get(f"/admin/request-logs/{row['id']}")).text)
                    for row in rows
                ]
    refused_page, moved_page = pages
    assert rows[0]["account_id"] is None and rows[0]["error_code"] == "reasoning_effort_not_allowed"
    assert "No attempt went upstream" in refused_page
    assert "One attempt, on the account above" not in refused_page

    assert (rows[1]["continuity"], rows[1]["routing"]["continuity_reason"]) == (
        "moved",
        "not_active",
    )
    assert f"moved (from {first['label']}, because not_active )" in moved_page
    assert "continuity_reason" not in moved_page  # the stored name is not shown
