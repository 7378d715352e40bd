"""The console's answers when something goes wrong: an HTML error page (never the gateway's
JSON, never a traceback), and the security headers every console answer carries."""

from __future__ import annotations

import logging
from typing import Final

from quart import g
from quart.wrappers import Response
from werkzeug.exceptions import HTTPException

from pooler.admin_ui.templating import render_page
from pooler.errors import PoolerError
from pooler.store.common import ConflictError, InvalidInputError, NotFoundError, StoreError

log = logging.getLogger("pooler.admin_ui")

SECURITY_HEADERS: Final = (
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
)
# Paths the console answers (its errors are HTML pages); everything else is the gateway's.
CONSOLE_PREFIXES: Final = ("/admin/", "/onboarding/", "/password/")
CONSOLE_PATHS: Final = frozenset({"/", "/admin", "/bootstrap", "/login", "/logout"})
TITLES: Final = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported form",
    429: "Too many attempts",
    503: "Busy",
}


def is_console_path(path: str) -> bool:
    return path in CONSOLE_PATHS or path.startswith(CONSOLE_PREFIXES)


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS:
        response.headers[name] = value
    if "cache-control" not in response.headers:
        response.headers["cache-control"] = "no-store"
    return response


async def error_page(
    status: int, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    signed = g.get("signed_in")
    body = render_page(
        "console/error.html",
        me=signed,
        csrf_token=signed.session.csrf_token if signed else "",
        csrf_field="csrf_token",
        status=status,
        title=TITLES.get(status, "Error"),
        message=message,
    )
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    for name, value in headers or ():
        response.headers[name] = value
    return add_security_headers(response)


async def http_error_page(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        return await error_page(500, "Something went wrong in the console.")
    headers = []
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        headers.append(("allow", ", ".join(sorted(allowed))))
    message = error.description if status in (403, 415, 400) else TITLES.get(status, "Error")
    if status == 404:
        message = "There is no such page."
    return await error_page(status, message or TITLES.get(status, "Error"), headers)


async def pooler_error_page(error: PoolerError) -> Response:
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in error.headers()]
    headers = [(n, v) for n, v in headers if n.lower() != "content-type"]
    return await error_page(error.status, error.message, headers)


async def store_error_page(error: StoreError) -> Response:
    status = {NotFoundError: 404, ConflictError: 409, InvalidInputError: 400}.get(type(error), 400)
    return await error_page(status, error.message)


async def unexpected_error_page(error: Exception) -> Response:
    log.error("unhandled error in the console", exc_info=error)
    return await error_page(500, "Something went wrong in the console.")
