"""What an operator password must be: 12 to 128 characters and not one of the 10,000 most
common passwords (the list ships as `pooler/data/common_passwords.txt`; its first line says
where it came from). Pure: the list is read once from the package.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Final

MIN_PASSWORD_LEN: Final = 12
MAX_PASSWORD_LEN: Final = 128


class PasswordRefused(ValueError):
    """A password the policy refuses; the message says why (never the password)."""


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = resources.files("pooler").joinpath("data/common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line and not line.startswith("#")
    )


def check_password(password: str) -> str:
    """`password` if the policy takes it, else PasswordRefused."""
    if len(password) < MIN_PASSWORD_LEN:
        raise PasswordRefused(f"a password has at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise PasswordRefused(f"a password has at most {MAX_PASSWORD_LEN} characters")
    if password.strip().lower() in common_passwords():
        raise PasswordRefused("this password is one of the most common ones; choose another")
    return password
