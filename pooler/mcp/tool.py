"""What an MCP tool is, and who is calling it.

A tool is a pure function of a database connection (one transaction, in a worker thread)
and the caller, taking a validated input model and returning an output model; the server
turns the output into structured content (its JSON) plus `summary(output)` as the short
readable text. Tools are read-only and idempotent, never return a secret, a token or
content, mask emails (`pooler.mcp.masking`), and bound their lists (`DEFAULT_LIMIT`, at
most `MAX_LIMIT`; request logs `MAX_LOG_LIMIT`). A tool refuses with `ToolRefusal`
(a tool result with `isError`), e.g. for an id the caller may not see. What only the
running gateway knows (live account state) is added by the optional `enrich`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from pydantic import BaseModel

from pooler.store.common import Conn

DEFAULT_LIMIT: Final = 25
MAX_LIMIT: Final = 100
MAX_LOG_LIMIT: Final = 50


@dataclass(frozen=True, slots=True)
class McpCaller:
    """The operator behind an MCP token: an owner sees every Pool (`pool_ids` None), an
    admin only its assigned Pools."""

    operator_id: UUID
    email: str
    is_owner: bool
    pool_ids: frozenset[UUID] | None

    def may_see(self, pool_id: UUID | None) -> bool:
        return self.pool_ids is None or (pool_id is not None and pool_id in self.pool_ids)


class ToolRefusal(Exception):
    """A refusal the caller can act on (unknown id, another Pool's id): an `isError` result
    with this message, never a protocol error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str  # snake_case, unique
    title: str
    description: str  # what it answers, for the model choosing a tool
    input_model: type[BaseModel]  # model_config = ConfigDict(extra="forbid")
    output_model: type[BaseModel]
    run: Callable[[Conn, McpCaller, Any], BaseModel]
    summary: Callable[[Any], str]  # a short readable text of the output
    owner_only: bool = False
    # Optional: after `run`, on the event loop, the output completed from the gateway's
    # memory (what the console also reads live, e.g. usable accounts), as
    # `await enrich(gateway, caller, output)`; it must not touch the database.
    enrich: Callable[[Any, McpCaller, Any], Awaitable[BaseModel]] | None = None
