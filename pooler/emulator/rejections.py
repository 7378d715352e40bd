"""Error answers of the fake backend and auth server, in the shapes the real ones use."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Rejection:
    status: int
    error: dict[str, Any]
    headers: Headers = field(default_factory=list)

    @property
    def code(self) -> str | None:
        code = self.error.get("code")
        return code if isinstance(code, str) else None

    def body(self) -> bytes:
        return json.dumps({"error": self.error}, separators=(",", ":")).encode()


def rejection(
    status: int,
    code: str | None,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    headers: Headers | None = None,
    **extra: Any,
) -> Rejection:
    error = {"message": message, "type": error_type, "code": code, "param": param, **extra}
    return Rejection(status, error, headers or [])


def usage_limit_reached(plan_type: str, resets_at: int, now: float, headers: Headers) -> Rejection:
    resets_in = max(0, int(resets_at - now))
    return rejection(
        429,
        "usage_limit_reached",
        "The usage limit has been reached",
        error_type="usage_limit_reached",
        headers=headers,
        plan_type=plan_type,
        resets_at=resets_at,
        resets_in_seconds=resets_in,
    )


def rate_limit_exceeded(retry_after: int = 1) -> Rejection:
    return rejection(
        429,
        "rate_limit_exceeded",
        f"Rate limit reached. Please try again in {retry_after}s.",
        error_type="rate_limit_exceeded",
        headers=[(b"retry-after", str(retry_after).encode())],
    )


def server_error() -> Rejection:
    return rejection(
        500,
        "server_error",
        "An error occurred while processing your request.",
        error_type="server_error",
    )


def unauthorized(code: str, message: str) -> Rejection:
    return rejection(401, code, message)


def not_found(path: str) -> Rejection:
    return rejection(404, "not_found", f"No route for {path}", error_type="not_found_error")


def method_not_allowed(method: str, path: str) -> Rejection:
    return rejection(405, "method_not_allowed", f"{method} is not allowed on {path}")


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> Rejection:
    return rejection(400, code, message, param=param)


def websocket_upgrade_required() -> Rejection:
    return rejection(
        426,
        "websocket_upgrade_required",
        "Websockets are not available here; use HTTP.",
    )
