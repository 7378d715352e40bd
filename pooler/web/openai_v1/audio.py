"""`POST /v1/audio/transcriptions`: an OpenAI transcription request relayed to the Codex
backend's `POST /transcribe` (protocol §1.9) on a Pool account, with failover before the
answer, and its `{text}` answered as `json` or `text`.

The backend takes a multipart body with a `file` part and optional `prompt` and `language`
parts; `model` is checked and logged but not sent (the backend picks its model). The audio
is held in memory for the request only (bounded by `max_body_bytes`, and by the `audio`
bulkhead in number), never stored or logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import orjson

from pooler.actors import messages as m
from pooler.errors import BadRequest, UnsupportedParameter
from pooler.routing.circuit import CONTROL
from pooler.web.asgi import Scope, header, send_bytes, send_json
from pooler.web.attempts import Attempt, run_attempts
from pooler.web.leasing import LeaseAttempts, account_headers
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.openai_v1.backend_call import CallFailed, LeasedCall
from pooler.web.openai_v1.multipart import (
    Part,
    check_form_type,
    encode_form,
    form_parts,
    parts_by_name,
)
from pooler.web.quart_http import PUSHED, GatewayRequest
from pooler.web.request_body import read_form
from pooler.web.request_record import AnsweredRequest, RequestRecord, start_record
from pooler.web.upstream_exchange import forwarded_headers

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.gateway import Gateway

FIELDS: Final = frozenset({"file", "model", "language", "prompt", "response_format", "stream"})
FORMATS: Final = ("json", "text")
MAX_ANSWER: Final = 4 * 1024 * 1024
MAX_TEXT_FIELD: Final = 16 * 1024


def transcription_form(form: dict[str, Part]) -> tuple[str, list[Part], str]:
    """(model, the backend's parts, response format) of a checked OpenAI form."""
    for name in form:
        if name not in FIELDS:
            raise UnsupportedParameter(f"'{name}' is not supported here", param=name)
    audio = form.get("file")
    if audio is None or audio.filename is None:
        raise BadRequest("'file' is required (an audio file part)", param="file")
    if not audio.data:
        raise BadRequest("the audio file is empty", param="file")
    text = {name: _text(form[name]) for name in FIELDS - {"file"} if name in form}
    model = text.get("model", "")
    if not model:
        raise BadRequest("'model' is required", param="model")
    response_format = text.get("response_format", "json")
    if response_format not in FORMATS:
        raise UnsupportedParameter(
            f"response_format '{response_format}' is not supported (json or text)",
            param="response_format",
        )
    if text.get("stream", "false").lower() != "false":
        raise UnsupportedParameter("streamed transcriptions are not supported", param="stream")
    file_part = Part("file", audio.data, audio.filename, audio.content_type or "audio/wav")
    parts = [file_part]
    parts += [Part(name, text[name].encode()) for name in ("prompt", "language") if text.get(name)]
    return model, parts, response_format


def _text(part: Part) -> str:
    if part.filename is not None or len(part.data) > MAX_TEXT_FIELD:
        raise BadRequest(f"'{part.name}' must be a short text field", param=part.name)
    return part.text()


class V1TranscriptionsRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest) -> Response:
        gw, scope, send = self.gw, request.scope, request.send
        record = start_record(gw, scope, "v1_transcriptions", "http")
        extra = [(b"x-request-id", record.request_id.encode())]
        async with AnsweredRequest(record, send, extra, gw.log_request, request.body):
            key, pool = authenticate_v1(gw, scope)
            record.pool_id, record.key_prefix = pool.pool_id, key.prefix
            check_form_type(header(scope, b"content-type"))
            async with gw.admission.admit("audio"):  # bounds the audio held in memory
                form = parts_by_name(form_parts(*await read_form(gw, request)))
                model, parts, response_format = transcription_form(form)
                del form
                record.model = model
                text = await self._transcribe(scope, record, pool.pool_id, parts)
            record.finish(200, "completed")
            record.mark_first_byte()
            if response_format == "text":
                plain = [(b"content-type", b"text/plain; charset=utf-8"), *extra]
                record.response_bytes += await send_bytes(send, 200, text.encode(), plain)
            else:
                record.response_bytes += await send_json(send, 200, {"text": text}, extra)
        return PUSHED

    async def _transcribe(
        self, scope: Scope, record: RequestRecord, pool_id: str, parts: list[Part]
    ) -> str:
        gw = self.gw
        body, content_type = encode_form(parts)
        headers = forwarded_headers(scope["headers"], (b"content-type", content_type))
        texts: list[str] = []

        async def exchange(attempt: Attempt) -> None:
            call = LeasedCall(gw, attempt)
            try:
                answer = await call.exchange(
                    gw.backend_upstream,
                    "POST",
                    "/transcribe",
                    account_headers(attempt.lease, headers),
                    body,
                    max_answer=MAX_ANSWER,
                )
            except CallFailed as failure:
                if failure.failover:
                    return attempt.failed(failure.outcome, failure.code)
                raise failure.client_error() from None
            try:
                text = orjson.loads(answer.body).get("text")
            except (orjson.JSONDecodeError, AttributeError):
                text = None
            if not isinstance(text, str):
                raise call.fail(m.SERVER_ERROR, "invalid_upstream_response").client_error()
            call.succeeded(answer.status)
            texts.append(text)

        attempts = LeaseAttempts(pool_id, (), None, route_class=CONTROL)
        budget = gw.pool_policy(pool_id).retry_budget
        await run_attempts(gw, attempts, record, exchange, budget=budget)
        return texts[0]
