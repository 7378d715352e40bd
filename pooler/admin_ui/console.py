"""The console's per-request facts: the gateway it runs in, the client (address, https, user
agent), the cookies it reads and writes, and the signed-in operator (`SignedIn`) once a
page's decorator has found them. Handlers reach these through `pooler.admin_ui.pages`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final
from uuid import UUID

from quart import g
from quart.wrappers import Response

from pooler.store import console_sessions, operators
from pooler.store.console_sessions import ConsoleSession
from pooler.store.models import Operator
from pooler.web.forwarded import ClientIpRules, came_over_https, client_address_of
from pooler.web.ingress_rules import rules_for
from pooler.web.quart_http import current_request

if TYPE_CHECKING:
    from pooler.store.common import Conn
    from pooler.web.gateway import Gateway

SESSION_COOKIE: Final = "pooler_session"
# Before signing in there is no session to hold a CSRF token: the login and bootstrap forms
# carry a token derived from this random cookie (double submit, keyed by the server secret).
ANON_COOKIE: Final = "pooler_csrf"
# `__Host-` (browser-enforced: Secure, Path=/, no Domain) whenever the request came over https.
HOST_PREFIX: Final = "__Host-"


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The signed-in operator of this request, their session, and the Pools they may see
    (None: every Pool, an owner)."""

    operator: Operator
    session: ConsoleSession
    pool_ids: frozenset[UUID] | None

    @property
    def is_owner(self) -> bool:
        return self.operator.role == "owner"

    def may_see_pool(self, pool_id: UUID) -> bool:
        return self.pool_ids is None or pool_id in self.pool_ids


def gateway() -> Gateway:
    found: Gateway = g.pooler_gateway
    return found


def client_rules() -> ClientIpRules:
    return rules_for(gateway().instance_settings).client


def client_ip() -> str:
    """The client's address (through trusted proxies only; resolved as for the request
    log and the ingress allowlist)."""
    return client_address_of(current_request().scope, client_rules())


def over_https() -> bool:
    request = current_request()
    client = request.scope.get("client")
    peer = str(client[0]) if client else ""
    return came_over_https(
        str(request.scope.get("scheme", "http")),
        peer,
        request.headers.get("x-forwarded-proto"),
        client_rules(),
    )


def user_agent() -> str | None:
    return current_request().headers.get("user-agent")


def cookie_name(base: str) -> str:
    return HOST_PREFIX + base if over_https() else base


def read_cookie(base: str) -> str | None:
    return current_request().cookies.get(cookie_name(base))


def set_cookie(response: Response, base: str, value: str, max_age: timedelta | None) -> None:
    response.set_cookie(
        cookie_name(base),
        value,
        max_age=int(max_age.total_seconds()) if max_age is not None else None,
        path="/",
        secure=over_https(),
        httponly=True,
        samesite="Lax",
    )


def clear_cookie(response: Response, base: str) -> None:
    response.delete_cookie(
        cookie_name(base), path="/", secure=over_https(), httponly=True, samesite="Lax"
    )


def anonymous_csrf_token(seed: str) -> str:
    """The CSRF token of the forms shown before signing in, bound to the ANON_COOKIE seed."""
    secret = gateway().config.secret_key
    return hmac.new(secret, b"console-anon-csrf:" + seed.encode(), hashlib.sha256).hexdigest()


def idle_timeout() -> timedelta:
    return timedelta(minutes=gateway().instance_settings.console_idle_timeout_minutes)


async def find_signed_in() -> SignedIn | None:
    """The operator signed in by this request's cookie (any session stage), else None.
    One database call, in a worker thread."""
    token = read_cookie(SESSION_COOKIE)
    if not token:
        return None
    secret, idle = gateway().config.secret_key, idle_timeout()

    def load(conn: Conn) -> SignedIn | None:
        found = console_sessions.load_session(conn, secret, token, idle)
        if found is None:
            return None
        session, operator = found
        return SignedIn(operator, session, operators.visible_pool_ids(conn, operator))

    return await gateway().db.run(load)
