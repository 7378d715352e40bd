"""Helpers for console tests: a browser-like httpx client (cookies kept, redirects not
followed), the CSRF token of a page, bootstrap and sign-in."""

from __future__ import annotations

import re
from typing import Any

import httpx
from harness import Stack

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
OWNER_EMAIL = "owner@example.com"
OWNER_PASSWORD = "owner password of the tests"


def browser(stack: Stack, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.url, timeout=30, follow_redirects=False, **kwargs)


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, page: str, data: dict[str, str], action: str | None = None
) -> httpx.Response:
    """GET `page`, then POST `data` with its CSRF token to `action` (default: `page`)."""
    shown = await client.get(page)
    assert shown.status_code == 200, (page, shown.status_code)
    return await client.post(action or page, data={"csrf_token": csrf_of(shown.text), **data})


async def bootstrap_owner(
    client: httpx.AsyncClient,
    email: str = OWNER_EMAIL,
    password: str = OWNER_PASSWORD,
    display_name: str = "The Owner",
) -> httpx.Response:
    return await post_form(
        client,
        "/bootstrap",
        {"email": email, "display_name": display_name, "password": password},
    )


async def sign_in(
    client: httpx.AsyncClient, email: str = OWNER_EMAIL, password: str = OWNER_PASSWORD
) -> httpx.Response:
    return await post_form(client, "/login", {"email": email, "password": password})
