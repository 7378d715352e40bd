"""GET /backend-api/codex/models: the Pool's merged model catalog from memory (the catalog
cache, pooler/web/catalog.py), or while none is known, the upstream's through an account."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from pooler.actors import messages as m
from pooler.errors import PoolerError, UpstreamError
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.asgi import Receive, Scope, Send, header, send_bytes, send_error
from pooler.web.backend_codex.upstream_exchange import classify_failure
from pooler.web.catalog import MergedCatalog, etag_matches
from pooler.web.leasing import LeaseAttempts, lease_account, no_account_error, release

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
            target = f"/models?{query}"
            attempts = LeaseAttempts(pool.pool_id, ())
            for _ in range(1 + gw.pool_policy(pool.pool_id).retry_budget):
                lease = await lease_account(
                    gw.supervisor, attempts, timeout=gw.settings.lease_timeout_s
                )
                if lease is None:
                    raise no_account_error(attempts, gw.settings.no_backend_retry_after_s)
                if await self._try(lease, target, scope, send):
                    return
                attempts.tried.add(lease.account_id)
            raise UpstreamError("the model catalog could not be fetched from any account")
        except PoolerError as error:
            await send_error(send, error)

    async def _try(self, lease: m.Lease, target: str, scope: Scope, send: Send) -> bool:
        headers = [
            (b"authorization", b"Bearer " + lease.access_token.encode()),
            (b"chatgpt-account-id", lease.chatgpt_account_id.encode()),
            (b"accept", b"application/json"),
        ]
        for name in (b"originator", b"user-agent", b"version", b"if-none-match"):
            value = header(scope, name)
            if value:
                headers.append((name, value))
        try:
            with trio.fail_after(MODELS_TIMEOUT_S):
                async with lease.upstream.request("GET", target, headers) as response:
                    body = await response.read()
                    status, response_headers = response.status, response.headers
        except (trio.TooSlowError, UpstreamTransportError):
            release(lease, m.Outcome(m.TRANSPORT_ERROR))
            return False
        except BaseException:
            release(lease, m.Outcome(m.CANCELLED))
            raise
        if status in (200, 304):
            release(lease, m.Outcome(m.OK, status, tuple(response_headers)))
            kept = [(k, v) for k, v in response_headers if k in (b"etag", b"content-type")]
            await send_bytes(send, status, body[:MAX_MODELS_BODY], kept)
            return True
        failure = classify_failure(status, response_headers, body)
        release(lease, failure.outcome)
        if failure.outcome.kind in m.FAILOVER_KINDS or failure.outcome.kind == m.UNAUTHORIZED:
            return False
        await send_bytes(send, status, body, [(b"content-type", b"application/json")])
        return True
