"""Who may use `/v1`: a valid Pool API key of a Pool that keeps its `/v1` surface open
(checked first, so that an unknown endpoint answers 404 only to a caller who could have
used a known one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pooler.web.asgi import Scope, header
from pooler.web.key_policy import check_v1_enabled
from pooler.web.keys import KeyInfo, PoolInfo

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway


def authenticate_v1(gw: Gateway, scope: Scope) -> tuple[KeyInfo, PoolInfo]:
    """The caller's key and Pool; raises the auth errors (401/403) in OpenAI's shape, and
    403 v1_compatibility_disabled when the Pool has turned `/v1` off."""
    key, pool = gw.keys.authenticate(header(scope, b"authorization"))
    check_v1_enabled(pool)
    return key, pool
