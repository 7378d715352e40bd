"""`/admin/stats`: real traffic through the gateway, rolled up by the Scheduler's job, shown
per Pool, account and key; an admin sees only its Pools; names are escaped in the SVG and
the tables; an empty window is an empty state; a bad filter is a 400 beside the form; the
rebuild CLI recomputes a past hour and leaves a pruned one as it was."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import trio
from console_support import OWNER_EMAIL, OWNER_PASSWORD, browser, sign_in
from harness import open_stack, responses_body

from pooler import store
from pooler.cli.main import main
from pooler.db import Database
from pooler.store import logs, operators
from pooler.store.models import RequestLogRow
from pooler.store.rollups import hour_of

ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.com", "admin password 123"
HOSTILE = '<script>alert("x")</script>&'


def figure(html: str, name: str) -> str:
    found = re.search(rf"<dt>{re.escape(name)}</dt><dd>([^<]*)</dd>", html)
    assert found, f"no figure {name}"
    return found.group(1)


def table_row(html: str, name: str) -> list[str]:
    """The cells of the per-group table row whose first cell is `name` (as escaped HTML)."""
    found = re.search(
        rf'<td data-label="[^"]+" class="name">{re.escape(name)}</td>(.*?)</tr>', html, re.S
    )
    assert found, f"no row {name}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    ]


async def test_the_job_rolls_up_real_traffic_and_the_page_shows_it(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(30):
            for i in range(3):
                ok = await client.post(
                    "/backend-api/codex/responses", json=responses_body(prompt_cache_key=f"c{i}")
                )
                assert ok.status_code == 200, ok.text
            refused = await client.post(
                "/backend-api/codex/responses", json=responses_body(model="no-such-model")
            )
            assert refused.status_code >= 400
        await stack.wait_for_logs(4)
        raw = await stack.database.run(
            lambda conn: conn.execute(
                "SELECT count(*) FILTER (WHERE request_is_error(status_code, outcome)),"
                " sum(input_tokens), sum(output_tokens), min(error_code) FROM request_logs"
            ).fetchone()
        )
        errors, input_tokens, output_tokens, code = raw
        assert errors == 1 and code and input_tokens > 0

        # The page reads rollups only: nothing until the job has run.
        async with browser(stack) as owner:
            await stack.database.run(
                lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            )
            await sign_in(owner)
            before = await owner.get("/admin/stats?window=1h")
            assert before.status_code == 200 and "No requests in the last 1 h" in before.text

            jobs = {job.name: job for job in stack.gateway.cluster_jobs.jobs}
            assert jobs["stats_rollup"].interval_s == 60 and "stats_rollup_late" in jobs
            done = await stack.gateway.stats_rollups.recent()  # what the Scheduler runs
            assert done.rows >= 1
            page = await owner.get("/admin/stats?window=1h")
            assert page.status_code == 200, page.text
            html = page.text
            assert figure(html, "Requests") == "4"
            assert figure(html, "Error rate") == "25.0 %"
            assert figure(html, "Input tokens") == f"{input_tokens:,}".replace(",", " ")
            assert figure(html, "Output tokens") == f"{output_tokens:,}".replace(",", " ")
            assert figure(html, "Latency p50") not in ("", "\N{EN DASH}")
            assert f"<code>{code}</code>" in html
            demo = table_row(html, "demo")
            assert demo[:2] == ["4", "25.0 %"]
            assert html.count("<svg") == 3 and 'aria-current="page">1 h<' in html
            # Each account that served a request has its row; the refusal had none.
            labels = {a.label for a in stack.emulator.accounts}
            assert sum(1 for label in labels if f'class="name">{label}<' in html) >= 1
            assert "(no account: refused before one was chosen)" in html
            # Running the job again changes nothing (idempotent).
            await stack.gateway.stats_rollups.late()
            assert (await owner.get("/admin/stats?window=1h")).text.count(">4<") >= 1


def log_row(n: int, at: datetime, pool_id: UUID, **extra: Any) -> RequestLogRow:
    values: dict[str, Any] = {
        "outcome": "completed",
        "status_code": 200,
        "duration_ms": 120.0,
        "input_tokens": 100,
        "cached_input_tokens": 40,
        "output_tokens": 10,
        **extra,
    }
    return RequestLogRow(
        request_id=f"req_{pool_id.hex[:6]}_{n}",
        created_at=at,
        route="responses",
        pool_id=pool_id,
        **values,
    )


async def test_an_admin_sees_only_its_pools_and_names_are_escaped(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        secret = stack.config.secret_key

        def setup(conn: Any) -> tuple[UUID, UUID, str]:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            mine = store.create_pool(conn, "mine")
            theirs = store.create_pool(conn, "theirs")
            _, key = store.create_key(conn, secret, "mine", "k1")
            store.create_key(conn, secret, "theirs", "secret-project-key")
            # Names stored before they were checked (or by a future rule) reach the page.
            conn.execute("UPDATE pools SET name = %s WHERE id = %s", (HOSTILE + "pool", mine.id))
            conn.execute(
                "UPDATE pool_api_keys SET name = %s WHERE id = %s", (HOSTILE + "key", key.id)
            )
            admin = operators.create_operator(conn, ADMIN_EMAIL, ADMIN_PASSWORD)
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")
            now = datetime.now(UTC)
            rows = [log_row(1, now, mine.id, key_prefix=key.key_prefix, error_code=None)]
            rows += [
                log_row(
                    i, now, theirs.id, status_code=500, outcome="failed", error_code="theirs_only"
                )
                for i in range(2, 5)
            ]
            logs.insert_request_logs(conn, rows)
            return mine.id, theirs.id, key.key_prefix

        mine, theirs, prefix = await stack.database.run(setup)
        await stack.gateway.stats_rollups.recent()
        async with browser(stack) as admin, browser(stack) as owner:
            await sign_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
            await sign_in(owner)
            html = (await admin.get("/admin/stats?window=24h")).text
            assert figure(html, "Requests") == "1" and figure(html, "Error rate") == "0.0 %"
            assert figure(html, "Cached-token share") == "40.0 %"
            for hidden in ("theirs", "theirs_only", "secret-project-key", str(theirs)):
                assert hidden not in html, hidden
            escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;"
            assert "<script>alert" not in html
            assert f'class="name">{escaped}pool</td>' in html
            assert f"{escaped}key ({prefix}…)" in html
            # Another Pool's figures by URL: 404, not a row of it.
            assert (await admin.get(f"/admin/stats?pool={theirs}")).status_code == 404
            assert (await admin.get(f"/admin/stats?pool={mine}")).status_code == 200

            everything = (await owner.get("/admin/stats")).text
            assert figure(everything, "Requests") == "4"
            assert "<code>theirs_only</code>" in everything
            only_theirs = (await owner.get(f"/admin/stats?pool={theirs}&window=7d")).text
            assert figure(only_theirs, "Error rate") == "100.0 %"


async def test_empty_windows_and_bad_filters(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await stack.database.run(
            lambda conn: operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
        )
        await sign_in(owner)
        empty = await owner.get("/admin/stats?window=30d")
        assert empty.status_code == 200
        assert "No requests in the last 30 d" in empty.text and "<svg" not in empty.text
        for query, field in (("window=2y", "window"), ("pool=not-a-uuid", "pool")):
            bad = await owner.get(f"/admin/stats?{query}")
            assert bad.status_code == 400, query
            assert f'id="f-{field}-error"' in bad.text and 'aria-invalid="true"' in bad.text
        assert (await owner.get(f"/admin/stats?pool={UUID(int=7)}")).status_code == 404
        nav = (await owner.get("/admin/pools")).text
        assert 'href="/admin/stats"' in nav


@pytest.mark.usefixtures("cli_env")
def test_the_rebuild_cli_recomputes_a_past_hour_and_keeps_a_pruned_one(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = database.run_sync(lambda conn: store.create_pool(conn, "team"))
    old = hour_of(datetime.now(UTC) - timedelta(days=3))
    older = old - timedelta(hours=5)
    rows = [log_row(i, old + timedelta(minutes=i), pool.id) for i in range(3)]
    rows.append(log_row(9, older + timedelta(minutes=1), pool.id))
    database.run_sync(lambda conn: logs.insert_request_logs(conn, rows))

    def stored() -> dict[datetime, int]:
        found = database.run_sync(
            lambda c: c.execute("SELECT hour, requests FROM stats_hourly").fetchall()
        )
        return {hour.astimezone(UTC): n for hour, n in found}

    assert main(["admin", "stats", "rebuild", "--hour", f"{old:%Y-%m-%dT%H}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["hours"], report["rows"], report["skipped_pruned"]) == (1, 1, [])
    assert stored() == {old: 3}

    span = ["--from", f"{older:%Y-%m-%dT%H}:00Z", "--to", f"{old:%Y-%m-%dT%H}"]
    assert main(["admin", "stats", "rebuild", *span]) == 0
    assert "rebuilt 6 hour(s)" in capsys.readouterr().out
    assert stored() == {old: 3, older: 1}

    # Retention prunes the older hour: a rebuild leaves its rollup as it was.
    database.run_sync(
        lambda conn: logs.delete_request_logs_before(conn, older + timedelta(hours=1))
    )
    assert main(["admin", "stats", "rebuild", *span, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped_pruned"] == [older.isoformat()] and report["hours"] == 5
    assert stored() == {old: 3, older: 1}

    assert main(["admin", "stats", "rebuild", "--from", f"{old:%Y-%m-%dT%H}"]) == 2
    assert "--from needs --to" in capsys.readouterr().err
    bad = [
        "admin",
        "stats",
        "rebuild",
        "--from",
        f"{old:%Y-%m-%dT%H}",
        "--to",
        f"{older:%Y-%m-%dT%H}",
    ]
    assert main(bad) == 2
    with pytest.raises(SystemExit):
        main(["admin", "stats", "rebuild", "--hour", "yesterday"])
