"""GET /backend-api/codex/models: the Pool's merged model catalog from memory (the catalog
cache, pooler/web/catalog.py), or while none is known, the upstream's through an account."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio

from pooler.actors import messages as m
from pooler.errors import PoolerError
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.asgi import Receive, Scope, Send, header, send_bytes, send_error
from pooler.web.attempts import Attempt, run_attempts, unreachable
from pooler.web.catalog import MergedCatalog, etag_matches
from pooler.web.leasing import LeaseAttempts, account_headers
from pooler.web.request_record import RequestRecord
from pooler.web.upstream_exchange import classify_failure

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

MAX_MODELS_BODY = 4 * 1024 * 1024
MODELS_TIMEOUT_S = 15.0


async def _send_catalog(send: Send, catalog: MergedCatalog, if_none_match: bytes | None) -> None:
    etag = (b"etag", catalog.etag.encode())
    if etag_matches(if_none_match, catalog.etag):
        return await send_bytes(send, 304, b"", [etag])
    await send_bytes(send, 200, catalog.body, [(b"content-type", b"application/json"), etag])


class ModelsRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gw
        try:
            _, pool = gw.keys.authenticate(header(scope, b"authorization"))
            catalog = gw.catalog.for_pool(pool.pool_id)
            if catalog is not None:  # from memory; else through an account, as upstream
                return await _send_catalog(send, catalog, header(scope, b"if-none-match"))
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
            exchange = partial(_exchange, f"/models?{query}", headers, send)
            budget = gw.pool_policy(pool.pool_id).retry_budget
            await run_attempts(gw, attempts, record, exchange, budget=budget)
        except PoolerError as error:
            await send_error(send, error)


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
    attempt.record.status_code = status
    if status in (200, 304):
        attempt.ended(m.Outcome(m.OK, status, tuple(response_headers)))
        kept = [(k, v) for k, v in response_headers if k in (b"etag", b"content-type")]
        return await send_bytes(send, status, body[:MAX_MODELS_BODY], kept)
    failure = classify_failure(status, response_headers, body)
    if failure.outcome.kind in m.FAILOVER_KINDS or failure.outcome.kind == m.UNAUTHORIZED:
        return attempt.failed(failure.outcome, failure.error_code)
    attempt.ended(failure.outcome, failure.error_code)
    await send_bytes(send, status, body, [(b"content-type", b"application/json")])
