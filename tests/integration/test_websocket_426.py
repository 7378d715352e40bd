"""Both ways the gateway refuses a websocket handshake with 426 (a path that takes no
websocket; a Responses socket no account's upstream would open) give one answer, the error
tree's WebsocketUnsupported, so a client falls back to HTTP the same way after either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from harness import Stack, open_stack

from pooler.errors import WebsocketUnsupported

DEADLINE = 30


async def refusal(stack: Stack, path: str) -> tuple[int, dict[str, str], Any]:
    """The status, headers and JSON body a websocket handshake on `path` is refused with."""
    url = str(stack.url).replace("http://", "ws://") + path
    headers = [(b"authorization", f"Bearer {stack.key}".encode())]
    with trio.fail_after(DEADLINE), pytest.raises(trio_websocket.ConnectionRejected) as refused:
        async with trio_websocket.open_websocket_url(url, extra_headers=headers):
            pass
    rejected = refused.value
    assert rejected.body is not None
    answer_headers = {k.decode().lower(): v.decode() for k, v in rejected.headers or []}
    return rejected.status_code, answer_headers, json.loads(rejected.body)


async def test_every_426_is_the_error_trees_websocket_refusal(db_url: str, tmp_path: Path) -> None:
    expected = WebsocketUnsupported()
    async with open_stack(db_url, tmp_path) as stack:
        elsewhere = await refusal(stack, "/backend-api/codex/models")
        for account in stack.emulator.accounts:
            await stack.fault(str(account.label), "ws_upgrade_426")
        no_upstream = await refusal(stack, "/backend-api/codex/responses")
    for status, headers, body in (elsewhere, no_upstream):
        assert status == expected.status == 426
        assert headers["content-type"] == "application/json"
        assert body == expected.body()
        assert body["error"]["code"] == "websocket_unsupported"
