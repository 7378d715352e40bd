"""One-time forms: a console form whose answer shows a secret once (a new or rotated API
key, an invite link, a temporary password, recovery codes, an MCP token) does its action at
most once per rendered form, so a reload that re-POSTs it (F5, "resend form?") does nothing again.

The form carries `{{ csrf(once=True) }}`: a random `form_once` token made when it is
rendered (nothing is stored then). The handler reads it with `once = form_once(found,
form)` (400 when missing or malformed) and, first in the transaction of its action, calls
`once.claim(conn, "api_key.create")` (with the target's id when known; a creation names it
after with `once.made(conn, key.id)`). A token its session already used raises
`FormAlreadySent`: the transaction does nothing and the console answers 409 with a page
saying what the form did then and where that is (`already_sent_page`). The claims live in
PostgreSQL (`pooler.store.form_uses`), so every node and a restart see them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from quart.wrappers import Response
from werkzeug.exceptions import BadRequest

from pooler.admin_ui import console
from pooler.admin_ui.console import SignedIn
from pooler.admin_ui.pages import Form, render
from pooler.crypto import key_digest
from pooler.store import form_uses
from pooler.store.common import Conn

FIELD: Final = "form_once"
TOKEN_BYTES: Final = 16
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,64}")

Pools = frozenset[UUID] | None


def new_token() -> str:
    """A fresh token for a rendered form (a template global: `new_form_once()`)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _key(conn: Conn, key_id: UUID, pool_ids: Pools) -> str | None:
    found = form_uses.key_label(conn, key_id, pool_ids)
    if found is None:
        return None
    name, prefix = found
    return f"Key '{name}' ({prefix}…)" if name else f"Key {prefix}…"


def _mcp_token(conn: Conn, token_id: UUID, pool_ids: Pools) -> str | None:
    # Only its own session's forms are looked up: the token is the operator's own.
    found = form_uses.mcp_token_label(conn, token_id)
    if found is None:
        return None
    name, prefix = found
    return f"MCP token '{name}' ({prefix}…)" if name else f"MCP token {prefix}…"


def _invite(conn: Conn, invite_id: UUID, pool_ids: Pools) -> str | None:
    pool = form_uses.invite_pool_name(conn, invite_id, pool_ids)
    return None if pool is None else f"An invite link to Pool '{pool}'"


def _operator(conn: Conn, operator_id: UUID, pool_ids: Pools) -> str | None:
    return form_uses.operator_email(conn, operator_id)


def _self(conn: Conn, operator_id: UUID, pool_ids: Pools) -> str | None:
    return ""


@dataclass(frozen=True, slots=True)
class Action:
    """A one-time form's action: how its target is named, what the 409 page says, and where
    it links (`{id}`: the target's id; `home` when the target is gone)."""

    target_type: str
    label: Callable[[Conn, UUID, Pools], str | None]
    done: str  # "{label} was created"
    advice: str
    link: str
    link_text: str
    home: str


ACTIONS: Final = {
    "api_key.create": Action(
        "api_key",
        _key,
        "{label} was created",
        "Its secret was shown once and cannot be shown again; rotate the key if you did not"
        " copy it.",
        "/admin/api-keys/{id}",
        "Open the key",
        "/admin/api-keys",
    ),
    "api_key.rotate": Action(
        "api_key",
        _key,
        "{label} was rotated",
        "Its new secret was shown once and cannot be shown again; rotate the key again if you"
        " did not copy it.",
        "/admin/api-keys/{id}",
        "Open the key",
        "/admin/api-keys",
    ),
    "invite.create": Action(
        "invite",
        _invite,
        "{label} was created",
        "The link was shown once and cannot be shown again; revoke it and create another if"
        " you did not copy it.",
        "/admin/invites",
        "Open the invites",
        "/admin/invites",
    ),
    "mcp_token.create": Action(
        "mcp_token",
        _mcp_token,
        "{label} was created",
        "It was shown once and cannot be shown again; delete it and create another if you did"
        " not copy it.",
        "/admin/settings#mcp",
        "Open your account",
        "/admin/settings#mcp",
    ),
    "operator.create": Action(
        "operator",
        _operator,
        "Operator {label} was created",
        "Their temporary password was shown once and cannot be shown again; reset their"
        " password if you did not copy it.",
        "/admin/operators/{id}",
        "Open the operator",
        "/admin/operators",
    ),
    "operator.reset_password": Action(
        "operator",
        _operator,
        "The password of {label} was reset",
        "The temporary password was shown once and cannot be shown again; reset it again if"
        " you did not copy it.",
        "/admin/operators/{id}",
        "Open the operator",
        "/admin/operators",
    ),
    "recovery_codes.regenerate": Action(
        "operator",
        _self,
        "New recovery codes were made",
        "They were shown once and cannot be shown again; regenerate them if you did not copy them.",
        "/admin/settings",
        "Open your account",
        "/admin/settings",
    ),
    "totp.enable": Action(
        "operator",
        _self,
        "Two-factor sign-in was turned on",
        "Its recovery codes were shown once and cannot be shown again; regenerate them on your"
        " account page if you did not copy them.",
        "/admin/settings",
        "Open your account",
        "/admin/settings",
    ),
}


@dataclass(frozen=True, slots=True)
class AlreadySent:
    """What the 409 page says about the form's earlier use."""

    what: str
    advice: str
    link: str
    link_text: str
    used_at: datetime


class FormAlreadySent(Exception):
    """This rendered form was sent before: its action is not done again."""

    def __init__(self, sent: AlreadySent) -> None:
        super().__init__("this form was already sent")
        self.sent = sent


def describe(conn: Conn, use: form_uses.FormUse, pool_ids: Pools) -> AlreadySent:
    action = ACTIONS[use.action]
    label = None if use.target_id is None else action.label(conn, use.target_id, pool_ids)
    if label is None:  # gone since, or no longer the operator's to see
        return AlreadySent(
            "What it made or changed then is no longer there.",
            "Anything it showed once cannot be shown again.",
            action.home,
            "Back",
            use.used_at,
        )
    return AlreadySent(
        action.done.format(label=label) + " then.",
        action.advice,
        action.link.format(id=use.target_id),
        action.link_text,
        use.used_at,
    )


@dataclass(frozen=True, slots=True)
class FormOnce:
    """A POSTed form's one-time token, for its session (see the module doc)."""

    found: SignedIn
    digest: bytes

    def claim(self, conn: Conn, action: str, target_id: UUID | None = None) -> None:
        """Claim the form for `action` in this transaction, or raise `FormAlreadySent`."""
        session_id = self.found.session.id
        earlier = form_uses.claim(
            conn, session_id, self.digest, action, ACTIONS[action].target_type
        )
        if earlier is not None:
            raise FormAlreadySent(describe(conn, earlier, self.found.pool_ids))
        if target_id is not None:
            self.made(conn, target_id)

    def made(self, conn: Conn, target_id: UUID) -> None:
        """Name what the claimed action made (a new key, invite or operator)."""
        form_uses.set_target(conn, self.found.session.id, self.digest, target_id)


def form_once(found: SignedIn, form: Form) -> FormOnce:
    """The form's one-time token (400, nothing done, when missing or malformed)."""
    token = form.get(FIELD)
    if not TOKEN_RE.fullmatch(token):
        raise BadRequest("this form is missing its one-time token; open the page again")
    return FormOnce(found, key_digest(console.gateway().config.secret_key, token))


async def already_sent_page(error: FormAlreadySent) -> Response:
    return await render("form_already_sent.html", 409, sent=error.sent)
