"""Reading a `/responses` request: body decoding, validation, the turn to answer. Pure."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import zstandard

from pooler.emulator import rejections as rj
from pooler.emulator.accounts import FakeAccount
from pooler.emulator.events import SENT_AT, Turn, pad_text
from pooler.emulator.prompt_cache import BYTES_PER_TOKEN, Context, Prefix, prompt_chain
from pooler.emulator.replies import Reply, TextReply, decide_reply

DEFAULT_MODEL = "gpt-5.5"
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_DELTAS = 100_000
REASONING_TOKENS = 16
SESSION_HEADERS = (b"session-id", b"session_id")
SESSION_TAG_CHARS = 12


def decode_body(raw: bytes, content_encoding: str | None) -> bytes | rj.Rejection:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "zstd":
        return rj.bad_request(
            f"Unsupported Content-Encoding {encoding!r}", code="unsupported_encoding"
        )
    try:
        reader = zstandard.ZstdDecompressor().decompressobj()
        data = reader.decompress(raw)
    except zstandard.ZstdError:
        return rj.bad_request("The zstd request body could not be decoded", code="invalid_body")
    if len(data) > MAX_BODY_BYTES:
        return rj.bad_request("The request body is too large", code="request_too_large")
    return data


def parse_object(data: bytes) -> dict[str, Any] | rj.Rejection:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return rj.bad_request(
            "We could not parse the JSON body of your request.", code="invalid_json"
        )
    if not isinstance(body, dict):
        return rj.bad_request("The request body must be a JSON object.", code="invalid_json")
    return body


# The shapes a Responses body's top-level fields must have, with the words the upstream
# uses for them ("Invalid type for 'input': expected one of a string or array of input
# items, but got an integer instead.").
FIELD_SHAPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "input": ((str, list), "one of a string or array of input items"),
    "instructions": ((str,), "a string"),
    "tools": ((list,), "an array"),
    "previous_response_id": ((str,), "a string"),
}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, as the upstream's messages say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def validate_shape(body: dict[str, Any]) -> rj.Rejection | None:
    """The upstream's own 400 for a malformed Responses body (HTTP, websocket, compact):
    a missing model, or a top-level field of the wrong type."""
    if "model" not in body:
        return rj.bad_request(
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    for name, (types, expected) in FIELD_SHAPES.items():
        value = body.get(name)
        if name not in body or isinstance(value, types):
            continue
        if value is None and name != "model":
            continue  # an explicit null is an absent optional field
        return rj.bad_request(
            f"Invalid type for '{name}': expected {expected}, but got {json_type(value)} instead.",
            param=name,
            code="invalid_type",
        )
    return None


def validate_http(body: dict[str, Any]) -> rj.Rejection | None:
    """A well-formed body; and the ChatGPT backend only streams and never stores."""
    malformed = validate_shape(body)
    if malformed is not None:
        return malformed
    if body.get("stream") is not True:
        return rj.bad_request("Stream must be set to true", param="stream")
    if body.get("store") is True:
        return rj.bad_request("Store must be set to false", param="store")
    return None


MAX_END_DELAY_S = 60.0


@dataclass(frozen=True)
class Knobs:
    """Test knobs (headers or metadata): `x-emulator-delay-ms` (a pause before each event),
    `x-emulator-events` (N text deltas), `x-emulator-quiet-headers` (no quota headers),
    `x-emulator-rate-limits-event` (`codex.rate_limits` events first on an SSE stream) and
    `x-emulator-end-delay-ms` (a pause between the last event and the end of the body, as a
    slow network may leave it) and `x-emulator-sent-at` (the terminal event's
    `response.metadata` says when it was sent: `ops/bench`'s paced extra times a path's
    tail from there, without the pacing's jitter)."""

    delay_s: float = 0.0
    end_delay_s: float = 0.0
    deltas: int | None = None
    quiet_headers: bool = False
    rate_limits_event: bool = False
    sent_at: bool = False


def knobs_from(headers: dict[bytes, str], body: dict[str, Any] | None = None) -> Knobs:
    """Headers win; `client_metadata` carries the same knobs through a gateway, which
    relays the body untouched but not unknown headers."""
    metadata = body.get("client_metadata") if body is not None else None
    meta = metadata if isinstance(metadata, dict) else {}

    def knob(name: str) -> str | None:
        return headers.get(name.encode()) or _text(meta.get(name))

    delay = _number(knob("x-emulator-delay-ms"))
    end_delay = _number(knob("x-emulator-end-delay-ms"))
    deltas = _number(knob("x-emulator-events"))
    return Knobs(
        delay_s=max(0.0, delay or 0.0) / 1000,
        end_delay_s=min(MAX_END_DELAY_S, max(0.0, end_delay or 0.0) / 1000),
        deltas=None if deltas is None else int(min(MAX_DELTAS, max(1, deltas))),
        quiet_headers=_flag(knob("x-emulator-quiet-headers")),
        rate_limits_event=_flag(knob("x-emulator-rate-limits-event")),
        sent_at=_flag(knob(SENT_AT)),
    )


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def body_sha256(raw: bytes) -> str:
    """The request log's fingerprint of a body: did it arrive byte for byte?"""
    return hashlib.sha256(raw).hexdigest()


def session_tag(headers: dict[bytes, str]) -> str | None:
    """A short hash of the `session-id` (or older `session_id`) header, for the request
    log: enough to follow a conversation across accounts, never the value itself."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return hashlib.sha256(value.encode("latin-1")).hexdigest()[:SESSION_TAG_CHARS]
    return None


@dataclass(frozen=True)
class PromptUse:
    """What a request's prompt cost on its account."""

    input_tokens: int
    cached_tokens: int
    end: Prefix  # the whole prompt


def read_prompt(
    body: dict[str, Any], body_bytes: int, account: FakeAccount, after: Context | None = None
) -> PromptUse:
    """Look the prompt's prefixes up in the account's cache, then remember them all."""
    chain = prompt_chain(body, after)
    cached = account.prompt_cache.lookup(chain)
    account.prompt_cache.store(chain)
    input_tokens = max(1, body_bytes // BYTES_PER_TOKEN, chain[-1].tokens)
    return PromptUse(input_tokens, min(cached, input_tokens), chain[-1])


def plan_turn(
    body: dict[str, Any], prompt: PromptUse, knobs: Knobs, now: float
) -> tuple[Reply, Turn]:
    """Decide the reply and usage of one response."""
    reply = decide_reply(body)
    deltas = 4
    if knobs.deltas is not None and isinstance(reply, TextReply):
        reply, deltas = TextReply(pad_text(reply.text, knobs.deltas)), knobs.deltas
    turn = Turn(
        response_id=new_id("resp"),
        model=model_of(body),
        created_at=int(now),
        input_tokens=prompt.input_tokens,
        cached_tokens=prompt.cached_tokens,
        reasoning_tokens=REASONING_TOKENS if _reasoning(body) else 0,
        deltas=deltas,
    )
    return reply, turn


def _reasoning(body: dict[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none")
