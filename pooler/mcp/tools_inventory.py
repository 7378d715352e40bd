"""The inventory tools (see `pooler.mcp.tool`): upstream accounts with their quota and the
console's "why not taking traffic" verdict, Pool API keys, operators (owner only), invites,
and each Pool's remaining capacity. They read through the console's and the store's own
functions (`upstream_view`, `api_keys_view`, `store.operators`, `store.invites`,
`overview_figures`), scoped to the caller's Pools: another Pool's id is refused in the
same words as an unknown one.

Their readable text is in `inventory_text`, their models in `inventory_models`.
`make_tools(live)` builds them with an optional `LiveSource` (the gateway's in-memory
account state); `TOOLS` is built without one and answers from the store
(`inventory_state`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from pooler.admin_ui.api_keys_view import KeyRow, effort_text, visible_keys
from pooler.admin_ui.upstream_view import AccountRow, Live, load_accounts
from pooler.mcp import inventory_models as im
from pooler.mcp import inventory_text as txt
from pooler.mcp.inventory_state import LiveSource, account_states, capacities
from pooler.mcp.masking import mask_email
from pooler.mcp.tool import McpCaller, ToolRefusal, ToolSpec
from pooler.store import invites, operators, pools
from pooler.store.common import Conn, NotFoundError
from pooler.store.invites import LIST_LIMIT, InviteRow
from pooler.store.models import Operator, Pool


def _at(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def visible_pools(conn: Conn, caller: McpCaller) -> list[Pool]:
    return [p for p in pools.list_pools(conn) if caller.may_see(p.id)]


def chosen_pool(found: Sequence[Pool], ref: str | None) -> Pool | None:
    """The visible Pool named or id'd by `ref` (None: no filter); refused when none is."""
    if ref is None:
        return None
    for pool in found:
        if ref in (str(pool.id), pool.name):
            return pool
    raise ToolRefusal("no such Pool")


# --- upstream accounts -------------------------------------------------------------------


def account_out(account: AccountRow, state: Live | None) -> im.AccountOut:
    return im.AccountOut(
        id=account.id,
        label=account.label,
        email=mask_email(account.email),
        plan_type=account.plan_type,
        lifecycle=account.lifecycle,
        lifecycle_reason=account.reason,
        created_at=account.created_at,
        pools=[
            im.PoolLinkOut(
                pool_id=p.pool_id, pool_name=p.name, assignment_status=p.status, weight=p.weight
            )
            for p in account.pools
        ],
        quota_windows=[
            im.QuotaWindowOut(
                family=q.family,
                window=q.window,
                name=q.name,
                used_percent=q.used_percent,
                window_minutes=q.window_minutes,
                reset_at=q.reset_at,
                observed_at=q.observed_at,
                source=q.source,
                limit_name=q.limit_name,
            )
            for q in account.quota
        ],
        credits=(
            im.CreditsOut(
                has_credits=account.credits.has_credits,
                unlimited=account.credits.unlimited,
                balance=account.credits.balance,
            )
            if account.credits is not None
            else None
        ),
        verdicts=[
            im.VerdictOut(
                pool_name=name,
                takes_traffic=not reasons,
                reasons=[
                    im.ReasonOut(
                        code=r.code, text=r.text, until=_at(r.until), applies_to=r.applies_to
                    )
                    for r in reasons
                ],
            )
            for name, reasons in (state.verdicts if state is not None else [])
        ],
    )


def _accounts(
    conn: Conn, caller: McpCaller, live: LiveSource | None, args: im.ListAccountsIn
) -> im.AccountListOut:
    visible = visible_pools(conn, caller)
    pool = chosen_pool(visible, args.pool)
    found = [
        a
        for a in load_accounts(conn, caller.pool_ids)
        if (pool is None or any(link.pool_id == pool.id for link in a.pools))
        and (args.lifecycle is None or a.lifecycle == args.lifecycle)
    ]
    shown = found[: args.limit]
    states, source = account_states(conn, shown, {p.id: p for p in visible}, time.time(), live)
    return im.AccountListOut(
        accounts=[account_out(a, states.get(a.id)) for a in shown],
        matched=len(found),
        truncated=len(found) > len(shown),
        state_source=source,
    )


def _pool_map(conn: Conn, caller: McpCaller) -> dict[UUID, Pool]:
    return {p.id: p for p in visible_pools(conn, caller)}


def _account(
    conn: Conn, caller: McpCaller, live: LiveSource | None, args: im.AccountIdIn
) -> im.AccountDetailOut:
    found = load_accounts(conn, caller.pool_ids, args.account_id)
    if not found:
        raise ToolRefusal("no such account")
    states, source = account_states(conn, found, _pool_map(conn, caller), time.time(), live)
    return im.AccountDetailOut(
        account=account_out(found[0], states.get(found[0].id)), state_source=source
    )


# --- Pool API keys -----------------------------------------------------------------------


def key_out(row: KeyRow) -> im.KeyOut:
    return im.KeyOut(
        id=row.id,
        prefix=row.key_prefix,
        name=row.name,
        pool_id=row.pool_id,
        pool_name=row.pool_name,
        status=row.status,
        allowed_models=row.allowed_models,
        reasoning_policy=effort_text(row.reasoning_effort_mode, row.reasoning_effort),
        reasoning_effort=row.reasoning_effort,
        reasoning_effort_mode=row.reasoning_effort_mode,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        requests_24h=row.requests_24h,
    )


def _keys(conn: Conn, caller: McpCaller, args: im.ListKeysIn) -> im.KeyListOut:
    pool = chosen_pool(visible_pools(conn, caller), args.pool)
    fetch = None if args.status is not None else args.limit + 1
    rows = visible_keys(conn, caller.pool_ids, pool.id if pool else None, limit=fetch)
    rows = [r for r in rows if args.status is None or r.status == args.status]
    return im.KeyListOut(
        keys=[key_out(r) for r in rows[: args.limit]], truncated=len(rows) > args.limit
    )


def _key(conn: Conn, caller: McpCaller, args: im.KeyIdIn) -> im.KeyDetailOut:
    rows = visible_keys(conn, caller.pool_ids, key_id=args.key_id)
    if not rows:
        raise ToolRefusal("no such key")
    return im.KeyDetailOut(key=key_out(rows[0]))


# --- operators ---------------------------------------------------------------------------


def operator_out(operator: Operator, assigned: list[str]) -> im.OperatorOut:
    return im.OperatorOut(
        id=operator.id,
        email=mask_email(operator.email),
        role=operator.role,
        status=operator.status,
        assigned_pools=assigned if operator.role != "owner" else [],
        totp_enabled=operator.totp_enabled,
        must_change_password=operator.must_change_password,
        created_at=operator.created_at,
        last_login_at=operator.last_login_at,
    )


def _owner_only(caller: McpCaller) -> None:
    """The server lists these tools to owners only; refused here too, whatever calls them."""
    if not caller.is_owner:
        raise ToolRefusal("only an owner may see operators")


def _operators(conn: Conn, caller: McpCaller, args: im.ListOperatorsIn) -> im.OperatorListOut:
    _owner_only(caller)
    found = operators.list_operators(conn)
    assigned = operators.assigned_pools(conn)
    return im.OperatorListOut(
        operators=[operator_out(o, assigned.get(o.id, [])) for o in found[: args.limit]],
        truncated=len(found) > args.limit,
    )


def _operator(conn: Conn, caller: McpCaller, args: im.OperatorIdIn) -> im.OperatorDetailOut:
    _owner_only(caller)
    try:
        found = operators.get_operator(conn, args.operator_id)
    except NotFoundError:
        raise ToolRefusal("no such operator") from None
    return im.OperatorDetailOut(
        operator=operator_out(found, operators.assigned_pools(conn).get(found.id, []))
    )


# --- invites -----------------------------------------------------------------------------


def _masked_actor(actor: str | None) -> str | None:
    return mask_email(actor) if actor is not None and "@" in actor else actor


def invite_out(row: InviteRow) -> im.InviteOut:
    return im.InviteOut(
        id=row.id,
        pool_id=row.pool_id,
        pool_name=row.pool_name,
        status=row.status,
        created_by=_masked_actor(row.created_by),
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        revoked_at=row.revoked_at,
        used_by_account=row.account_label,
    )


def _invites(conn: Conn, caller: McpCaller, args: im.ListInvitesIn) -> im.InviteListOut:
    pool = chosen_pool(visible_pools(conn, caller), args.pool)
    scope = frozenset({pool.id}) if pool is not None else caller.pool_ids
    fetch = LIST_LIMIT if args.status is not None else args.limit + 1
    rows = [
        r
        for r in invites.list_invites(conn, scope, fetch)
        if args.status is None or r.status == args.status
    ]
    return im.InviteListOut(
        invites=[invite_out(r) for r in rows[: args.limit]], truncated=len(rows) > args.limit
    )


def _invite(conn: Conn, caller: McpCaller, args: im.InviteIdIn) -> im.InviteDetailOut:
    found = invites.find_invite(conn, caller.pool_ids, args.invite_id)
    if found is None:
        raise ToolRefusal("no such invite")
    return im.InviteDetailOut(invite=invite_out(found))


# --- capacity ----------------------------------------------------------------------------


def _capacity(
    conn: Conn, caller: McpCaller, live: LiveSource | None, args: im.CapacityIn
) -> im.CapacityOut:
    shown = visible_pools(conn, caller)
    pool = chosen_pool(shown, args.pool)
    chosen = [pool] if pool is not None else shown
    accounts = load_accounts(conn, frozenset(p.id for p in chosen))
    now = time.time()
    states, source = account_states(conn, accounts, {p.id: p for p in shown}, now, live)
    return im.CapacityOut(
        pools=[
            im.PoolCapacityOut(
                pool_id=c.pool.id,
                pool_name=c.pool.name,
                pool_status=c.pool.status,
                quota_threshold_percent=float(c.pool.quota_threshold_percent),
                accounts=c.accounts,
                usable_accounts=c.usable,
                windows=[
                    im.WindowCapacityOut(
                        window=w.key,
                        name=w.name,
                        remaining_accounts=round(w.left, 3),
                        usable_accounts=w.usable,
                        unsampled_accounts=w.unsampled,
                        earliest_reset=_at(w.reset_at),
                    )
                    for w in c.windows
                ],
                at_risk=[
                    im.AtRiskOut(
                        account_id=r.account_id,
                        label=r.label,
                        window=r.window,
                        used_percent=r.used_percent,
                        percent_per_minute=round(r.percent_per_minute, 4),
                        minutes_to_limit=round(r.minutes_to_limit, 1),
                        reset_at=r.reset_at,
                    )
                    for r in c.at_risk
                ],
            )
            for c in capacities(conn, chosen, accounts, states, now)
        ],
        state_source=source,
    )


# --- the list ----------------------------------------------------------------------------


def make_tools(live: LiveSource | None = None) -> list[ToolSpec]:
    """The inventory tools; with `live`, account verdicts and capacity use the gateway's
    in-memory state when the supervisor answers."""
    return [
        ToolSpec(
            name="list_upstream_accounts",
            title="List upstream accounts",
            description="Upstream ChatGPT accounts (filter by Pool, lifecycle): masked email,"
            " plan, lifecycle, quota windows, credits, Pools with weights, and why each is"
            " not taking traffic now.",
            input_model=im.ListAccountsIn,
            output_model=im.AccountListOut,
            run=lambda conn, caller, args: _accounts(conn, caller, live, args),
            summary=txt.accounts_summary,
        ),
        ToolSpec(
            name="get_upstream_account",
            title="Get an upstream account",
            description="One upstream account by id: quota windows, credits, Pools and why it"
            " is not taking traffic now.",
            input_model=im.AccountIdIn,
            output_model=im.AccountDetailOut,
            run=lambda conn, caller, args: _account(conn, caller, live, args),
            summary=txt.account_summary,
        ),
        ToolSpec(
            name="list_pool_keys",
            title="List Pool API keys",
            description="Pool API keys (filter by Pool, status): prefix, name, status, model"
            " and reasoning policy, created, last used, requests in the last 24 h.",
            input_model=im.ListKeysIn,
            output_model=im.KeyListOut,
            run=_keys,
            summary=txt.keys_summary,
        ),
        ToolSpec(
            name="get_pool_key",
            title="Get a Pool API key",
            description="One Pool API key by id: prefix, status, policy and usage summary.",
            input_model=im.KeyIdIn,
            output_model=im.KeyDetailOut,
            run=_key,
            summary=lambda out: txt.key_line(out.key),
        ),
        ToolSpec(
            name="list_operators",
            title="List operators",
            description="Console operators (owner only): masked email, role, status, assigned"
            " Pools, second factor.",
            input_model=im.ListOperatorsIn,
            output_model=im.OperatorListOut,
            run=_operators,
            summary=txt.operators_summary,
            owner_only=True,
        ),
        ToolSpec(
            name="get_operator",
            title="Get an operator",
            description="One console operator by id (owner only).",
            input_model=im.OperatorIdIn,
            output_model=im.OperatorDetailOut,
            run=_operator,
            summary=lambda out: txt.operator_line(out.operator),
            owner_only=True,
        ),
        ToolSpec(
            name="list_invites",
            title="List onboarding invites",
            description="Invites that onboard an upstream account into a Pool (filter by Pool,"
            " status): status, creator (masked), expiry, the account that used it.",
            input_model=im.ListInvitesIn,
            output_model=im.InviteListOut,
            run=_invites,
            summary=txt.invites_summary,
        ),
        ToolSpec(
            name="get_invite",
            title="Get an onboarding invite",
            description="One onboarding invite by id.",
            input_model=im.InviteIdIn,
            output_model=im.InviteDetailOut,
            run=_invite,
            summary=lambda out: txt.invite_line(out.invite),
        ),
        ToolSpec(
            name="pool_capacity",
            title="Pool capacity",
            description="Per Pool and quota window: remaining capacity over usable accounts,"
            " earliest reset, and accounts at risk of running out within the next hour at"
            " their recent rate.",
            input_model=im.CapacityIn,
            output_model=im.CapacityOut,
            run=lambda conn, caller, args: _capacity(conn, caller, live, args),
            summary=txt.capacity_summary,
        ),
    ]


TOOLS: list[ToolSpec] = make_tools()
