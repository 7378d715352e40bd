"""How a `/v1` answer reaches its client: the upstream's Codex events, translated.

The Responses route relays upstream bytes as they come for the Codex backend surface. For
`/v1` it hands each chunk to a presenter instead (`Presenter` in
`pooler.web.responses_relay`), which decodes the events and writes the
client's protocol: public Responses events (Codex-only ones left out) or Chat Completions
chunks. A client that did not ask for a stream gets the presenter's collected answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from pooler.protocol.sse import SSEDecoder, encode_sse
from pooler.protocol.stream_accounting import StreamAccounting
from pooler.translate import (
    DONE_EVENT,
    ChatStreamTranslator,
    UpstreamFailure,
    chat_completion_from_response,
    encode_chunk,
    images_response,
    public_event,
    public_response,
)
from pooler.translate.responses_response import stream_closed_error


def _events(decoder: SSEDecoder, chunk: bytes) -> list[dict[str, Any]]:
    events = []
    for data in decoder.feed_data(chunk):  # the data as bytes: no str per event
        if not data or data == b"[DONE]":
            continue
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            try:  # invalid UTF-8 reads as U+FFFD, as when the data was decoded first
                parsed = orjson.loads(data.decode("utf-8", "replace"))
            except orjson.JSONDecodeError:
                continue
        if isinstance(parsed, dict):
            events.append(parsed)
    return events


class ResponsesPresenter:
    """`/v1/responses`: the public event sequence, or the final `response` object."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._failed = False

    def translate(self, chunk: bytes) -> bytes:
        out = []
        for event in _events(self._decoder, chunk):
            shown = public_event(event)
            if shown is None:
                continue
            if shown.get("type") in ("response.failed", "error"):
                self._failed = True
            out.append(encode_sse(orjson.dumps(shown), str(shown["type"])))
        return b"".join(out)

    def failed(self, code: str, message: str) -> bytes:
        if self._failed:
            return b""
        self._failed = True
        failure = UpstreamFailure.sanitized(code, message)
        error = {"code": failure.code, "message": failure.message}
        event = {"type": "response.failed", "response": {"status": "failed", "error": error}}
        return encode_sse(orjson.dumps(event), "response.failed")

    def collected(self, accounting: StreamAccounting) -> dict[str, Any]:
        if accounting.terminal_type is None:
            raise stream_closed_error()
        return public_response(accounting.assembled_response())


class ChatPresenter:
    """`/v1/chat/completions`: `chat.completion.chunk`s then `[DONE]`, or one completion."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._decoder = SSEDecoder()
        self._model = model
        self._translator = ChatStreamTranslator(model=model, include_usage=include_usage)

    def translate(self, chunk: bytes) -> bytes:
        translator = self._translator
        if translator.done:
            return b""
        out: list[bytes] = []
        for event in _events(self._decoder, chunk):
            out.extend(encode_chunk(c) for c in translator.feed(event))
            if translator.done:
                if translator.send_done:
                    out.append(DONE_EVENT)
                break
        return b"".join(out)

    def failed(self, code: str, message: str) -> bytes:
        return b"".join(encode_chunk(c) for c in self._translator.abort(code, message))

    def collected(self, accounting: StreamAccounting) -> dict[str, Any]:
        if accounting.terminal_type is None:
            raise stream_closed_error()
        return chat_completion_from_response(accounting.assembled_response(), model=self._model)


class ImagesPresenter:
    """`/v1/images/*`: never streamed; the generated image as `{"data": [{"b64_json"}]}`."""

    def translate(self, chunk: bytes) -> bytes:
        return b""

    def failed(self, code: str, message: str) -> bytes:
        return b""

    def collected(self, accounting: StreamAccounting) -> dict[str, Any]:
        if accounting.terminal_type is None:
            raise stream_closed_error()
        return images_response(accounting.assembled_response())
