"""`pooler admin ...`: the admin pages' operations for scripts and tests, through the same
service layer (pooler.store). Changes reach a running gateway at once (NOTIFY)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import httpx

from pooler.cli.admin_alerts import register_alerts
from pooler.cli.admin_keys import register_keys
from pooler.cli.admin_login import register_login
from pooler.cli.admin_operators import register_operators
from pooler.cli.admin_settings import register_settings
from pooler.cli.admin_stats import register_stats
from pooler.cli.admin_usage import register_usage
from pooler.cli.common import CommandError, emit, plain, run_in_store, table, with_json
from pooler.config import load_config
from pooler.crypto import Keyring
from pooler.store import accounts, mcp_tokens, operators, pools, refresh
from pooler.store.common import Conn

REFRESH_TIMEOUT_S: Final = 10.0  # one OAuth request; retries are bounded by oauth.RetryPolicy


def register(commands: Any) -> None:
    admin = commands.add_parser("admin", help="manage operators, Pools, accounts and keys")
    groups = admin.add_subparsers(dest="group", required=True, metavar="GROUP")
    register_settings(groups)
    register_operators(groups)

    owner = groups.add_parser("owner", help="instance owner").add_subparsers(
        dest="action", required=True
    )
    create = owner.add_parser("create", help="create the instance owner")
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", default="")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password (12-128 characters, not a common one) from standard input",
    )
    with_json(create).set_defaults(handler=owner_create)
    with_json(owner.add_parser("list", help="list operators")).set_defaults(handler=owner_list)

    pool = groups.add_parser("pool", help="Pools").add_subparsers(dest="action", required=True)
    create = pool.add_parser("create", help="create a Pool")
    create.add_argument("name")
    create.add_argument(
        "--strategy",
        default="least_used",
        choices=pools.STRATEGIES,
        help="how an account is chosen (default least_used)",
    )
    with_json(create).set_defaults(handler=pool_create)
    update = pool.add_parser("update", help="change a Pool")
    update.add_argument("name")
    update.add_argument("--strategy", choices=pools.STRATEGIES, help="how an account is chosen")
    update.add_argument("--status", choices=["active", "disabled"])
    update.add_argument("--retry-budget", type=int)
    update.add_argument("--quota-threshold", type=float, dest="quota_threshold_percent")
    update.add_argument("--max-in-flight", type=int, dest="max_in_flight_per_account")
    update.add_argument(
        "--continuity",
        choices=["on", "off"],
        help="keep each conversation on the account holding its prompt cache",
    )
    update.add_argument(
        "--v1", choices=["on", "off"], help="serve the OpenAI-compatible /v1 API to its keys"
    )
    with_json(update).set_defaults(handler=pool_update)
    with_json(pool.add_parser("list", help="list Pools")).set_defaults(handler=pool_list)
    delete = pool.add_parser(
        "delete", help="delete a Pool (refused while it has active keys or assigned accounts)"
    )
    delete.add_argument("name")
    with_json(delete).set_defaults(handler=pool_delete)

    account = groups.add_parser("account", help="upstream accounts").add_subparsers(
        dest="action", required=True
    )
    imp = account.add_parser("import", help="import a Codex auth.json into a Pool")
    imp.add_argument("file", type=Path)
    imp.add_argument("--pool", required=True)
    imp.add_argument("--label")
    with_json(imp).set_defaults(handler=account_import)
    register_login(account)
    lst = account.add_parser("list", help="list accounts with lifecycle and quota")
    lst.add_argument("--pool")
    with_json(lst).set_defaults(handler=account_list)

    assign = account.add_parser("assign", help="assign an account to a Pool (weight, status)")
    assign.add_argument("account", help="account id, label or email")
    assign.add_argument("--pool", required=True)
    assign.add_argument("--weight", type=int)
    assign.add_argument("--status", choices=["active", "disabled"], default="active")
    with_json(assign).set_defaults(handler=account_assign)

    pause = account.add_parser("pause", help="take an account out of routing")
    pause.add_argument("account", help="account id, label or email")
    pause.add_argument("--reason", help="a note kept with the lifecycle")
    with_json(pause).set_defaults(handler=account_pause)
    resume = account.add_parser("resume", help="put a paused account back into routing")
    resume.add_argument("account", help="account id, label or email")
    with_json(resume).set_defaults(handler=account_resume)
    refresh = account.add_parser("refresh", help="refresh an account's tokens now")
    refresh.add_argument("account", help="account id, label or email")
    with_json(refresh).set_defaults(handler=account_refresh)
    delete = account.add_parser("delete", help="delete an account, its tokens and its quota")
    delete.add_argument("account", help="account id, label or email")
    with_json(delete).set_defaults(handler=account_delete)

    register_keys(groups)
    register_stats(groups)
    register_usage(groups)
    register_alerts(groups)

    mcp = groups.add_parser(
        "mcp-token", help="operator tokens for the read-only /mcp endpoint"
    ).add_subparsers(dest="action", required=True)
    create = mcp.add_parser(
        "create", help="create an operator's MCP token (printed once, never stored in clear)"
    )
    create.add_argument("--email", required=True, help="the operator the token speaks for")
    create.add_argument("--name", default="", help="a name to tell the token apart")
    with_json(create).set_defaults(handler=mcp_token_create)
    with_json(mcp.add_parser("list", help="list MCP tokens")).set_defaults(handler=mcp_token_list)
    delete = mcp.add_parser("delete", help="delete an MCP token (it stops working at once)")
    delete.add_argument("token", help="the token's prefix (from list) or id")
    with_json(delete).set_defaults(handler=mcp_token_delete)


def owner_create(args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise CommandError("no password on standard input")
    operator = run_in_store(
        lambda conn: operators.create_owner(
            conn, args.email, password, display_name=args.display_name, actor="cli"
        )
    )
    return emit(args, operator, f"owner {operator.email} created")


def owner_list(args: argparse.Namespace) -> int:
    found = run_in_store(operators.list_operators)
    rows = [[o.email, o.role, o.status] for o in found]
    return emit(args, found, table(rows, ["EMAIL", "ROLE", "STATUS"]))


def pool_create(args: argparse.Namespace) -> int:
    pool = run_in_store(lambda conn: pools.create_pool(conn, args.name, args.strategy, actor="cli"))
    return emit(args, pool, f"pool {pool.name} created (strategy {pool.strategy})")


def pool_update(args: argparse.Namespace) -> int:
    changes = {
        name: getattr(args, name)
        for name in (
            "strategy",
            "status",
            "retry_budget",
            "quota_threshold_percent",
            "max_in_flight_per_account",
        )
        if getattr(args, name) is not None
    }
    if args.continuity is not None:
        changes["continuity_enabled"] = args.continuity == "on"
    if args.v1 is not None:
        changes["v1_enabled"] = args.v1 == "on"
    pool = run_in_store(lambda conn: pools.update_pool(conn, args.name, actor="cli", **changes))
    return emit(args, pool, f"pool {pool.name} updated")


def pool_list(args: argparse.Namespace) -> int:
    found = run_in_store(pools.list_pools)
    rows = [
        [p.name, p.strategy, p.status, str(p.retry_budget), "on" if p.v1_enabled else "off"]
        for p in found
    ]
    return emit(args, found, table(rows, ["NAME", "STRATEGY", "STATUS", "RETRIES", "V1"]))


def pool_delete(args: argparse.Namespace) -> int:
    pool = run_in_store(lambda conn: pools.delete_pool(conn, args.name, actor="cli"))
    return emit(args, pool, f"pool {pool.name} deleted")


def account_import(args: argparse.Namespace) -> int:
    try:
        auth_json = json.loads(args.file.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read {args.file}: {exc}") from exc
    config = load_config()
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    account = run_in_store(
        lambda conn: accounts.import_account(
            conn, keyring, args.pool, auth_json, args.label, actor="cli"
        )
    )
    return emit(
        args, account, f"account {account.label} ({account.email or '-'}) imported into {args.pool}"
    )


def account_list(args: argparse.Namespace) -> int:
    found = run_in_store(lambda conn: accounts.list_accounts(conn, args.pool))
    rows = []
    for a in found:
        quota = {(q.family, q.window): q.used_percent for q in a.quota}
        primary = quota.get(("codex", "primary"))
        secondary = quota.get(("codex", "secondary"))
        rows.append(
            [
                a.label,
                a.email or "-",
                a.plan_type or "-",
                a.lifecycle,
                ",".join(a.pools) or "-",
                f"{primary:.0f}%" if primary is not None else "-",
                f"{secondary:.0f}%" if secondary is not None else "-",
            ]
        )
    header = ["LABEL", "EMAIL", "PLAN", "LIFECYCLE", "POOLS", "5H", "WEEK"]
    return emit(args, found, table(rows, header))


def _account_id(conn: Conn, ref: str) -> UUID:
    """The account an operator named by id, label or email (StoreError if not exactly one)."""
    return accounts.resolve_account(conn, ref).id


def account_assign(args: argparse.Namespace) -> int:
    def assign(conn: Conn) -> Any:
        return pools.set_assignment(
            conn,
            args.pool,
            _account_id(conn, args.account),
            status=args.status,
            weight=args.weight,
            actor="cli",
        )

    assignment = run_in_store(assign)
    return emit(
        args,
        assignment,
        f"account assigned to {args.pool} (status {assignment.status}, weight {assignment.weight})",
    )


def account_pause(args: argparse.Namespace) -> int:
    account = run_in_store(
        lambda conn: accounts.pause_account(
            conn, _account_id(conn, args.account), args.reason, actor="cli"
        )
    )
    return emit(args, account, f"account {account.label} paused")


def account_resume(args: argparse.Namespace) -> int:
    account = run_in_store(
        lambda conn: accounts.resume_account(conn, _account_id(conn, args.account), actor="cli")
    )
    return emit(args, account, f"account {account.label} resumed")


def account_delete(args: argparse.Namespace) -> int:
    account = run_in_store(
        lambda conn: accounts.delete_account(conn, _account_id(conn, args.account), actor="cli")
    )
    return emit(args, account, f"account {account.label} deleted")


def account_refresh(args: argparse.Namespace) -> int:
    config = load_config()
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    with httpx.Client(timeout=REFRESH_TIMEOUT_S) as http:
        outcome = run_in_store(
            lambda conn: refresh.refresh_account_now(
                conn,
                keyring,
                http,
                config.auth_base_url,
                _account_id(conn, args.account),
                actor="cli",
            )
        )
    label = outcome.account.label
    if outcome.permanent:
        raise CommandError(
            f"refresh of account {label} refused ({outcome.error}): it is now reauth_required;"
            " sign it in again (`pooler admin account login`) or re-import a fresh auth.json"
        )
    if outcome.error is not None:
        raise CommandError(f"refresh of account {label} failed ({outcome.error}); try again later")
    return emit(args, outcome.account, f"account {label} refreshed")


def mcp_token_create(args: argparse.Namespace) -> int:
    config = load_config()
    raw, token = run_in_store(
        lambda conn: mcp_tokens.create_mcp_token(
            conn, config.secret_key, args.email, args.name, actor="cli"
        )
    )
    if args.json:
        return emit(args, {"token": raw, **plain(token)}, "")
    print(raw)
    print(
        f"(MCP token {token.token_prefix}… for {token.operator_email}: shown once)", file=sys.stderr
    )
    return 0


def mcp_token_delete(args: argparse.Namespace) -> int:
    token = run_in_store(lambda conn: mcp_tokens.delete_mcp_token(conn, args.token, actor="cli"))
    return emit(args, token, f"MCP token {token.token_prefix}… of {token.operator_email} deleted")


def mcp_token_list(args: argparse.Namespace) -> int:
    found = run_in_store(mcp_tokens.list_mcp_tokens)
    rows = [[t.token_prefix, t.operator_email, t.name, t.status] for t in found]
    return emit(args, found, table(rows, ["PREFIX", "OPERATOR", "NAME", "STATUS"]))
