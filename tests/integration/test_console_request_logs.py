"""`/admin/request-logs` against the real stack: each filter narrows to exactly the rows it
names, keyset pages neither repeat nor skip a row (also among rows sharing a timestamp), a
bad filter is a 400 beside the form, an admin never sees another Pool's row (list, detail,
export), client-chosen text is escaped, the detail tells a request's whole story, and the
export (CSV, JSON Lines) streams the filtered rows with exactly the detail page's fields."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import httpx
import orjson
import pytest
import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, sign_in
from harness import POOL, Stack, open_stack

from pooler import store
from pooler.admin_ui import log_export
from pooler.store import operators
from pooler.store.logs import insert_attempts, insert_request_logs
from pooler.store.models import AttemptRow, RequestLogRow
from pooler.store.request_log_query import EXPORT_FIELDS

HOME = "/admin/request-logs"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
ROW_LINK_RE = re.compile(r'href="/admin/request-logs/([0-9a-f-]{36})"')
OLDER_RE = re.compile(r'rel="next" href="([^"]+)"')
DATA_FIELD_RE = re.compile(r'data-field="([a-z_]+)"')
NOW = datetime.now(UTC)


@dataclass
class World:
    stack: Stack
    mine: UUID
    theirs: UUID
    accounts: dict[str, UUID]  # label -> id (the demo Pool's accounts)
    ids: dict[str, UUID]  # request_id -> row id


def log(request_id: str, minutes_ago: float, **fields: Any) -> RequestLogRow:
    defaults: dict[str, Any] = {
        "route": "responses",
        "outcome": "completed",
        "status_code": 200,
        "transport": "http",
        "model": "gpt-5.1-codex",
        "continuity": "none",
    }
    return RequestLogRow(
        request_id=request_id,
        created_at=NOW - timedelta(minutes=minutes_ago),
        **{**defaults, **fields},
    )


async def row_ids(stack: Stack) -> dict[str, UUID]:
    rows = await stack.database.run(
        lambda conn: conn.execute("SELECT request_id, id FROM request_logs").fetchall()
    )
    return {request_id: row_id for request_id, row_id in rows}


@asynccontextmanager
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """The stack with an owner, an admin of Pool `mine` (not `theirs`), a key named `alpha`
    in `mine`, and six varied request logs."""
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Any) -> tuple[UUID, UUID, dict[str, UUID]]:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            mine = store.create_pool(conn, "mine")
            theirs = store.create_pool(conn, "theirs")
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")
            for pool, name, prefix in (
                (mine, "alpha", "sk-cxp-aaaaa"),
                (theirs, "", "sk-cxp-ccccc"),
            ):
                conn.execute(
                    "INSERT INTO pool_api_keys (pool_id, name, key_prefix, key_digest)"
                    " VALUES (%s, %s, %s, %s)",
                    (pool.id, name, prefix, hashlib.sha256(prefix.encode()).digest()),
                )
            accounts = dict(conn.execute("SELECT label, id FROM upstream_accounts").fetchall())
            return mine.id, theirs.id, accounts

        mine, theirs, accounts = await stack.database.run(setup)
        (a_label, a_id), (b_label, b_id), (c_label, c_id) = sorted(accounts.items())[:3]
        rows = [
            log(
                "r1",
                10,
                pool_id=mine,
                key_prefix="sk-cxp-aaaaa",
                account_id=a_id,
                account_label=a_label,
                transport="websocket",
                continuity="kept",
            ),
            log(
                "r2",
                20,
                pool_id=mine,
                key_prefix="sk-cxp-bbbbb",
                account_id=b_id,
                account_label=b_label,
                status_code=429,
                outcome="refused",
                error_code="usage_limit_reached",
                model="gpt-5.1",
                route="compact",
                transport="http_json",
                continuity="moved",
            ),
            log(
                "r3",
                30,
                pool_id=theirs,
                key_prefix="sk-cxp-ccccc",
                account_id=c_id,
                account_label=c_label,
                status_code=502,
                outcome="upstream_error",
                error_code="upstream_unavailable",
                continuity="new",
            ),
            log(
                "r4",
                40,
                pool_id=theirs,
                key_prefix="sk-cxp-ccccc",
                account_id=c_id,
                account_label=c_label,
                model="gpt-5.1",
            ),
            log(
                "r5",
                3 * 24 * 60,
                pool_id=mine,
                key_prefix="sk-cxp-aaaaa",
                account_id=a_id,
                account_label=a_label,
            ),
            log(
                "r6",
                50,
                pool_id=None,
                route="responses",
                status_code=401,
                outcome="refused",
                error_code="invalid_api_key",
                model=None,
                transport="http",
            ),
        ]
        await stack.database.run(lambda conn: insert_request_logs(conn, rows))
        yield World(stack, mine, theirs, accounts, await row_ids(stack))


def listed(page: httpx.Response, ids: dict[str, UUID]) -> set[str]:
    assert page.status_code == 200, page.text[:500]
    by_id = {str(row_id): request_id for request_id, row_id in ids.items()}
    return {by_id[found] for found in ROW_LINK_RE.findall(page.text)}


async def test_each_filter_narrows_to_its_rows(db_url: str, tmp_path: Path) -> None:
    async with world(db_url, tmp_path) as w, browser(w.stack) as owner:
        await sign_in(owner)
        a_label, a_id = sorted(w.accounts.items())[0]
        four_days = (NOW - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")
        two_days = (NOW - timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
        cases: list[tuple[dict[str, str], set[str]]] = [
            ({}, {"r1", "r2", "r3", "r4", "r6"}),
            ({"pool": str(w.mine)}, {"r1", "r2"}),
            ({"pool": str(w.theirs)}, {"r3", "r4"}),
            ({"key": "sk-cxp-aaaaa"}, {"r1"}),
            ({"key": "alpha"}, {"r1"}),  # a key's name: its prefix
            ({"key": "no such key"}, set()),
            ({"account": str(a_id)}, {"r1"}),
            ({"account": a_label}, {"r1"}),
            ({"status": "2xx"}, {"r1", "r4"}),
            ({"status": "4xx"}, {"r2", "r6"}),
            ({"status": "5xx"}, {"r3"}),
            ({"error": "upstream_unavailable"}, {"r3"}),
            ({"model": "gpt-5.1"}, {"r2", "r4"}),
            ({"route": "compact"}, {"r2"}),
            ({"transport": "websocket"}, {"r1"}),
            ({"transport": "http_json"}, {"r2"}),
            ({"continuity": "moved"}, {"r2"}),
            ({"continuity": "new"}, {"r3"}),
            ({"from": four_days}, {"r1", "r2", "r3", "r4", "r5", "r6"}),
            ({"from": four_days, "to": two_days}, {"r5"}),
            ({"pool": str(w.mine), "status": "4xx"}, {"r2"}),
        ]
        for params, expected in cases:
            page = await owner.get(HOME, params=params)
            assert listed(page, w.ids) == expected, params
            # the filter is shown again in the form (shareable, and visible)
            for value in params.values():
                assert f'value="{value}"' in page.text, (params, value)


async def test_keyset_pages_neither_repeat_nor_skip(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        demo = await stack.database.run(lambda conn: store.get_pool(conn, POOL).id)
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        # 130 rows on 10 distinct timestamps: 13 rows share each one.
        rows = [log(f"k{n:03d}", minutes_ago=(n // 13) * 1.5, pool_id=demo) for n in range(130)]
        await stack.database.run(lambda conn: insert_request_logs(conn, rows))
        ids = await row_ids(stack)
        expected = sorted(((r.created_at, ids[r.request_id]) for r in rows), reverse=True)
        await sign_in(owner)
        seen: list[str] = []
        url: str | None = f"{HOME}?{urlencode({'pool': str(demo)})}"
        sizes = []
        while url is not None:
            page = await owner.get(url)
            assert page.status_code == 200
            found = ROW_LINK_RE.findall(page.text)
            sizes.append(len(found))
            seen.extend(found)
            older = OLDER_RE.search(page.text)
            url = older.group(1).replace("&amp;", "&") if older else None
            # the next pages keep the first page's range, written out
            assert url is None or ("from=" in url and "to=" in url)
        assert sizes == [50, 50, 30]
        assert seen == [str(row_id) for _, row_id in expected]
        assert "Newest" in page.text  # a later page links back to the first


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "6xx"}, "Status must be one of"),
        ({"pool": "not-a-uuid"}, "Pool is not a Pool id"),
        ({"from": "yesterday"}, "From is not a time"),
        ({"to": "2026-13-45T99:99"}, "To is not a time"),
        ({"from": "2026-01-02T00:00", "to": "2026-01-01T00:00"}, "From must be before To"),
        ({"transport": "pigeon"}, "Transport must be one of"),
        ({"continuity": "sometimes"}, "Continuity must be one of"),
        ({"error": "<b>x</b>"}, "Error code holds characters"),
        ({"route": "a b"}, "Route holds characters"),
        ({"model": "m" * 201}, "Model is longer than"),
        ({"after": "garbage"}, "The page link is damaged"),
        ({"after": "2026-01-01T00:00:00_not-a-uuid"}, "The page link is damaged"),
    ],
)
async def test_a_bad_filter_is_a_400_beside_the_form(
    db_url: str, tmp_path: Path, params: dict[str, str], message: str
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(owner)
        for path in (HOME, f"{HOME}/export.csv", f"{HOME}/export.jsonl"):
            if "after" in params and path != HOME:
                continue
            page = await owner.get(path, params=params)
            assert page.status_code == 400, (path, params)
            assert page.headers["content-type"].startswith("text/html")
            found = re.search(
                r'<p class="error" role="alert" id="filter-error">([^<]*)</p>', page.text
            )
            assert found and message in found.group(1), page.text[-2000:]
            assert 'aria-invalid="true"' in page.text or "after" in params
            assert "<script" not in page.text.lower()


async def test_an_admin_sees_only_its_pools_rows(db_url: str, tmp_path: Path) -> None:
    async with world(db_url, tmp_path) as w, browser(w.stack) as admin:
        await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert listed(await admin.get(HOME), w.ids) == {"r1", "r2"}
        four_days = (NOW - timedelta(days=4)).isoformat()
        for params in (
            {"from": four_days},
            {"status": "5xx"},
            {"key": "sk-cxp-ccccc"},
            {"model": "gpt-5.1"},
            {"account": str(sorted(w.accounts.values())[0])},
        ):
            page = await admin.get(HOME, params=params)
            assert listed(page, w.ids) <= {"r1", "r2", "r5"}, params
        page = await admin.get(HOME)
        assert "theirs" not in page.text  # not even in the Pool menu
        assert (await admin.get(HOME, params={"pool": str(w.theirs)})).status_code == 404
        assert (await admin.get(f"{HOME}/{w.ids['r3']}")).status_code == 404
        assert (await admin.get(f"{HOME}/{w.ids['r6']}")).status_code == 404  # no Pool
        assert (await admin.get(f"{HOME}/{w.ids['r1']}")).status_code == 200
        assert (await admin.get(f"{HOME}/{w.ids['r1']}")).status_code == 200
        exported = await admin.get(f"{HOME}/export.jsonl", params={"from": four_days})
        assert exported.status_code == 200
        got = {orjson.loads(line)["request_id"] for line in exported.text.splitlines()}
        assert got == {"r1", "r2", "r5"}
        refused = await admin.get(f"{HOME}/export.csv", params={"pool": str(w.theirs)})
        assert refused.status_code == 404 and "r3" not in refused.text


async def test_client_text_renders_as_text(db_url: str, tmp_path: Path) -> None:
    xss = "<script>alert(1)</script>"
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        row = log(
            "x1",
            1,
            model=xss,
            client_user_agent=f'"><img src=x onerror=alert(2)>{xss}',
            account_label=f"<b>{xss}</b>",
            error_code=xss,
            client_request_id=xss,
            routing={"strategy": xss, "candidates": [{"label": xss, "verdict": xss}], xss: xss},
            exclusions={xss: xss},
        )
        await stack.database.run(lambda conn: insert_request_logs(conn, [row]))
        ids = await row_ids(stack)
        await sign_in(owner)
        for path in (HOME, f"{HOME}/{ids['x1']}"):
            page = await owner.get(path)
            assert page.status_code == 200
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        # a model filter with markup is escaped back into the form, never run
        page = await owner.get(HOME, params={"model": xss})
        assert listed(page, ids) == {"x1"} and "<script>alert" not in page.text


async def test_detail_tells_the_whole_story(db_url: str, tmp_path: Path) -> None:
    async with world(db_url, tmp_path) as w, browser(w.stack) as owner:
        (a_label, a_id), (b_label, b_id) = sorted(w.accounts.items())[:2]
        start = NOW - timedelta(minutes=5)
        story = log(
            "s1",
            5,
            pool_id=w.mine,
            key_prefix="sk-cxp-aaaaa",
            account_id=b_id,
            account_label=b_label,
            retries=1,
            duration_ms=1234.5,
            ttfb_ms=321.0,
            input_tokens=1000,
            cached_input_tokens=600,
            output_tokens=200,
            reasoning_tokens=50,
            total_tokens=1200,
            request_bytes=4567,
            response_bytes=8910,
            client_request_id="cli-req-42",
            client_ip="203.0.113.9",
            client_user_agent="codex_cli_rs/0.63.0",
            continuity="moved",
            continuity_from=a_id,
            exclusions={a_label: "usage_limit_reached"},
            routing={
                "strategy": "least_used",
                "continuity": "moved: pinned account at quota",
                "candidates": [
                    {"label": a_label, "verdict": "excluded: usage_limit_reached"},
                    {"label": b_label, "verdict": "chosen", "used_percent": 12},
                ],
            },
        )
        attempts = [
            AttemptRow(
                "s1", 1, start, "failed", a_id, a_label, 40.0, 429, "usage_limit_reached", 35.0
            ),
            AttemptRow(
                "s1",
                2,
                start + timedelta(milliseconds=40),
                "completed",
                b_id,
                b_label,
                1190.0,
                200,
                None,
                280.0,
            ),
        ]

        def insert(conn: Any) -> None:
            insert_request_logs(conn, [story])
            insert_attempts(conn, attempts)

        await w.stack.database.run(insert)
        ids = await row_ids(w.stack)
        await sign_in(owner)
        page = await owner.get(f"{HOME}/{ids['s1']}")
        assert page.status_code == 200
        text = page.text
        shown = dict(re.findall(r'data-field="([a-z_]+)"[^>]*>([^<]*)</dd>', text))
        assert shown["pool"] == "mine" and shown["client_ip"] == "203.0.113.9"
        assert shown["client_request_id"] == "cli-req-42"
        assert shown["input_tokens"] == "1,000" and shown["cached_input_tokens"] == "600"
        assert shown["output_tokens"] == "200" and shown["reasoning_tokens"] == "50"
        assert shown["request_bytes"] == "4,567" and shown["response_bytes"] == "8,910"
        assert shown["client_user_agent"] == "codex_cli_rs/0.63.0"
        assert shown["continuity"] == "moved" and shown["ttfb_ms"] == "321"
        attempts_table = text[text.index('class="table stack attempts"') :]
        assert attempts_table.index(a_label) < attempts_table.index(b_label)
        for expected in (
            "429",
            "usage_limit_reached",
            "35",
            "280",
            "1,190",
            "least_used",
            "excluded: usage_limit_reached",
            "chosen",
            "used_percent: 12",
            "moved: pinned account at quota",
            f"(from {a_label};",
        ):
            assert expected in text, expected
        # A row the request path filled only partly: every missing value is "—".
        bare = await owner.get(f"{HOME}/{w.ids['r6']}")
        shown = dict(re.findall(r'data-field="([a-z_]+)"[^>]*>([^<]*)</dd>', bare.text))
        for name in (
            "pool",
            "client_ip",
            "request_bytes",
            "response_bytes",
            "ttfb_ms",
            "client_request_id",
            "input_tokens",
            "model",
        ):
            assert shown[name] == "—", name
        assert "No routing explanation was stored" in bare.text
        assert (await owner.get(f"{HOME}/{UUID(int=1)}")).status_code == 404
        assert (await owner.get(f"{HOME}/not-a-uuid")).status_code == 404


async def test_export_streams_the_filtered_rows_with_the_detail_fields(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_export, "BATCH", 7)  # many batches, one header
    async with world(db_url, tmp_path) as w, browser(w.stack) as owner:
        many = [
            log(
                f"e{n:03d}",
                60 + n / 10,
                pool_id=w.mine,
                model='=HYPERLINK("http://x")',
                client_user_agent="@SUM(1)",
                input_tokens=n,
            )
            for n in range(40)
        ]
        await w.stack.database.run(lambda conn: insert_request_logs(conn, many))
        ids = await row_ids(w.stack)
        await sign_in(owner)
        detail = await owner.get(f"{HOME}/{ids['r1']}")
        detail_fields = DATA_FIELD_RE.findall(detail.text)
        assert set(EXPORT_FIELDS) <= set(detail_fields)

        response = await owner.get(f"{HOME}/export.csv", params={"pool": str(w.mine)})
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        disposition = response.headers["content-disposition"]
        assert re.fullmatch(r'attachment; filename="request-logs-\d{8}T\d{6}Z\.csv"', disposition)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        table = list(csv.reader(io.StringIO(response.text)))
        assert tuple(table[0]) == EXPORT_FIELDS
        assert set(table[0]) <= set(detail_fields)
        body = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
        assert [r["request_id"] for r in body] == ["r1", "r2"] + [f"e{n:03d}" for n in range(40)]
        assert {r["pool"] for r in body} == {"mine"}
        formula = next(r for r in body if r["request_id"] == "e000")
        assert formula["model"] == '\'=HYPERLINK("http://x")'
        assert formula["client_user_agent"] == "'@SUM(1)"

        response = await owner.get(f"{HOME}/export.jsonl", params={"status": "5xx"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers["content-disposition"].endswith('.jsonl"')
        lines = [orjson.loads(line) for line in response.text.splitlines()]
        assert [line["request_id"] for line in lines] == ["r3"]
        assert tuple(lines[0]) == EXPORT_FIELDS
        assert lines[0]["pool"] == "theirs" and lines[0]["status_code"] == 502

        # Each export is in the audit trail: who, which format, which filter.
        events = await w.stack.database.run(
            lambda conn: conn.execute(
                "SELECT actor, target_id, details FROM audit_events"
                " WHERE action = 'request_logs.export' ORDER BY created_at"
            ).fetchall()
        )
        assert [(actor, kind) for actor, kind, _ in events] == [
            (OWNER_EMAIL, "csv"),
            (OWNER_EMAIL, "jsonl"),
        ]
        assert events[0][2]["filter"] == {"pool": str(w.mine)}

        # A range over 31 days is refused with the reason beside the form.
        old = (NOW - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M")
        refused = await owner.get(f"{HOME}/export.csv", params={"from": old})
        assert refused.status_code == 400
        assert "An export covers at most 31 days" in refused.text
        assert "content-disposition" not in refused.headers
        # ... while the list shows such a range.
        assert (await owner.get(HOME, params={"from": old})).status_code == 200


async def test_stalled_exports_hold_no_console_slot(db_url: str, tmp_path: Path) -> None:
    """Exports whose clients read the head and then nothing more (Hypercorn's writes to
    them cannot be cancelled) hold none of the console's 4 `admin` slots: with 4 of them
    stalled, pages still answer at once; a fifth export is a 429; and the stalled ones end
    when their clients close."""
    ended = 0
    real_stream = log_export.stream

    async def stream(*args: Any) -> Any:
        nonlocal ended
        try:
            return await real_stream(*args)
        finally:
            ended += 1

    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        log_export.stream = stream  # type: ignore[assignment]
        stalled: list[trio.SocketStream] = []
        try:
            await stack.database.run(
                lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            )
            # ~1 KB a row, 8,000 rows: far more than the sockets' buffers hold.
            rows = [
                log(f"b{n:05d}", n / 1000, model="m" * 200, client_user_agent="u" * 512)
                for n in range(8000)
            ]
            await stack.database.run(lambda conn: insert_request_logs(conn, rows))
            await sign_in(owner)
            cookie = "; ".join(f"{name}={value}" for name, value in owner.cookies.items())
            host, port = stack.url.removeprefix("http://").split(":")
            request = f"GET {HOME}/export.csv HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n"
            with trio.fail_after(20):
                for _ in range(log_export.MAX_EXPORTS):
                    sock = trio.socket.socket()
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
                    await sock.connect((host, int(port)))
                    client = trio.SocketStream(sock)
                    await client.send_all(request.encode())
                    assert (await client.receive_some(1024)).startswith(b"HTTP/1.1 200")
                    stalled.append(client)
                    await trio.sleep(0.11)  # under the page pace
            # The admin bulkhead queues a page 10 s at most: a held slot would show.
            with trio.fail_after(8):
                pages = [await owner.get(HOME) for _ in range(3)]
            assert [page.status_code for page in pages] == [200, 200, 200]
            busy = await owner.get(f"{HOME}/export.jsonl")
            assert busy.status_code == 429 and "exports are running" in busy.text
            assert ended == 0
            for client in stalled:
                await client.aclose()
            stalled.clear()
            with trio.fail_after(20):
                while ended < log_export.MAX_EXPORTS:
                    await trio.sleep(0.05)
            exported = await owner.get(f"{HOME}/export.jsonl", params={"model": "x"})
            assert exported.status_code == 200  # the slots came back
        finally:
            log_export.stream = real_stream  # type: ignore[assignment]
            for client in stalled:  # a failure above must not leave the stack unable to stop
                await client.aclose()
