"""`/onboarding/invites/{token}`: the public page of an invite link. Whoever holds the link
links their ChatGPT account to the invite's Pool by device code and sees nothing else: no
navigation, no Pool detail beyond its name. An unknown, used, expired or revoked link gets
one identical "not valid" page (404).

The visitor presses Start (a POST: a link preview fetching the page starts nothing); the
page then shows the code and the verification URL and reloads itself
(`<meta http-equiv="refresh">`) at the interval the auth server gave; each load polls the
auth server at most once, and only when the store says a poll is due
(`invites.claim_poll`), until the sign-in is done, denied or expired. The invite is used up
when the account is linked. Bounds: one device sign-in under way per invite, at most
`invites.MAX_DEVICE_STARTS` per invite, and every load goes through the `admin` bulkhead.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx
import trio
from quart import Blueprint
from quart.wrappers import Response

from pooler.admin_ui import console
from pooler.admin_ui.pages import db, public_page, read_form, redirect_to, render
from pooler.store import invites
from pooler.store.invites import OpenInvite
from pooler.upstream.oauth_login import (
    HTTP_TIMEOUT_S,
    DeviceSignIn,
    SignInDenied,
    SignInError,
    SignInExpired,
    SignInTokens,
    poll_device_sign_in,
    start_device_sign_in,
)

PATH = "/onboarding/invites/<token>"
TOO_MANY = "This link has been tried too many times; ask for a new one."
OUTCOMES = {
    "denied": "The sign-in was refused. You can start again.",
    "expired": "The code expired before the sign-in was done. You can start again.",
    "failed": "The sign-in could not be completed. You can start again.",
}


def _start(auth_base_url: str) -> DeviceSignIn:
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        return start_device_sign_in(http, auth_base_url)


def _poll(auth_base_url: str, device: DeviceSignIn) -> SignInTokens | None:
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        return poll_device_sign_in(http, auth_base_url, device)


async def not_valid() -> Response:
    return await render("onboarding_invalid.html", 404)


def onboarding_blueprint() -> Blueprint:
    bp = Blueprint("onboarding", __name__)

    async def page(invite: OpenInvite, status: int = 200, **context: Any) -> Response:
        if invite.device is None and not invite.starting and invite.starts_left == 0:
            context["message"] = TOO_MANY
        context.setdefault("message", OUTCOMES.get(invite.outcome or ""))
        refresh = None
        if invite.device is not None:
            wait = invite.device.next_poll_at.timestamp() - time.time()
            refresh = max(1, math.ceil(wait))
        elif invite.starting:
            refresh = 2
        return await render(
            "onboarding.html", status, invite=invite, refresh=refresh, done=False, **context
        )

    @bp.get(PATH)
    @public_page
    async def show(token: str) -> Response:
        gateway = console.gateway()
        secret, keyring = gateway.config.secret_key, gateway.keyring
        invite = await db(lambda conn: invites.open_invite(conn, secret, token))
        if invite is None:
            return await not_valid()
        if invite.device is None:
            return await page(invite)
        device = await db(lambda conn: invites.claim_poll(conn, keyring, invite.id))
        if device is None:  # not due yet (or another load is polling)
            return await page(invite)
        outcome: str | None = None
        try:
            tokens = await trio.to_thread.run_sync(_poll, gateway.config.auth_base_url, device)
        except SignInDenied:
            tokens, outcome = None, "denied"
        except SignInExpired:
            tokens, outcome = None, "expired"
        except SignInError as exc:
            tokens, outcome = None, (None if exc.retryable else "failed")
        if outcome is not None:
            ended = outcome
            await db(lambda conn: invites.end_device(conn, invite.id, ended))
        elif tokens is not None:
            found = tokens
            linked = await db(lambda conn: invites.use_invite(conn, keyring, invite.id, found))
            if linked is None:
                return await not_valid()
            return await render("onboarding.html", invite=invite, refresh=None, done=True)
        again = await db(lambda conn: invites.open_invite(conn, secret, token))
        return await page(again) if again is not None else await not_valid()

    @bp.post(f"{PATH}/start")
    @public_page
    async def start(token: str) -> Response:
        await read_form()
        gateway = console.gateway()
        secret, keyring = gateway.config.secret_key, gateway.keyring
        invite = await db(lambda conn: invites.open_invite(conn, secret, token))
        if invite is None:
            return await not_valid()
        if not await db(lambda conn: invites.claim_device_start(conn, invite.id)):
            # One under way already, a start in progress, or no starts left: show the page.
            if invite.device is None and not invite.starting and invite.starts_left == 0:
                return await page(invite, 429)
            return redirect_to(f"/onboarding/invites/{token}")
        try:
            device = await trio.to_thread.run_sync(_start, gateway.config.auth_base_url)
        except SignInError:
            await db(lambda conn: invites.end_device(conn, invite.id, "failed"))
            return redirect_to(f"/onboarding/invites/{token}")
        await db(lambda conn: invites.save_device(conn, keyring, invite.id, device))
        return redirect_to(f"/onboarding/invites/{token}")

    return bp
