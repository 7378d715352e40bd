"""A model the Pool does not serve is a model error, the same on every route (issue 11,
item 13): 400 `model_not_found` naming the model and listing what the Pool serves, never
sent upstream; a served model with no eligible account stays a 503. And an upstream 4xx
(the emulator refuses malformed bodies as the real backend does) is relayed as is, from
one upstream attempt, without failover and without counting against the account."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket
from harness import Stack, message, open_stack, responses_body
from routing_support import log_row, pause, set_instance_settings, snapshot_of

from pooler.actors import messages as m

UNKNOWN = "gpt-nope-1"
DEADLINE = 30


def ws_url(stack: Stack) -> str:
    return str(stack.url).replace("http://", "ws://") + "/backend-api/codex/responses"


def served_by_pool(stack: Stack) -> list[str]:
    """What the Pool's accounts list (the slugs its /models shows), from the emulator."""
    catalog = stack.gateway.catalog.for_pool(next(iter(stack.gateway.pool_supervisor.pools)))
    assert catalog is not None
    return [m["slug"] for m in json.loads(catalog.body)["models"]]


def assert_model_not_found(response: httpx.Response, model: str, served: list[str]) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert f"'{model}'" in error["message"]
    assert all(slug in error["message"] for slug in served), error["message"]
    assert "retry-after" not in response.headers


async def ws_refusal(stack: Stack, model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A websocket turn for `model` (its in-band answer), then a turn for a served model
    on the same socket (its events)."""
    headers = [(b"authorization", f"Bearer {stack.key}".encode())]
    async with trio_websocket.open_websocket_url(ws_url(stack), extra_headers=headers) as ws:
        await ws.send_message(
            json.dumps({"type": "response.create", **responses_body(model=model)})
        )
        refusal = json.loads(await ws.get_message())
        await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "error"):
            events.append(json.loads(await ws.get_message()))
    return refusal, events


async def test_an_unknown_model_is_refused_alike_on_every_route(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            await stack.gateway.catalog.refresh()
            served = served_by_pool(stack)
            assert UNKNOWN not in served and "gpt-5.5" in served
            await stack.control("POST", "reset")  # forget the catalog fetches
            chat = {"model": UNKNOWN, "messages": [{"role": "user", "content": "hi"}]}
            calls = [
                ("/backend-api/codex/responses", responses_body(model=UNKNOWN)),
                (
                    "/backend-api/codex/responses",
                    {**responses_body(model=UNKNOWN), "stream": False},
                ),
                (
                    "/backend-api/codex/responses/compact",
                    {"model": UNKNOWN, "input": [message("x")]},
                ),
                ("/v1/responses", {"model": UNKNOWN, "input": "hi"}),
                ("/v1/responses", {"model": UNKNOWN, "input": "hi", "stream": True}),
                ("/v1/chat/completions", chat),
                ("/v1/chat/completions", {**chat, "stream": True}),
            ]
            for path, body in calls:
                response = await client.post(path, json=body)
                assert_model_not_found(response, UNKNOWN, served)
                row = await log_row(stack, response.headers["x-request-id"])
                assert (row["status_code"], row["error_code"]) == (400, "model_not_found")

            refusal, events = await ws_refusal(stack, UNKNOWN)
            assert (refusal["type"], refusal["status"]) == ("error", 400)
            assert refusal["error"]["code"] == "model_not_found"
            assert refusal["error"]["param"] == "model" and UNKNOWN in refusal["error"]["message"]
            assert events[-1]["type"] == "response.completed"  # the socket goes on
        # Nothing unknown went upstream: only the websocket's served turn did.
        turns = [r for r in await stack.upstream_requests() if r["method"] != "GET"]
        assert [r["transport"] for r in turns] == ["websocket"]


async def test_images_name_the_host_model_the_pool_lacks(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        for label in ("account-1", "account-2", "account-3"):
            await stack.control("POST", "accounts", {"account_id": label, "models": ["gpt-5.4"]})
        with trio.fail_after(DEADLINE):
            await stack.gateway.catalog.refresh()
            host = stack.gateway.settings.images_host_model
            assert served_by_pool(stack) == ["gpt-5.4"] and host != "gpt-5.4"
            response = await client.post("/v1/images/generations", json={"prompt": "a cat"})
        assert_model_not_found(response, host, ["gpt-5.4"])
        assert not await stack.upstream_requests()


async def test_a_served_model_without_an_eligible_account_stays_503(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            await stack.gateway.catalog.refresh()
            for label in ("account-1", "account-2", "account-3"):
                await pause(stack, label)
            served = await client.post("/backend-api/codex/responses", json=responses_body())
            unknown = await client.post(
                "/backend-api/codex/responses", json=responses_body(model=UNKNOWN)
            )
        assert served.status_code == 503 and served.json()["error"]["code"] == "no_eligible_backend"
        assert "retry-after" in served.headers
        assert_model_not_found(unknown, UNKNOWN, ["gpt-5.5"])


async def test_before_the_catalog_is_known_the_upstream_decides(
    db_url: str, tmp_path: Path
) -> None:
    """No account's list is known yet (or an active account's list is missing): nothing
    is refused by the gateway; the upstream's own 400 reaches the client, from one
    attempt, and the account's circuit does not count it."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await set_instance_settings(stack, circuit_failure_threshold=1)
        catalog = stack.gateway.catalog
        with trio.fail_after(DEADLINE):
            await catalog.refresh()
            ids = await stack.account_ids()
            # account-1's list is unknown (as for an account just added): it may serve it.
            del catalog.accounts[ids["account-1"]]
            catalog._merged.clear()
            handle = stack.gateway.pool_supervisor.accounts[ids["account-1"]]
            handle.mailbox.try_send(m.SetModels(None))
            while handle.snapshot.models is not None:
                await trio.sleep(0.01)
            await stack.control("POST", "reset")
            response = await client.post(
                "/backend-api/codex/responses", json=responses_body(model=UNKNOWN)
            )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "model_not_found"
        assert len(await stack.upstream_requests()) == 1


async def test_upstream_4xx_is_relayed_from_one_attempt(db_url: str, tmp_path: Path) -> None:
    """The emulator refuses malformed bodies with the upstream's 400; the gateway relays
    it without failing over, and the account's circuit (threshold 1 here) stays closed."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await set_instance_settings(stack, circuit_failure_threshold=1)
        malformed = [
            ({**responses_body(), "input": 5}, "input", "integer"),
            ({**responses_body(), "tools": {"type": "function"}}, "tools", "object"),
            ({**responses_body(), "stream": False, "input": 5}, "input", "integer"),
        ]
        with trio.fail_after(DEADLINE):
            for body, param, got in malformed:
                before = len(await stack.upstream_requests())
                response = await client.post("/backend-api/codex/responses", json=body)
                assert response.status_code == 400, response.text
                error = response.json()["error"]
                assert (error["type"], error["code"], error["param"]) == (
                    "invalid_request_error",
                    "invalid_type",
                    param,
                )
                assert f"but got {got} instead" in error["message"]
                tried = (await stack.upstream_requests())[before:]
                assert [r["status"] for r in tried] == [400]  # one attempt, no failover
                row = await log_row(stack, response.headers["x-request-id"])
                assert (row["status_code"], row["retries"]) == (400, 0)
                account_id = row["account_id"]
                handle = stack.gateway.pool_supervisor.accounts[str(account_id)]
                while handle.snapshot.in_flight:  # the lease is back with its account
                    await trio.sleep(0.01)
                circuit = snapshot_of(stack, str(account_id)).circuits.get("responses")
                assert circuit is None or circuit.open_until == 0.0
            # Compact and a websocket turn: the upstream's 400 as it words it, the socket on.
            compact = await client.post(
                "/backend-api/codex/responses/compact", json={"model": "gpt-5.5", "input": 5}
            )
            assert compact.status_code == 400, compact.text
            assert compact.json()["error"]["param"] == "input"
            headers = [(b"authorization", f"Bearer {stack.key}".encode())]
            async with trio_websocket.open_websocket_url(
                ws_url(stack), extra_headers=headers
            ) as ws:
                bad = {"type": "response.create", **responses_body(), "tools": "x"}
                await ws.send_message(json.dumps(bad))
                refusal = json.loads(await ws.get_message())
                assert (refusal["type"], refusal["status"]) == ("error", 400)
                assert refusal["error"]["code"] == "invalid_type"
                await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
                events: list[dict[str, Any]] = []
                while not events or events[-1]["type"] not in ("response.completed", "error"):
                    events.append(json.loads(await ws.get_message()))
                assert events[-1]["type"] == "response.completed"
            # Missing model: the gateway's own check, before any upstream call.
            before = len(await stack.upstream_requests())
            no_model = {k: v for k, v in responses_body().items() if k != "model"}
            response = await client.post("/backend-api/codex/responses", json=no_model)
            assert response.status_code == 400 and response.json()["error"]["param"] == "model"
            assert len(await stack.upstream_requests()) == before
