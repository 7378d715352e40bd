"""POST /backend-api/codex/responses/compact: legacy unary compaction (protocol §1.4).

The history to compact lives on the conversation's account, so the request goes there (the
same continuity keys as /responses) and is never retried elsewhere: whatever that account
answers, success or failure, is relayed as is. Its own route class and circuit: `compact`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from pooler.actors import messages as m
from pooler.errors import UpstreamError
from pooler.protocol.usage import TokenUsage, usage_from_completed
from pooler.routing.circuit import COMPACT
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.asgi import (
    Receive,
    Scope,
    Send,
    send_bytes,
)
from pooler.web.backend_codex.responses import (
    continuity_keys,
    read_json_request,
    start_record,
)
from pooler.web.backend_codex.upstream_exchange import (
    FORWARDED_REQUEST_HEADERS,
    classify_failure,
    relayed_response_headers,
)
from pooler.web.leasing import (
    LeaseAttempts,
    lease_account,
    no_account_error,
    pin,
    refreshed_lease,
    release,
)
from pooler.web.request_record import AnsweredRequest, AttemptRecord, RequestRecord

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.web.compact")

UPSTREAM_PATH = "/responses/compact"
MAX_COMPACT_BODY = 64 * 1024 * 1024


class CompactRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gw
        record = start_record(gw, scope, COMPACT, "http_json")
        request_id_header = (b"x-request-id", record.request_id.encode())
        async with AnsweredRequest(record, send, [request_id_header], gw.log_request):
            pool_id, body, payload = await read_json_request(gw, scope, receive, record)
            gw.catalog.check_model(pool_id, str(payload["model"]))
            async with gw.admission.admit(COMPACT):
                await self._forward(scope, send, record, pool_id, body, payload)

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
        lease = await lease_account(gw.supervisor, attempts, timeout=gw.settings.lease_timeout_s)
        if lease is None:
            raise no_account_error(attempts, gw.settings.no_backend_retry_after_s)
        forwarded = [(k, v) for k, v in scope["headers"] if k in FORWARDED_REQUEST_HEADERS]
        refreshed = False
        while True:
            status, upstream_headers, answer = await self._exchange(lease, forwarded, body, record)
            attempt = record.attempts[-1]
            error_code: str | None = None
            if status == 200:
                outcome = m.Outcome(m.OK, status, tuple(upstream_headers))
                pin(gw.supervisor, attempts.pool_id, attempts.pin_keys, lease.account_id)
                record.usage = _usage(answer)
                record.finish(status, "completed")
            else:
                failure = classify_failure(status, upstream_headers, answer)
                outcome, error_code = failure.outcome, failure.error_code
                attempt.resets_at = outcome.resets_at
            attempt.outcome, attempt.error_code = outcome.kind, error_code
            release(lease, outcome)
            if outcome.kind != m.UNAUTHORIZED:
                break
            # The account's token, not the client's key: refresh it and ask the same account
            # once more; a 401 relayed would make the CLI drop its own login.
            renewed = None if refreshed else await refreshed_lease(lease, gw.settings)
            if renewed is None:
                raise UpstreamError(
                    "the upstream refused the account's credentials", code=error_code
                )
            lease, refreshed = renewed, True
            record.retries = 1
        if status != 200:
            record.finish(status, "upstream_error", error_code)
        content_type = next((v for k, v in upstream_headers if k == b"content-type"), None)
        extra = [
            (b"content-type", content_type or b"application/json"),
            (b"x-request-id", record.request_id.encode()),
            *relayed_response_headers(upstream_headers, gw.models_etag(record.pool_id)),
        ]
        record.mark_first_byte()
        await send_bytes(send, status, answer[:MAX_COMPACT_BODY], extra)

    async def _exchange(
        self,
        lease: m.Lease,
        forwarded: list[tuple[bytes, bytes]],
        body: bytes,
        record: RequestRecord,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One upstream call on the lease; a transport failure or timeout releases the
        lease and becomes the client's error (nothing is retried elsewhere)."""
        headers = [
            *forwarded,
            (b"content-type", b"application/json"),
            (b"accept", b"application/json"),
            (b"authorization", b"Bearer " + lease.access_token.encode()),
            (b"chatgpt-account-id", lease.chatgpt_account_id.encode()),
        ]
        attempt = AttemptRecord(
            len(record.attempts) + 1, lease.account_id, lease.label, trio.current_time()
        )
        record.attempts.append(attempt)
        record.account_id, record.account_label = lease.account_id, lease.label
        try:
            # Compaction reads the whole history before answering: the idle timeout, not
            # the first-byte one, bounds it.
            with trio.fail_after(self.gw.settings.upstream_idle_timeout_s):
                async with lease.upstream.request("POST", UPSTREAM_PATH, headers, body) as response:
                    answer = await response.read()
                    status, upstream_headers = response.status, list(response.headers)
        except (trio.TooSlowError, UpstreamTransportError) as exc:
            timed_out = isinstance(exc, trio.TooSlowError)
            kind = m.TIMEOUT if timed_out else m.TRANSPORT_ERROR
            code = "upstream_timeout" if timed_out else f"upstream_{type(exc).__name__}"
            attempt.outcome, attempt.error_code = kind, code
            release(lease, m.Outcome(kind))
            raise UpstreamError("the compaction request to the upstream failed", code=code) from exc
        except BaseException:
            attempt.outcome = m.CANCELLED
            release(lease, m.Outcome(m.CANCELLED))
            raise
        finally:
            attempt.duration_ms = (trio.current_time() - attempt.started_at) * 1000.0
        attempt.status_code = status
        return status, upstream_headers, answer


def _usage(answer: bytes) -> TokenUsage | None:
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return usage_from_completed({"response": parsed}) if isinstance(parsed, dict) else None
