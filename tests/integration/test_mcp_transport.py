"""`/mcp`'s transport rules and hostile input: each refused in JSON-RPC with the status the
MCP transport names, and the next honest call still works."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import trio
from harness import open_stack
from mcp_support import ACCEPT, enable_instance, operator_token, post_mcp, rpc_error

from pooler.store.instance_settings import update_instance_settings

LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def task_count() -> int:
    """Every task in this trio run (the stack's server, actors and request handlers)."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += 1
            nurseries.extend(task.child_nurseries)
    return count


def call(name: str, arguments: object) -> dict[str, object]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}


async def test_transport_rules(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")

        async def refused(status: int, **kwargs: object) -> str:
            answer = await post_mcp(stack, LIST, token=token, **kwargs)  # type: ignore[arg-type]
            assert answer.status_code == status, (answer.status_code, answer.text)
            return str(rpc_error(answer)["message"])

        assert "Content-Type" in await refused(415, headers={"Content-Type": "text/plain"})
        assert "Accept" in await refused(406, headers={"Accept": "application/json"})
        assert "origin" in await refused(403, headers={"Origin": "http://evil.example"})
        assert "compressed" in await refused(
            415, headers={"Content-Encoding": "gzip"}, content=gzip.compress(orjson.dumps(LIST))
        )
        assert "mcp.allowed_hosts" in await refused(421, headers={"Host": "evil.example"})
        same_origin = await post_mcp(stack, LIST, token=token, headers={"Origin": stack.url})
        assert same_origin.status_code == 200

        # A host name the operator adds is answered, on any port.
        await stack.database.run(
            lambda conn: update_instance_settings(
                conn, {"mcp.allowed_hosts": ["localhost", "pooler.example"]}, actor="t"
            )
        )
        await stack.gateway.reload()
        named = await post_mcp(stack, LIST, token=token, headers={"Host": "pooler.example:8443"})
        assert named.status_code == 200, named.text
        assert "mcp.allowed_hosts" in await refused(421, headers={"Host": "127.0.0.1"})
        await stack.database.run(
            lambda conn: update_instance_settings(
                conn, {"mcp.allowed_hosts": ["127.0.0.1"]}, actor="t"
            )
        )
        await stack.gateway.reload()

        # GET and DELETE: 405 (stateless), OPTIONS: 204, both with Allow.
        async with stack.client() as http:
            for method in ("GET", "DELETE"):
                answer = await http.request(method, "/mcp", headers={"Accept": ACCEPT})
                assert answer.status_code == 405 and answer.headers["allow"] == "POST, OPTIONS"
                assert rpc_error(answer)["code"] == -32000
            options = await http.options("/mcp")
            assert options.status_code == 204 and options.headers["allow"] == "POST, OPTIONS"


async def test_hostile_input_gets_clear_json_rpc_errors(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")

        async def honest_call_works() -> None:
            answer = await post_mcp(stack, call("service_status", {}), token=token)
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["structuredContent"]["pools"] == 1

        # 10 MB: declared, then streamed without a declared length.
        big = (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"'
            + b"a" * (10 * 1024 * 1024)
            + b'"}}'
        )
        declared = await post_mcp(stack, token=token, content=big)
        assert declared.status_code == 413 and rpc_error(declared)["code"] == -32000

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = await post_mcp(stack, token=token, content=chunks())  # type: ignore[arg-type]
        assert streamed.status_code == 413
        await honest_call_works()

        deep = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":' + b"[" * 5000
        deep += b"]" * 5000 + b"}"
        nested = await post_mcp(stack, token=token, content=deep)
        assert nested.status_code == 400 and rpc_error(nested)["code"] in (-32600, -32700)
        await honest_call_works()

        nul = await post_mcp(stack, call("get_pool", {"pool": "de\x00mo"}), token=token)
        assert rpc_error(nul)["code"] == -32602 and "NUL" in rpc_error(nul)["message"]
        unknown_method = await post_mcp(
            stack, {"jsonrpc": "2.0", "id": 4, "method": "tools/destroy"}, token=token
        )
        assert rpc_error(unknown_method)["code"] == -32601
        unknown_tool = await post_mcp(stack, call("drop_everything", {}), token=token)
        assert rpc_error(unknown_tool)["code"] == -32602
        assert "Unknown tool" in rpc_error(unknown_tool)["message"]
        bad_arguments = await post_mcp(stack, call("list_pools", {"limit": 1000}), token=token)
        error = rpc_error(bad_arguments)
        assert error["code"] == -32602 and "limit" in error["message"]
        extra = await post_mcp(stack, call("list_pools", {"nope": "secret-ish"}), token=token)
        assert rpc_error(extra)["code"] == -32602
        assert "secret-ish" not in extra.text  # the values are never echoed
        batch = await post_mcp(stack, [LIST] * 1000, token=token)
        assert batch.status_code == 400 and rpc_error(batch)["code"] == -32600
        garbage = await post_mcp(stack, token=token, content=b"{not json")
        assert garbage.status_code == 400 and rpc_error(garbage)["code"] == -32700
        await honest_call_works()

        # The SDK's per-request server tasks end with their requests.
        before = task_count()
        for _ in range(20):
            await honest_call_works()
        with trio.fail_after(5):  # a closed connection's server task may take a moment
            while task_count() > before:
                await trio.sleep(0.01)


async def test_a_slow_body_holds_its_mcp_slot_only_until_its_deadline(
    db_url: str, tmp_path: Path
) -> None:
    settings = {
        "usage_poll_interval_seconds": 86_400,
        "body_read_timeout_seconds": 1,
        "bulkheads": {"mcp": {"concurrency": 1, "queue": 0}},
    }
    async with open_stack(db_url, tmp_path, instance_settings=settings) as stack:
        await enable_instance(stack)
        token = await operator_token(stack, "owner@example.com")
        port = int(stack.url.rsplit(":", 1)[1])
        head = (
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: {ACCEPT}\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
        )
        with trio.fail_after(20):
            slow = await trio.open_tcp_stream("127.0.0.1", port)
            await slow.send_all(head.encode() + b'{"jsonrpc"')
            # While it holds the one slot, another call is refused at once: 503, retry.
            while True:
                busy = await post_mcp(stack, LIST, token=token)
                if busy.status_code == 503:
                    break
                await trio.sleep(0.02)  # the slow request has not taken its slot yet
            assert busy.headers["retry-after"] == "1"
            assert "overloaded" in rpc_error(busy)["message"]
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await slow.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            await slow.aclose()
            assert (await post_mcp(stack, LIST, token=token)).status_code == 200


async def test_a_token_calling_in_a_loop_is_paced_and_others_are_not(
    db_url: str, tmp_path: Path
) -> None:
    """Many calls at once with one token: past its burst they wait for their slots, and
    those whose slot is too far away get 429 with Retry-After (a JSON-RPC error) before any
    database work; another operator's token is answered afterwards."""
    async with open_stack(db_url, tmp_path) as stack:
        await enable_instance(stack)
        busy = await operator_token(stack, "busy@example.com")
        calm = await operator_token(stack, "calm@example.com")
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        statuses: list[int] = []

        async def call() -> None:
            answer = await post_mcp(stack, listing, token=busy)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
                assert "too many MCP calls" in rpc_error(answer)["message"]

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(60):
                    nursery.start_soon(call)
            assert statuses.count(429) >= 10, statuses
            assert set(statuses) <= {200, 429, 503}  # 503: past the mcp bulkhead's queue
            assert (await post_mcp(stack, listing, token=calm)).status_code == 200
