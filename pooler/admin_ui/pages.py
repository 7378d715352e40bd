"""What a console page handler uses: the decorators that admit it and find its operator
(`operator_required`, `public_page`), `render` for its HTML answer, `read_form` for a
POSTed form (bounded, CSRF-checked), `redirect_to`, and `db` for its database work.
"""

from __future__ import annotations

import functools
import hmac
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

import trio
from quart import g
from quart.wrappers import Response
from werkzeug.exceptions import BadRequest, Forbidden, NotFound, UnsupportedMediaType

from pooler.admin_ui import console
from pooler.admin_ui.console import ANON_COOKIE, SESSION_COOKIE, SignedIn
from pooler.admin_ui.errors import add_security_headers
from pooler.admin_ui.page_pace import MAX_WAIT_S, PagePace
from pooler.admin_ui.templating import render_page
from pooler.errors import RequestTimeout
from pooler.store.common import Conn
from pooler.web.quart_http import current_request

T = TypeVar("T")

MAX_FORM_BYTES: Final = 64 * 1024
MAX_FORM_FIELDS: Final = 200
# A form is small: it arrives within this (or the instance's body deadline, if shorter) or
# the request is refused (a slow body must not hold one of the few `admin` slots).
FORM_READ_TIMEOUT_S: Final = 10.0
CSRF_FIELD: Final = "csrf_token"
SIGNED_IN_HOME: Final = "/admin"  # the overview

Handler = Callable[..., Awaitable[Response]]


class Form:
    """A parsed urlencoded form: `form.get("name")` (first value, stripped of nothing),
    `form.getlist("pool")`."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        return default

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def __contains__(self, name: str) -> bool:
        return any(key == name for key, _ in self._pairs)


def signed_in() -> SignedIn:
    """The signed-in operator of this request (inside an `operator_required` handler)."""
    found: SignedIn = g.signed_in
    return found


# One per process: a session's pages are counted on the node that serves them.
PAGE_PACE = PagePace()


def operator_required(
    role: str | None = None, *, stage: str | None = "full", password_change: bool = False
) -> Callable[[Handler], Handler]:
    """A page for a signed-in operator: admitted through the `admin` bulkhead, redirected to
    /login when not signed in, to the password change when one is due (unless
    `password_change`), and refused (403) when `role` is given and the operator's differs.
    `stage` None admits a session half-way through the second factor too (sign-out).
    The handler is called with the `SignedIn` first, then the route's arguments."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def page(**kwargs: Any) -> Response:
            token = console.read_cookie(SESSION_COOKIE)
            if token is not None:  # signed in, or about to be sent to /login
                wait_s = PAGE_PACE.reserve(hash(token), trio.current_time())
                if wait_s is None:  # a plain answer: a refused page costs next to nothing
                    return add_security_headers(
                        Response(
                            "Too many pages at once: wait a moment.\n",
                            status=429,
                            headers={"retry-after": str(math.ceil(MAX_WAIT_S))},
                            content_type="text/plain; charset=utf-8",
                        )
                    )
                await trio.sleep(wait_s)
            async with console.gateway().admission.admit("admin"):
                found = await console.find_signed_in()
                if found is None or (stage is not None and found.session.stage != stage):
                    return redirect_to("/login")
                if found.operator.must_change_password and not password_change:
                    return redirect_to("/password/change")
                if role is not None and found.operator.role != role:
                    raise Forbidden("this page is for the instance owner")
                g.signed_in = found
                return await handler(found, **kwargs)

        return page

    return decorate


def public_page(handler: Handler) -> Handler:
    """A page anyone may open (sign-in, bootstrap): admitted through the `admin` bulkhead."""

    @functools.wraps(handler)
    async def page(**kwargs: Any) -> Response:
        async with console.gateway().admission.admit("admin"):
            return await handler(**kwargs)

    return page


def csrf_token() -> str:
    """This request's CSRF token: the signed-in session's, else the one bound to the
    anonymous cookie (set by `render` when missing)."""
    found: SignedIn | None = g.get("signed_in")
    if found is not None:
        return found.session.csrf_token
    seed = g.get("anon_seed") or console.read_cookie(ANON_COOKIE)
    if not seed:
        seed = g.anon_seed = secrets.token_urlsafe(32)
    return console.anonymous_csrf_token(seed)


async def render(template: str, status: int = 200, **context: Any) -> Response:
    """`template` (under templates/console/) rendered with `context` plus what every page
    shows: the signed-in operator (`me`, or None) and the form's `csrf_token`."""
    found: SignedIn | None = g.get("signed_in")
    token = csrf_token()
    body = render_page(
        f"console/{template}", me=found, csrf_token=token, csrf_field=CSRF_FIELD, **context
    )
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    if g.get("anon_seed"):
        console.set_cookie(response, ANON_COOKIE, g.anon_seed, None)
    return response


def in_words(message: str, name: str, label: str) -> str:
    """A store's or the settings parser's message that begins with a field's internal name
    (`retry_budget must be ...`), begun with the field's label instead."""
    return label + message[len(name) :] if message.startswith(name) else message


def redirect_to(path: str) -> Response:
    """See Other: after a POST the browser GETs `path` (a local path only)."""
    if not path.startswith("/") or path.startswith("//"):
        path = "/"
    return Response("", status=303, headers={"location": path})


async def read_form(max_bytes: int = MAX_FORM_BYTES) -> Form:
    """The POSTed urlencoded form, read through the request's pulled body up to `max_bytes`,
    after checking its CSRF token (403 and nothing read further when wrong or missing)."""
    request = current_request()
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        raise Forbidden("this form was sent from another site")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("a console form is sent as application/x-www-form-urlencoded")
    request.body.limit = max_bytes
    body_deadline_s = console.gateway().instance_settings.body_read_timeout_seconds
    with trio.move_on_after(min(FORM_READ_TIMEOUT_S, body_deadline_s)):
        raw = await request.body.read()
        return _checked_form(raw)
    raise RequestTimeout("the form did not arrive in time")


def _checked_form(raw: bytes) -> Form:
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None
    form = Form(pairs)
    if not hmac.compare_digest(form.get(CSRF_FIELD).encode(), csrf_token().encode()):
        raise Forbidden("the form's security token is missing or out of date; reload the page")
    return form


async def db(fn: Callable[[Conn], T]) -> T:
    """`fn(conn)` in one transaction, in a worker thread (never on the event loop)."""
    return await console.gateway().db.run(fn)


# Password hashing (argon2id: ~30 ms of a core and 19 MiB) runs one at a time per process,
# so a flood of sign-ins cannot take the cores the gateway's traffic needs.
_PASSWORD_WORK = trio.CapacityLimiter(1)


async def db_with_password(fn: Callable[[Conn], T]) -> T:
    """`db(fn)` for work that hashes or verifies a password."""
    async with _PASSWORD_WORK:
        return await db(fn)


def pool_or_404(found: SignedIn, pool_id: Any) -> None:
    """Refuse (404, as if it did not exist) a Pool the operator may not see."""
    if not found.may_see_pool(pool_id):
        raise NotFound("no such Pool")
