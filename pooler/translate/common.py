"""What every /v1 request translation returns, and the field checks they share. Pure.

Every check raises a `BadRequest` whose `param` names the offending field with a path
(`messages[2].content[0].image_url`), so a client sees exactly what to fix:
`UnsupportedParameter` (code `unsupported_parameter`) for a field the gateway cannot
honour, plain `BadRequest` (code `invalid_request`) for a malformed one.

A field whose value is JSON `null` counts as absent everywhere: some clients send every
known key and null the ones they do not use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pooler.errors import BadRequest, UnsupportedParameter

__all__ = [
    "NormalizedRequest",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_object",
    "check_string",
    "check_string_map",
    "invalid",
    "present",
    "reject_unknown",
    "service_tier",
    "unsupported",
]

SERVICE_TIERS = ("auto", "default", "flex", "priority", "scale", "fast")


@dataclass(frozen=True, slots=True)
class NormalizedRequest:
    """A public /v1 request turned into the Codex `/responses` body to send upstream.

    `body` always has `stream: true` and `store: false` (the gateway collects the stream
    for clients that did not ask to stream). `model` is the model the client named, to
    echo back. `include_usage` is chat's `stream_options.include_usage`. `dropped` lists
    the client's parameters that were accepted but not forwarded (for the request log or
    a warning header), in the order they appear in `DROPPED` tables.
    """

    body: dict[str, Any]
    model: str
    client_stream: bool
    include_usage: bool = False
    dropped: tuple[str, ...] = ()


def unsupported(param: str, message: str | None = None) -> UnsupportedParameter:
    text = message or f"Unsupported parameter: '{param}' is not supported by this gateway."
    return UnsupportedParameter(text, param=param)


def invalid(param: str, message: str) -> BadRequest:
    return BadRequest(message, param=param)


def present(body: Mapping[str, Any], key: str) -> bool:
    return body.get(key) is not None


def reject_unknown(
    body: Mapping[str, Any],
    allowed: frozenset[str],
    neutral: Mapping[str, Callable[[Any], bool]],
) -> None:
    """Raise `unsupported_parameter` for the first key neither allowed nor at a no-op value.

    `neutral[key](value)` says whether a value changes nothing (`n: 1`, `logprobs: false`),
    which is accepted even though the feature itself is not.
    """
    for key, value in body.items():
        if value is None or key in allowed:
            continue
        accepts = neutral.get(key)
        if accepts is not None and accepts(value):
            continue
        raise unsupported(key)


def check_object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(param, f"'{param}' must be an object.")
    return value


def check_string(value: Any, param: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise invalid(param, f"'{param}' must be a non-empty string.")
    return value


def check_choice(value: Any, param: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise invalid(param, f"'{param}' must be one of: {', '.join(choices)}.")
    return value


def check_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(param, f"'{param}' must be a boolean.")
    return value


def check_int(value: Any, param: str, low: int, high: int | None = None) -> int:
    """An integer in [low, high]; a form field's digit string counts (multipart bodies)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f" between {low} and {high}" if high is not None else f" >= {low}"
        raise invalid(param, f"'{param}' must be an integer{bound}.")
    return int(value)


def check_number(value: Any, param: str, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not low <= value <= high:
        raise invalid(param, f"'{param}' must be a number between {low:g} and {high:g}.")
    return float(value)


def check_string_map(value: Any, param: str) -> dict[str, str]:
    mapping = check_object(value, param)
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise invalid(f"{param}.{key}", f"'{param}' values must be strings.")
    return mapping


def service_tier(value: Any) -> str | None:
    """The tier to forward: `auto`/`default` mean "no preference" and are not sent; Codex
    sends its "fast" mode as `priority`, so `fast` is an alias of it."""
    tier = check_choice(value, "service_tier", SERVICE_TIERS)
    if tier in ("auto", "default"):
        return None
    return "priority" if tier == "fast" else tier
