"""Adding the account of a completed ChatGPT sign-in (browser PKCE or device code) to a Pool.

The tokens go through the same rules as an auth.json import (`accounts.parse_tokens`,
`accounts.save_account`): the account is found by its ChatGPT account and user ids, so
signing in an account the gateway already knows re-links it (new tokens, active again,
assigned to the Pool) instead of adding a duplicate. Audited as `upstream_account.sign_in`
with the method and whether the account is new; the tokens are stored encrypted and never
appear in the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pooler.crypto import Keyring
from pooler.store.accounts import parse_tokens, save_account
from pooler.store.common import Conn, require_choice
from pooler.store.models import Account
from pooler.upstream.oauth_login import SignInTokens

SIGN_IN_METHODS: Final = ("browser", "device_code")


@dataclass(frozen=True, slots=True)
class SignedInAccount:
    """The account the sign-in added (`created`) or re-linked."""

    account: Account
    created: bool


def add_signed_in_account(
    conn: Conn,
    keyring: Keyring,
    pool_name: str,
    tokens: SignInTokens,
    *,
    method: str,
    label: str | None = None,
    actor: str = "system",
) -> SignedInAccount:
    """Store a sign-in's tokens as an account of the Pool, or re-link the known account.

    Raises:
        NotFoundError: no such Pool.
        InvalidInputError: tokens whose claims name no account, an unprintable label or
            id, an unknown `method`.
    """
    require_choice(method, SIGN_IN_METHODS, "sign-in method")
    parsed = parse_tokens(
        tokens.access_token, tokens.refresh_token, tokens.id_token or None, source="the sign-in"
    )
    account, created = save_account(
        conn,
        keyring,
        pool_name,
        parsed,
        label,
        actor=actor,
        action="upstream_account.sign_in",
        details={"method": method},
    )
    return SignedInAccount(account, created)
