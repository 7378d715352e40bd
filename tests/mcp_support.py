"""Helpers for the `/mcp` tests: operators with MCP tokens and both gates on, the MCP
Python SDK client with the bearer header on its HTTP client, and raw POSTs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from harness import Stack
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from pooler.store import mcp_tokens, operators, pools
from pooler.store.common import Conn
from pooler.store.instance_settings import update_instance_settings

PASSWORD = "a long operator password 1"
ACCEPT = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


async def enable_instance(stack: Stack, enabled: bool = True) -> None:
    await stack.database.run(
        lambda conn: update_instance_settings(conn, {"mcp.enabled": enabled}, actor="test")
    )
    await stack.gateway.reload()


async def operator_token(
    stack: Stack, email: str, role: str = "owner", pools_of_admin: tuple[str, ...] = ()
) -> str:
    """A new operator with their MCP switch on, and a token of theirs."""

    def create(conn: Conn) -> str:
        operator = operators.create_operator(conn, email, PASSWORD, role)
        if pools_of_admin:
            ids = [pools.get_pool(conn, name).id for name in pools_of_admin]
            operators.assign_pools(conn, operator.id, ids, actor="test")
        mcp_tokens.set_operator_mcp(conn, email, True, actor="test")
        raw, _ = mcp_tokens.create_mcp_token(conn, stack.config.secret_key, email, "test")
        return raw

    token: str = await stack.database.run(create)
    return token


@asynccontextmanager
async def mcp_session(stack: Stack, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{stack.url}/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


async def post_mcp(
    stack: Stack,
    body: Any = INIT,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    path: str = "/mcp",
) -> httpx.Response:
    sent = {"Content-Type": "application/json", "Accept": ACCEPT}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        if content is None:
            return await http.post(path, json=body, headers=sent)
        return await http.post(path, content=content, headers=sent)


def rpc_error(response: httpx.Response) -> dict[str, Any]:
    payload = response.json()
    assert payload["jsonrpc"] == "2.0" and "result" not in payload, payload
    error: dict[str, Any] = payload["error"]
    return error
