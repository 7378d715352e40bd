"""The smaller routes: models through a Pool account, health, readiness, metrics, websocket."""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio
import trio_websocket
from harness import open_stack, responses_body

from pooler.web.loop_lag import LAG_BUCKETS_S
from tests.unit.bench_support import load_bench

gateway_lag = load_bench("gateway_lag")


async def test_models_are_fetched_through_a_pool_account(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(20):
            response = await client.get("/backend-api/codex/models?client_version=0.169.0")
        assert response.status_code == 200, response.text
        slugs = [model["slug"] for model in response.json()["models"]]
        assert "gpt-5.5" in slugs
        etag = response.headers["etag"]
        cached = await client.get(
            "/backend-api/codex/models?client_version=0.169.0", headers={"if-none-match": etag}
        )
        assert cached.status_code == 304
        alias = await client.get("/backend-api/codex/v1/models")
        assert alias.status_code == 200
        upstream = await stack.upstream_requests("/models")
        assert upstream and all(r["status"] in (200, 304) for r in upstream)
        async with httpx.AsyncClient(base_url=stack.url) as anon:
            assert (await anon.get("/backend-api/codex/models")).status_code == 401


async def test_health_readiness_and_metrics(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        async with stack.client() as client:
            assert (
                await client.post("/backend-api/codex/responses", json=responses_body())
            ).status_code == 200
        async with httpx.AsyncClient(base_url=stack.url) as anon:
            assert (await anon.get("/healthz")).json() == {"status": "ok"}
            assert (await anon.get("/readyz")).json() == {"status": "ready"}
            metrics = (await anon.get("/metrics")).text
        assert 'codex_pooler_requests_total{outcome="completed",route="responses"} 1.0' in metrics
        assert 'codex_pooler_accounts{lifecycle="active"} 3.0' in metrics
        assert "codex_pooler_log_rows_dropped_total 0.0" in metrics
        assert 'codex_pooler_event_loop_lag_seconds{quantile="0.99"}' in metrics
        # The same lag as a cumulative histogram (a bench window, a sum over replicas).
        assert "# TYPE codex_pooler_event_loop_tick_lag_seconds histogram" in metrics
        ticks = re.search(
            r'^codex_pooler_event_loop_tick_lag_seconds_bucket\{le="\+Inf"\} (\S+)$', metrics, re.M
        )
        count = re.search(r"^codex_pooler_event_loop_tick_lag_seconds_count (\S+)$", metrics, re.M)
        assert ticks and count and ticks.group(1) == count.group(1)
        assert 'codex_pooler_event_loop_tick_lag_seconds_bucket{le="0.005"}' in metrics
        # ... as the benchmark reads it (ops/bench/gateway_lag.py: its own scrape).
        port = urlsplit(stack.url).port
        assert port is not None
        with trio.fail_after(10):
            buckets = await gateway_lag.scrape(port)
        assert buckets is not None and set(buckets) == {*LAG_BUCKETS_S, math.inf}
        pins = re.search(r"^codex_pooler_continuity_pins (\S+)$", metrics, re.M)
        assert pins and float(pins.group(1)) >= 1  # the response id, at least


async def test_websocket_upgrade_only_on_the_responses_path(db_url: str, tmp_path: Path) -> None:
    """Responses accept the upgrade (tests/integration/test_websocket_responses.py); any
    other path still answers 426, so a client falls back to HTTP at once."""
    async with open_stack(db_url, tmp_path) as stack:
        base = stack.url.replace("http://", "ws://")
        headers = [(b"authorization", f"Bearer {stack.key}".encode())]
        with trio.fail_after(10):
            async with trio_websocket.open_websocket_url(
                base + "/backend-api/codex/responses", extra_headers=headers
            ):
                pass
            try:
                async with trio_websocket.open_websocket_url(
                    base + "/backend-api/codex/models", extra_headers=headers
                ):
                    raise AssertionError("the upgrade should have been refused")
            except trio_websocket.HandshakeError as refused:
                assert isinstance(refused, trio_websocket.ConnectionRejected)
                assert refused.status_code == 426
