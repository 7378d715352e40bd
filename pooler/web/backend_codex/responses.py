"""POST /backend-api/codex/responses: a Codex client's Responses request, authenticated with
its Pool API key, read as sent (the key's policy applied), and relayed
(pooler/web/responses_relay.py) with the upstream's own bytes.

    authenticate -> read the JSON body -> compaction? -> ask the upstream for a stream
    -> ResponsesRelay: lease, relay, fail over before the first byte, account, release
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pooler.protocol.responses_request import (
    dump_payload,
    is_compaction,
    parse_payload,
    streaming_body,
)
from pooler.routing.circuit import COMPACT
from pooler.web.asgi import header
from pooler.web.key_policy import apply_key_policy
from pooler.web.request_body import BODY, read_json_body
from pooler.web.request_record import RequestRecord
from pooler.web.responses_relay import ProxiedRequest, ResponsesRelay

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest


async def read_json_request(
    gw: Gateway, request: GatewayRequest, record: RequestRecord
) -> tuple[str, bytes, dict[str, Any]]:
    """Authenticate, then read and check a Responses-shaped JSON body: (pool id, the body as
    sent, the parsed payload)."""
    key, pool = gw.keys.authenticate(header(request.scope, b"authorization"))
    record.pool_id, record.key_prefix = pool.pool_id, key.prefix
    async with gw.admission.admit(BODY):  # before the body costs memory
        body = await read_json_body(gw, request)
        payload = parse_payload(body)
    record.model = payload["model"]
    if apply_key_policy(key, payload):  # the key enforces a reasoning effort
        body = dump_payload(payload)
    return pool.pool_id, body, payload


def responses_route(gateway: Gateway) -> ResponsesRelay:
    async def open_request(request: GatewayRequest, record: RequestRecord) -> ProxiedRequest:
        """Authenticate and read the request; set the record's route and stream."""
        pool_id, body, payload = await read_json_request(gateway, request, record)
        if is_compaction(payload):  # remote compaction v2 (protocol §1.4)
            record.route = COMPACT
        record.stream = payload.get("stream") is True
        if not record.stream:
            body = streaming_body(body, payload)
        return ProxiedRequest(pool_id, body, payload)

    return ResponsesRelay(gateway, "responses", open_request)
