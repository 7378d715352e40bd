"""A Responses request body as the gateway reads it: a JSON object with a string `model`,
written back when a policy changed it, and the streaming form the upstream is always
asked for. Pure: bytes in, bytes or dicts out."""

from __future__ import annotations

from typing import Any

import orjson

from pooler.errors import BadRequest, InvalidJson


def parse_object(body: bytes | str, what: str = "the request body") -> dict[str, Any]:
    """`body` (a request body or a websocket frame) as a JSON object, else InvalidJson."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"{what} is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidJson(f"{what} must be a JSON object")
    return payload


def dump_payload(payload: dict[str, Any]) -> bytes:
    """A client's parsed payload written back as JSON. orjson reads 1,024 levels of nesting
    but writes only 254: a body between the two is the client's error, not ours."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise InvalidJson("the request body is nested too deeply") from exc


def parse_payload(body: bytes) -> dict[str, Any]:
    """A Responses body: a JSON object with a non-empty string `model`."""
    payload = parse_object(body)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", param="model")
    return payload


def is_compaction(payload: dict[str, Any]) -> bool:
    """A turn asking the server to compact: its input holds a `compaction_trigger` item."""
    items = payload.get("input")
    return isinstance(items, list) and any(
        isinstance(item, dict) and item.get("type") == "compaction_trigger" for item in items
    )


def streaming_body(body: bytes, payload: dict[str, Any]) -> bytes:
    """The body asking the upstream to stream. Bytes are kept as the client sent them where
    possible (the key is added in front); only an explicit `"stream": false` is rewritten."""
    if "stream" not in payload:
        start = body.index(b"{") + 1
        rest = body[start:].lstrip()
        separator = b"" if rest.startswith(b"}") else b","
        return body[:start] + b'"stream":true' + separator + body[start:]
    payload["stream"] = True
    return dump_payload(payload)
