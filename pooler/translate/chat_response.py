"""Upstream Responses events → Chat Completions (`chat.completion` / `.chunk`). Pure.

Not streaming: `chat_completion_from_response` turns the final `response` object (from
`StreamAccounting.assembled_response()` or `collect_response`) into one `chat.completion`;
`collect_chat_completion` does both steps from parsed event dicts.

Streaming, theory of operation: `ChatStreamTranslator.feed(event)` returns the chunks
that event produces, in order, and nothing before the first visible output. So while
`started` is False the gateway may still fail over to another account, or answer with an
HTTP error (`failure.to_error()`), having sent nothing.

    first output            → a role chunk `{"role": "assistant", "content": ""}`
    output_text.delta       → `delta.content`      (refusal.delta → `delta.refusal`)
    function_call added     → `delta.tool_calls[{index, id, type, function{name, arguments:""}}]`
    arguments.delta         → `delta.tool_calls[{index, function{arguments}}]`
    output_item.done        → whatever text / arguments the deltas did not carry
    completed / incomplete  → a chunk with `finish_reason`, then (include_usage) a chunk
                              with `choices: []` and the usage; the gateway sends `[DONE]`
    failed / error          → one `{"error": {...}}` payload (the OpenAI SDKs raise
                              APIError on it) and no `[DONE]`; likewise `abort()` when the
                              upstream stream breaks

`finish_reason` is `tool_calls` when the turn produced a tool call, `length` when the
response is incomplete (max output tokens), `content_filter` when it was filtered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from pooler.protocol.usage import usage_from_completed
from pooler.translate.failures import UpstreamFailure, failure_of_event
from pooler.translate.responses_response import collect_response, response_failure

__all__ = [
    "DONE_EVENT",
    "ChatStreamTranslator",
    "chat_completion_from_response",
    "chat_usage",
    "collect_chat_completion",
    "completion_id",
    "encode_chunk",
    "finish_reason",
]

DONE_EVENT = b"data: [DONE]\n\n"
TOOL_CALL_TYPES = ("function_call", "custom_tool_call")


def encode_chunk(chunk: Mapping[str, Any]) -> bytes:
    """One SSE event as the chat API sends it: a `data:` line, no `event:` line."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def completion_id(response_id: Any) -> str:
    if isinstance(response_id, str) and response_id:
        return "chatcmpl-" + response_id.removeprefix("resp_")
    return "chatcmpl-" + secrets.token_hex(12)


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage → chat usage, reasoning and cached tokens in the details."""
    tokens = usage_from_completed({"response": {"usage": usage}})
    if tokens is None:
        return None
    return {
        "prompt_tokens": tokens.input_tokens,
        "completion_tokens": tokens.output_tokens,
        "total_tokens": tokens.total_tokens,
        "prompt_tokens_details": {"cached_tokens": tokens.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": tokens.reasoning_tokens},
    }


def finish_reason(response: Mapping[str, Any], *, tool_calls: bool) -> str:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, Mapping) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if tool_calls else "stop"


def _tool_call(item: Mapping[str, Any]) -> dict[str, Any]:
    if item.get("type") == "custom_tool_call":
        custom = {"name": item.get("name", ""), "input": item.get("input", "")}
        return {"id": item.get("call_id"), "type": "custom", "custom": custom}
    function = {"name": item.get("name", ""), "arguments": item.get("arguments", "")}
    return {"id": item.get("call_id"), "type": "function", "function": function}


def _message_parts(item: Mapping[str, Any], kind: str, key: str) -> str:
    content = item.get("content")
    parts = content if isinstance(content, list) else []
    return "".join(
        part[key]
        for part in parts
        if isinstance(part, Mapping) and part.get("type") == kind and isinstance(part.get(key), str)
    )


def chat_completion_from_response(
    response: Mapping[str, Any], *, model: str, created: int | None = None
) -> dict[str, Any]:
    """A `chat.completion` from a final Responses object; raises when it failed."""
    failure = response_failure(response)
    if failure is not None:
        raise failure.to_error()
    output = response.get("output")
    items = (
        [item for item in output if isinstance(item, Mapping)] if isinstance(output, list) else []
    )
    messages = [item for item in items if item.get("type") == "message"]
    calls = [_tool_call(item) for item in items if item.get("type") in TOOL_CALL_TYPES]
    text = "".join(_message_parts(item, "output_text", "text") for item in messages)
    refusal = "".join(_message_parts(item, "refusal", "refusal") for item in messages)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls and not text else text,
        "refusal": refusal or None,
    }
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(response, tool_calls=bool(calls)),
        "logprobs": None,
    }
    completion: dict[str, Any] = {
        "id": completion_id(response.get("id")),
        "object": "chat.completion",
        "created": _created(response, created),
        "model": model,
        "choices": [choice],
        "usage": chat_usage(response.get("usage")),
    }
    if isinstance(response.get("service_tier"), str):
        completion["service_tier"] = response["service_tier"]
    return completion


def collect_chat_completion(
    events: Iterable[Mapping[str, Any]], *, model: str, created: int | None = None
) -> dict[str, Any]:
    """A whole upstream stream → one `chat.completion` (raises on failure, see above)."""
    return chat_completion_from_response(collect_response(events), model=model, created=created)


def _created(response: Mapping[str, Any], fallback: int | None) -> int:
    value = response.get("created_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return fallback if fallback is not None else int(time.time())


class _Call:
    __slots__ = ("index", "sent")

    def __init__(self, index: int, sent: str) -> None:
        self.index = index
        self.sent = sent  # the arguments (or custom input) sent so far


class ChatStreamTranslator:
    """Feed upstream events one by one; send back the chunks each call returns."""

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool = False,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        # From the upstream's response.created (or the first chunk, if it never comes).
        self.id: str | None = None
        self.created: int | None = None
        self.started = False  # has any chunk been produced?
        self.done = False  # terminal event seen (or aborted): feed() returns nothing more
        self.failure: UpstreamFailure | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._text: dict[str, str] = {}  # message item id → text sent
        self._calls: dict[str, _Call] = {}  # tool call item id → its state

    @property
    def send_done(self) -> bool:
        """Should the stream end with `data: [DONE]`? Only after a clean finish."""
        return self.done and self.failure is None

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.done:
            return []
        handler = _HANDLERS.get(str(event.get("type")))
        return handler(self, event) if handler is not None else []

    def abort(self, code: str, message: str) -> list[dict[str, Any]]:
        """The upstream broke off (closed, idle timeout): the error payload to send."""
        if self.done:
            return []
        return self._fail(UpstreamFailure(code, message))

    def _fail(self, failure: UpstreamFailure) -> list[dict[str, Any]]:
        self.failure, self.done = failure, True
        return [failure.body()]

    def _on_response(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        response = event.get("response")
        if isinstance(response, Mapping):
            if self.id is None and isinstance(response.get("id"), str):
                self.id = completion_id(response["id"])
            if self.created is None:
                self.created = _created(response, None)
        return []

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> list[dict[str, Any]]:
        """`delta` as a chunk, after the role chunk when it is the first."""
        chunks = []
        if not self.started:
            self.started = True
            if self.id is None:
                self.id = completion_id(None)
            if self.created is None:
                self.created = int(time.time())
            chunks.append(self._envelope({"role": "assistant", "content": ""}, None))
        if delta or reason is not None:
            chunks.append(self._envelope(delta, reason))
        return chunks

    def _envelope(self, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _on_text(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        key = str(event.get("item_id", ""))
        self._text[key] = self._text.get(key, "") + delta
        return self._chunk({"content": delta})

    def _on_refusal(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        return self._chunk({"refusal": delta}) if isinstance(delta, str) and delta else []

    def _on_item_added(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = event.get("item")
        if not isinstance(item, Mapping) or item.get("type") != "function_call":
            return []  # custom tool calls are sent whole, when done
        return self._open_call(item)

    def _open_call(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        arguments = item.get("arguments")
        sent = arguments if isinstance(arguments, str) else ""
        call = _Call(len(self._calls), sent)
        self._calls[_item_key(item)] = call
        head = _tool_call(item)
        head["function"]["arguments"] = sent
        return self._chunk({"tool_calls": [{"index": call.index, **head}]})

    def _on_arguments(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        call = self._calls.get(str(event.get("item_id", "")))
        delta = event.get("delta")
        if call is None or not isinstance(delta, str) or not delta:
            return []  # an unknown call is sent whole when its item is done
        call.sent += delta
        return self._arguments_chunk(call, delta)

    def _arguments_chunk(self, call: _Call, delta: str) -> list[dict[str, Any]]:
        return self._chunk(
            {"tool_calls": [{"index": call.index, "function": {"arguments": delta}}]}
        )

    def _on_item_done(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = event.get("item")
        if not isinstance(item, Mapping):
            return []
        kind = item.get("type")
        if kind == "message":
            key = str(item.get("id", ""))
            rest = _rest(_message_parts(item, "output_text", "text"), self._text.get(key, ""))
            self._text[key] = self._text.get(key, "") + rest
            return self._chunk({"content": rest}) if rest else []
        if kind == "custom_tool_call" and _item_key(item) not in self._calls:
            self._calls[_item_key(item)] = _Call(len(self._calls), str(item.get("input", "")))
            index = self._calls[_item_key(item)].index
            return self._chunk({"tool_calls": [{"index": index, **_tool_call(item)}]})
        if kind != "function_call":
            return []
        call = self._calls.get(_item_key(item))
        if call is None:
            return self._open_call(item)
        rest = _rest(str(item.get("arguments", "")), call.sent)
        call.sent += rest
        return self._arguments_chunk(call, rest) if rest else []

    def _on_terminal(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._on_response(event)
        response = event.get("response")
        response = response if isinstance(response, Mapping) else {}
        if event.get("type") == "response.incomplete":
            response = {"incomplete_details": None, **response, "status": "incomplete"}
        self.finish_reason = finish_reason(response, tool_calls=bool(self._calls))
        self.usage = chat_usage(response.get("usage"))
        self.done = True
        chunks = self._chunk({}, self.finish_reason)
        if self.include_usage:
            usage_chunk = self._envelope({}, None)
            usage_chunk["choices"], usage_chunk["usage"] = [], self.usage
            chunks.append(usage_chunk)
        return chunks

    def _on_failure(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._fail(failure_of_event(event))


def _item_key(item: Mapping[str, Any]) -> str:
    return str(item.get("id") or item.get("call_id") or "")


def _rest(final: str, sent: str) -> str:
    """What of `final` the deltas have not carried yet ("" if they diverged)."""
    return final[len(sent) :] if final.startswith(sent) else ""


_Handler = Callable[[ChatStreamTranslator, Mapping[str, Any]], list[dict[str, Any]]]
_HANDLERS: dict[str, _Handler] = {
    "response.created": ChatStreamTranslator._on_response,
    "response.in_progress": ChatStreamTranslator._on_response,
    "response.output_item.added": ChatStreamTranslator._on_item_added,
    "response.output_text.delta": ChatStreamTranslator._on_text,
    "response.refusal.delta": ChatStreamTranslator._on_refusal,
    "response.function_call_arguments.delta": ChatStreamTranslator._on_arguments,
    "response.output_item.done": ChatStreamTranslator._on_item_done,
    "response.completed": ChatStreamTranslator._on_terminal,
    "response.incomplete": ChatStreamTranslator._on_terminal,
    "response.failed": ChatStreamTranslator._on_failure,
    "error": ChatStreamTranslator._on_failure,
}
