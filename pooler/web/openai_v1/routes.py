"""The `openai_v1` blueprint: the OpenAI-compatible surface under `/v1` (Responses, Chat
Completions, images, models, files, transcriptions, usage). Any other `/v1` path, or a
method a `/v1` path does not take, is one deterministic 404 after the key is checked
(`unsupported_v1`). The websocket side of `/v1/responses` is mounted by the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint

from pooler.web.openai_v1.audio import V1TranscriptionsRoute
from pooler.web.openai_v1.files import V1FilesRoute
from pooler.web.openai_v1.models import V1ModelsRoute
from pooler.web.openai_v1.responses import v1_relays
from pooler.web.openai_v1.unsupported import unsupported_v1
from pooler.web.openai_v1.usage import V1UsageRoute
from pooler.web.quart_http import current_request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart.wrappers import Response

    from pooler.web.gateway import Gateway
    from pooler.web.responses_relay import ResponsesRelay

EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def openai_v1_blueprint(gateway: Gateway) -> Blueprint:
    v1 = Blueprint("openai_v1", __name__, url_prefix="/v1")

    for path, relay in v1_relays(gateway).items():
        v1.add_url_rule(path.removeprefix("/v1"), path, _relay_view(relay), methods=["POST"])

    models = V1ModelsRoute(gateway)

    @v1.get("/models")
    async def model_list() -> Response:
        return await models(current_request())

    @v1.get("/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        return await models(current_request(), model_id)

    files = V1FilesRoute(gateway)

    @v1.route("/files", methods=["GET", "POST"])
    async def file_list() -> Response:
        return await files(current_request())

    @v1.route("/files/<path:file_path>", methods=["GET", "DELETE"])
    async def file(file_path: str) -> Response:
        return await files(current_request(), file_path)

    transcriptions = V1TranscriptionsRoute(gateway)

    @v1.post("/audio/transcriptions")
    async def transcribe() -> Response:
        return await transcriptions(current_request())

    usage = V1UsageRoute(gateway)

    @v1.get("/usage")
    async def key_usage() -> Response:
        return await usage(current_request())

    @v1.route("/<path:unknown>", methods=EVERY_METHOD)
    async def unsupported(unknown: str) -> Response:
        unsupported_v1(gateway, current_request())

    return v1


def _relay_view(relay: ResponsesRelay) -> Callable[[], Awaitable[Response]]:
    async def view() -> Response:
        return await relay(current_request())

    return view
