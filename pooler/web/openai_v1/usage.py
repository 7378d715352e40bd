"""`GET /v1/usage`: what this Pool API key has used, and what its Pool has left.

    {"object": "usage",
     "key":  {"prefix", "name"},
     "pool": {"id", "name"},
     "usage": {"last_24h": Totals, "last_30d": Totals},
     "limits": <the Pool's Codex RateLimitStatusPayload, as /wham/usage answers it>}

    Totals = {"window_seconds", "since" (epoch s), "requests", "failed_requests",
              "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
              "total_tokens"}

Usage is read from the request log (one indexed range query on the key's rows of the last
30 days, in a worker thread, with a statement timeout); rows reach it through the
LogWriter, so the last second or so of traffic may not be counted yet. Limits come from
memory (the PoolSupervisor's account snapshots), like `/wham/usage`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from pooler.db import DatabaseError
from pooler.errors import PoolerError, ServiceUnavailable
from pooler.store.common import Conn
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.pool_limits import pool_limits
from pooler.web.quart_http import error_response, json_response
from pooler.web.request_record import RequestRecord, start_record

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest

DAY_S: Final = 24 * 3600
WINDOWS: Final = (("last_24h", DAY_S), ("last_30d", 30 * DAY_S))
STATEMENT_TIMEOUT_MS: Final = 5_000
TOKEN_COLUMNS: Final = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)


def key_usage(conn: Conn, pool_id: UUID, key_prefix: str, now: float) -> dict[str, Any]:
    """Totals per window of the key's request-log rows (`WINDOWS`, longest last)."""
    conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
    selects: list[str] = []
    params: dict[str, Any] = {"pool": pool_id, "key": key_prefix}
    for name, seconds in WINDOWS:
        params[name] = datetime.fromtimestamp(now - seconds, UTC)
        where = f"created_at >= %({name})s"
        selects.append(f"count(*) FILTER (WHERE {where})")
        selects.append(f"count(*) FILTER (WHERE {where} AND status_code >= 400)")
        selects += [
            f"coalesce(sum({column}) FILTER (WHERE {where}), 0)" for column in TOKEN_COLUMNS
        ]
    oldest = WINDOWS[-1][0]
    row = conn.execute(
        f"SELECT {', '.join(selects)} FROM request_logs"
        f" WHERE pool_id = %(pool)s AND key_prefix = %(key)s AND created_at >= %({oldest})s",
        params,
    ).fetchone()
    assert row is not None
    width = 2 + len(TOKEN_COLUMNS)
    out: dict[str, Any] = {}
    for index, (name, seconds) in enumerate(WINDOWS):
        values = [int(v) for v in row[index * width : (index + 1) * width]]
        out[name] = {
            "window_seconds": seconds,
            "since": int(now - seconds),
            "requests": values[0],
            "failed_requests": values[1],
            **dict(zip(TOKEN_COLUMNS, values[2:], strict=True)),
        }
    return out


class V1UsageRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest) -> Response:
        gw = self.gw
        record = start_record(gw, request.scope, "v1_usage", "http", "GET")
        extra = [("x-request-id", record.request_id), ("cache-control", "no-store")]
        try:
            answer = await self._answer(record, request, extra)
            record.response_bytes = answer.content_length or 0
            return answer
        finally:
            gw.log_request(record)

    async def _answer(
        self, record: RequestRecord, request: GatewayRequest, extra: list[tuple[str, str]]
    ) -> Response:
        gw = self.gw
        try:
            key, pool = authenticate_v1(gw, request.scope)
            record.pool_id, record.key_prefix = pool.pool_id, key.prefix
            now = time.time()
            try:
                usage = await gw.db.run(
                    lambda conn: key_usage(conn, UUID(pool.pool_id), key.prefix, now)
                )
            except DatabaseError as exc:
                raise ServiceUnavailable("the request log is not reachable; retry") from exc
            payload = {
                "object": "usage",
                "key": {"prefix": key.prefix, "name": key.name},
                "pool": {"id": pool.pool_id, "name": pool.name},
                "usage": usage,
                "limits": await pool_limits(gw, pool.pool_id),
            }
            record.finish(200, "completed")
            record.mark_first_byte()
            return json_response(payload, 200, extra)
        except PoolerError as error:
            record.finish(error.status, "rejected", error.code)
            return error_response(error, [(k.encode(), v.encode()) for k, v in extra])
