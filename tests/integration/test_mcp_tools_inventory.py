"""The MCP inventory tools (`pooler.mcp.tools_inventory`) called as the server calls them
(`spec.run(conn, caller, spec.input_model(...))`) against the real stack with real traffic:
each tool's answer, validated against its output model and its JSON schema; an admin sees
only its Pools (another Pool's id is refused in the words of an unknown one); operators
are owner only; bounded and strict inputs; no raw key, digest, token or full email in any
answer; control characters in a label come back intact as JSON text."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import jsonschema
import pydantic
import pytest
import trio
from harness import Stack, open_stack, responses_body

from pooler.admin_ui.upstream_view import AccountRow, Live, live_state
from pooler.mcp import tools_inventory
from pooler.mcp.tool import DEFAULT_LIMIT, McpCaller, ToolRefusal, ToolSpec
from pooler.store import invites, keys, operators, pools
from pooler.store.common import Conn
from pooler.store.quota import WindowRecord, record_quota

RESPONSES = "/backend-api/codex/responses"
OWNER_EMAIL, ADMIN_EMAIL = "jane.owner@example.com", "max.admin@example.com"
PASSWORD = "a long password 123"
TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in tools_inventory.TOOLS}
# A label as a careless import could store it: escapes, a newline, a bell. (PostgreSQL text
# cannot hold NUL, so no row, and no answer, can carry one.)
ODD_LABEL = "odd\x01\x1b[31mred\nline\x07"
ANSWERS: list[str] = []  # every answer's JSON, for the secret check


def call(conn: Conn, name: str, caller: McpCaller, **args: Any) -> Any:
    """Call a tool as the server does and check its answer against its declared shapes."""
    spec = TOOLS[name]
    out = spec.run(conn, caller, spec.input_model(**args))
    assert isinstance(out, spec.output_model)
    spec.output_model.model_validate(out.model_dump())
    as_json = json.loads(out.model_dump_json())
    jsonschema.validate(as_json, spec.output_model.model_json_schema())
    text = spec.summary(out)
    assert text.strip()
    ANSWERS.extend([out.model_dump_json(), text])
    return out


def refused(conn: Conn, name: str, caller: McpCaller, **args: Any) -> str:
    with pytest.raises(ToolRefusal) as caught:
        call(conn, name, caller, **args)
    return caught.value.message


async def send_traffic(stack: Stack, count: int) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30) as client:
        for _ in range(count):
            response = await client.post(RESPONSES, json=responses_body())
            assert response.status_code == 200


async def until_stored(stack: Stack, requests: int) -> None:
    """Wait (bounded) until the request logs and the quota evidence are written behind."""

    def counts(conn: Conn) -> tuple[int, int, int]:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM request_logs),"
            " (SELECT count(DISTINCT account_id) FROM request_logs),"
            " (SELECT count(DISTINCT account_id) FROM quota_windows)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    with trio.fail_after(30):
        while True:
            await stack.gateway.flush_quota()
            logs, served, sampled = await stack.database.run(counts)
            if logs >= requests and sampled >= served:
                return
            await trio.sleep(0.2)


class World:
    """The seeded stack plus a second Pool ('other', with one of demo's accounts, a key and
    an invite), an owner and an admin of 'other' only."""

    def __init__(self, conn: Conn, stack: Stack) -> None:
        secret = stack.config.secret_key
        owner = operators.create_owner(conn, OWNER_EMAIL, PASSWORD, actor="test")
        admin = operators.create_operator(conn, ADMIN_EMAIL, PASSWORD, "admin", actor="test")
        self.demo = pools.get_pool(conn, "demo")
        self.other = pools.create_pool(conn, "other", actor="test")
        operators.assign_pools(conn, admin.id, [self.other.id], actor="test")
        ids = [r[0] for r in conn.execute("SELECT id FROM upstream_accounts ORDER BY label")]
        self.shared, self.demo_only = ids[-1], ids[0]
        pools.set_assignment(conn, "other", self.shared, weight=3, actor="test")
        self.other_raw, other_key = keys.create_key(conn, secret, "other", "ops", actor="test")
        self.other_key = other_key.id
        demo_key = conn.execute("SELECT id FROM pool_api_keys WHERE pool_id = %s", (self.demo.id,))
        self.demo_key = demo_key.fetchone()[0]  # type: ignore[index]
        self.demo_token, demo_invite = invites.create_invite(
            conn, secret, self.demo.id, actor=OWNER_EMAIL
        )
        self.other_token, other_invite = invites.create_invite(
            conn, secret, self.other.id, actor=OWNER_EMAIL
        )
        self.demo_invite, self.other_invite = demo_invite.id, other_invite.id
        conn.execute(
            "UPDATE upstream_accounts SET label = %s WHERE id = %s", (ODD_LABEL, self.shared)
        )
        self.owner = McpCaller(owner.id, OWNER_EMAIL, True, None)
        self.admin = McpCaller(admin.id, ADMIN_EMAIL, False, frozenset({self.other.id}))
        self.admin_id = admin.id
        raw = [stack.key, self.other_raw, self.demo_token, self.other_token]
        for account in stack.emulator.accounts:  # the upstream tokens, as issued
            raw += [account.tokens.access_token, account.tokens.refresh_token]
        self.secrets = [*secrets_of(conn), *raw]


def secrets_of(conn: Conn) -> list[str]:
    """Every digest (hex and as stored), every full email in the database."""
    found: list[str] = []
    for (digest,) in conn.execute(
        "SELECT key_digest FROM pool_api_keys UNION ALL SELECT token_digest FROM pool_invites"
    ):
        found += [bytes(digest).hex(), bytes(digest).hex().upper()]
    for (email,) in conn.execute(
        "SELECT email FROM upstream_accounts WHERE email IS NOT NULL"
        " UNION ALL SELECT email FROM operators"
    ):
        found.append(email)
    return found


@pytest.fixture
async def world(db_url: str, pg_data_dir: Path) -> Any:
    async with open_stack(db_url, pg_data_dir) as stack:
        await send_traffic(stack, 6)
        await until_stored(stack, 6)
        made = await stack.database.run(lambda conn: World(conn, stack))
        yield stack, made


async def run(stack: Stack, fn: Callable[[Conn], Any]) -> Any:
    return await stack.database.run(fn)


async def test_each_tool_answers_with_real_data(world: tuple[Stack, World]) -> None:
    stack, w = world
    ANSWERS.clear()

    def check(conn: Conn) -> None:
        listed = call(conn, "list_upstream_accounts", w.owner)
        assert listed.matched == 3 and not listed.truncated and listed.state_source == "stored"
        by_id = {a.id: a for a in listed.accounts}
        shared = by_id[w.shared]
        assert shared.label == ODD_LABEL
        assert {(p.pool_name, p.weight) for p in shared.pools} == {("demo", 1), ("other", 3)}
        assert all(a.email and "***" in a.email for a in listed.accounts)
        shown = {(a.id, q.window): q for a in listed.accounts for q in a.quota_windows}
        stored = conn.execute(
            "SELECT account_id, window_kind, used_percent::float8, reset_at FROM quota_windows"
        ).fetchall()
        assert stored, "the traffic left quota evidence"
        assert {(a, k): (u, r) for a, k, u, r in stored} == {
            key: (q.used_percent, q.reset_at) for key, q in shown.items()
        }
        assert all(q.source == "headers" and q.window_minutes for q in shown.values())
        assert all(v.takes_traffic and not v.reasons for a in listed.accounts for v in a.verdicts)
        # The verdict in words, as the console shows it: a paused account.
        conn.execute(
            "UPDATE upstream_accounts SET lifecycle = 'paused', lifecycle_reason = 'maintenance'"
            " WHERE id = %s",
            (w.demo_only,),
        )
        paused = call(conn, "get_upstream_account", w.owner, account_id=str(w.demo_only))
        verdict = paused.account.verdicts[0]
        assert not verdict.takes_traffic and verdict.reasons[0].code == "not_active"
        assert "paused" in verdict.reasons[0].text and "maintenance" in verdict.reasons[0].text
        only_paused = call(conn, "list_upstream_accounts", w.owner, lifecycle="paused")
        assert [a.id for a in only_paused.accounts] == [w.demo_only]
        in_other = call(conn, "list_upstream_accounts", w.owner, pool="other")
        assert [a.id for a in in_other.accounts] == [w.shared]

        keys_out = call(conn, "list_pool_keys", w.owner)
        demo_key = next(k for k in keys_out.keys if k.id == w.demo_key)
        assert demo_key.requests_24h == 6
        assert demo_key.reasoning_policy == "Any" and demo_key.allowed_models is None
        one = call(conn, "get_pool_key", w.owner, key_id=str(w.other_key))
        assert one.key.pool_name == "other" and one.key.requests_24h == 0
        assert one.key.prefix and one.key.prefix in w.other_raw
        assert [k.id for k in call(conn, "list_pool_keys", w.owner, pool="other").keys] == [
            w.other_key
        ]

        ops = call(conn, "list_operators", w.owner)
        admin = next(o for o in ops.operators if o.id == w.admin_id)
        assert admin.email == "m***n@example.com" and admin.assigned_pools == ["other"]
        assert admin.role == "admin" and admin.totp_enabled is False
        got = call(conn, "get_operator", w.owner, operator_id=str(w.admin_id))
        assert got.operator == admin

        inv = call(conn, "list_invites", w.owner)
        assert {i.id for i in inv.invites} == {w.demo_invite, w.other_invite}
        assert all(
            i.status == "pending" and i.created_by == "j***r@example.com" for i in inv.invites
        )
        one_inv = call(conn, "get_invite", w.owner, invite_id=str(w.demo_invite))
        assert one_inv.invite.pool_name == "demo" and one_inv.invite.used_by_account is None
        assert call(conn, "list_invites", w.owner, status="used").invites == []

        capacity = call(conn, "pool_capacity", w.owner)
        demo = next(p for p in capacity.pools if p.pool_name == "demo")
        assert demo.accounts == 3 and demo.usable_accounts == 2  # one is paused
        primary = next(x for x in demo.windows if x.window == "primary")
        assert 0 < primary.remaining_accounts <= 2 and primary.earliest_reset is not None

    await run(stack, check)
    dumped = "\n".join(ANSWERS)
    assert len(ANSWERS) >= 2 * len(TOOLS)
    for secret in w.secrets:
        assert secret not in dumped
    # The odd label travels as JSON text and comes back as it was stored.
    assert ODD_LABEL not in dumped and json.dumps(ODD_LABEL)[1:-1] in dumped
    # ... and the readable summary shows it escaped: no terminal escape runs from it.
    assert "\x1b" not in "".join(ANSWERS[1::2])


async def test_capacity_names_accounts_about_to_run_out(world: tuple[Stack, World]) -> None:
    stack, w = world

    def check(conn: Conn) -> None:
        # What one request cost an account so far in its 5 h window is its used percent
        # over its requests since the window began; its rate, that times its requests of
        # the last 30 minutes. The busiest account is at 20 % (evidence stored as the
        # gateway stores it), all its requests recent: 20 % per 30 minutes, so a threshold
        # of 30 % is 15 minutes away. The others (a few % at most) are hours away.
        stored = conn.execute(
            "SELECT account_id, count(*) FROM request_logs GROUP BY account_id ORDER BY 2 DESC"
        ).fetchall()
        busiest, _ = stored[0]
        now = datetime.now(UTC)
        window = WindowRecord("codex", "primary", 20.0, 300, now + timedelta(hours=4), now)
        record_quota(conn, busiest, [window])
        pools.update_pool(conn, "demo", quota_threshold_percent=30, actor="test")
        demo = call(conn, "pool_capacity", w.owner, pool="demo").pools[0]
        assert [r.account_id for r in demo.at_risk] == [busiest]
        risk = demo.at_risk[0]
        assert risk.window == "primary" and risk.used_percent == 20.0
        assert risk.minutes_to_limit == pytest.approx(15, rel=0.05)
        # Far from its threshold, nobody is at risk.
        pools.update_pool(conn, "demo", quota_threshold_percent=100, actor="test")
        assert call(conn, "pool_capacity", w.owner, pool="demo").pools[0].at_risk == []

    await run(stack, check)


async def test_admin_sees_only_its_pools(world: tuple[Stack, World]) -> None:
    stack, w = world

    def check(conn: Conn) -> None:
        accounts = call(conn, "list_upstream_accounts", w.admin)
        assert [a.id for a in accounts.accounts] == [w.shared]
        assert [p.pool_name for p in accounts.accounts[0].pools] == ["other"]
        assert [v.pool_name for v in accounts.accounts[0].verdicts] == ["other"]
        assert [k.id for k in call(conn, "list_pool_keys", w.admin).keys] == [w.other_key]
        assert [i.id for i in call(conn, "list_invites", w.admin).invites] == [w.other_invite]
        assert [p.pool_name for p in call(conn, "pool_capacity", w.admin).pools] == ["other"]
        for name, field, theirs, what in (
            ("get_upstream_account", "account_id", w.demo_only, "account"),
            ("get_pool_key", "key_id", w.demo_key, "key"),
            ("get_invite", "invite_id", w.demo_invite, "invite"),
        ):
            # Another Pool's id is refused exactly as an id that does not exist.
            assert refused(conn, name, w.admin, **{field: str(theirs)}) == f"no such {what}"
            assert refused(conn, name, w.admin, **{field: str(uuid4())}) == f"no such {what}"
            call(conn, name, w.owner, **{field: str(theirs)})
        for name in ("list_upstream_accounts", "list_pool_keys", "list_invites", "pool_capacity"):
            assert refused(conn, name, w.admin, pool="demo") == "no such Pool"
            assert refused(conn, name, w.admin, pool=str(w.demo.id)) == "no such Pool"
        assert TOOLS["list_operators"].owner_only and TOOLS["get_operator"].owner_only
        refused(conn, "list_operators", w.admin)
        refused(conn, "get_operator", w.admin, operator_id=str(w.admin_id))
        assert refused(conn, "get_operator", w.owner, operator_id=str(uuid4())) == (
            "no such operator"
        )

    await run(stack, check)


async def test_limits_bound_every_list(world: tuple[Stack, World]) -> None:
    stack, w = world

    def check(conn: Conn) -> None:
        for n in range(30):
            keys.create_key(conn, stack.config.secret_key, "demo", f"k{n}", actor="test")
        listed = call(conn, "list_pool_keys", w.owner)
        assert len(listed.keys) == DEFAULT_LIMIT and listed.truncated
        assert len(call(conn, "list_pool_keys", w.owner, limit=100).keys) == 32
        two = call(conn, "list_upstream_accounts", w.owner, limit=2)
        assert len(two.accounts) == 2 and two.truncated and two.matched == 3
        assert len(call(conn, "list_invites", w.owner, limit=1).invites) == 1
        assert len(call(conn, "list_operators", w.owner, limit=1).operators) == 1

    await run(stack, check)


LISTS = ("list_upstream_accounts", "list_pool_keys", "list_operators", "list_invites")


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("limit", [0, 101, -1, "5", 5.0, True])
def test_a_limit_out_of_bounds_or_not_an_integer_is_refused(name: str, limit: Any) -> None:
    with pytest.raises(pydantic.ValidationError):
        TOOLS[name].input_model(limit=limit)
    assert TOOLS[name].input_model().limit == DEFAULT_LIMIT  # type: ignore[attr-defined]
    schema = TOOLS[name].input_model.model_json_schema()
    assert schema["properties"]["limit"]["maximum"] == 100
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_unknown_fields_are_refused(name: str) -> None:
    model = TOOLS[name].input_model
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"surprise": 1})
    with pytest.raises(pydantic.ValidationError):
        model.model_validate_json('{"surprise": 1}')


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("get_upstream_account", {"account_id": "not-a-uuid"}),
        ("get_pool_key", {"key_id": 7}),
        ("list_upstream_accounts", {"lifecycle": "sleeping"}),
        ("list_pool_keys", {"pool": ""}),
        ("list_invites", {"pool": "x" * 201}),
        ("list_invites", {"status": "pending\x00"}),
    ],
)
def test_bad_values_are_refused(name: str, args: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        TOOLS[name].input_model.model_validate(args)


def test_ids_arrive_as_json_text() -> None:
    found = uuid4()
    model = TOOLS["get_pool_key"].input_model
    assert model.model_validate({"key_id": str(found)}).key_id == found  # type: ignore[attr-defined]
    assert model.model_validate_json(json.dumps({"key_id": str(found)})).key_id == found  # type: ignore[attr-defined]


async def test_a_live_source_gives_the_gateways_own_verdicts(world: tuple[Stack, World]) -> None:
    """`make_tools(live)`: the server may pass the console's `live_state`, run on the
    event loop from the tool's worker thread; its verdicts then replace the stored ones."""
    stack, w = world
    token = trio.lowlevel.current_trio_token()

    def live(accounts: Sequence[AccountRow]) -> Mapping[UUID, Live]:
        found: Mapping[UUID, Live] = trio.from_thread.run(
            live_state, stack.gateway, list(accounts), trio_token=token
        )
        return found

    specs = {spec.name: spec for spec in tools_inventory.make_tools(live)}

    def check(conn: Conn) -> None:
        spec = specs["list_upstream_accounts"]
        out = spec.run(conn, w.owner, spec.input_model())
        assert out.state_source == "live" and out.matched == 3
        assert all(v.takes_traffic for a in out.accounts for v in a.verdicts)
        spec = specs["pool_capacity"]
        capacity = spec.run(conn, w.owner, spec.input_model(pool="demo"))
        assert capacity.state_source == "live" and capacity.pools[0].usable_accounts == 3

    await run(stack, check)
