"""The model catalog cache: per-account lists from the emulator, the Pool's merged catalog
served from memory with a weak ETag, and routing only to accounts that serve the model."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from harness import open_stack, responses_body

SPECIAL = "gpt-x-special"


async def test_model_support_routes_and_merges_the_catalog(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for label, models in (
            ("account-1", ["gpt-5.5", SPECIAL]),
            ("account-2", [SPECIAL, "gpt-5.4"]),
            ("account-3", ["gpt-5.5"]),
        ):
            await stack.control("POST", "accounts", {"account_id": label, "models": models})
        gateway = stack.gateway
        with trio.fail_after(20):
            await gateway.catalog.refresh()
            ids = await stack.account_ids()
            third = gateway.pool_supervisor.accounts[ids["account-3"]]
            while third.snapshot.models != frozenset({"gpt5.5"}):
                await trio.sleep(0.01)
            await stack.control("POST", "reset")
            for label, models in (
                ("account-1", ["gpt-5.5", SPECIAL]),
                ("account-2", [SPECIAL, "gpt-5.4"]),
                ("account-3", ["gpt-5.5"]),
            ):
                await stack.control("POST", "accounts", {"account_id": label, "models": models})
            for _ in range(9):
                response = await client.post(
                    "/backend-api/codex/responses", json=responses_body(model=SPECIAL)
                )
                assert response.status_code == 200, response.text
        served = {stack.label_of(r["account_id"]) for r in await stack.upstream_requests()}
        assert served and served <= {"account-1", "account-2"}

        response = await client.get("/backend-api/codex/models?client_version=0.169.0")
        assert response.status_code == 200, response.text
        slugs = [model["slug"] for model in response.json()["models"]]
        assert sorted(slugs) == sorted(["gpt-5.5", SPECIAL, "gpt-5.4"])
        assert len(slugs) == len(set(slugs))
        etag = response.headers["etag"]
        assert etag.startswith('W/"')
        assert not await stack.upstream_requests("/models")  # served from memory
        cached = await client.get(
            "/backend-api/codex/v1/models", headers={"if-none-match": etag.removeprefix("W/")}
        )
        assert cached.status_code == 304
        assert cached.headers["etag"] == etag
        # The next refresh is conditional: the upstream answers 304, the catalog stays.
        with trio.fail_after(20):
            await gateway.catalog.refresh()
        assert {r["status"] for r in await stack.upstream_requests("/models")} == {304}
        again = await client.get("/backend-api/codex/models", headers={"if-none-match": etag})
        assert again.status_code == 304


async def test_the_emulator_serves_per_account_models(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.control("POST", "accounts", {"account_id": "account-1", "models": [SPECIAL]})
        account = stack.emulator.find_account("account-1")
        assert account is not None and account.models == (SPECIAL,)
        rejected = stack.emulator.admit_response(account, 0.0, "gpt-5.5")[0]
        assert rejected is not None and rejected.status == 400
        assert rejected.code == "model_not_found"
        assert stack.emulator.admit_response(account, 0.0, SPECIAL)[0] is None
        headers = {
            "authorization": f"Bearer {account.access_token}",
            "chatgpt-account-id": account.account_id,
        }
        async with httpx.AsyncClient(base_url=stack.emulator_url, headers=headers) as upstream:
            url = "/backend-api/codex/models?client_version=0.169.0"
            listed = await upstream.get(url)
            assert [x["slug"] for x in listed.json()["models"]] == [SPECIAL]
            etag = listed.headers["etag"]
            assert (await upstream.get(url, headers={"if-none-match": etag})).status_code == 304
        await stack.control("POST", "reset")
        assert account.models is None


async def test_responses_carry_the_pools_catalog_etag(db_url: str, tmp_path: Path) -> None:
    """The CLI refetches `/models` when `x-models-etag` on a turn differs from the ETag its
    `/models` came with: every turn carries the Pool's merged ETag, not an account's."""
    import json

    import trio_websocket

    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(20):
            await stack.gateway.catalog.refresh()
            models = await client.get("/backend-api/codex/models?client_version=0.169.0")
            etag = models.headers["etag"]
            async with client.stream(
                "POST", "/backend-api/codex/responses", json=responses_body()
            ) as streamed:
                assert streamed.headers["x-models-etag"] == etag
            collected = await client.post(
                "/backend-api/codex/responses", json={**responses_body(), "stream": False}
            )
            assert collected.headers["x-models-etag"] == etag
            compact = await client.post(
                "/backend-api/codex/responses/compact",
                json={"model": "gpt-5.5", "input": responses_body()["input"]},
            )
            assert compact.status_code == 200, compact.text
            assert compact.headers["x-models-etag"] == etag
            url = str(stack.url).replace("http://", "ws://") + "/backend-api/codex/responses"
            auth = [(b"authorization", f"Bearer {stack.key}".encode())]
            async with trio_websocket.open_websocket_url(url, extra_headers=auth) as ws:
                handshake = dict(ws.handshake_headers)
                assert handshake[b"x-models-etag"].decode() == etag
                await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
                while json.loads(await ws.get_message())["type"] != "response.completed":
                    pass
