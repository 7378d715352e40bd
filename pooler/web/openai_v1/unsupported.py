"""Every `/v1` endpoint the gateway does not serve: one deterministic 404, after the key
is checked (an unauthenticated caller learns nothing about what exists)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pooler.errors import PoolerError, UnsupportedEndpoint
from pooler.web.asgi import Scope, Send, send_error
from pooler.web.openai_v1.auth import authenticate_v1

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

V1_PREFIX = "/v1/"


async def unsupported_v1(gw: Gateway, scope: Scope, send: Send) -> None:
    try:
        authenticate_v1(gw, scope)
        raise UnsupportedEndpoint()
    except PoolerError as error:
        await send_error(send, error)
