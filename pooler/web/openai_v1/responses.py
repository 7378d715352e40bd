"""`POST /v1/responses` and `POST /v1/chat/completions`: public bodies translated to a
Codex Responses request, relayed through the same leasing, failover, continuity and
accounting as the backend route, and answered in the client's own protocol."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pooler.errors import BadRequest
from pooler.protocol.responses_request import dump_payload, parse_object
from pooler.translate import (
    ImageInput,
    NormalizedRequest,
    chat_to_responses,
    images_edit_request,
    images_generation_request,
    normalize_responses_request,
)
from pooler.web.asgi import header
from pooler.web.key_policy import CHAT_EFFORT_PARAM, RESPONSES_EFFORT_PARAM, apply_key_policy
from pooler.web.keys import KeyInfo
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.openai_v1.multipart import Part, check_form_type, form_parts
from pooler.web.openai_v1.presenters import ChatPresenter, ImagesPresenter, ResponsesPresenter
from pooler.web.request_body import BODY, read_form, read_json_body
from pooler.web.request_record import RequestRecord
from pooler.web.responses_relay import Presenter, ProxiedRequest, ResponsesRelay

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest


class V1Request:
    """How a `/v1` route opens its request: a public body, translated to a Codex Responses
    request, whose answer its presenter gives back in the client's protocol. The relay
    (pooler/web/responses_relay.py) does the rest."""

    def __init__(
        self,
        gateway: Gateway,
        translate: Callable[[dict[str, Any]], NormalizedRequest],
        present: Callable[[NormalizedRequest], Presenter],
        effort_param: str = RESPONSES_EFFORT_PARAM,
    ) -> None:
        self.gw = gateway
        self._translate = translate
        self._present = present
        self._effort_param = effort_param

    async def open_request(self, request: GatewayRequest, record: RequestRecord) -> ProxiedRequest:
        gw = self.gw
        key, pool = authenticate_v1(gw, request.scope)
        record.pool_id, record.key_prefix = pool.pool_id, key.prefix
        async with gw.admission.admit(BODY):  # before the body costs memory
            payload = parse_object(await read_json_body(gw, request))
        normalized = self._translate(payload)
        record.stream = normalized.client_stream
        return self._proxied(key, pool.pool_id, normalized, record)

    def _proxied(
        self, key: KeyInfo, pool_id: str, normalized: NormalizedRequest, record: RequestRecord
    ) -> ProxiedRequest:
        """The upstream request, once the key's policy (models, reasoning effort) allows it."""
        payload = normalized.body
        record.model = payload["model"]  # what the upstream is asked for
        apply_key_policy(key, payload, effort_param=self._effort_param)
        return ProxiedRequest(pool_id, dump_payload(payload), payload, self._present(normalized))


class ImageEditsRequest(V1Request):
    """`POST /v1/images/edits`: a JSON body naming its images, or a multipart form with
    the images (`image`, or `image[]` repeated) and an optional `mask` as file parts."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway, self._json_edit, lambda _: ImagesPresenter())

    def _json_edit(self, body: dict[str, Any]) -> NormalizedRequest:
        return images_edit_request(body, host_model=self.gw.settings.images_host_model)

    async def open_request(self, request: GatewayRequest, record: RequestRecord) -> ProxiedRequest:
        content_type = header(request.scope, b"content-type") or b""
        if not content_type.lower().startswith(b"multipart/"):
            return await super().open_request(request, record)
        gw = self.gw
        key, pool = authenticate_v1(gw, request.scope)
        record.pool_id, record.key_prefix = pool.pool_id, key.prefix
        check_form_type(content_type)
        async with gw.admission.admit(BODY):
            parts = form_parts(*await read_form(gw, request))
        images = [_image(part) for part in parts if part.name in IMAGE_FIELDS]
        masks = [_image(part) for part in parts if part.name == "mask"]
        fields: dict[str, Any] = {}
        for part in parts:
            if part.name in fields or (part.name == "mask" and len(masks) > 1):
                raise BadRequest(f"the field '{part.name}' is given twice", param=part.name)
            if part.name not in IMAGE_FIELDS and part.name != "mask":
                fields[part.name] = part.text()
        mask = masks[0] if masks else None
        normalized = images_edit_request(
            fields, host_model=gw.settings.images_host_model, images=images, mask=mask
        )
        return self._proxied(key, pool.pool_id, normalized, record)


IMAGE_FIELDS = frozenset({"image", "image[]"})


def _image(part: Part) -> ImageInput:
    if part.filename is None:
        raise BadRequest(f"'{part.name}' must be an image file part", param=part.name)
    return ImageInput(part.data, part.content_type or "application/octet-stream", part.filename)


def v1_relays(gateway: Gateway) -> dict[str, ResponsesRelay]:
    """The Responses-shaped `/v1` routes by path."""
    responses = V1Request(gateway, normalize_responses_request, lambda _: ResponsesPresenter())
    chat = V1Request(
        gateway,
        chat_to_responses,
        lambda request: ChatPresenter(request.model, request.include_usage),
        CHAT_EFFORT_PARAM,
    )
    images = V1Request(
        gateway,
        partial(images_generation_request, host_model=gateway.settings.images_host_model),
        lambda _: ImagesPresenter(),
    )
    edits = ImageEditsRequest(gateway)
    routes = {
        "/v1/responses": ("v1_responses", responses),
        "/v1/chat/completions": ("v1_chat", chat),
        "/v1/images/generations": ("v1_images", images),
        "/v1/images/edits": ("v1_images", edits),
    }
    return {
        path: ResponsesRelay(gateway, route, opener.open_request)
        for path, (route, opener) in routes.items()
    }
