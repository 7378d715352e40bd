"""The fake auth server's sign-ins: authorization codes (browser PKCE) and device codes.

No I/O, and every decision takes `now` (epoch seconds), like `EmulatorState`.

Browser PKCE (protocol §6.4): `/oauth/authorize` hands the browser a single-use code bound
to the client id, the redirect URI, the S256 challenge and the account that signed in; the
code exchange at `/oauth/token` must bring the verifier whose SHA-256 is that challenge.

Device code: `/api/accounts/deviceauth/usercode` opens a pending device sign-in (a user code
to type at `/codex/device`, a poll interval, an expiry). A test completes it through the
control API (approve naming an account, or deny). Once approved, the next poll of
`/api/accounts/deviceauth/token` answers an authorization code with the verifier and
challenge the server made for it, as the real server does; the client exchanges that code
like a browser one, with `redirect_uri = <issuer>/deviceauth/callback`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from pooler.emulator import rejections as rj
from pooler.emulator.accounts import FakeAccount

CODE_TTL_S: Final = 600.0  # an authorization code lives ten minutes
DEVICE_TTL_S: Final = 900.0  # the Codex CLI tells the user "expires in 15 minutes"
DEVICE_INTERVAL_S: Final = 5
REDIRECT_URIS: Final = (
    "http://localhost:1455/auth/callback",
    "http://localhost:1457/auth/callback",  # the Codex CLI's fallback port
)
DEVICE_CALLBACK_PATH: Final = "/deviceauth/callback"
_USER_CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier`: base64url(SHA-256), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class AuthorizationCode:
    account: FakeAccount
    client_id: str
    redirect_uri: str
    challenge: str
    expires_at: float


@dataclass
class DeviceSignIn:
    device_auth_id: str
    user_code: str
    client_id: str
    expires_at: float
    account: FakeAccount | None = None  # set by approve
    denied: bool = False


@dataclass(frozen=True)
class DeviceGrant:
    """What an approved device poll answers: a code and the PKCE pair it is bound to."""

    authorization_code: str
    code_verifier: str
    code_challenge: str


class SignInDesk:
    """Pending authorization codes and device sign-ins; settings a test may change."""

    def __init__(self) -> None:
        self.codes: dict[str, AuthorizationCode] = {}
        self.devices: dict[str, DeviceSignIn] = {}  # by device_auth_id
        self.device_interval = DEVICE_INTERVAL_S
        self.device_ttl = DEVICE_TTL_S
        self.code_ttl = CODE_TTL_S
        self._next_account = 0

    def clear(self) -> None:
        """Back to the start: nothing pending, default interval and lifetimes."""
        self.codes.clear()
        self.devices.clear()
        self.device_interval, self.device_ttl, self.code_ttl = (
            DEVICE_INTERVAL_S,
            DEVICE_TTL_S,
            CODE_TTL_S,
        )
        self._next_account = 0

    def next_account(self, accounts: list[FakeAccount]) -> FakeAccount:
        """The account a sign-in that names none yields: each in turn."""
        account = accounts[self._next_account % len(accounts)]
        self._next_account += 1
        return account

    # -- authorization codes -----------------------------------------------------------

    def issue_code(
        self, account: FakeAccount, client_id: str, redirect_uri: str, challenge: str, now: float
    ) -> str:
        self._drop_expired(now)
        code = "ac_" + secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            account, client_id, redirect_uri, challenge, now + self.code_ttl
        )
        return code

    def redeem(
        self, code: str, client_id: str, redirect_uri: str, verifier: str, now: float
    ) -> FakeAccount | rj.Rejection:
        """The account a code signs in; the code is spent whatever the outcome, as a code
        presented with a wrong verifier may have been stolen."""
        found = self.codes.pop(code, None)
        if found is None:
            return rj.bad_request(
                "Invalid authorization code (unknown or already used)", code="invalid_grant"
            )
        if found.expires_at <= now:
            return rj.bad_request("The authorization code has expired", code="invalid_grant")
        if client_id != found.client_id or redirect_uri != found.redirect_uri:
            return rj.bad_request(
                "client_id or redirect_uri does not match the authorization request",
                code="invalid_grant",
            )
        if not hmac.compare_digest(s256(verifier), found.challenge):
            return rj.bad_request(
                "code_verifier does not match the code_challenge", code="invalid_grant"
            )
        return found.account

    def expire_codes(self) -> int:
        """Test knob: every pending authorization code expires now."""
        for code in self.codes.values():
            code.expires_at = 0.0
        return len(self.codes)

    # -- device codes ------------------------------------------------------------------

    def start_device(self, client_id: str, now: float) -> DeviceSignIn:
        self._drop_expired(now)
        user_code = "-".join(
            "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(4)) for _ in range(2)
        )
        device = DeviceSignIn(
            "deviceauth_" + secrets.token_urlsafe(18), user_code, client_id, now + self.device_ttl
        )
        self.devices[device.device_auth_id] = device
        return device

    def find_device(self, user_code: str | None) -> DeviceSignIn | None:
        """By user code (any case); None names the latest one still pending."""
        waiting = [d for d in self.devices.values() if d.account is None and not d.denied]
        if user_code is None:
            return waiting[-1] if waiting else None
        wanted = user_code.strip().upper()
        return next((d for d in self.devices.values() if d.user_code == wanted), None)

    def poll_device(
        self, device_auth_id: str, user_code: str, redirect_uri: str, now: float
    ) -> DeviceGrant | rj.Rejection:
        """403 while pending; 400 once denied or expired; an approved one answers its code
        once (the sign-in is then over)."""
        device = self.devices.get(device_auth_id)
        if device is None or device.user_code != user_code.strip().upper():
            return rj.rejection(
                404, "deviceauth_not_found", "Unknown device authorization", error_type="not_found"
            )
        if device.expires_at <= now:
            del self.devices[device_auth_id]
            return rj.bad_request("The device code has expired", code="expired_token")
        if device.denied:
            del self.devices[device_auth_id]
            return rj.bad_request("The sign-in was denied", code="access_denied")
        if device.account is None:
            return rj.rejection(403, "authorization_pending", "The device authorization is pending")
        del self.devices[device_auth_id]
        verifier = secrets.token_urlsafe(48)
        challenge = s256(verifier)
        code = self.issue_code(device.account, device.client_id, redirect_uri, challenge, now)
        return DeviceGrant(code, verifier, challenge)

    def _drop_expired(self, now: float) -> None:
        # Bounded memory: what expired an hour ago is forgotten.
        stale = now - 3600
        self.codes = {c: v for c, v in self.codes.items() if v.expires_at > stale}
        self.devices = {d: v for d, v in self.devices.items() if v.expires_at > stale}
