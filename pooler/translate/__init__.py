"""OpenAI-compatible /v1 bodies ↔ the Codex Responses protocol: pure translations.

Requests: `chat_to_responses`, `normalize_responses_request`, `images_generation_request`
and `images_edit_request` each validate a public body and return a `NormalizedRequest`
(the upstream body, always `stream: true`/`store: false`, plus what the gateway needs to
answer: the client's model, whether it streams, whether it wants usage, what was dropped).
They raise `pooler.errors.BadRequest` subclasses naming the field (`param`).

Responses: `ChatStreamTranslator` (events → `chat.completion.chunk`s),
`chat_completion_from_response` / `collect_chat_completion`, `public_event` /
`public_response` / `collect_response` for /v1/responses, and `images_response`.
No I/O, no trio, no gateway imports.
"""

from pooler.translate.chat_request import chat_to_responses
from pooler.translate.chat_response import (
    DONE_EVENT,
    ChatStreamTranslator,
    chat_completion_from_response,
    chat_usage,
    collect_chat_completion,
    encode_chunk,
)
from pooler.translate.common import NormalizedRequest
from pooler.translate.failures import UpstreamFailure, failure_of_event
from pooler.translate.images import (
    ImageInput,
    collect_images_response,
    images_edit_request,
    images_generation_request,
    images_response,
)
from pooler.translate.responses_request import normalize_responses_request
from pooler.translate.responses_response import (
    collect_response,
    is_public_event_type,
    public_event,
    public_response,
)

__all__ = [
    "DONE_EVENT",
    "ChatStreamTranslator",
    "ImageInput",
    "NormalizedRequest",
    "UpstreamFailure",
    "chat_completion_from_response",
    "chat_to_responses",
    "chat_usage",
    "collect_chat_completion",
    "collect_images_response",
    "collect_response",
    "encode_chunk",
    "failure_of_event",
    "images_edit_request",
    "images_generation_request",
    "images_response",
    "is_public_event_type",
    "normalize_responses_request",
    "public_event",
    "public_response",
]
