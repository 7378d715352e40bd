"""An operator's "refresh this account's tokens now" (`pooler admin account refresh`).

The same single-flight discipline as the gateway's refresh (`credentials` module doc): take
the account's refresh lock, re-read the stored tokens, call the auth server, and store the
rotated tokens in the same transaction. A permanent refusal moves the account to
`reauth_required`. The outcome is returned, never raised, so that the lifecycle change and
the audit row commit with the transaction even when the refresh failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import httpx

from pooler.crypto import Keyring
from pooler.protocol.jwt import jwt_expiry
from pooler.store.accounts import REAUTH_HINT, get_account, set_lifecycle, sole_pool_id
from pooler.store.common import ConflictError, Conn, record_change
from pooler.store.credentials import (
    account_refresh_lock,
    load_account_credentials,
    store_refreshed_tokens,
)
from pooler.store.models import Account
from pooler.upstream.oauth import DEFAULT_RETRY, RefreshFailed, RetryPolicy, refresh_tokens


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """The account after the attempt; `error` is the failure code (None on success) and
    `permanent` says the account now needs a new login."""

    account: Account
    error: str | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def refresh_account_now(
    conn: Conn,
    keyring: Keyring,
    http: httpx.Client,
    auth_base_url: str,
    account_id: UUID,
    *,
    actor: str = "system",
    retry: RetryPolicy = DEFAULT_RETRY,
) -> RefreshOutcome:
    """Refresh the account's tokens whatever their expiry; audited as `account.refresh`.

    Raises:
        NotFoundError: no such account, or it has no stored tokens.
        ConflictError: the account is `reauth_required` (its refresh token is dead).
    """
    account_refresh_lock(conn, account_id)
    account = get_account(conn, account_id)
    if account.lifecycle == "reauth_required":
        raise ConflictError(f"account {account.label!r} is reauth_required and {REAUTH_HINT}")
    stored = load_account_credentials(conn, keyring, account_id)
    try:
        tokens = refresh_tokens(http, auth_base_url, stored.refresh_token, retry=retry)
    except RefreshFailed as failure:
        _audit(conn, account, actor, error=failure.code, permanent=failure.permanent)
        if failure.permanent:
            account = set_lifecycle(conn, account_id, "reauth_required", failure.code, actor=actor)
        return RefreshOutcome(account, failure.code, failure.permanent)
    store_refreshed_tokens(
        conn,
        keyring,
        account_id,
        tokens.access_token,
        tokens.refresh_token,
        tokens.id_token,
        _expires_at(tokens.access_token),
    )
    _audit(conn, account, actor, rotated=tokens.refresh_token is not None)
    return RefreshOutcome(get_account(conn, account_id))


def _expires_at(access_token: str) -> datetime | None:
    expiry = jwt_expiry(access_token)
    try:
        return datetime.fromtimestamp(expiry, UTC) if expiry is not None else None
    except (OverflowError, OSError, ValueError):  # an `exp` no calendar holds
        return None


def _audit(
    conn: Conn,
    account: Account,
    actor: str,
    *,
    error: str | None = None,
    permanent: bool = False,
    rotated: bool = False,
) -> None:
    """Metadata only: the label and the outcome, never a token."""
    details: dict[str, object] = {"label": account.label, "ok": error is None}
    if error is None:
        details["rotated"] = rotated
    else:
        details.update(error=error, permanent=permanent)
    record_change(
        conn,
        actor=actor,
        action="account.refresh",
        target_type="account",
        target_id=account.id,
        details=details,
        pool_id=sole_pool_id(conn, account.id),
        outcome="ok" if error is None else "failed",
    )
