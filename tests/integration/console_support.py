"""Helpers for console tests: a browser-like httpx client (cookies kept, redirects not
followed), the CSRF token of a page (and a form's one-time token), bootstrap and sign-in."""

from __future__ import annotations

import re
from typing import Any

import httpx
from harness import Stack

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM_RE = re.compile(r'<form\b[^>]*\baction="([^"]*)"[^>]*>(.*?)</form>', re.S)
ONCE_RE = re.compile(r'name="form_once" value="([^"]+)"')
OWNER_EMAIL = "owner@example.com"
OWNER_PASSWORD = "owner password of the tests"


def browser(stack: Stack, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.url, timeout=30, follow_redirects=False, **kwargs)


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def once_of(html: str, action: str) -> str | None:
    """The one-time token of the page's form that posts to `action` (None: it has none)."""
    for target, inside in FORM_RE.findall(html):
        if target == action:
            found = ONCE_RE.search(inside)
            return found.group(1) if found else None
    return None


async def post_form(
    client: httpx.AsyncClient, page: str, data: dict[str, str], action: str | None = None
) -> httpx.Response:
    """GET `page`, then POST `data` with its CSRF token (and the one-time token of its form
    for `action`, if it has one) to `action` (default: `page`)."""
    shown = await client.get(page)
    assert shown.status_code == 200, (page, shown.status_code)
    fields = {"csrf_token": csrf_of(shown.text)}
    once = once_of(shown.text, action or page)
    if once is not None:
        fields["form_once"] = once
    return await client.post(action or page, data={**fields, **data})


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
