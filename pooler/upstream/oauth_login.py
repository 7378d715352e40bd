"""Signing a ChatGPT account in, the two ways the Codex CLI does (protocol §6.4), for an
operator adding an upstream account. No web page and no callback server of our own.

Browser PKCE. `start_browser_sign_in` makes the authorize URL (Codex's client id,
`redirect_uri=http://localhost:1455/auth/callback`, an S256 challenge, a random `state`).
The operator signs in with that URL in their own browser, lands on the (dead) localhost
callback page and pastes its URL back; `finish_browser_sign_in` checks `state`, surfaces an
`error=` the auth server sent, and exchanges the code (form-encoded `/oauth/token`,
`grant_type=authorization_code` with the verifier).

Device code. `start_device_sign_in` asks `/api/accounts/deviceauth/usercode` for a user
code, a poll interval (a string of seconds) and an expiry; the operator types the code at
`<issuer>/codex/device`. `poll_device_sign_in` asks `/api/accounts/deviceauth/token` once:
403/404 mean pending; 200 carries an authorization code with the verifier the server made,
exchanged like a browser code with `redirect_uri=<issuer>/deviceauth/callback`.
`wait_for_device_sign_in` polls at the server's interval until done, refused or expired
(cancel it like any Trio call).

HTTP calls use sync httpx (control plane, run in a worker thread). Errors:

    SignInError         the sign-in did not give tokens; `code`, a `message` safe to show
    ├── StateMismatch   the pasted callback is not the answer to this sign-in
    ├── SignInDenied    the person (or the auth server) refused the sign-in
    └── SignInExpired   the device code or the authorization code expired

No token, code, verifier or state is ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import trio

from pooler.upstream.oauth import CODEX_CLIENT_ID, error_code

T = TypeVar("T")

REDIRECT_URI: Final = "http://localhost:1455/auth/callback"
# The Codex CLI also asks for `api.connectors.*`; the gateway needs only these.
SCOPE: Final = "openid profile email offline_access"
ORIGINATOR: Final = "codex_cli_rs"
DEVICE_CALLBACK_PATH: Final = "/deviceauth/callback"
DEVICE_PAGE_PATH: Final = "/codex/device"
DEFAULT_DEVICE_TTL_S: Final = 900.0  # when the server names no expiry (the CLI's 15 minutes)
MIN_POLL_INTERVAL_S: Final = 1.0  # a server interval of 0 must not make a busy loop
MAX_CALLBACK_CHARS: Final = 8192
HTTP_TIMEOUT_S: Final = 15.0
DENIED_CODES: Final = frozenset({"access_denied", "authorization_declined"})
EXPIRED_CODES: Final = frozenset({"expired_token", "device_code_expired", "token_expired"})


class SignInError(Exception):
    """`retryable`: a transient failure (network, 5xx, 429) a later poll may get past."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class StateMismatch(SignInError):
    pass


class SignInDenied(SignInError):
    pass


class SignInExpired(SignInError):
    pass


@dataclass(frozen=True, slots=True)
class SignInTokens:
    """What a completed sign-in gives (in clear: store them and drop this)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    id_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PkcePair:
    verifier: str = field(repr=False)
    challenge: str


@dataclass(frozen=True, slots=True)
class BrowserSignIn:
    """One browser sign-in under way: show `authorize_url`; keep the rest server-side
    until the callback URL comes back (never send `state` or the verifier to a page)."""

    authorize_url: str
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_uri: str = REDIRECT_URI


@dataclass(frozen=True, slots=True)
class DeviceSignIn:
    """One device sign-in under way: show `user_code` and `verification_url`."""

    user_code: str
    verification_url: str
    interval: float
    expires_at: datetime
    device_auth_id: str = field(repr=False)

    def seconds_left(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return max(0.0, self.expires_at.timestamp() - now)


# -- pure parts ------------------------------------------------------------------------


def pkce_challenge(verifier: str) -> str:
    """S256: base64url(SHA-256(verifier)) without padding (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce() -> PkcePair:
    """64 random bytes as the verifier (86 base64url characters), as the Codex CLI makes."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode("ascii")
    return PkcePair(verifier, pkce_challenge(verifier))


def build_authorize_url(
    auth_base_url: str, *, state: str, code_challenge: str, redirect_uri: str = REDIRECT_URI
) -> str:
    params = {
        "response_type": "code",
        "client_id": CODEX_CLIENT_ID,
        "redirect_uri": redirect_uri,
        "scope": SCOPE,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
        "state": state,
        "originator": ORIGINATOR,
    }
    return f"{auth_base_url.rstrip('/')}/oauth/authorize?{urlencode(params, quote_via=quote)}"


def start_browser_sign_in(auth_base_url: str) -> BrowserSignIn:
    """A new PKCE pair and state, and the URL the operator opens."""
    pkce = new_pkce()
    state = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    url = build_authorize_url(auth_base_url, state=state, code_challenge=pkce.challenge)
    return BrowserSignIn(url, state, pkce.verifier)


def parse_callback_url(pasted: str, expected_state: str) -> str:
    """The authorization code in the callback URL the operator pasted (the whole URL, or
    only its query).

    Raises:
        StateMismatch: no `state`, or not this sign-in's.
        SignInDenied: the auth server answered `error=access_denied`.
        SignInError: another `error=`, no code, or not a callback URL at all.
    """
    text = pasted.strip()
    if len(text) > MAX_CALLBACK_CHARS:
        raise SignInError("invalid_callback", "the pasted callback URL is too long")
    split = urlsplit(text)
    raw_query = split.query if split.query or "?" in text else text
    try:
        params = parse_qs(raw_query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        params = {}
    if not params.keys() & {"code", "state", "error"}:
        raise SignInError(
            "invalid_callback", "paste the whole URL the browser landed on after signing in"
        )
    if any(len(values) > 1 for values in params.values()):
        raise SignInError("invalid_callback", "the callback URL repeats a parameter")
    found = {name: values[0] for name, values in params.items()}
    state = found.get("state", "")
    if not state or not hmac.compare_digest(state.encode(), expected_state.encode()):
        raise StateMismatch(
            "state_mismatch",
            "the callback URL does not belong to this sign-in (state mismatch); start again",
        )
    error = found.get("error")
    if error:
        raise _callback_error(error, found.get("error_description", ""))
    code = found.get("code")
    if not code:
        raise SignInError("missing_code", "the callback URL carries no authorization code")
    return code


def _callback_error(error: str, description: str) -> SignInError:
    safe = error if error.isascii() and error.replace("_", "").isalnum() else "unknown_error"
    if "missing_codex_entitlement" in description.lower():
        return SignInDenied(safe, "Codex is not enabled for this ChatGPT workspace")
    if safe == "access_denied":
        return SignInDenied(safe, "the sign-in was denied (access_denied)")
    return SignInError(safe, f"the auth server refused the sign-in ({safe})")


def device_expiry(body: dict[str, Any], now: float) -> datetime:
    """When a device code expires: `expires_at` (RFC 3339), else `expires_in` seconds, else
    the CLI's fifteen minutes."""
    expires_at = body.get("expires_at")
    if isinstance(expires_at, str):
        try:
            moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    expires_in = body.get("expires_in")
    seconds = DEFAULT_DEVICE_TTL_S
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        seconds = float(expires_in)
    return datetime.fromtimestamp(now + seconds, UTC)


def poll_interval(value: Any) -> float:
    """The server's interval (a string or a number of seconds), at least MIN_POLL_INTERVAL_S."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        seconds = MIN_POLL_INTERVAL_S
    if not math.isfinite(seconds):
        seconds = MIN_POLL_INTERVAL_S
    return max(MIN_POLL_INTERVAL_S, min(seconds, 60.0))


# -- requests --------------------------------------------------------------------------


def _post(http: httpx.Client, url: str, **kwargs: Any) -> tuple[int, Any]:
    try:
        response = http.post(url, **kwargs)
    except httpx.HTTPError as exc:
        raise SignInError(
            "network_error",
            f"cannot reach the auth server ({type(exc).__name__})",
            retryable=True,
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body


def _refused(status: int, body: Any, what: str) -> SignInError:
    code = error_code(body) or f"http_{status}"
    code = code if code.isascii() and code.replace("_", "").isalnum() else f"http_{status}"
    retryable = status >= 500 or status == 429
    if code in DENIED_CODES:
        return SignInDenied(code, "the sign-in was denied")
    if code in EXPIRED_CODES:
        return SignInExpired(code, f"the {what} expired; start a new sign-in")
    return SignInError(code, f"the auth server refused the {what} ({code})", retryable=retryable)


def exchange_code(
    http: httpx.Client,
    auth_base_url: str,
    code: str,
    code_verifier: str,
    redirect_uri: str = REDIRECT_URI,
) -> SignInTokens:
    """Trade an authorization code for tokens (`/oauth/token`, form-encoded)."""
    status, body = _post(
        http,
        f"{auth_base_url.rstrip('/')}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": CODEX_CLIENT_ID,
            "code_verifier": code_verifier,
        },
    )
    if status != 200:
        raise _refused(status, body, "authorization code")
    tokens = [body.get(k) if isinstance(body, dict) else None for k in _TOKEN_FIELDS]
    if not all(isinstance(t, str) and t for t in tokens):
        raise SignInError("invalid_token_response", "the auth server's answer held no tokens")
    access, refresh, ident = (str(t) for t in tokens)
    return SignInTokens(access, refresh, ident)


_TOKEN_FIELDS: Final = ("access_token", "refresh_token", "id_token")


def finish_browser_sign_in(
    http: httpx.Client, auth_base_url: str, sign_in: BrowserSignIn, pasted_url: str
) -> SignInTokens:
    """Check the pasted callback URL and exchange its code (see `parse_callback_url`)."""
    code = parse_callback_url(pasted_url, sign_in.state)
    return exchange_code(http, auth_base_url, code, sign_in.code_verifier, sign_in.redirect_uri)


def start_device_sign_in(http: httpx.Client, auth_base_url: str) -> DeviceSignIn:
    base = auth_base_url.rstrip("/")
    status, body = _post(
        http, f"{base}/api/accounts/deviceauth/usercode", json={"client_id": CODEX_CLIENT_ID}
    )
    if status == 404:
        raise SignInError(
            "device_code_unavailable", "device-code sign-in is not enabled on this auth server"
        )
    if status != 200 or not isinstance(body, dict):
        raise _refused(status, body, "device code request")
    device_auth_id = body.get("device_auth_id")
    user_code = body.get("user_code") or body.get("usercode")
    if not isinstance(device_auth_id, str) or not isinstance(user_code, str):
        raise SignInError("invalid_device_response", "the auth server's answer held no code")
    if not (device_auth_id and user_code.isprintable() and 0 < len(user_code) <= 64):
        raise SignInError("invalid_device_response", "the auth server's code is not readable")
    return DeviceSignIn(
        user_code=user_code,
        verification_url=base + DEVICE_PAGE_PATH,
        interval=poll_interval(body.get("interval")),
        expires_at=device_expiry(body, time.time()),
        device_auth_id=device_auth_id,
    )


def poll_device_sign_in(
    http: httpx.Client, auth_base_url: str, device: DeviceSignIn
) -> SignInTokens | None:
    """One poll: None while pending, the tokens once the sign-in is done.

    Raises:
        SignInDenied, SignInExpired, SignInError (`retryable` for a transient failure).
    """
    base = auth_base_url.rstrip("/")
    status, body = _post(
        http,
        f"{base}/api/accounts/deviceauth/token",
        json={"device_auth_id": device.device_auth_id, "user_code": device.user_code},
    )
    if status in (403, 404):
        return None
    if status != 200:
        raise _refused(status, body, "device code")
    fields = [body.get(k) if isinstance(body, dict) else None for k in _DEVICE_FIELDS]
    if not all(isinstance(v, str) and v for v in fields):
        raise SignInError("invalid_device_response", "the auth server's answer held no code")
    code, verifier = str(fields[0]), str(fields[1])
    return exchange_code(http, base, code, verifier, base + DEVICE_CALLBACK_PATH)


_DEVICE_FIELDS: Final = ("authorization_code", "code_verifier")


async def poll_until_done(
    poll: Callable[[], Awaitable[T | None]], interval: float, seconds_left: float
) -> T:
    """Await `poll` every `interval` seconds until it gives an answer.

    A retryable SignInError waits for the next turn; any other one ends the wait.

    Raises:
        SignInExpired: still nothing after `seconds_left`.
    """
    with trio.move_on_after(seconds_left):
        while True:
            try:
                found = await poll()
            except SignInError as exc:
                if not exc.retryable:
                    raise
                found = None
            if found is not None:
                return found
            await trio.sleep(interval)
    raise SignInExpired("expired_token", "the device code expired before the sign-in was done")


async def wait_for_device_sign_in(
    http: httpx.Client, auth_base_url: str, device: DeviceSignIn
) -> SignInTokens:
    """Poll (each request in a worker thread) at the server's interval until the sign-in
    is done; gives up at its expiry. Cancellation waits for a request under way to end."""

    async def poll() -> SignInTokens | None:
        return await trio.to_thread.run_sync(poll_device_sign_in, http, auth_base_url, device)

    return await poll_until_done(poll, device.interval, device.seconds_left())
