"""Who may use `/mcp`: an operator's MCP token in `Authorization: Bearer`, and two gates
that must both be on, the instance's (`mcp.enabled`, owner, System settings) and the
operator's own (`pooler admin operator mcp on`). Pool API keys, cookies and query-string
tokens are not MCP tokens. Each refusal says which gate is closed (pure decisions; the
token lookup is `pooler.store.mcp_tokens.token_holder`).
"""

from __future__ import annotations

from typing import Final

from pooler.crypto import MCP_TOKEN_PREFIX
from pooler.mcp.tool import McpCaller
from pooler.mcp.wire import Refusal
from pooler.store.mcp_tokens import TokenHolder

CHALLENGE: Final = ((b"www-authenticate", b'Bearer realm="mcp"'),)
MAX_TOKEN_LEN: Final = 200

INSTANCE_OFF: Final = Refusal(
    403,
    "MCP is turned off for this instance: an owner turns it on in System settings"
    " (or `pooler admin settings set mcp.enabled=true`)",
)
NO_TOKEN: Final = Refusal(
    401, "an MCP bearer token is required (Authorization: Bearer <MCP token>)", headers=CHALLENGE
)
NOT_MCP_TOKEN: Final = Refusal(
    401,
    "this is not an MCP token (Pool API keys and console sessions are not accepted);"
    " create one on the console's Settings page or with `pooler admin mcp-token create --email E`",
    headers=CHALLENGE,
)
UNKNOWN_TOKEN: Final = Refusal(
    401, "the MCP token is unknown, revoked or deleted", headers=CHALLENGE
)
OPERATOR_DISABLED: Final = Refusal(403, "the operator of this MCP token is deactivated")
OPERATOR_OFF: Final = Refusal(
    403,
    "MCP is turned off for this operator: turn it on on the console's Settings page"
    " or with `pooler admin operator mcp on --email E`",
)
PASSWORD_CHANGE: Final = Refusal(
    403, "the operator of this MCP token must change their temporary password first"
)


def bearer_token(authorization: bytes | None) -> str | Refusal:
    """The raw MCP token of an Authorization header, or why there is none."""
    if authorization is None:
        return NO_TOKEN
    scheme, _, value = authorization.decode("latin-1").strip().partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        return NO_TOKEN
    if not token.startswith(MCP_TOKEN_PREFIX) or len(token) > MAX_TOKEN_LEN:
        return NOT_MCP_TOKEN
    return token


def caller_of(holder: TokenHolder | None) -> McpCaller | Refusal:
    """The caller a token speaks for, if the operator's side lets it through."""
    if holder is None:
        return UNKNOWN_TOKEN
    if holder.status != "active":
        return OPERATOR_DISABLED
    if not holder.mcp_enabled:
        return OPERATOR_OFF
    if holder.must_change_password:
        return PASSWORD_CHANGE
    owner = holder.role == "owner"
    return McpCaller(
        operator_id=holder.operator_id,
        email=holder.email,
        is_owner=owner,
        pool_ids=None if owner else holder.pool_ids,
    )
