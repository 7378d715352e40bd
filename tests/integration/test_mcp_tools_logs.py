"""The MCP log tools (pooler.mcp.tools_logs, pooler.mcp.audit_tools) called as the server
calls them, `spec.run(conn, caller, spec.input_model(...))`, against a real database:
real traffic through the gateway (a failover, a conversation that moves, a refusal),
each filter, cursor pages that neither repeat nor skip, limits and strict inputs, an
admin's scope (another Pool's id refused in the words an unknown one gets), and nothing
secret in any output: not a prompt's marker, a raw key, an upstream token or an MCP token.
Every output is checked against its output model and its JSON schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import jsonschema
import pydantic
import pytest
import trio
from harness import Stack, open_stack, responses_body
from routing_support import RESPONSES, arm, completed, log_row, pause, post, seen

from pooler import store
from pooler.mcp import tools_logs
from pooler.mcp.tool import McpCaller, ToolRefusal, ToolSpec
from pooler.store import operators
from pooler.store.audit import record_event
from pooler.store.common import Conn
from pooler.store.logs import insert_attempts, insert_request_logs
from pooler.store.mcp_tokens import create_mcp_token
from pooler.store.models import AttemptRow, RequestLogRow

DEADLINE = 60
SPECS = {spec.name: spec for spec in tools_logs.TOOLS}
OWNER = McpCaller(uuid4(), "owner@example.com", True, None)
NOW = datetime.now(UTC)
FORMATS = jsonschema.FormatChecker()


def call(conn: Conn, name: str, caller: McpCaller, **args: Any) -> Any:
    """Run tool `name` as the server would, with JSON-shaped `args`; its output checked
    against the output model, the output JSON schema, and a round trip."""
    spec: ToolSpec = SPECS[name]
    jsonschema.validate(args, spec.input_model.model_json_schema(), format_checker=FORMATS)
    out = spec.run(conn, caller, spec.input_model.model_validate(args))
    assert isinstance(out, spec.output_model)
    data = out.model_dump(mode="json")
    schema = spec.output_model.model_json_schema(mode="serialization")
    jsonschema.validate(data, schema, format_checker=FORMATS)
    assert spec.output_model.model_validate_json(json.dumps(data)) == out
    assert isinstance(spec.summary(out), str) and spec.summary(out)
    return out


def refusal(conn: Conn, name: str, caller: McpCaller, **args: Any) -> str:
    spec: ToolSpec = SPECS[name]
    with pytest.raises(ToolRefusal) as refused:
        spec.run(conn, caller, spec.input_model.model_validate(args))
    return refused.value.message


def everything_shown(conn: Conn, caller: McpCaller, request_ids: list[str]) -> str:
    """Every tool's output (JSON and summary) for what `caller` sees."""
    outs: list[Any] = [
        call(conn, "list_request_logs", caller, limit=50),
        call(conn, "list_audit_events", caller, limit=50),
    ]
    for request_id in request_ids:
        outs += [
            call(conn, name, caller, request_id=request_id)
            for name in ("get_request_log", "explain_request")
        ]
    for event in outs[1].events:
        outs.append(call(conn, "get_audit_event", caller, event_id=str(event.id)))
    return "\n".join(
        out.model_dump_json() + "\n" + SPECS[_tool_of(out)].summary(out) for out in outs
    )


def _tool_of(out: Any) -> str:
    return next(n for n, s in SPECS.items() if isinstance(out, s.output_model))


# --- real traffic --------------------------------------------------------------------------


async def test_real_traffic_failover_moves_and_nothing_secret(db_url: str, tmp_path: Path) -> None:
    marker = f"mcp-marker-{uuid4().hex}"
    body = responses_body(f"Reply with exactly: {marker}", prompt_cache_key=f"conv-{marker}")
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        with trio.fail_after(DEADLINE):
            first = await post(client, body)
            completed(first)
            [served] = await seen(stack)
            pinned = served["label"]
            await arm(stack, pinned, "server_error_500")
            failover = await post(client, body)  # the pinned account answers 500: moved
            completed(failover)
            moved_to = (await seen(stack))[-1]["label"]
            await pause(stack, moved_to)
            paused_move = await post(client, body)  # the pin's account is paused: moved
            completed(paused_move)
            refused = await client.post(
                RESPONSES, content=b'{"model": ', headers={"content-type": "application/json"}
            )
            assert refused.status_code == 400
            ids = [r.headers["x-request-id"] for r in (first, failover, paused_move, refused)]
            for request_id in ids:
                await log_row(stack, request_id)
            raw_token, _ = await stack.database.run(
                lambda conn: (
                    operators.create_owner(conn, OWNER.email, "owner password 123"),
                    create_mcp_token(conn, stack.config.secret_key, OWNER.email, "agent"),
                )[1]
            )

        def check(conn: Conn) -> str:
            page = call(conn, "list_request_logs", OWNER)
            assert [item.request_id for item in page.requests] == ids[::-1]  # newest first
            assert page.next_cursor is None

            full = call(conn, "get_request_log", OWNER, request_id=ids[1])
            assert [(a.account_label, a.status_code) for a in full.attempts] == [
                (pinned, 500),
                (moved_to, 200),
            ]
            code = full.attempts[0].error_code
            assert code and all(a.ttfb_ms is not None for a in full.attempts)
            assert full.routing.strategy == "least_used"
            assert [(c.account, c.verdict) for c in full.routing.candidates[:2]] == [
                (pinned, code),
                (moved_to, "chosen"),
            ]
            assert (full.routing.continuity, full.routing.continuity_reason) == ("moved", code)
            assert [(e.account, e.codes) for e in full.exclusions] == [(pinned, [code])]
            assert full.request.continuity_from_label == pinned
            assert full.request.pool == "demo" and full.request.key_prefix == stack.key[:12]
            # The row's own id finds it too.
            by_id = call(conn, "get_request_log", OWNER, request_id=str(full.request.id))
            assert by_id == full

            told = call(conn, "explain_request", OWNER, request_id=ids[1])
            assert f"{pinned} was tried first (least_used) and answered 500 {code}" in told.story
            assert f"the gateway failed over to {moved_to}, which answered 200" in told.story
            assert f"moved from {pinned} to {moved_to} because {pinned} failed" in told.story
            assert told.failed_over and told.served_by == moved_to
            assert told.tokens is not None and told.tokens.input

            new = call(conn, "explain_request", OWNER, request_id=ids[0])
            assert f"new conversation, now pinned to {pinned}" in new.story
            moved = call(conn, "explain_request", OWNER, request_id=ids[2])
            assert moved.continuity_reason == "not_active"
            assert f"because {moved_to} was not active" in moved.story
            early = call(conn, "explain_request", OWNER, request_id=ids[3])
            assert early.refused_before_any_account and early.status_code == 400
            assert "refused before any account was asked for" in early.story
            return everything_shown(conn, OWNER, ids)

        shown = await stack.database.run(check)
        secrets = [marker, stack.key, raw_token]
        for account in stack.emulator.accounts:
            tokens = account.tokens
            secrets += [tokens.access_token, tokens.id_token, tokens.refresh_token]
    assert "mcp.token_create" in shown and "api_key.create" in shown  # the audit is in it
    for secret in secrets:
        assert secret not in shown
    assert "owner@example.com" not in shown  # the actor and the details, masked


# --- filters, pages, scope (rows inserted) ---------------------------------------------------


@dataclass
class World:
    stack: Stack
    mine: UUID
    theirs: UUID
    admin: McpCaller
    accounts: dict[str, UUID]


def log(request_id: str, minutes_ago: float, **fields: Any) -> RequestLogRow:
    defaults: dict[str, Any] = {
        "route": "responses",
        "outcome": "completed",
        "status_code": 200,
        "transport": "http",
        "model": "gpt-5.1-codex",
        "continuity": "none",
    }
    return RequestLogRow(
        request_id=request_id,
        created_at=NOW - timedelta(minutes=minutes_ago),
        **{**defaults, **fields},
    )


@asynccontextmanager
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """Pools `mine` (the admin's) and `theirs`, a key named `alpha` in `mine`, varied
    request logs (one in no Pool), audit events in each Pool and instance-wide."""
    async with open_stack(db_url, tmp_path) as stack:

        def setup(conn: Conn) -> tuple[UUID, UUID, UUID, dict[str, UUID]]:
            mine = store.create_pool(conn, "mine")
            theirs = store.create_pool(conn, "theirs")
            admin = operators.create_operator(conn, "admin@example.com", "admin password 123")
            for pool, name, prefix in (
                (mine, "alpha", "sk-cxp-aaaaa"),
                (theirs, "", "sk-cxp-ccccc"),
            ):
                conn.execute(
                    "INSERT INTO pool_api_keys (pool_id, name, key_prefix, key_digest)"
                    " VALUES (%s, %s, %s, %s)",
                    (pool.id, name, prefix, hashlib.sha256(prefix.encode()).digest()),
                )
            accounts = dict(conn.execute("SELECT label, id FROM upstream_accounts").fetchall())
            return mine.id, theirs.id, admin.id, accounts

        mine, theirs, admin_id, accounts = await stack.database.run(setup)
        (a_label, a_id), (b_label, b_id), (c_label, c_id) = sorted(accounts.items())[:3]
        rows = [
            log("r1", 10, pool_id=mine, key_prefix="sk-cxp-aaaaa", account_id=a_id,
                account_label=a_label, transport="websocket", continuity="kept"),
            log("r2", 20, pool_id=mine, key_prefix="sk-cxp-bbbbb", account_id=b_id,
                account_label=b_label, status_code=429, outcome="refused",
                error_code="usage_limit_reached", model="gpt-5.1", route="compact",
                transport="http_json", continuity="moved"),
            log("r3", 30, pool_id=theirs, key_prefix="sk-cxp-ccccc", account_id=c_id,
                account_label=c_label, status_code=502, outcome="upstream_error",
                error_code="upstream_unavailable", continuity="new"),
            log("r4", 40, pool_id=theirs, key_prefix="sk-cxp-ccccc", account_id=c_id,
                account_label=c_label, model="gpt-5.1"),
            log("r5", 3 * 24 * 60, pool_id=mine, key_prefix="sk-cxp-aaaaa", account_id=a_id,
                account_label=a_label),
            log("r6", 50, pool_id=None, status_code=401, outcome="refused",
                error_code="invalid_api_key", model=None),
        ]  # fmt: skip
        # Twelve more in `mine` sharing one timestamp, to page through.
        same = NOW - timedelta(minutes=60)
        rows += [
            RequestLogRow(f"s{i:02}", same, "responses", "completed", pool_id=mine, status_code=201)
            for i in range(12)
        ]
        attempt = AttemptRow(
            "r3", 1, NOW, "failed", c_id, c_label, 5.0, 502, "upstream_unavailable"
        )
        await stack.database.run(lambda conn: insert_request_logs(conn, rows))
        await stack.database.run(lambda conn: insert_attempts(conn, [attempt]))
        admin = McpCaller(admin_id, "admin@example.com", False, frozenset({mine}))
        yield World(stack, mine, theirs, admin, accounts)


def ids_of(page: Any) -> set[str]:
    return {item.request_id for item in page.requests if not item.request_id.startswith("s")}


async def test_request_log_filters_pages_and_scope(db_url: str, tmp_path: Path) -> None:
    async with world(db_url, tmp_path) as w:
        a_label, a_id = sorted(w.accounts.items())[0]
        four_days = (NOW - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")
        two_days = (NOW - timedelta(days=2)).isoformat()
        cases: list[tuple[dict[str, Any], set[str]]] = [
            ({}, {"r1", "r2", "r3", "r4", "r6"}),
            ({"pool_id": str(w.mine)}, {"r1", "r2"}),
            ({"pool_id": str(w.theirs)}, {"r3", "r4"}),
            ({"key": "sk-cxp-aaaaa"}, {"r1"}),
            ({"key": "alpha"}, {"r1"}),  # a key's name: its prefix
            ({"key": "no such key"}, set()),
            ({"account": str(a_id)}, {"r1"}),
            ({"account": a_label}, {"r1"}),
            ({"status_class": "4xx"}, {"r2", "r6"}),
            ({"status_class": "5xx"}, {"r3"}),
            ({"error_code": "upstream_unavailable"}, {"r3"}),
            ({"model": "gpt-5.1"}, {"r2", "r4"}),
            ({"route": "compact"}, {"r2"}),
            ({"transport": "websocket"}, {"r1"}),
            ({"continuity": "moved"}, {"r2"}),
            ({"since": four_days, "until": two_days}, {"r5"}),
        ]

        def check(conn: Conn) -> None:
            for args, expected in cases:
                assert ids_of(call(conn, "list_request_logs", OWNER, **args)) == expected, args
            # The admin: its Pool only, whatever the filter says.
            assert ids_of(call(conn, "list_request_logs", w.admin)) == {"r1", "r2"}
            assert ids_of(call(conn, "list_request_logs", w.admin, key="sk-cxp-ccccc")) == set()
            unknown = refusal(conn, "list_request_logs", w.admin, pool_id=str(uuid4()))
            other = refusal(conn, "list_request_logs", w.admin, pool_id=str(w.theirs))
            assert unknown == other == "no such Pool"
            r3 = call(conn, "get_request_log", OWNER, request_id="r3")
            assert [(a.account_label, a.status_code) for a in r3.attempts] == [
                (sorted(w.accounts)[2], 502)
            ]
            for name in ("get_request_log", "explain_request"):
                words = {
                    refusal(conn, name, w.admin, request_id=ident)
                    for ident in ("r3", "req_unknown", str(r3.request.id), str(uuid4()))
                }
                assert words == {"no such request"}
                assert call(conn, name, w.admin, request_id="r1")
            # A bad filter value is a refusal that names the argument.
            assert refusal(conn, "list_request_logs", OWNER, since="yesterday").startswith("since")
            assert "since" in refusal(
                conn, "list_request_logs", OWNER, since=two_days, until=four_days
            )
            assert refusal(conn, "list_request_logs", OWNER, cursor="nonsense").startswith("cursor")

        await w.stack.database.run(check)

        # Pages of 5 over the 12 rows sharing a timestamp (and the rest): none repeated,
        # none skipped, and later pages keep the first page's time range.
        def pages(conn: Conn, caller: McpCaller) -> list[list[str]]:
            found: list[list[str]] = []
            cursor: str | None = None
            first = None
            while True:
                args: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
                page = call(conn, "list_request_logs", caller, **args)
                found.append([item.request_id for item in page.requests])
                assert len(page.requests) <= 5
                first = first or page
                assert page.since == first.since  # the cursor keeps the first page's range
                cursor = page.next_cursor
                if cursor is None:
                    return found

        for caller, expected in (
            (OWNER, {"r1", "r2", "r3", "r4", "r6"}),
            (w.admin, {"r1", "r2"}),
        ):
            got = await w.stack.database.run(lambda conn, c=caller: pages(conn, c))
            flat = [rid for page in got for rid in page]
            assert len(flat) == len(set(flat))
            assert set(flat) == expected | {f"s{i:02}" for i in range(12)}
            assert all(len(page) == 5 for page in got[:-1])


async def test_audit_events_filters_pages_scope_and_masking(db_url: str, tmp_path: Path) -> None:
    async with world(db_url, tmp_path) as w:

        def seed(conn: Conn) -> None:
            conn.execute("DELETE FROM audit_events")
            for i in range(7):
                record_event(
                    conn,
                    actor="jane.doe@example.com",
                    action="api_key.update",
                    target_type="api_key",
                    target_id=str(uuid4()),
                    details={
                        "before": {"name": f"k{i}"},
                        "after": {"name": f"k{i}b"},
                        "key_hash": "abc",
                        "note": "sk-cxp-0123456789abcdefXYZ",
                        "invited": "someone.else@example.org",
                    },
                    pool_id=w.mine,
                )
            record_event(
                conn, actor="cli", action="pool.update", target_type="pool",
                target_id=str(w.theirs), pool_id=w.theirs, outcome="refused",
            )  # fmt: skip
            record_event(
                conn, actor="cli", action="instance_settings.update", target_type="instance",
                target_id="instance", details={"mcp.enabled": True},
            )  # fmt: skip

        await w.stack.database.run(seed)

        def check(conn: Conn) -> None:
            everyone = call(conn, "list_audit_events", OWNER)
            assert len(everyone.events) == 9
            cases: list[tuple[dict[str, Any], int]] = [
                ({"actor": "jane.doe@example.com"}, 7),
                ({"actor": "cli"}, 2),
                ({"action": "api_key.update"}, 7),
                ({"action": "api_key."}, 7),
                ({"action": "pool*"}, 1),
                ({"target_type": "pool", "target_id": str(w.theirs)}, 1),
                ({"pool_id": str(w.theirs)}, 1),
                ({"instance_wide": True}, 1),
                ({"outcome": "refused"}, 1),
                ({"since": (NOW + timedelta(hours=1)).isoformat()}, 0),
                ({"until": (NOW - timedelta(hours=1)).isoformat()}, 0),
            ]
            for args, count in cases:
                assert len(call(conn, "list_audit_events", OWNER, **args).events) == count, args
            event = everyone.events[-1]
            assert event.actor == "j***e@example.com"
            assert event.details["key_hash"] != "abc"
            assert "sk-cxp-0123456789" not in json.dumps(event.details)
            assert event.details["invited"] == "s***e@example.org"
            assert event.details["before"] == {"name": "k0"}
            assert event.pool == "mine"
            assert call(conn, "get_audit_event", OWNER, event_id=str(event.id)) == event

            # The admin: its Pool's events only, never an instance-wide one.
            mine = call(conn, "list_audit_events", w.admin, limit=50)
            assert {e.pool_id for e in mine.events} == {w.mine} and len(mine.events) == 7
            theirs_id = next(e.id for e in everyone.events if e.pool_id == w.theirs)
            wide_id = next(e.id for e in everyone.events if e.pool_id is None)
            words = {
                refusal(conn, "get_audit_event", w.admin, event_id=str(ident))
                for ident in (theirs_id, wide_id, uuid4())
            }
            assert words == {"no such event"}
            unknown = refusal(conn, "list_audit_events", w.admin, pool_id=str(uuid4()))
            other = refusal(conn, "list_audit_events", w.admin, pool_id=str(w.theirs))
            assert unknown == other == "no such Pool"
            assert "owners only" in refusal(conn, "list_audit_events", w.admin, instance_wide=True)
            assert refusal(conn, "list_audit_events", OWNER, cursor="x").startswith("cursor")
            assert refusal(conn, "list_audit_events", OWNER, since="soon").startswith("since")

            # Pages of 2: none repeated, none skipped.
            seen_ids: list[UUID] = []
            cursor: str | None = None
            while True:
                more: dict[str, Any] = {"cursor": cursor} if cursor else {}
                page = call(conn, "list_audit_events", OWNER, limit=2, **more)
                seen_ids += [e.id for e in page.events]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen_ids == [e.id for e in everyone.events]

        await w.stack.database.run(check)


# --- inputs (no database) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("list_request_logs", {"limit": 51}),
        ("list_request_logs", {"limit": 0}),
        ("list_request_logs", {"limit": "5"}),
        ("list_request_logs", {"limit": True}),
        ("list_request_logs", {"unknown": 1}),
        ("list_request_logs", {"model": 5}),
        ("list_request_logs", {"status_class": "6xx"}),
        ("list_request_logs", {"transport": "carrier pigeon"}),
        ("list_request_logs", {"error_code": "has spaces"}),
        ("list_request_logs", {"pool_id": "not-a-uuid"}),
        ("list_request_logs", {"model": "x" * 201}),
        ("get_request_log", {}),
        ("get_request_log", {"request_id": ""}),
        ("get_request_log", {"request_id": 12}),
        ("explain_request", {"request_id": "r1", "verbose": True}),
        ("list_audit_events", {"limit": 51}),
        ("list_audit_events", {"action": "API_KEY.update"}),
        ("list_audit_events", {"instance_wide": "yes"}),
        ("list_audit_events", {"outcome": "maybe"}),
        ("get_audit_event", {"event_id": "r1"}),
    ],
)
def test_strict_inputs_refuse(name: str, args: dict[str, Any]) -> None:
    spec = SPECS[name]
    with pytest.raises(pydantic.ValidationError):
        spec.input_model.model_validate(args)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(args, spec.input_model.model_json_schema(), format_checker=FORMATS)


def test_limits_default_25_and_at_most_50() -> None:
    for name in ("list_request_logs", "list_audit_events"):
        model = SPECS[name].input_model
        assert model.model_validate({}).limit == 25  # type: ignore[attr-defined]
        assert model.model_validate({"limit": 50}).limit == 50  # type: ignore[attr-defined]
        assert model.model_json_schema()["properties"]["limit"]["maximum"] == 50


def test_the_tool_list() -> None:
    assert list(SPECS) == [
        "list_request_logs",
        "get_request_log",
        "explain_request",
        "list_audit_events",
        "get_audit_event",
    ]
    assert not any(spec.owner_only for spec in SPECS.values())
