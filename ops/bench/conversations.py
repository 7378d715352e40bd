"""Multi-turn Codex conversations for the cache run: each turn resends the whole growing
conversation (earlier input, the output items the previous answer returned, one new user
message), as Codex does over HTTP, with a per-conversation `prompt_cache_key` and
`session-id` header.

The bodies are built the same way on every path, so the direct run against one
emulator account sends byte for byte what the gateway run sends (only the ids inside
returned output items differ, never their length): its cached tokens are the ideal.
Every turn is streamed; the answer's `response.completed` event carries the usage.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from extra_stats import TurnKey

ROUTE = "/backend-api/codex/responses"
REQUEST_TIMEOUT_S = 30.0
TRIES_PER_TURN = 3  # a turn that fails is sent again, like a client retrying
MODEL = "gpt-5.5"
INSTRUCTIONS = (
    "You are Codex, a coding agent running in a terminal on the user's machine. "
    "Be concise, run commands through the shell tool when needed, and explain changes. "
) * 4
TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}},
            "required": ["command"],
        },
    },
    {
        "type": "function",
        "name": "apply_patch",
        "description": "Applies a patch to files in the workspace.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        },
    },
]
FILLER = "Here is some more context about the code under discussion. " * 10


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON, UTF-8, key order kept (as Codex and the emulator serialize)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Conversation:
    index: int
    thread_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    items: list[dict[str, Any]] = field(default_factory=list)

    def ask(self, turn: int) -> bytes:
        """Add turn `turn`'s user message; the request body of that turn."""
        text = f"Turn {turn} of conversation {self.index}. {FILLER}Reply with exactly: ok {turn}"
        content = [{"type": "input_text", "text": text}]
        self.items.append({"type": "message", "role": "user", "content": content})
        return self.body()

    def body(self) -> bytes:
        return encode(
            {
                "model": MODEL,
                "instructions": INSTRUCTIONS,
                "input": self.items,
                "tools": TOOLS,
                "tool_choice": "auto",
                "parallel_tool_calls": False,
                "reasoning": {"effort": "medium", "summary": "auto"},
                "store": False,
                "stream": True,
                "include": ["reasoning.encrypted_content"],
                "prompt_cache_key": self.thread_id,
            }
        )

    def answered(self, output: list[dict[str, Any]]) -> None:
        self.items.extend(output)


def completed_response(sse: bytes) -> dict[str, Any] | None:
    """The `response` of a stream's `response.completed` event, if it has one."""
    for block in sse.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if not data:
            continue
        try:
            event = json.loads(b"\n".join(data))
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "response.completed":
            response = event.get("response")
            return response if isinstance(response, dict) else None
    return None


def cached_tokens(response: dict[str, Any]) -> tuple[int, int]:
    """(cached, input) tokens of a completed response's usage."""
    usage = response.get("usage") or {}
    details = usage.get("input_tokens_details") or {}
    return int(details.get("cached_tokens") or 0), int(usage.get("input_tokens") or 0)


@dataclass(frozen=True)
class Endpoint:
    port: int
    headers: dict[str, str]  # authentication: a Pool key, or an account's token and id


@dataclass
class ConversationRun:
    cached: dict[TurnKey, int] = field(default_factory=dict)
    inputs: dict[TurnKey, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: set[str] = field(default_factory=set)  # SHA-256 of every body sent
    lost_turns: int = 0  # turns that failed every try (their conversation stops)
    duration_s: float = math.nan

    @property
    def answered(self) -> int:
        return len(self.cached)


async def _turn(
    client: httpx.AsyncClient, endpoint: Endpoint, conversation: Conversation, body: bytes
) -> tuple[dict[str, Any] | None, str | None]:
    headers = {
        **endpoint.headers,
        "content-type": "application/json",
        "accept": "text/event-stream",
        "session-id": conversation.thread_id,
    }
    try:
        response = await client.post(ROUTE, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, type(exc).__name__
    if response.status_code != 200:
        return None, f"http_{response.status_code}"
    completed = completed_response(response.content)
    return (completed, None) if completed is not None else (None, "incomplete_body")


async def _converse(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    conversation: Conversation,
    turns: int,
    run: ConversationRun,
    limiter: trio.CapacityLimiter,
    on_turn: Callable[[], None],
) -> None:
    for turn in range(1, turns + 1):
        body = conversation.ask(turn)
        run.sent.add(hashlib.sha256(body).hexdigest())
        for _ in range(TRIES_PER_TURN):
            async with limiter:
                started = trio.current_time()
                response, error = await _turn(client, endpoint, conversation, body)
                elapsed = trio.current_time() - started
            if response is not None:
                break
            run.errors[error or "unknown"] += 1
        else:
            run.lost_turns += 1
            return
        run.latencies_s.append(elapsed)
        key = (conversation.index, turn)
        run.cached[key], run.inputs[key] = cached_tokens(response)
        conversation.answered(list(response.get("output") or []))
        on_turn()


async def run_conversations(
    endpoint: Endpoint,
    conversations: int,
    turns: int,
    concurrency: int,
    on_turn: Callable[[], None] = lambda: None,
) -> ConversationRun:
    """`conversations` conversations of `turns` turns, all of them under way at once and
    at most `concurrency` requests in flight (on as many keep-alive connections), so
    turns of different conversations interleave as they would between real users;
    `on_turn` is called after every answered turn."""
    run = ConversationRun()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    base_url = f"http://127.0.0.1:{endpoint.port}"
    limiter = trio.CapacityLimiter(concurrency)

    async def one(index: int) -> None:
        await _converse(client, endpoint, Conversation(index), turns, run, limiter, on_turn)

    started = trio.current_time()
    client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S)
    async with client, trio.open_nursery() as nursery:
        for index in range(conversations):
            nursery.start_soon(one, index)
    run.duration_s = trio.current_time() - started
    return run
