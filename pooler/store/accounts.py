"""Upstream ChatGPT/Codex accounts: import from auth.json, listing, lifecycle, quota.

Lifecycle. `active` accounts serve; `paused` and `disabled` ones are kept out of routing by
an operator; `reauth_required` is set by the gateway when the auth server refuses the
account's refresh token for good. An operator pauses and resumes accounts through
`OPERATOR_MOVES`; nothing an operator does brings an account back from `reauth_required`
except fresh tokens, from a re-import of an auth.json (`import_account`) or a new sign-in
(`pooler.store.sign_in`), because its stored refresh token is known to be dead.
`set_lifecycle` itself is unchecked: the gateway uses it too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from psycopg.rows import class_row, dict_row

from pooler.crypto import Keyring
from pooler.db import notify
from pooler.routing.lifecycle import Event, Lifecycle, moves
from pooler.store.common import (
    QUOTA_CHANNEL,
    TOKENS_CHANNEL,
    ConflictError,
    Conn,
    InvalidInputError,
    NotFoundError,
    check_printable,
    record_change,
    require_choice,
)
from pooler.store.credentials import account_refresh_lock, write_secrets
from pooler.store.jwt_claims import ClaimsError, Identity, identity_from_tokens
from pooler.store.models import Account, AccountView, QuotaWindowRow, StoredQuotaWindow
from pooler.store.pools import get_pool
from pooler.store.text import findable, storable

LIFECYCLES: Final = tuple(state.value for state in Lifecycle)
# operator action -> {lifecycle before: lifecycle after}; a lifecycle not listed is refused.
# Read from the one transition table (`pooler.routing.lifecycle`).
OPERATOR_MOVES: Final[dict[str, dict[str, str]]] = {
    "pause": moves(Event.PAUSE),
    "resume": moves(Event.RESUME),
}
REAUTH_HINT: Final = (
    "needs a new login: sign it in again (`pooler admin account login`) or re-import a fresh"
    " auth.json (`pooler admin account import`)"
)
WINDOWS: Final = ("primary", "secondary")
ACCOUNT_COLUMNS: Final = (
    "id, label, email, chatgpt_account_id, chatgpt_user_id, plan_type, lifecycle,"
    " lifecycle_reason, access_token_expires_at, last_refresh_at, created_at, updated_at"
)
QUOTA_COLUMNS: Final = (
    "account_id, family, window_kind AS window, used_percent::float8 AS used_percent,"
    " window_minutes, reset_at, observed_at"
)


@dataclass(frozen=True, slots=True, repr=False)
class AuthJson:
    """The parts of a Codex auth.json we use (tokens in clear: keep it short-lived)."""

    access_token: str
    refresh_token: str
    id_token: str | None
    identity: Identity
    chatgpt_account_id: str


def parse_auth_json(auth_json: Any) -> AuthJson:
    """Validate a Codex CLI auth.json (`{"tokens": {...}}`, ChatGPT sign-in)."""
    if not isinstance(auth_json, dict):
        raise InvalidInputError("auth.json must be a JSON object")
    mode = auth_json.get("auth_mode")
    if mode is None and auth_json.get("OPENAI_API_KEY"):
        mode = "apikey"  # the Codex CLI's reading of a file without auth_mode
    if mode not in (None, "chatgpt", "chatgptAuthTokens"):
        raise InvalidInputError(f"auth.json auth_mode {mode!r} is not a ChatGPT sign-in")
    tokens = auth_json.get("tokens")
    if not isinstance(tokens, dict):
        raise InvalidInputError("auth.json has no ChatGPT tokens (an API-key file?)")
    access, refresh, ident = (tokens.get(k) for k in ("access_token", "refresh_token", "id_token"))
    if not isinstance(access, str) or not access:
        raise InvalidInputError("auth.json tokens.access_token is missing")
    if not isinstance(refresh, str) or not refresh:
        raise InvalidInputError("auth.json tokens.refresh_token is missing")
    if ident is not None and not isinstance(ident, str):
        raise InvalidInputError("auth.json tokens.id_token is not a string")
    return parse_tokens(access, refresh, ident or None, tokens.get("account_id"))


def parse_tokens(
    access: str,
    refresh: str,
    ident: str | None,
    file_account: Any = None,
    *,
    source: str = "auth.json",
) -> AuthJson:
    """The account that ChatGPT tokens belong to, read from their claims (`source` names
    where they came from in the messages: an auth.json, a sign-in)."""
    try:
        identity = identity_from_tokens(ident, access)
    except ClaimsError as exc:
        raise InvalidInputError(f"{source} tokens are not readable JWTs: {exc}") from None
    claimed = identity.chatgpt_account_id
    if file_account and claimed and file_account != claimed:
        raise InvalidInputError(f"{source} tokens.account_id does not match the token claims")
    account_id = claimed or file_account
    if not isinstance(account_id, str) or not account_id:
        raise InvalidInputError(f"{source} carries no ChatGPT account id")
    return AuthJson(access, refresh, ident, identity, account_id)


def import_account(
    conn: Conn,
    keyring: Keyring,
    pool_name: str,
    auth_json: Any,
    label: str | None = None,
    *,
    actor: str = "system",
) -> Account:
    """Create or update the account of a Codex auth.json and assign it to the Pool."""
    account, _ = save_account(
        conn,
        keyring,
        pool_name,
        parse_auth_json(auth_json),
        label,
        actor=actor,
        action="upstream_account.import",
    )
    return account


def save_account(
    conn: Conn,
    keyring: Keyring,
    pool_name: str,
    parsed: AuthJson,
    label: str | None = None,
    *,
    actor: str,
    action: str,
    details: Mapping[str, Any] | None = None,
) -> tuple[Account, bool]:
    """Store the tokens as an account of the Pool (an import or a sign-in); the account and
    whether it is new. Audited as `action` with the Pool, label, `created` and `details`.

    The account is keyed by (chatgpt_account_id, chatgpt_user_id): tokens for a known one
    replace its tokens and make it active again; two seats of one workspace are two
    accounts."""
    if label is not None:
        check_printable(label, "an account label")
    pool = get_pool(conn, pool_name)
    ident = parsed.identity
    # The ids travel in upstream headers: refused unless printable. What only names the
    # account (email, plan) is made storable.
    check_printable(parsed.chatgpt_account_id, "the auth.json's ChatGPT account id")
    check_printable(ident.chatgpt_user_id or "", "the auth.json's ChatGPT user id")
    email, plan_type = storable(ident.email, 254), storable(ident.plan_type, 64)
    existing = conn.execute(
        "SELECT id FROM upstream_accounts"
        " WHERE chatgpt_account_id = %s AND chatgpt_user_id IS NOT DISTINCT FROM %s",
        (parsed.chatgpt_account_id, ident.chatgpt_user_id),
    ).fetchone()
    if existing is not None:  # lock before touching the row: a refresh may hold the lock
        account_refresh_lock(conn, existing[0])
    default_label = email or parsed.chatgpt_account_id
    row = conn.execute(
        f"INSERT INTO upstream_accounts (label, email, chatgpt_account_id, chatgpt_user_id,"
        f" plan_type, access_token_expires_at) VALUES (%(label)s, %(email)s, %(account)s,"
        f" %(user)s, %(plan)s, %(expires)s)"
        f" ON CONFLICT ON CONSTRAINT upstream_accounts_identity_key DO UPDATE SET"
        f" label = coalesce(%(explicit_label)s, upstream_accounts.label),"
        f" email = coalesce(EXCLUDED.email, upstream_accounts.email),"
        f" plan_type = coalesce(EXCLUDED.plan_type, upstream_accounts.plan_type),"
        f" lifecycle = 'active', lifecycle_reason = NULL,"
        f" access_token_expires_at = EXCLUDED.access_token_expires_at, updated_at = now()"
        f" RETURNING (xmax = 0) AS created, {ACCOUNT_COLUMNS}",
        {
            "label": (label or default_label)[:200],
            "explicit_label": label,
            "email": email,
            "account": parsed.chatgpt_account_id,
            "user": ident.chatgpt_user_id,
            "plan": plan_type,
            "expires": ident.access_token_expires_at,
        },
    ).fetchone()
    assert row is not None
    created, account = bool(row[0]), Account(*row[1:])
    secrets = {"access_token": parsed.access_token, "refresh_token": parsed.refresh_token}
    if parsed.id_token:
        secrets["id_token"] = parsed.id_token
    write_secrets(conn, keyring, account.id, secrets)
    conn.execute(
        "INSERT INTO pool_assignments (pool_id, account_id) VALUES (%s, %s)"
        " ON CONFLICT (pool_id, account_id) DO UPDATE SET status = 'active', updated_at = now()",
        (pool.id, account.id),
    )
    record_change(
        conn,
        actor=actor,
        action=action,
        target_type="account",
        target_id=account.id,
        details={"pool": pool_name, "label": account.label, "created": created, **(details or {})},
        pool_id=pool.id,
    )
    notify(conn, TOKENS_CHANNEL, str(account.id))
    return account, created


def sole_pool_id(conn: Conn, account_id: UUID) -> UUID | None:
    """The Pool an account is actively assigned to when there is exactly one: the Pool its
    audited events concern (an account shared by several Pools is instance-wide)."""
    rows = conn.execute(
        "SELECT pool_id FROM pool_assignments WHERE account_id = %s AND status = 'active' LIMIT 2",
        (account_id,),
    ).fetchall()
    found: UUID | None = rows[0][0] if len(rows) == 1 else None
    return found


def get_account(conn: Conn, account_id: UUID) -> Account:
    cur = conn.cursor(row_factory=class_row(Account))
    account = cur.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM upstream_accounts WHERE id = %s", (account_id,)
    ).fetchone()
    if account is None:
        raise NotFoundError(f"account {account_id} not found")
    return account


def resolve_account(conn: Conn, ref: str) -> Account:
    """The one account whose id, label or email (case-insensitive) is `ref`."""
    wanted = ref.strip().lower()
    if not findable(wanted):
        raise NotFoundError("no such account (the reference holds a NUL or an invalid character)")
    cur = conn.cursor(row_factory=class_row(Account))
    found = cur.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM upstream_accounts"
        f" WHERE id::text = %(w)s OR lower(label) = %(w)s OR lower(email) = %(w)s"
        f" ORDER BY label, id LIMIT 2",
        {"w": wanted},
    ).fetchall()
    if not found:
        raise NotFoundError(f"no account matches {ref!r}")
    if len(found) > 1:
        raise ConflictError(f"several accounts match {ref!r}; give the account id")
    return found[0]


def list_accounts(conn: Conn, pool_name: str | None = None) -> list[AccountView]:
    """Accounts with their (actively assigned) Pools and latest quota windows."""
    where, params = "", []
    if pool_name is not None:
        pool = get_pool(conn, pool_name)
        where = "WHERE a.id IN (SELECT account_id FROM pool_assignments WHERE pool_id = %s)"
        params = [pool.id]
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT a.id, a.label, a.email, a.chatgpt_account_id, a.chatgpt_user_id, a.plan_type,"
            f" a.lifecycle, a.lifecycle_reason, a.access_token_expires_at, a.last_refresh_at,"
            f" a.created_at, coalesce(array_agg(p.name ORDER BY p.name)"
            f" FILTER (WHERE p.name IS NOT NULL), '{{}}') AS pools"
            f" FROM upstream_accounts a"
            f" LEFT JOIN pool_assignments pa ON pa.account_id = a.id AND pa.status = 'active'"
            f" LEFT JOIN pools p ON p.id = pa.pool_id {where}"
            f" GROUP BY a.id ORDER BY a.label, a.id",
            params,
        )
        .fetchall()
    )
    quota = quota_by_account(conn, [row["id"] for row in rows])
    return [
        AccountView(**{**row, "pools": tuple(row["pools"]), "quota": quota.get(row["id"], ())})
        for row in rows
    ]


def quota_by_account(
    conn: Conn, account_ids: Sequence[UUID] | None = None
) -> dict[UUID, tuple[StoredQuotaWindow, ...]]:
    """Latest quota windows per account (all accounts when `account_ids` is None)."""
    cur = conn.cursor(row_factory=class_row(StoredQuotaWindow))
    order = " ORDER BY account_id, family, window_kind"
    if account_ids is None:
        windows = cur.execute(f"SELECT {QUOTA_COLUMNS} FROM quota_windows{order}").fetchall()
    else:
        windows = cur.execute(
            f"SELECT {QUOTA_COLUMNS} FROM quota_windows WHERE account_id = ANY(%s){order}",
            (list(account_ids),),
        ).fetchall()
    grouped: defaultdict[UUID, list[StoredQuotaWindow]] = defaultdict(list)
    for window in windows:
        grouped[window.account_id].append(window)
    return {account_id: tuple(found) for account_id, found in grouped.items()}


def set_lifecycle(
    conn: Conn,
    account_id: UUID,
    lifecycle: str,
    reason: str | None = None,
    *,
    actor: str = "system",
) -> Account:
    require_choice(lifecycle, LIFECYCLES, "lifecycle")
    before = get_account(conn, account_id)
    cur = conn.cursor(row_factory=class_row(Account))
    account = cur.execute(
        f"UPDATE upstream_accounts SET lifecycle = %s, lifecycle_reason = %s, updated_at = now()"
        f" WHERE id = %s RETURNING {ACCOUNT_COLUMNS}",
        (lifecycle, storable(reason), account_id),
    ).fetchone()
    assert account is not None
    record_change(
        conn,
        actor=actor,
        action="upstream_account.lifecycle",
        target_type="account",
        target_id=account_id,
        details={"from": before.lifecycle, "to": lifecycle, "reason": reason},
        pool_id=sole_pool_id(conn, account_id),
    )
    return account


def pause_account(
    conn: Conn, account_id: UUID, reason: str | None = None, *, actor: str = "system"
) -> Account:
    """Take the account out of routing until `resume_account`."""
    return _operator_move(conn, account_id, "pause", reason, actor)


def resume_account(conn: Conn, account_id: UUID, *, actor: str = "system") -> Account:
    """Put a paused (or disabled) account back into routing; refused for reauth_required."""
    return _operator_move(conn, account_id, "resume", None, actor)


def _operator_move(
    conn: Conn, account_id: UUID, action: str, reason: str | None, actor: str
) -> Account:
    row = conn.execute(
        "SELECT label, lifecycle FROM upstream_accounts WHERE id = %s FOR UPDATE", (account_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"account {account_id} not found")
    label, lifecycle = row
    after = OPERATOR_MOVES[action].get(lifecycle)
    if after is None:
        hint = f" and {REAUTH_HINT}" if lifecycle == "reauth_required" else ""
        raise ConflictError(f"cannot {action} account {label!r}: it is {lifecycle}{hint}")
    return set_lifecycle(conn, account_id, after, reason, actor=actor)


def delete_account(conn: Conn, account_id: UUID, *, actor: str = "system") -> Account:
    """Remove the account with its secrets, assignments, quota and continuity pins (the
    foreign keys cascade). Request logs keep its id and label. Audited as `account.delete`."""
    account_refresh_lock(conn, account_id)  # wait out a refresh writing its tokens
    pool_id = sole_pool_id(conn, account_id)  # before its assignments go with it
    cur = conn.cursor(row_factory=class_row(Account))
    account = cur.execute(
        f"DELETE FROM upstream_accounts WHERE id = %s RETURNING {ACCOUNT_COLUMNS}", (account_id,)
    ).fetchone()
    if account is None:
        raise NotFoundError(f"account {account_id} not found")
    record_change(
        conn,
        actor=actor,
        action="account.delete",
        target_type="account",
        target_id=account_id,
        details={"label": account.label, "lifecycle": account.lifecycle},
        pool_id=pool_id,
    )
    return account


def upsert_quota_windows(conn: Conn, account_id: UUID, windows: Sequence[QuotaWindowRow]) -> None:
    """Store quota evidence; an observation older than the stored one is ignored (several
    nodes write behind). Announced on QUOTA_CHANNEL; not audited."""
    for window in windows:
        require_choice(window.window, WINDOWS, "quota window")
        if not 0 <= window.used_percent <= 1000:
            raise InvalidInputError("used_percent must be between 0 and 1000")
    get_account(conn, account_id)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO quota_windows (account_id, family, window_kind, used_percent,"
            " window_minutes, reset_at, observed_at) VALUES (%s, %s, %s, %s, %s, %s,"
            " coalesce(%s, now())) ON CONFLICT (account_id, family, window_kind) DO UPDATE SET"
            " used_percent = EXCLUDED.used_percent, window_minutes = EXCLUDED.window_minutes,"
            " reset_at = EXCLUDED.reset_at, observed_at = EXCLUDED.observed_at"
            " WHERE quota_windows.observed_at <= EXCLUDED.observed_at",
            [
                (
                    account_id,
                    w.family,
                    w.window,
                    w.used_percent,
                    w.window_minutes,
                    w.reset_at,
                    w.observed_at,
                )
                for w in windows
            ],
        )
    notify(conn, QUOTA_CHANNEL, str(account_id))
