"""Every `/v1` endpoint the gateway does not serve: one deterministic 404, after the key
is checked (an unauthenticated caller learns nothing about what exists)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from pooler.errors import UnsupportedEndpoint
from pooler.web.openai_v1.auth import authenticate_v1

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest


def unsupported_v1(gw: Gateway, request: GatewayRequest) -> NoReturn:
    authenticate_v1(gw, request.scope)
    raise UnsupportedEndpoint()
