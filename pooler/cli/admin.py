"""`pooler admin ...`: the admin pages' operations for scripts and tests, through the same
service layer (pooler.store). Changes reach a running gateway at once (NOTIFY)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from uuid import UUID

import httpx

from pooler.config import load_config
from pooler.crypto import Keyring
from pooler.db import DatabaseError
from pooler.store import accounts, mcp_tokens, operators, pools, refresh
from pooler.store.common import Conn, StoreError
from pooler.store.text import storable

T = TypeVar("T")
REFRESH_TIMEOUT_S: Final = 10.0  # one OAuth request; retries are bounded by oauth.RetryPolicy


def register(commands: Any) -> None:
    from pooler.cli.admin_keys import register_keys
    from pooler.cli.admin_settings import register_settings

    admin = commands.add_parser("admin", help="manage operators, Pools, accounts and keys")
    groups = admin.add_subparsers(dest="group", required=True, metavar="GROUP")
    register_settings(groups)

    owner = groups.add_parser("owner", help="instance owner").add_subparsers(
        dest="action", required=True
    )
    create = owner.add_parser("create", help="create the instance owner")
    create.add_argument("--email", required=True)
    create.add_argument("--password-stdin", action="store_true", required=True)
    _json(create).set_defaults(handler=owner_create)
    _json(owner.add_parser("list", help="list operators")).set_defaults(handler=owner_list)

    pool = groups.add_parser("pool", help="Pools").add_subparsers(dest="action", required=True)
    create = pool.add_parser("create", help="create a Pool")
    create.add_argument("name")
    create.add_argument(
        "--strategy",
        default="least_used",
        choices=pools.STRATEGIES,
        help="how an account is chosen (default least_used)",
    )
    _json(create).set_defaults(handler=pool_create)
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
    _json(update).set_defaults(handler=pool_update)
    _json(pool.add_parser("list", help="list Pools")).set_defaults(handler=pool_list)

    account = groups.add_parser("account", help="upstream accounts").add_subparsers(
        dest="action", required=True
    )
    imp = account.add_parser("import", help="import a Codex auth.json into a Pool")
    imp.add_argument("file", type=Path)
    imp.add_argument("--pool", required=True)
    imp.add_argument("--label")
    _json(imp).set_defaults(handler=account_import)
    lst = account.add_parser("list", help="list accounts with lifecycle and quota")
    lst.add_argument("--pool")
    _json(lst).set_defaults(handler=account_list)

    assign = account.add_parser("assign", help="assign an account to a Pool (weight, status)")
    assign.add_argument("account", help="account id, label or email")
    assign.add_argument("--pool", required=True)
    assign.add_argument("--weight", type=int)
    assign.add_argument("--status", choices=["active", "disabled"], default="active")
    _json(assign).set_defaults(handler=account_assign)

    pause = account.add_parser("pause", help="take an account out of routing")
    pause.add_argument("account", help="account id, label or email")
    pause.add_argument("--reason", help="a note kept with the lifecycle")
    _json(pause).set_defaults(handler=account_pause)
    resume = account.add_parser("resume", help="put a paused account back into routing")
    resume.add_argument("account", help="account id, label or email")
    _json(resume).set_defaults(handler=account_resume)
    refresh = account.add_parser("refresh", help="refresh an account's tokens now")
    refresh.add_argument("account", help="account id, label or email")
    _json(refresh).set_defaults(handler=account_refresh)
    delete = account.add_parser("delete", help="delete an account, its tokens and its quota")
    delete.add_argument("account", help="account id, label or email")
    _json(delete).set_defaults(handler=account_delete)

    register_keys(groups)

    mcp = groups.add_parser(
        "mcp-token",
        help="operator tokens for the coming read-only /mcp endpoint (not served yet)",
    ).add_subparsers(dest="action", required=True)
    create = mcp.add_parser(
        "create",
        help="create a token an operator's MCP client will use once /mcp exists (printed once)",
    )
    create.add_argument("--email", required=True)
    create.add_argument("--name", default="")
    _json(create).set_defaults(handler=mcp_token_create)
    _json(mcp.add_parser("list", help="list MCP tokens")).set_defaults(handler=mcp_token_list)


def _json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _run(fn: Callable[[Conn], T]) -> T:
    from pooler.cli.run import CommandError, one_line, open_database

    _, db = open_database(load_config(), min_size=1, max_size=1)
    try:
        return db.run_sync(fn)
    except StoreError as exc:
        raise CommandError(exc.message) from exc
    except DatabaseError as exc:
        raise CommandError(f"the database failed: {one_line(exc)}") from exc
    finally:
        db.close()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _emit(args: argparse.Namespace, value: Any, text: str) -> int:
    print(json.dumps(_plain(value), indent=2) if args.json else text)
    return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    # Names stored before they were checked may hold terminal escapes: print them escaped.
    table = [header, *([storable(cell, 1_000) or "" for cell in row] for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def owner_create(args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        from pooler.cli.run import CommandError

        raise CommandError("no password on standard input")
    operator = _run(lambda conn: operators.create_owner(conn, args.email, password, actor="cli"))
    return _emit(args, operator, f"owner {operator.email} created")


def owner_list(args: argparse.Namespace) -> int:
    found = _run(operators.list_operators)
    rows = [[o.email, o.role, o.status] for o in found]
    return _emit(args, found, _table(rows, ["EMAIL", "ROLE", "STATUS"]))


def pool_create(args: argparse.Namespace) -> int:
    pool = _run(lambda conn: pools.create_pool(conn, args.name, args.strategy, actor="cli"))
    return _emit(args, pool, f"pool {pool.name} created (strategy {pool.strategy})")


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
    pool = _run(lambda conn: pools.update_pool(conn, args.name, actor="cli", **changes))
    return _emit(args, pool, f"pool {pool.name} updated")


def pool_list(args: argparse.Namespace) -> int:
    found = _run(pools.list_pools)
    rows = [
        [p.name, p.strategy, p.status, str(p.retry_budget), "on" if p.v1_enabled else "off"]
        for p in found
    ]
    return _emit(args, found, _table(rows, ["NAME", "STRATEGY", "STATUS", "RETRIES", "V1"]))


def account_import(args: argparse.Namespace) -> int:
    from pooler.cli.run import CommandError

    try:
        auth_json = json.loads(args.file.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read {args.file}: {exc}") from exc
    config = load_config()
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    account = _run(
        lambda conn: accounts.import_account(
            conn, keyring, args.pool, auth_json, args.label, actor="cli"
        )
    )
    return _emit(
        args, account, f"account {account.label} ({account.email or '-'}) imported into {args.pool}"
    )


def account_list(args: argparse.Namespace) -> int:
    found = _run(lambda conn: accounts.list_accounts(conn, args.pool))
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
    return _emit(args, found, _table(rows, header))


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

    assignment = _run(assign)
    return _emit(
        args,
        assignment,
        f"account assigned to {args.pool} (status {assignment.status}, weight {assignment.weight})",
    )


def account_pause(args: argparse.Namespace) -> int:
    account = _run(
        lambda conn: accounts.pause_account(
            conn, _account_id(conn, args.account), args.reason, actor="cli"
        )
    )
    return _emit(args, account, f"account {account.label} paused")


def account_resume(args: argparse.Namespace) -> int:
    account = _run(
        lambda conn: accounts.resume_account(conn, _account_id(conn, args.account), actor="cli")
    )
    return _emit(args, account, f"account {account.label} resumed")


def account_delete(args: argparse.Namespace) -> int:
    account = _run(
        lambda conn: accounts.delete_account(conn, _account_id(conn, args.account), actor="cli")
    )
    return _emit(args, account, f"account {account.label} deleted")


def account_refresh(args: argparse.Namespace) -> int:
    from pooler.cli.run import CommandError

    config = load_config()
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    with httpx.Client(timeout=REFRESH_TIMEOUT_S) as http:
        outcome = _run(
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
            " sign in again and re-import its auth.json"
        )
    if outcome.error is not None:
        raise CommandError(f"refresh of account {label} failed ({outcome.error}); try again later")
    return _emit(args, outcome.account, f"account {label} refreshed")


def mcp_token_create(args: argparse.Namespace) -> int:
    config = load_config()
    raw, token = _run(
        lambda conn: mcp_tokens.create_mcp_token(
            conn, config.secret_key, args.email, args.name, actor="cli"
        )
    )
    if args.json:
        return _emit(args, {"token": raw, **_plain(token)}, "")
    print(raw)
    print(
        f"(MCP token {token.token_prefix}… for {token.operator_email}: shown once)", file=sys.stderr
    )
    return 0


def mcp_token_list(args: argparse.Namespace) -> int:
    found = _run(mcp_tokens.list_mcp_tokens)
    rows = [[t.token_prefix, t.operator_email, t.name, t.status] for t in found]
    return _emit(args, found, _table(rows, ["PREFIX", "OPERATOR", "NAME", "STATUS"]))
