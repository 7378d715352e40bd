"""An upstream failure as a public client may see it: sanitized code and message. Pure.

The upstream's own error text can name the account's plan or quota, so a client gets it
only for codes about its own request (`context_length_exceeded`, `invalid_prompt`, ...);
other failures read "upstream request failed". A code is kept when it is a short token
(at most 80 of `[A-Za-z0-9_.-]`), else it becomes `upstream_error`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pooler.errors import BadRequest, ImageGenerationFailed, PoolerError, UpstreamError

__all__ = ["UpstreamFailure", "failure_of_event"]

_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
GENERIC_MESSAGE = "upstream request failed"
# Failures caused by the request itself: the client can act on the upstream's words.
CLIENT_CODES = frozenset(
    {"context_length_exceeded", "invalid_prompt", "cyber_policy", "invalid_image", "bad_request"}
)


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    code: str
    message: str

    @classmethod
    def sanitized(cls, code: Any, message: Any) -> UpstreamFailure:
        clean = code if isinstance(code, str) and _CODE.match(code) else "upstream_error"
        if clean in CLIENT_CODES and isinstance(message, str) and message:
            return cls(clean, message)
        return cls(clean, GENERIC_MESSAGE)

    @property
    def error_type(self) -> str:
        return "invalid_request_error" if self.code in CLIENT_CODES else "server_error"

    def body(self) -> dict[str, Any]:
        """`{"error": {...}}`: as an SSE `data:` payload it makes the OpenAI SDKs raise."""
        error = {"message": self.message, "type": self.error_type, "code": self.code}
        return {"error": {**error, "param": None}}

    def to_error(self, *, images: bool = False) -> PoolerError:
        """The HTTP error to answer with when nothing has reached the client yet."""
        if self.code in CLIENT_CODES:
            return BadRequest(self.message, code=self.code)
        if images:
            return ImageGenerationFailed(self.message)
        return UpstreamError(self.message, code=self.code)


def failure_of_event(event: Mapping[str, Any]) -> UpstreamFailure:
    """The failure a `response.failed` or `error` event reports (protocol §4.1, §8.2)."""
    response = event.get("response")
    error = response.get("error") if isinstance(response, Mapping) else None
    if not isinstance(error, Mapping):
        nested = event.get("error")
        error = nested if isinstance(nested, Mapping) else event
    code = error.get("code") or error.get("type")
    if code == "error":  # a bare `{"type":"error"}` event names no code
        code = None
    return UpstreamFailure.sanitized(code, error.get("message"))
