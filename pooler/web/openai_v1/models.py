"""`GET /v1/models` and `GET /v1/models/{id}`: the Pool's merged catalog (the same one the
Codex backend route serves) in the OpenAI list shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import trio

from pooler.errors import NotFound, ServiceUnavailable
from pooler.web.key_policy import model_allowed
from pooler.web.openai_v1.auth import authenticate_v1
from pooler.web.quart_http import json_response

if TYPE_CHECKING:
    from quart.wrappers import Response

    from pooler.web.catalog import MergedCatalog
    from pooler.web.gateway import Gateway
    from pooler.web.quart_http import GatewayRequest

FIRST_CATALOG_WAIT_S = 10.0
OWNER = "openai"


def model_objects(catalog: MergedCatalog) -> list[dict[str, Any]]:
    """One OpenAI `model` object per slug the Pool's accounts list (those not hidden from
    every picker: `visibility: none` models are internal)."""
    parsed = orjson.loads(catalog.body)
    models = parsed.get("models", []) if isinstance(parsed, dict) else []
    return [
        {"id": model["slug"], "object": "model", "created": 0, "owned_by": OWNER}
        for model in models
        if isinstance(model, dict)
        and isinstance(model.get("slug"), str)
        and model.get("visibility") != "none"
    ]


class V1ModelsRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: GatewayRequest, model_id: str | None = None) -> Response:
        """The list, or the one model `model_id` (`/v1/models/{id}`)."""
        key, pool = authenticate_v1(self.gw, request.scope)
        catalog = model_objects(await self._catalog(pool.pool_id))
        models = [m for m in catalog if model_allowed(key, m["id"])]  # the key's own
        if model_id is not None:
            found = next((m for m in models if m["id"] == model_id), None)
            if found is None:
                raise NotFound(f"The model '{model_id}' does not exist", code="model_not_found")
            return json_response(found)
        return json_response({"object": "list", "data": models})

    async def _catalog(self, pool_id: str) -> MergedCatalog:
        catalog = self.gw.catalog.for_pool(pool_id)
        if catalog is None:  # just started: fetch the accounts' lists once, briefly
            with trio.move_on_after(FIRST_CATALOG_WAIT_S):
                await self.gw.catalog.refresh()
            catalog = self.gw.catalog.for_pool(pool_id)
        if catalog is None:
            raise ServiceUnavailable(
                "the Pool's model catalog is not known yet", retry_after=FIRST_CATALOG_WAIT_S
            )
        return catalog
