"""What a held SSE stream keeps in the gateway (issue 17: memory per idle stream).

A Codex turn's body carries the whole conversation, and a stream may be held for minutes
while the model thinks. Once the stream's head is sent no attempt can follow, so the
relay keeps neither the body nor its parsed payload (ops/bench/idle_memory.py measures
the rest of what a held stream costs)."""

from __future__ import annotations

import gc
from pathlib import Path

import trio

from pooler.web.quart_http import PulledBody
from pooler.web.responses_relay import ProxiedRequest
from tests.harness import open_stack, responses_body

RESPONSES = "/backend-api/codex/responses"
MARKER = "held-stream-input-" + "x" * 4096


def live(kind: type) -> list[object]:
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, kind)]


def mentions_marker(value: object) -> bool:
    if isinstance(value, bytes | bytearray):
        return MARKER.encode() in value
    if isinstance(value, str):
        return MARKER in value
    return False


async def test_a_held_stream_keeps_neither_its_body_nor_its_payload(
    db_url: str, tmp_path: Path
) -> None:
    idle = {"x-emulator-delay-ms": "600000", "x-emulator-events": "1"}  # head, then nothing
    body = responses_body(MARKER, client_metadata=idle)
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(15):
            async with client.stream("POST", RESPONSES, json=body) as response:
                assert response.status_code == 200  # the head is out; the stream idles
                relayed = live(ProxiedRequest)
                assert len(relayed) == 1
                held = relayed[0]
                assert isinstance(held, ProxiedRequest)
                assert held.body == b"" and held.payload == {}
                assert not any(
                    mentions_marker(getattr(b, "_whole", None)) for b in live(PulledBody)
                )
