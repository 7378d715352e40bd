"""Emails as the MCP tools show them: enough to recognise, not to harvest."""

from __future__ import annotations


def mask_email(email: str | None) -> str | None:
    """`jane.doe@example.com` -> `j***e@example.com`; None stays None."""
    if email is None:
        return None
    local, at, domain = email.partition("@")
    if not at:
        return "***"
    shown = local[0] + "***" + local[-1] if len(local) > 2 else local[:1] + "***"
    return f"{shown}@{domain}"
