"""POST /backend-api/codex/responses/compact: legacy unary compaction (protocol §1.4).

The history to compact lives on the conversation's account, so the request goes there (the
same continuity keys as /responses) and is never retried elsewhere (a retry budget of 0):
whatever that account answers, success or failure, is relayed as is; a 401 is its token's,
refreshed and asked again once by the attempt loop. Its own route class and circuit: `compact`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import trio

from pooler.actors import messages as m
from pooler.protocol.usage import TokenUsage, usage_from_completed
from pooler.routing.circuit import COMPACT
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.asgi import Scope, Send, send_bytes
from pooler.web.attempts import Attempt, run_attempts, unreachable
from pooler.web.backend_codex.responses import read_json_request
from pooler.web.continuity import continuity_keys
from pooler.web.leasing import LeaseAttempts, account_headers, pin
from pooler.web.quart_http import PUSHED, GatewayRequest
from pooler.web.request_record import AnsweredRequest, RequestRecord, start_record
from pooler.web.upstream_exchange import (
    classify_failure,
    forwarded_headers,
    relayed_response_headers,
)

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.compact")

UPSTREAM_PATH = "/responses/compact"
MAX_COMPACT_BODY = 64 * 1024 * 1024


class CompactRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest) -> Response:
        gw, scope, send = self.gw, request.scope, request.send
        record = start_record(gw, scope, COMPACT, "http_json")
        request_id_header = (b"x-request-id", record.request_id.encode())
        log = gw.log_request
        async with AnsweredRequest(record, send, [request_id_header], log, request.body):
            pool_id, body, payload = await read_json_request(gw, request, record)
            gw.catalog.check_model(pool_id, str(payload["model"]))
            async with gw.admission.admit(COMPACT):
                await self._forward(scope, send, record, pool_id, body, payload)
        return PUSHED

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        record: RequestRecord,
        pool_id: str,
        body: bytes,
        payload: dict[str, Any],
    ) -> None:
        gw = self.gw
        hard_key, soft_keys = continuity_keys(payload, scope)
        attempts = LeaseAttempts(
            pool_id, soft_keys, hard_key, route_class=COMPACT, model=str(payload["model"])
        )
        forwarded = forwarded_headers(
            scope["headers"],
            (b"content-type", b"application/json"),
            (b"accept", b"application/json"),
        )
        exchange = partial(self._exchange, forwarded, body, record, send, attempts)
        # Never another account: the history to compact lives on this one (budget 0).
        await run_attempts(gw, attempts, record, exchange, budget=0)

    async def _exchange(
        self,
        forwarded: list[tuple[bytes, bytes]],
        body: bytes,
        record: RequestRecord,
        send: Send,
        attempts: LeaseAttempts,
        attempt: Attempt,
    ) -> None:
        """One upstream call on the lease; whatever the account answers is relayed, but a
        401 (its token: the loop refreshes it and asks again) and a transport failure."""
        gw = self.gw
        lease = attempt.lease
        try:
            # Compaction reads the whole history before answering: the idle timeout, not
            # the first-byte one, bounds it.
            with trio.fail_after(gw.settings.upstream_idle_timeout_s):
                headers = account_headers(lease, forwarded)
                async with lease.upstream.request("POST", UPSTREAM_PATH, headers, body) as response:
                    attempt.record.answered(response.status)
                    answer = await response.read()
                    status, upstream_headers = response.status, list(response.headers)
        except (trio.TooSlowError, UpstreamTransportError) as exc:
            return attempt.failed(*unreachable(exc))
        if status == 200:
            attempt.ended(m.Outcome(m.OK, status, tuple(upstream_headers)))
            pin(gw.pool_mailbox, attempts.pool_id, attempts.pin_keys, lease.account_id)
            record.usage = _usage(answer)
            record.finish(status, "completed")
        else:
            failure = classify_failure(status, upstream_headers, answer)
            if failure.outcome.kind == m.UNAUTHORIZED:
                return attempt.failed(failure.outcome, failure.error_code)
            attempt.ended(failure.outcome, failure.error_code)
            attempt.record.resets_at = failure.outcome.resets_at
            record.finish(status, "upstream_error", failure.error_code)
        content_type = next((v for k, v in upstream_headers if k == b"content-type"), None)
        extra = [
            (b"content-type", content_type or b"application/json"),
            (b"x-request-id", record.request_id.encode()),
            *relayed_response_headers(upstream_headers, gw.models_etag(record.pool_id)),
        ]
        record.mark_first_byte()
        record.response_bytes += await send_bytes(send, status, answer[:MAX_COMPACT_BODY], extra)


def _usage(answer: bytes) -> TokenUsage | None:
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return usage_from_completed({"response": parsed}) if isinstance(parsed, dict) else None
