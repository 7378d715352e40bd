"""The emulator served by Hypercorn on a free port, driven over real sockets."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
import zstandard

from pooler.emulator import (
    EmulatorState,
    FakeAccount,
    auth_json_for,
    serve_emulator,
    write_auth_json_files,
)
from pooler.protocol.jwt import decode_jwt_claims

DEADLINE = 10
RESPONSES = "/backend-api/codex/responses"
Emulator = tuple[EmulatorState, int]


def auth(account: FakeAccount, token: str | None = None) -> dict[str, str]:
    return {
        "authorization": f"Bearer {token or account.access_token}",
        "chatgpt-account-id": account.account_id,
    }


def request_body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    content = [{"type": "input_text", "text": text}]
    return {
        "model": "gpt-5.5",
        "stream": True,
        "store": False,
        "input": [{"type": "message", "role": "user", "content": content}],
        **extra,
    }


async def read_events(response: httpx.Response) -> list[dict[str, Any]]:
    buffer, events = "", []
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            event = json.loads(lines["data"])
            assert lines["event"] == event["type"]
            events.append(event)
    return events


async def stream(
    client: httpx.AsyncClient, account: FakeAccount, body: dict[str, Any] | None = None
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    with trio.fail_after(DEADLINE):
        async with client.stream(
            "POST", RESPONSES, json=body or request_body(), headers=auth(account)
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return response, []
            return response, await read_events(response)


@pytest.fixture
async def emulator(nursery: trio.Nursery) -> Emulator:
    state = EmulatorState(accounts=2, percent_per_request=2.0)
    port = await nursery.start(serve_emulator, state)
    return state, port


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator[1]}") as c:
        yield c


async def arm(client: httpx.AsyncClient, account: FakeAccount, kind: str, **extra: Any) -> None:
    body = {"account_id": account.account_id, "kind": kind, **extra}
    response = await client.post("/_emulator/faults", json=body)
    assert response.status_code == 200, response.text


async def test_streamed_response_and_moving_headers(
    emulator: Emulator, client: httpx.AsyncClient
) -> None:
    state, _ = emulator
    account = state.accounts[0]
    first, events = await stream(client, account)
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/event-stream"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["id"].startswith("resp_")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello from the Codex emulator."
    assert first.headers["openai-model"] == "gpt-5.5"
    assert first.headers["x-request-id"] and first.headers["x-codex-turn-state"]
    assert first.headers["x-codex-primary-window-minutes"] == "300"
    assert first.headers["x-codex-secondary-window-minutes"] == "10080"
    assert first.headers["x-codex-credits-has-credits"] == "false"
    second, _ = await stream(client, account)
    before = float(first.headers["x-codex-primary-used-percent"])
    after = float(second.headers["x-codex-primary-used-percent"])
    assert after == before + 2.0
    assert float(second.headers["x-codex-secondary-used-percent"]) == pytest.approx(0.2)
    assert second.headers["x-codex-primary-reset-at"] == first.headers["x-codex-primary-reset-at"]
    other, _ = await stream(client, state.accounts[1])
    assert float(other.headers["x-codex-primary-used-percent"]) == 0


async def test_prompt_cache_and_usage(emulator: Emulator, client: httpx.AsyncClient) -> None:
    """A prefix cache per account: each turn hits its whole previous input, with or
    without `prompt_cache_key`; the same conversation on another account starts cold."""
    state = emulator[0]
    account, other = state.accounts
    body = request_body("x" * 4000, reasoning={"effort": "medium"})
    _, cold = await stream(client, account, body)
    cold_usage = cold[-1]["response"]["usage"]
    assert cold_usage["input_tokens"] >= 1000
    assert cold_usage["input_tokens_details"]["cached_tokens"] == 0
    body["input"] += [*cold[-1]["response"]["output"], request_body("next")["input"][0]]
    _, warm = await stream(client, account, body)
    warm_usage = warm[-1]["response"]["usage"]
    cached = warm_usage["input_tokens_details"]["cached_tokens"]
    assert 1000 <= cached < warm_usage["input_tokens"]
    assert warm_usage["output_tokens_details"]["reasoning_tokens"] > 0
    _, moved = await stream(client, other, body)
    assert moved[-1]["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 0


async def test_request_log_fingerprints_responses(
    emulator: Emulator, client: httpx.AsyncClient
) -> None:
    account = emulator[0].accounts[0]
    raw = json.dumps(request_body("y" * 2000), separators=(",", ":")).encode()
    headers = {**auth(account), "content-type": "application/json", "session-id": "thread-9"}
    for _ in range(2):
        with trio.fail_after(DEADLINE):
            response = await client.post(RESPONSES, content=raw, headers=headers)
        assert response.status_code == 200
    await arm(client, account, "server_error_500")
    assert (await client.post(RESPONSES, content=raw, headers=headers)).status_code == 500
    log = (await client.get("/_emulator/requests")).json()["requests"]
    assert [e["status"] for e in log] == [200, 200, 500]
    digest = hashlib.sha256(raw).hexdigest()
    assert all(e["body_sha256"] == digest for e in log)
    tags = {e["session_hash"] for e in log}
    assert len(tags) == 1 and None not in tags and "thread-9" not in json.dumps(log)
    assert log[0]["cached_tokens"] == 0 and log[0]["input_tokens"] == len(raw) // 4
    assert 400 < log[1]["cached_tokens"] <= log[1]["input_tokens"]
    assert log[2]["cached_tokens"] is None and log[2]["fault"] == "server_error_500"


async def test_tool_call_round_trip(emulator: Emulator, client: httpx.AsyncClient) -> None:
    account = emulator[0].accounts[0]
    tool = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
    body = request_body("please run `echo hello`", tools=[tool])
    _, events = await stream(client, account, body)
    call = events[-2]["item"]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {
        "cmd": "echo hello"
    }
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "hello\n"}
    body["input"] += [call, output]
    _, events = await stream(client, account, body)
    assert events[-2]["item"]["content"][0]["text"] == "Tool output: hello\n"


async def test_zstd_body_and_bad_bodies(emulator: Emulator, client: httpx.AsyncClient) -> None:
    account = emulator[0].accounts[0]
    raw = json.dumps(request_body("Reply with exactly: zipped")).encode()
    headers = {**auth(account), "content-encoding": "zstd", "content-type": "application/json"}
    compressed = zstandard.ZstdCompressor().compress(raw)
    with trio.fail_after(DEADLINE):
        async with client.stream("POST", RESPONSES, content=compressed, headers=headers) as r:
            assert r.status_code == 200
            events = await read_events(r)
    assert events[-2]["item"]["content"][0]["text"] == "zipped"
    no_stream = await client.post(
        RESPONSES, json={"model": "m", "input": "hi"}, headers=auth(account)
    )
    assert no_stream.status_code == 400
    assert no_stream.json()["error"]["param"] == "stream"
    assert no_stream.json()["error"]["type"] == "invalid_request_error"
    garbage = await client.post(RESPONSES, content=b"{nope", headers=auth(account))
    assert garbage.status_code == 400
    bad_zstd = await client.post(RESPONSES, content=b"not zstd", headers=headers)
    assert bad_zstd.status_code == 400


async def test_unauthorized_requests(emulator: Emulator, client: httpx.AsyncClient) -> None:
    a, b = emulator[0].accounts
    cases = [
        ({}, "invalid_token"),
        ({"authorization": "Bearer forged", "chatgpt-account-id": a.account_id}, "invalid_token"),
        ({**auth(a), "chatgpt-account-id": b.account_id}, "account_mismatch"),
        ({"authorization": f"Bearer {a.access_token}"}, "account_mismatch"),
    ]
    for headers, code in cases:
        response = await client.post(RESPONSES, json=request_body(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == {
            "message": response.json()["error"]["message"],
            "type": "invalid_request_error",
            "code": code,
            "param": None,
        }
    usage = await client.get("/backend-api/wham/usage", headers={})
    assert usage.status_code == 401


async def test_expired_token(nursery: trio.Nursery) -> None:
    state = EmulatorState(accounts=1, token_ttl=0)
    port = await nursery.start(serve_emulator, state)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
        account = state.accounts[0]
        r = await c.post(RESPONSES, json=request_body(), headers=auth(account))
        assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"


async def test_models_and_usage(emulator: Emulator, client: httpx.AsyncClient) -> None:
    account = emulator[0].accounts[0]
    url = "/backend-api/codex/models?client_version=0.169.0"
    response = await client.get(url, headers=auth(account))
    assert response.status_code == 200
    models = response.json()["models"]
    slugs = [m["slug"] for m in models]
    assert "gpt-5.5" in slugs and "gpt-5.4" in slugs
    required = {
        "slug", "display_name", "description", "supported_reasoning_levels", "shell_type",
        "visibility", "supported_in_api", "priority", "upgrade", "base_instructions",
        "supports_reasoning_summaries", "support_verbosity", "default_verbosity",
        "apply_patch_tool_type", "truncation_policy", "supports_parallel_tool_calls",
        "experimental_supported_tools",
    }  # fmt: skip
    assert all(required <= set(m) for m in models)
    etag = response.headers["etag"]
    cached = await client.get(url, headers={**auth(account), "if-none-match": etag})
    assert cached.status_code == 304
    missing = await client.get("/backend-api/codex/models", headers=auth(account))
    assert missing.status_code == 400
    await stream(client, account)
    usage = (await client.get("/backend-api/wham/usage", headers=auth(account))).json()
    assert usage["plan_type"] == "plus"
    assert usage["rate_limit"]["primary_window"]["used_percent"] == 2
    assert usage["rate_limit"]["primary_window"]["limit_window_seconds"] == 18000
    assert usage["rate_limit"]["secondary_window"]["limit_window_seconds"] == 604800
    assert (await client.get("/backend-api/nope")).status_code == 404
    assert (await client.get(RESPONSES, headers=auth(account))).status_code == 405


async def test_refresh_rotation(emulator: Emulator, client: httpx.AsyncClient) -> None:
    state = emulator[0]
    account = state.accounts[0]
    old_access, old_refresh = account.access_token, account.refresh_token
    body = {"client_id": "app_x", "grant_type": "refresh_token", "refresh_token": old_refresh}
    response = await client.post("/oauth/token", json=body)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) >= {"access_token", "id_token", "refresh_token", "expires_in"}
    assert tokens["refresh_token"] != old_refresh and tokens["access_token"] != old_access
    claims = decode_jwt_claims(tokens["access_token"])
    assert claims["https://api.openai.com/auth"]["chatgpt_account_id"] == account.account_id
    reused = await client.post("/oauth/token", json=body)
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "refresh_token_reused"
    unknown = await client.post("/oauth/token", json={**body, "refresh_token": "rt_unknown"})
    assert unknown.json()["error"]["code"] == "refresh_token_invalidated"
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert (await client.post("/oauth/token", data=form)).status_code == 200
    # both the new and (until its exp) the old access token work; the log says which
    await client.post("/_emulator/reset")
    await stream(client, account)
    with trio.fail_after(DEADLINE):
        async with client.stream(
            "POST", RESPONSES, json=request_body(), headers=auth(account, old_access)
        ) as r:
            assert r.status_code == 200
            await r.aread()
    log = (await client.get("/_emulator/requests")).json()["requests"]
    assert [entry["token_fresh"] for entry in log] == [True, False]
    assert all(set(e) >= {"time", "method", "path", "transport", "status"} for e in log)
    await arm(client, account, "refresh_token_reused")
    body["refresh_token"] = account.refresh_token
    assert (await client.post("/oauth/token", json=body)).json()["error"]["code"] == (
        "refresh_token_reused"
    )
    assert (await client.post("/oauth/token", json=body)).status_code == 200


async def test_status_faults(emulator: Emulator, client: httpx.AsyncClient) -> None:
    account = emulator[0].accounts[0]
    await arm(client, account, "usage_limit_429", times=2)
    for _ in range(2):
        response, _ = await stream(client, account)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["type"] == "usage_limit_reached" and error["plan_type"] == "plus"
        assert error["resets_at"] > 0 and error["resets_in_seconds"] > 0
        assert response.headers["x-codex-primary-used-percent"] == "100"
    assert (await stream(client, account))[0].status_code == 200
    await arm(client, account, "rate_limit_429")
    response, _ = await stream(client, account)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    await arm(client, account, "server_error_500")
    assert (await stream(client, account))[0].status_code == 500
    await arm(client, account, "unauthorized_401")
    assert (await stream(client, account))[0].status_code == 401
    assert (await stream(client, account))[0].status_code == 200
    bad = await client.post("/_emulator/faults", json={"account_id": "account-1", "kind": "x"})
    assert bad.status_code == 400
    bad = await client.post("/_emulator/faults", json={"account_id": "ghost", "kind": "stall"})
    assert bad.status_code == 400


async def test_stall_sends_nothing(emulator: Emulator, client: httpx.AsyncClient) -> None:
    account = emulator[0].accounts[0]
    await arm(client, account, "stall", stall_seconds=30)
    got_status = False
    with trio.move_on_after(0.5) as waited:
        async with client.stream("POST", RESPONSES, json=request_body(), headers=auth(account)):
            got_status = True
    assert waited.cancelled_caught and not got_status
    log = (await client.get("/_emulator/requests")).json()["requests"]
    assert log[-1]["fault"] == "stall" and log[-1]["status"] is None
    assert (await stream(client, account))[0].status_code == 200


async def test_disconnect_mid_stream(emulator: Emulator, client: httpx.AsyncClient) -> None:
    account = emulator[0].accounts[0]
    await arm(client, account, "disconnect_mid_stream")
    seen: list[str] = []
    with trio.fail_after(DEADLINE), pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", RESPONSES, json=request_body(), headers=auth(account)
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
    assert seen == ["response.created", "response.in_progress", "response.output_item.added"]
    assert (await stream(client, account))[1][-1]["type"] == "response.completed"


async def test_natural_quota_exhaustion_and_control_api(
    emulator: Emulator, client: httpx.AsyncClient
) -> None:
    state = emulator[0]
    account = state.accounts[1]
    accounts = (await client.get("/_emulator/accounts")).json()["accounts"]
    assert [a["label"] for a in accounts] == ["account-1", "account-2"]
    assert accounts[1]["account_id"] == account.account_id
    set_to = {"account_id": "account-2", "primary_used_percent": 99}
    assert (await client.post("/_emulator/usage", json=set_to)).status_code == 200
    assert (await stream(client, account))[0].status_code == 200  # 99 + 2 → full
    response, _ = await stream(client, account)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "usage_limit_reached"
    accounts = (await client.get("/_emulator/accounts")).json()["accounts"]
    assert accounts[1]["primary_used_percent"] == 100
    await arm(client, account, "server_error_500")
    assert (await client.post("/_emulator/reset")).json() == {"ok": True}
    assert (await client.get("/_emulator/requests")).json() == {"requests": []}
    assert (await client.get("/_emulator/faults")).json() == {"faults": []}
    assert (await stream(client, account))[0].status_code == 200


async def test_websocket_turns_and_426(emulator: Emulator) -> None:
    state, port = emulator
    account = state.accounts[0]
    url = f"ws://127.0.0.1:{port}{RESPONSES}"
    headers = [(k.encode(), v.encode()) for k, v in auth(account).items()]
    with trio.fail_after(DEADLINE):
        async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
            prewarm = request_body("", generate=False)
            await ws.send_message(json.dumps({"type": "response.create", **prewarm}))
            frames = [json.loads(await ws.get_message()) for _ in range(3)]
            assert [f["type"] for f in frames] == [
                "codex.rate_limits",
                "response.created",
                "response.completed",
            ]
            turn = request_body("Reply with exactly: ws ok")
            turn["previous_response_id"] = frames[-1]["response"]["id"]
            await ws.send_message(json.dumps({"type": "response.create", **turn}))
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] != "response.completed":
                events.append(json.loads(await ws.get_message()))
            assert events[-2]["item"]["content"][0]["text"] == "ws ok"
            usage = events[-1]["response"]["usage"]
            assert usage["input_tokens_details"]["cached_tokens"] > 0  # the prewarmed prefix
            turn = {"model": "gpt-5.5", "input": [request_body("again")["input"][0]]}
            turn["previous_response_id"] = events[-1]["response"]["id"]
            await ws.send_message(json.dumps({"type": "response.create", **turn}))
            events = []
            while not events or events[-1]["type"] != "response.completed":
                events.append(json.loads(await ws.get_message()))
            usage = events[-1]["response"]["usage"]
            assert usage["input_tokens_details"]["cached_tokens"] > 40  # the previous turn
            assert usage["input_tokens"] > usage["input_tokens_details"]["cached_tokens"]
            turn["previous_response_id"] = "resp_unknown"
            await ws.send_message(json.dumps({"type": "response.create", **turn}))
            error = json.loads(await ws.get_message())
            assert error["type"] == "error" and error["status"] == 400
            assert error["error"]["code"] == "previous_response_not_found"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await arm(client, account, "ws_upgrade_426")
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with trio_websocket.open_websocket_url(url, extra_headers=headers):
                    pass
            assert rejected.value.status_code == 426
            assert rejected.value.body is not None
            assert json.loads(rejected.value.body)["error"]["code"] == "websocket_upgrade_required"
            log = (await client.get("/_emulator/requests")).json()["requests"]
    assert [e["transport"] for e in log] == ["websocket"] * 6
    assert [e["status"] for e in log] == [101, 200, 200, 200, 400, 426]
    cached = [e.get("cached_tokens") for e in log]
    assert cached[1] == 0 and 0 < cached[2] < cached[3]
    assert cached[3] == usage["input_tokens_details"]["cached_tokens"]
    assert all(len(e["body_sha256"]) == 64 for e in log[1:5])


async def test_auth_json_files(emulator: Emulator, tmp_path: Path) -> None:
    state = emulator[0]
    paths = write_auth_json_files(state, tmp_path)
    assert paths == [tmp_path / "account-1" / "auth.json", tmp_path / "account-2" / "auth.json"]
    data = json.loads(paths[0].read_text())
    assert data == auth_json_for(state.accounts[0])
    assert data["auth_mode"] == "chatgpt" and data["OPENAI_API_KEY"] is None
    assert data["tokens"]["account_id"] == state.accounts[0].account_id
    assert data["last_refresh"].endswith("Z")
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o600


async def test_openai_sdk_streams_directly(emulator: Emulator) -> None:
    openai = pytest.importorskip("openai")
    state, port = emulator
    account = state.accounts[0]

    def run() -> list[str]:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/backend-api/codex",
            api_key=account.access_token,
            default_headers={"chatgpt-account-id": account.account_id},
            max_retries=0,
            timeout=DEADLINE,
        )
        events = client.responses.create(model="gpt-5.5", input="hi", stream=True, store=False)
        return [event.type for event in events]

    with trio.fail_after(DEADLINE * 2):
        types = await trio.to_thread.run_sync(run)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types


async def test_cli_entry_point_stops_on_sigterm(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from pooler.emulator import run_emulator_cli; "
        "run_emulator_cli('127.0.0.1', 0, 2, 3600.0, Path(sys.argv[1]), 2.0)"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with trio.fail_after(DEADLINE * 2):
        async with trio.open_nursery() as nursery:
            run = partial(
                trio.run_process,
                [sys.executable, "-c", code, str(tmp_path)],
                stdout=subprocess.PIPE,
                env=env,
                check=False,
            )
            process = await nursery.start(run)
            output = b""
            while output.count(b"\n") < 3:
                chunk = await process.stdout.receive_some()
                assert chunk, output
                output += chunk
            first = output.decode().splitlines()[0]
            assert first.startswith("emulator listening on http://127.0.0.1:")
            port = int(first.rsplit(":", 1)[1])
            async with httpx.AsyncClient() as c:
                r = await c.get(f"http://127.0.0.1:{port}/_emulator/accounts")
                assert len(r.json()["accounts"]) == 2
            assert (tmp_path / "account-2" / "auth.json").exists()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0


async def test_load_knobs_and_a_departed_client(
    emulator: Emulator, client: httpx.AsyncClient
) -> None:
    state = emulator[0]
    account = state.accounts[0]
    headers = {**auth(account), "x-emulator-events": "12", "x-emulator-delay-ms": "20"}
    started = trio.current_time()
    with trio.fail_after(DEADLINE):
        async with client.stream("POST", RESPONSES, json=request_body(), headers=headers) as r:
            events = await read_events(r)
    assert trio.current_time() - started >= 0.02 * len(events)
    assert sum(e["type"] == "response.output_text.delta" for e in events) == 12
    assert account.primary.used_percent == 2.0
    headers["x-emulator-delay-ms"] = "60"
    with trio.fail_after(DEADLINE):
        async with client.stream("POST", RESPONSES, json=request_body(), headers=headers) as r:
            async for _ in r.aiter_raw():
                break  # leave after the first event
        await trio.sleep(1.5)  # the whole stream (19 events) would have taken 1.14 s
    assert account.primary.used_percent == 2.0  # never completed


async def test_websocket_faults(emulator: Emulator, client: httpx.AsyncClient) -> None:
    state, port = emulator
    account = state.accounts[0]
    url = f"ws://127.0.0.1:{port}{RESPONSES}"
    headers = [(k.encode(), v.encode()) for k, v in auth(account).items()]
    create = json.dumps({"type": "response.create", **request_body()})
    await arm(client, account, "usage_limit_429")
    await arm(client, account, "disconnect_mid_stream")
    with trio.fail_after(DEADLINE):
        async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
            await ws.send_message(create)
            error = json.loads(await ws.get_message())
            assert error["type"] == "error" and error["status"] == 429
            assert error["error"]["type"] == "usage_limit_reached"
            assert error["headers"]["x-codex-primary-used-percent"] == "100"
            await ws.send_message(create)
            frames = [json.loads(await ws.get_message()) for _ in range(4)]
            assert frames[0]["type"] == "codex.rate_limits"
            assert [f["type"] for f in frames[1:]] == [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
            ]
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            reason = closed.value.reason
            assert reason is not None and reason.code == 1011
    bad = [(b"authorization", b"Bearer forged"), (b"chatgpt-account-id", b"x")]
    with trio.fail_after(DEADLINE), pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(url, extra_headers=bad):
            pass
    assert rejected.value.status_code == 401
