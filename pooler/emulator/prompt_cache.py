"""One account's prompt cache: the conversation prefixes it has processed. Pure.

The real backend caches by prefix: a request reuses the tokens of the longest prefix of
its prompt that the same account has recently processed, whatever its `prompt_cache_key`
(that key only steers routing upstream), and a conversation moved to another account
starts cold. Here a prompt is a chain of prefixes: first the head, `(model, instructions,
tools)`, then each `input` item in order. Every piece is serialized as it was received
(its key order kept, compact separators, UTF-8), so a client or gateway that re-orders
keys or changes an item breaks the chain from that item on, as it would change the real
tokens. A prefix is identified by a SHA-256 chained over its pieces; its tokens are its
cumulative serialized bytes // 4 (the emulator's estimate for input tokens too).

`CacheRules` default to counting every token of the matched prefix, so that "ideal"
caching is easy to state: every turn after the first hits its whole previous prompt.
`CacheRules(block_tokens=128, min_tokens=1024)` rounds like the public API does.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CACHE_ENTRIES = 20_000
BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Prefix:
    digest: bytes
    size: int  # serialized bytes of every piece so far

    @property
    def tokens(self) -> int:
        return self.size // BYTES_PER_TOKEN


@dataclass(frozen=True)
class CacheRules:
    block_tokens: int = 1  # hits count in multiples of this
    min_tokens: int = 0  # shorter hits count as misses

    def __post_init__(self) -> None:
        if self.block_tokens < 1 or self.min_tokens < 0:
            raise ValueError("block_tokens must be at least 1 and min_tokens not negative")

    def count(self, tokens: int) -> int:
        if tokens < self.min_tokens:
            return 0
        return tokens - tokens % self.block_tokens


def serialize(value: Any) -> bytes:
    """As received: json.loads keeps key order, and this keeps it too."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def extend(prefix: Prefix | None, piece: bytes) -> Prefix:
    """The prefix followed by one more serialized piece (length-framed, so pieces never
    run into each other)."""
    digest = hashlib.sha256(prefix.digest if prefix is not None else b"prompt")
    digest.update(len(piece).to_bytes(8, "big"))
    digest.update(piece)
    return Prefix(digest.digest(), (prefix.size if prefix is not None else 0) + len(piece))


def extend_items(prefix: Prefix, items: Iterable[Any]) -> Prefix:
    for item in items:
        prefix = extend(prefix, serialize(item))
    return prefix


def input_items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, str) else []


@dataclass(frozen=True, slots=True)
class Context:
    """What a websocket connection keeps of its last response, for `previous_response_id`:
    its prompt, and that prompt followed by the response's output items."""

    prompt: Prefix
    end: Prefix

    @classmethod
    def after(cls, prompt: Prefix, output: Iterable[Any]) -> Context:
        return cls(prompt, extend_items(prompt, output))


def prompt_chain(body: dict[str, Any], after: Context | None = None) -> list[Prefix]:
    """Every prefix of a request's prompt, shortest first, never empty. `after` is the
    context a websocket `previous_response_id` continues: the new items extend it, and
    the request's own head is not part of the prompt. Either way the previous prompt is
    the longest prefix a follow-up turn can find, as when the whole input is resent."""
    if after is None:
        head = [body.get("model"), body.get("instructions"), body.get("tools")]
        chain = [extend(None, serialize(head))]
    else:
        chain = [after.prompt, after.end]
    for item in input_items(body):
        chain.append(extend(chain[-1], serialize(item)))
    return chain


@dataclass
class PromptCache:
    """A bounded LRU set of prefix digests."""

    capacity: int = CACHE_ENTRIES
    rules: CacheRules = field(default_factory=CacheRules)
    _seen: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False)

    def __len__(self) -> int:
        return len(self._seen)

    def lookup(self, chain: Sequence[Prefix]) -> int:
        """Cached tokens: those of the longest prefix of `chain` seen before."""
        for prefix in reversed(chain):
            if prefix.digest in self._seen:
                return self.rules.count(prefix.tokens)
        return 0

    def store(self, chain: Iterable[Prefix]) -> None:
        seen = self._seen
        for prefix in chain:
            seen[prefix.digest] = None
            seen.move_to_end(prefix.digest)
        while len(seen) > self.capacity:
            seen.popitem(last=False)

    def clear(self) -> None:
        self._seen.clear()
