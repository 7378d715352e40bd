"""GET /backend-api/codex/models: the Pool's merged model catalog from memory (the catalog
cache, pooler/web/catalog.py), or while none is known, the upstream's through an account."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio
from quart.wrappers import Response

from pooler.actors import messages as m
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.asgi import Send, header, send_bytes
from pooler.web.attempts import Attempt, run_attempts, unreachable
from pooler.web.catalog import MergedCatalog, etag_matches
from pooler.web.leasing import LeaseAttempts, account_headers
from pooler.web.quart_http import PUSHED, GatewayRequest
from pooler.web.request_record import RequestRecord
from pooler.web.upstream_exchange import classify_failure

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

MAX_MODELS_BODY = 4 * 1024 * 1024
MODELS_TIMEOUT_S = 15.0


def catalog_response(catalog: MergedCatalog, if_none_match: bytes | None) -> Response:
    if etag_matches(if_none_match, catalog.etag):
        not_modified = Response(b"", status=304, headers={"etag": catalog.etag})
        del not_modified.headers["content-type"]  # Quart's default; a 304 has no body
        return not_modified
    headers = {"content-type": "application/json", "etag": catalog.etag}
    return Response(catalog.body, headers=headers)


class ModelsRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest) -> Response:
        gw, scope = self.gw, request.scope
        _, pool = gw.keys.authenticate(header(scope, b"authorization"))
        catalog = gw.catalog.for_pool(pool.pool_id)
        if catalog is not None:  # from memory; else through an account, as upstream
            return catalog_response(catalog, header(scope, b"if-none-match"))
        query = scope.get("query_string", b"").decode("latin-1")
        if "client_version=" not in query:
            query = "client_version=0.169.0" + (f"&{query}" if query else "")
        headers = [(b"accept", b"application/json")]
        for name in (b"originator", b"user-agent", b"version", b"if-none-match"):
            value = header(scope, name)
            if value:
                headers.append((name, value))
        # Not logged: the record only carries the attempts through the loop.
        record = RequestRecord(gw.new_request_id(), "models", "http", method="GET")
        attempts = LeaseAttempts(pool.pool_id, ())
        exchange = partial(_exchange, f"/models?{query}", headers, request.send)
        budget = gw.pool_policy(pool.pool_id).retry_budget
        await run_attempts(gw, attempts, record, exchange, budget=budget)
        return PUSHED


async def _exchange(
    target: str, base: list[tuple[bytes, bytes]], send: Send, attempt: Attempt
) -> None:
    lease = attempt.lease
    try:
        with trio.fail_after(MODELS_TIMEOUT_S):
            headers = account_headers(lease, base)
            async with lease.upstream.request("GET", target, headers) as response:
                body = await response.read()
                status, response_headers = response.status, response.headers
    except (trio.TooSlowError, UpstreamTransportError) as exc:
        return attempt.failed(*unreachable(exc))
    attempt.record.answered(status)
    if status in (200, 304):
        attempt.ended(m.Outcome(m.OK, status, tuple(response_headers)))
        kept = [(k, v) for k, v in response_headers if k in (b"etag", b"content-type")]
        await send_bytes(send, status, body[:MAX_MODELS_BODY], kept)
        return
    failure = classify_failure(status, response_headers, body)
    if failure.outcome.kind in m.FAILOVER_KINDS or failure.outcome.kind == m.UNAUTHORIZED:
        return attempt.failed(failure.outcome, failure.error_code)
    attempt.ended(failure.outcome, failure.error_code)
    await send_bytes(send, status, body, [(b"content-type", b"application/json")])
