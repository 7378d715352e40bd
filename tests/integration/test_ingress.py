"""The ingress allowlist on the real stack: the runtime routes, the Codex websocket and /mcp
refuse a client outside it (403 `access_denied`, before any body is read or key checked;
the websocket before it is accepted; JSON-RPC on /mcp), /healthz, /readyz, /metrics and the
console never do; a forged X-Forwarded-For from an untrusted peer cannot pass, hostile
headers cannot either, and the next honest request works. The address in the request log
and the console's session is the one the allowlist decided on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from console_support import bootstrap_owner, browser
from harness import Stack, open_stack, responses_body
from mcp_support import enable_instance, operator_token, post_mcp

from pooler.store.instance_settings import update_instance_settings

ALLOWED = "198.51.100.0/24"
DEADLINE = 30
MODELS = "/backend-api/codex/models"


async def configure(stack: Stack, changes: dict[str, Any]) -> None:
    await stack.database.run(lambda conn: update_instance_settings(conn, changes, actor="test"))
    await stack.gateway.reload()


def assert_denied(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "access_denied" and error["message"] == "client IP is not allowed"
    assert error["type"] == "permission_error" and error["param"] is None


async def raw_exchange(stack: Stack, head: bytes) -> bytes:
    """Send `head` (a request head, and no body) on a fresh connection; what came back up to
    the first blank line and the body that followed, or until the server closed."""
    port = int(stack.url.rsplit(":", 1)[1])
    with trio.fail_after(DEADLINE):
        conn = await trio.open_tcp_stream("127.0.0.1", port)
        async with conn:
            await conn.send_all(head)
            got = b""
            while b"\r\n\r\n" not in got or b"}" not in got.split(b"\r\n\r\n", 1)[1]:
                chunk = await conn.receive_some(65536)
                if not chunk:
                    break
                got += chunk
            return got


async def turn(client: httpx.AsyncClient, forwarded_for: str) -> httpx.Response:
    """A logged request (a Responses turn) through the proxy that says `forwarded_for`."""
    with trio.fail_after(DEADLINE):
        return await client.post(
            "/backend-api/codex/responses",
            json=responses_body(),
            headers={"X-Forwarded-For": forwarded_for},
        )


async def websocket_refusal(stack: Stack, headers: list[tuple[bytes, bytes]]) -> Any:
    url = stack.url.replace("http://", "ws://") + "/backend-api/codex/responses"
    with trio.fail_after(DEADLINE), pytest.raises(trio_websocket.ConnectionRejected) as refused:
        async with trio_websocket.open_websocket_url(url, extra_headers=headers):
            pass
    return refused.value


async def test_the_allowlist_guards_runtime_websocket_and_mcp_only(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        token = await operator_token(stack, "ops@example.com")
        await enable_instance(stack)
        async with stack.client() as client:
            assert (await client.get(MODELS)).status_code == 200  # off: anyone
        await configure(stack, {"ingress.allowlist": [ALLOWED]})

        async with stack.client() as client:
            assert_denied(await client.get(MODELS))
            assert_denied(await client.post("/v1/responses", json={"model": "gpt-5"}))
            assert_denied(await client.get("/wham/usage"))
            assert_denied(await client.get("/no/such/path"))
            # A forged X-Forwarded-For from an untrusted peer (no trusted proxies yet).
            assert_denied(await client.get(MODELS, headers={"X-Forwarded-For": "198.51.100.7"}))
            assert_denied(await client.get(MODELS, headers={"X-Real-IP": "198.51.100.7"}))
        async with httpx.AsyncClient(base_url=stack.url, timeout=DEADLINE) as anonymous:
            # No key at all: refused for the address, not the key (the key is never read).
            assert_denied(await anonymous.get(MODELS))
            for path in ("/healthz", "/readyz", "/metrics", "/login"):
                assert (await anonymous.get(path)).status_code == 200, path

        # The body is never waited for: a head announcing a megabyte that never comes is
        # answered at once.
        answer = await raw_exchange(
            stack,
            b"POST /backend-api/codex/responses HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
        assert b'"access_denied"' in answer

        # The websocket is refused before it is accepted, in the error tree's shape.
        rejected = await websocket_refusal(
            stack, [(b"authorization", f"Bearer {stack.key}".encode())]
        )
        assert rejected.status_code == 403 and rejected.body is not None
        assert json.loads(rejected.body)["error"]["code"] == "access_denied"

        # /mcp answers in JSON-RPC, before its token is looked at.
        refused = await post_mcp(stack, token=token)
        assert refused.status_code == 403
        assert refused.json() == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32000, "message": "client IP is not allowed"},
        }

        metrics = (await httpx.AsyncClient(base_url=stack.url).get("/metrics")).text
        for scope, least in (("runtime", 7), ("websocket", 1), ("mcp", 1)):
            line = f'codex_pooler_ingress_denied_total{{scope="{scope}"}}'
            found = [row for row in metrics.splitlines() if row.startswith(line)]
            assert found and float(found[0].split()[-1]) >= least, (scope, found)

        # The loopback client allowed: everything works again.
        await configure(stack, {"ingress.allowlist": [ALLOWED, "127.0.0.1"]})
        async with stack.client() as client:
            assert (await client.get(MODELS)).status_code == 200
        assert (await post_mcp(stack, token=token)).status_code == 200


async def test_through_a_trusted_proxy_the_resolved_address_decides_and_is_logged(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await configure(
            stack,
            {"ingress.allowlist": [ALLOWED, "2001:db8::/32"], "trusted_proxies": ["127.0.0.1"]},
        )
        hostile = [
            "198.51.100.7, 6.6.6.6",  # the right-most untrusted hop is the client
            ", ".join(["198.51.100.7"] + ["garbage"] * 40),
            ", ".join(["198.51.100.7"] * 40 + ["6.6.6.6"]),
            "198.51.100.7:443",
            "1" * 5000,
            "[2001:db8::1]",
            "unknown",
            "",
        ]
        async with stack.client() as client:
            for value in hostile:
                assert_denied(await client.get(MODELS, headers={"X-Forwarded-For": value}))
            many = ", ".join(["6.6.6.6"] * 100 + ["198.51.100.8"])
            for value in ("6.6.6.6, 198.51.100.7", "2001:DB8::0:9", many):
                assert (await turn(client, value)).status_code == 200, value

        # A NUL in the header: refused (by the HTTP parser or the allowlist), never let in;
        # the next honest request on a new connection works.
        answer = await raw_exchange(
            stack,
            f"GET {MODELS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.key}\r\n".encode()
            + b"X-Forwarded-For: 198.51.100.7\x00\r\n\r\n",
        )
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 403")), answer[:200]
        async with stack.client() as client:
            assert (await turn(client, "198.51.100.10")).status_code == 200

        # The request log holds the address the allowlist decided on (IPv6 normalized).
        await stack.wait_for_logs(4)
        logged = await stack.database.run(
            lambda conn: [r[0] for r in conn.execute("SELECT client_ip FROM request_logs")]
        )
        assert set(logged) == {"198.51.100.7", "2001:db8::9", "198.51.100.8", "198.51.100.10"}

        # X-Real-IP as the source, from the trusted proxy only.
        await configure(stack, {"ingress.client_ip_source": "x_real_ip"})
        async with stack.client() as client:
            real = {"X-Real-IP": "198.51.100.11", "X-Forwarded-For": "6.6.6.6"}
            assert (await client.get(MODELS, headers=real)).status_code == 200
            assert_denied(await client.get(MODELS, headers={"X-Forwarded-For": "198.51.100.7"}))

        # The console is not guarded, and resolves the address the same way.
        async with browser(stack, headers={"X-Real-IP": "198.51.100.12"}) as owner:
            assert (await bootstrap_owner(owner)).status_code == 303
        sessions = await stack.database.run(
            lambda conn: [r[0] for r in conn.execute("SELECT ip FROM console_sessions")]
        )
        assert sessions == ["198.51.100.12"]
