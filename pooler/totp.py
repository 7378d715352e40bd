"""The second factor's pure parts: TOTP secrets and codes (RFC 6238 via `pyotp`: 30 s steps,
6 digits, one step of clock drift either way), the QR code a phone scans (SVG rendered here,
no external service), and recovery codes (10 single-use codes of 10 random bytes).

Whether a code was used before is the store's business: `matching_step` says which time
step a code belongs to, and the store accepts it only past the last step it accepted.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from typing import Final

import pyotp
import segno

ISSUER: Final = "Codex Pooler"
STEP_S: Final = 30
DIGITS: Final = 6
DRIFT_STEPS: Final = 1
SECRET_BYTES: Final = 20
RECOVERY_CODES: Final = 10
RECOVERY_CODE_BYTES: Final = 10


def new_secret() -> str:
    """A new TOTP secret, base32 (160 bits, RFC 4226's recommended length)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode()


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=email, issuer_name=ISSUER
    )


def qr_svg(uri: str) -> str:
    """The QR code of `uri` as an inline SVG element (no text from `uri` appears in it, only
    modules, so it is safe to put in a page as is)."""
    svg: str = segno.make(uri, error="m").svg_inline(scale=5, border=2, title=None)
    return svg


def normalize_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (within DRIFT_STEPS of `now`) whose code is `code`, else None."""
    code = normalize_code(code)
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    current = int(now // STEP_S)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Fresh recovery codes as shown once: 16 base32 characters in groups of four."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = base64.b32encode(secrets.token_bytes(RECOVERY_CODE_BYTES)).decode().lower()
        codes.append("-".join(raw[i : i + 4] for i in range(0, len(raw), 4)))
    return codes


def looks_like_recovery_code(code: str) -> bool:
    normalized = normalize_code(code)
    return len(normalized) == 16 and normalized.isalnum()
