"""`GET /v1/models` and `GET /v1/models/{id}`: the Pool's merged catalog (the same one the
Codex backend route serves) in the OpenAI list shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import trio

from pooler.errors import NotFound, PoolerError, ServiceUnavailable
from pooler.web.asgi import Receive, Scope, Send, send_error, send_json
from pooler.web.key_policy import model_allowed
from pooler.web.openai_v1.auth import authenticate_v1

if TYPE_CHECKING:
    from pooler.web.catalog import MergedCatalog
    from pooler.web.gateway import Gateway

MODELS_PATH = "/v1/models"
MODEL_PREFIX = MODELS_PATH + "/"
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            key, pool = authenticate_v1(self.gw, scope)
            catalog = model_objects(await self._catalog(pool.pool_id))
            models = [m for m in catalog if model_allowed(key, m["id"])]  # the key's own
            path: str = scope["path"]
            if path.startswith(MODEL_PREFIX):
                wanted = path.removeprefix(MODEL_PREFIX)
                found = next((m for m in models if m["id"] == wanted), None)
                if found is None:
                    raise NotFound(f"The model '{wanted}' does not exist", code="model_not_found")
                await send_json(send, 200, found)
                return
            await send_json(send, 200, {"object": "list", "data": models})
        except PoolerError as error:
            await send_error(send, error)

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
