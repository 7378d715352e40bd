"""Refreshing the price catalog from `pricing.refresh_url` (pooler.pricing_refresh) against a
real local HTTP server: a good catalog is stored and every node prices new rows with it; a
bad, oversized, absurd or unreachable one leaves the current catalog and is logged without
its body; clearing the URL goes back to the bundled catalog; the System page sets it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from console_support import bootstrap_owner, browser, post_form
from harness import free_port, open_stack, open_two_nodes, responses_body

from pooler.instance_settings import PricingSettings
from pooler.pricing import MAX_CATALOG_BYTES, bundled
from pooler.pricing_refresh import PricingRefresh, is_due
from pooler.store import pricing as pricing_store
from pooler.store.instance_settings import reset_instance_settings, update_instance_settings

MARKER = "body-text-that-must-never-be-logged"
NEW_PRICES = {"input": 10, "cached_input": 1, "output": 60}  # twice gpt-5.5's list price
GOOD = {
    "schema": 1,
    "as_of": "2027-01-15",
    "source": "https://prices.example/catalog.json",
    "models": {"gpt-5.5": NEW_PRICES, "gpt-5.4": {"input": 2.5, "output": 15}},
}
ABSURD = {**GOOD, "models": {"gpt-5.5": {"input": 1e12, "output": 1}}, "note": MARKER}
BODIES: dict[str, bytes] = {
    "/catalog.json": json.dumps(GOOD).encode(),
    "/absurd.json": json.dumps(ABSURD).encode(),
    "/garbage": f"<html>{MARKER}</html>".encode(),
    "/huge.json": b'{"pad": "' + b"x" * MAX_CATALOG_BYTES + b'"}',
}


class CatalogServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = BODIES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path != "/huge.json":  # the size is found while reading, not declared
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def catalog_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CatalogServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def set_url(stack: Any, url: str | None) -> None:
    def change(conn: Any) -> None:
        if url is None:
            reset_instance_settings(conn, ["pricing.refresh_url"], actor="test")
        else:
            update_instance_settings(conn, {"pricing.refresh_url": url}, actor="test")

    await stack.database.run(change)


async def priced_with(stack: Any, digest: str) -> None:
    """Wait until the gateway prices with the catalog of `digest` (it reloads on NOTIFY)."""
    with trio.fail_after(10):
        while stack.gateway.prices.digest != digest:
            await trio.sleep(0.05)


async def test_a_fetched_catalog_reaches_the_nodes_and_bad_ones_change_nothing(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pooler.pricing")
    with catalog_server() as base:
        async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
            assert "pricing_refresh" in {job.name for job in stack.gateway.cluster_jobs.jobs}
            refresh = PricingRefresh(stack.database)
            assert await refresh.run_once() is None  # off by default: nothing fetched
            assert refresh.fetches == 0

            await set_url(stack, f"{base}/catalog.json")
            # True: stored and announced (False only if the leader's own first pass, which
            # may run now, stored the same catalog just before).
            assert await refresh.run_once(force=True) in (True, False)
            assert refresh.fetches == 1
            state = await stack.database.run(pricing_store.fetched_state)
            assert state is not None and state.source_url == f"{base}/catalog.json"
            await priced_with(stack, state.digest)
            assert stack.gateway.prices.as_of == "2027-01-15"
            assert await refresh.run_once() is None  # not due again before the interval
            assert await refresh.run_once(force=True) is False  # the same content: no news
            assert refresh.failures == 0

            with trio.fail_after(30):
                answer = await client.post("/backend-api/codex/responses", json=responses_body())
                await stack.wait_for_logs(1)
            row = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT input_tokens, cached_input_tokens, output_tokens, cost_usd"
                    " FROM request_logs WHERE request_id = %s",
                    (answer.headers["x-request-id"],),
                ).fetchone()
            )
            input_t, cached, output, cost = row
            per_token = {k: Decimal(v) / 1_000_000 for k, v in NEW_PRICES.items()}
            assert cost == (
                (input_t - cached) * per_token["input"]
                + cached * per_token["cached_input"]
                + output * per_token["output"]
            )

            # Bad answers: each refused, the fetched catalog stays in use everywhere.
            dead = f"http://127.0.0.1:{free_port()}/catalog.json"
            for path in ("/absurd.json", "/garbage", "/huge.json", "/missing.json", dead):
                await set_url(stack, path if path.startswith("http") else base + path)
                assert await refresh.run_once(force=True) is False, path
                after = await stack.database.run(pricing_store.fetched_state)
                # (checked_at aside: the leader's own pass may check the good URL too)
                assert after is not None
                assert (after.source_url, after.digest, after.fetched_at) == (
                    state.source_url,
                    state.digest,
                    state.fetched_at,
                )
            assert refresh.failures == 5 and refresh.fetches == 7
            await stack.gateway.reload()
            assert stack.gateway.prices.digest == state.digest

            await set_url(stack, None)  # off: back to the bundled catalog
            await priced_with(stack, bundled().digest)

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert MARKER not in logged and "x" * 100 not in logged
    for reason in ("between 0 and", "not JSON", "larger than", "HTTP 404", "ConnectError"):
        assert reason in logged, reason
    assert "127.0.0.1" in logged and "/absurd.json" not in logged  # the host, not the path


def test_a_catalog_is_fetched_when_never_fetched_another_url_or_stale() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    state = pricing_store.FetchedState("https://a/c.json", "d" * 64, now, now)
    assert is_due(None, "https://a/c.json", 24, now)
    assert is_due(state, "https://b/c.json", 24, now)
    assert not is_due(state, "https://a/c.json", 24, now + timedelta(hours=23))
    assert is_due(state, "https://a/c.json", 24, now + timedelta(hours=24))


async def test_the_system_page_sets_and_clears_the_catalog_url(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        page = await owner.get("/admin/system")
        assert 'name="pricing.refresh_url"' in page.text and 'inputmode="url"' in page.text
        url = "https://prices.example/catalog.json"
        saved = await post_form(
            owner,
            "/admin/system",
            {"pricing.refresh_url": url, "pricing.refresh_interval_hours": "6"},
        )
        assert saved.status_code == 200 and "Saved" in saved.text, saved.text
        await stack.gateway.reload()
        assert stack.gateway.instance_settings.pricing == PricingSettings(url, 6.0)
        refused = await post_form(
            owner, "/admin/system", {"pricing.refresh_url": "https://u:secret@prices.example/"}
        )
        assert refused.status_code == 400 and "credentials" in refused.text
        cleared = await post_form(owner, "/admin/system", {"pricing.refresh_url": ""})
        assert cleared.status_code == 200, cleared.text
        await stack.gateway.reload()
        assert stack.gateway.instance_settings.pricing.refresh_url == ""


async def test_every_node_prices_with_the_catalog_the_leader_fetched(
    db_url: str, tmp_path: Path
) -> None:
    with catalog_server() as base:
        async with open_two_nodes(db_url, tmp_path) as (one, two):
            await set_url(one, f"{base}/catalog.json")
            # Whichever node leads runs the job; here the first node's database runs it.
            await PricingRefresh(one.database).run_once(force=True)
            state = await two.database.run(pricing_store.fetched_state)
            assert state is not None
            await priced_with(one, state.digest)
            await priced_with(two, state.digest)
            assert one.gateway.prices is not two.gateway.prices  # each node's own copy
