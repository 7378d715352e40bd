"""The gateway's one exception tree, mapped to the client's protocol at each surface.

Each class carries its HTTP status, its OpenAI error `type` and a stable `code` (a raise may
name a more precise code); `body()` is the client's `{"error": {"message", "type", "code",
"param"}}`. tests/unit/test_error_tree.py keeps this drawing equal to the classes.

    (class, HTTP status, OpenAI error type, code)
    PoolerError                       500 server_error          internal_error
    ├── BadRequest                    400 invalid_request_error invalid_request
    │   ├── InvalidJson               400 invalid_request_error invalid_json
    │   ├── UnsupportedParameter      400 invalid_request_error unsupported_parameter
    │   ├── ReasoningEffortNotAllowed 400 invalid_request_error reasoning_effort_not_allowed
    │   ├── ModelNotFound             400 invalid_request_error model_not_found
    │   ├── RequestTimeout            408 invalid_request_error request_timeout
    │   ├── BodyTooLarge              413 invalid_request_error request_too_large
    │   └── UnsupportedMediaType      415 invalid_request_error unsupported_media_type
    ├── AuthError                     401 authentication_error  api_key_invalid
    │   ├── ApiKeyMissing             401 authentication_error  api_key_missing
    │   └── ApiKeyInvalid             401 authentication_error  api_key_invalid
    ├── PoolDisabled                  403 permission_error      pool_disabled
    ├── V1Disabled                    403 permission_error      v1_compatibility_disabled
    ├── ModelNotAllowed               403 permission_error      model_not_allowed
    ├── AccessDenied                  403 permission_error      access_denied
    ├── NotFound                      404 not_found_error       unsupported_endpoint
    │   └── UnsupportedEndpoint       404 invalid_request_error unsupported_endpoint
    ├── MethodNotAllowed              405 invalid_request_error method_not_allowed
    ├── PinnedContinuationUnavailable 409 invalid_request_error pinned_continuation_unavailable
    ├── WebsocketUnsupported          426 invalid_request_error websocket_unsupported
    ├── UsageLimitReached             429 usage_limit_reached   usage_limit_reached
    ├── UpstreamError                 502 server_error          upstream_error
    │   └── ImageGenerationFailed     502 server_error          image_generation_failed
    ├── NoEligibleBackend             503 server_error          no_eligible_backend
    ├── ServiceUnavailable            503 server_error          service_unavailable
    └── ServerOverloaded              503 server_error          server_is_overloaded

No httpx, h11 or psycopg exception reaches a handler: the edges map them into this tree.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any


class PoolerError(Exception):
    status = 500
    error_type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after = retry_after
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "param": self.param,
        }
        error.update(self.extra)
        return {"error": error}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body(), separators=(",", ":")).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            seconds = max(1, math.ceil(self.retry_after))
            headers.append((b"retry-after", str(seconds).encode()))
        return headers


class BadRequest(PoolerError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidJson(BadRequest):
    code = "invalid_json"


class UnsupportedParameter(BadRequest):
    """A /v1 request field the gateway cannot honour; `param` names it."""

    code = "unsupported_parameter"


class ReasoningEffortNotAllowed(BadRequest):
    """The requested reasoning effort is above the key's ceiling."""

    code = "reasoning_effort_not_allowed"


class ModelNotFound(BadRequest):
    """No account in the key's Pool serves the model; the message lists what it serves.
    (A model that is served but has no eligible account now is a 503 NoEligibleBackend.)
    400, not 404: the Codex CLI treats a 400 as final and retries a 404."""

    code = "model_not_found"
    MAX_SHOWN_CHARS = 100
    MAX_LISTED = 50

    def __init__(self, model: str, served: Sequence[str]) -> None:
        shown = model[: self.MAX_SHOWN_CHARS] + ("..." if len(model) > self.MAX_SHOWN_CHARS else "")
        listed = ", ".join(served[: self.MAX_LISTED]) + (
            ", ..." if len(served) > self.MAX_LISTED else ""
        )
        super().__init__(
            f"The model '{shown}' is not served by this Pool. It serves: {listed or 'none'}.",
            param="model",
        )


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


class BodyTooLarge(BadRequest):
    status = 413
    code = "request_too_large"


class RequestTimeout(BadRequest):
    """The request body did not arrive within its deadline; the rest is not read, and the
    answer closes the connection."""

    status = 408
    code = "request_timeout"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"connection", b"close")]


class AuthError(PoolerError):
    status = 401
    error_type = "authentication_error"
    code = "api_key_invalid"


class ApiKeyMissing(AuthError):
    code = "api_key_missing"


class ApiKeyInvalid(AuthError):
    code = "api_key_invalid"


class NotFound(PoolerError):
    status = 404
    error_type = "not_found_error"
    code = "unsupported_endpoint"


class UnsupportedEndpoint(NotFound):
    """A `/v1` path (or method) the gateway does not serve; the same answer for all."""

    error_type = "invalid_request_error"
    code = "unsupported_endpoint"

    def __init__(self) -> None:
        super().__init__("Unsupported OpenAI /v1 endpoint")


class PoolDisabled(PoolerError):
    """The key's Pool is disabled: its keys are refused until it is enabled again."""

    status = 403
    error_type = "permission_error"
    code = "pool_disabled"


class V1Disabled(PoolerError):
    """The key's Pool has turned the OpenAI-compatible `/v1` surface off."""

    status = 403
    error_type = "permission_error"
    code = "v1_compatibility_disabled"


class ModelNotAllowed(PoolerError):
    """The key may not use the requested model."""

    status = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class AccessDenied(PoolerError):
    """The client's address is not in the instance's ingress allowlist."""

    status = 403
    error_type = "permission_error"
    code = "access_denied"


class MethodNotAllowed(PoolerError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class WebsocketUnsupported(PoolerError):
    """A websocket handshake the gateway does not take (a path without websockets, or no
    account's upstream would open one): 426, which makes the Codex CLI fall back to HTTP at
    once rather than retry."""

    status = 426
    error_type = "invalid_request_error"
    code = "websocket_unsupported"

    def __init__(self, message: str = "websocket transport is not available; use HTTP") -> None:
        super().__init__(message)


class UsageLimitReached(PoolerError):
    """Every eligible account is out of quota; `resets_at` is the earliest reset."""

    status = 429
    error_type = "usage_limit_reached"
    code = "usage_limit_reached"

    def __init__(self, message: str, *, resets_at: float, plan_type: str | None = None) -> None:
        now = time.time()
        super().__init__(
            message,
            retry_after=max(1.0, resets_at - now),
            extra={
                "resets_at": int(resets_at),
                "resets_in_seconds": max(0, int(resets_at - now)),
                "plan_type": plan_type,
            },
        )
        self.resets_at = resets_at


class NoEligibleBackend(PoolerError):
    """No account of the Pool can take the request now (Retry-After when one will)."""

    status = 503
    error_type = "server_error"
    code = "no_eligible_backend"


class PinnedContinuationUnavailable(PoolerError):
    status = 409
    error_type = "invalid_request_error"
    code = "pinned_continuation_unavailable"


class UpstreamError(PoolerError):
    status = 502
    error_type = "server_error"
    code = "upstream_error"


class ImageGenerationFailed(UpstreamError):
    code = "image_generation_failed"


class ServiceUnavailable(PoolerError):
    status = 503
    error_type = "server_error"
    code = "service_unavailable"


class ServerOverloaded(PoolerError):
    """A route class's bulkhead is full (its queue, or the wait in it ran out)."""

    status = 503
    error_type = "server_error"
    code = "server_is_overloaded"

    def __init__(
        self,
        message: str = "the gateway is overloaded; retry shortly",
        *,
        retry_after: float = 1.0,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
