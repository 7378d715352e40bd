"""One webhook attempt: a POST of the signed JSON body, bounded in time (the caller's
deadline covers connect, send and the answer's headers) and in what is read back (nothing
of the body: only the status counts). Redirects are not followed (a 3xx is a failure), and
only http(s) URLs are tried. The answer is the error class (None: delivered)."""

from __future__ import annotations

import time
from typing import Final

import httpx
import trio

from pooler.alerts.payload import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from pooler.outbound_url import outbound_url_refusal

ATTEMPT_TIMEOUT_S: Final = 10.0
USER_AGENT: Final = "codex-pooler-alerts/1"


async def post_webhook(
    client: httpx.AsyncClient,
    url: str,
    secret: bytes,
    body: bytes,
    *,
    delivery_id: str,
    event: str,
    timeout_s: float = ATTEMPT_TIMEOUT_S,
) -> str | None:
    """Deliver `body` to `url`; None when the receiver answered 2xx, else the error class."""
    if outbound_url_refusal(url) is not None:  # checked when stored; again before use
        return "bad_url"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event,
    }
    with trio.move_on_after(timeout_s) as scope:
        try:
            request = client.build_request("POST", url, content=body, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            return "timeout"
        except (httpx.ConnectError, httpx.NetworkError):
            return "connect"
        except httpx.HTTPError as exc:
            return type(exc).__name__[:60].lower()
        try:
            status = response.status_code
        finally:
            await response.aclose()  # the body is never read
        return None if 200 <= status < 300 else f"http_{status}"
    assert scope.cancelled_caught
    return "timeout"


def webhook_client(timeout_s: float = ATTEMPT_TIMEOUT_S) -> httpx.AsyncClient:
    """The client of one pass: no redirects, no environment proxies or .netrc, bounded."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=0),
    )
