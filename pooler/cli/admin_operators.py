"""`pooler admin operator ...`: what the console's Operators page does, for scripts: create
an operator with a temporary password (printed once), change a role or the assigned Pools,
deactivate, reactivate, reset a password (printed once), delete. The rules (the last
active owner stays) are the store's, the same as the page's."""

from __future__ import annotations

import argparse
from typing import Any

from pooler.cli.common import emit, run_in_store, with_json
from pooler.store import mcp_tokens, operators, pools
from pooler.store.common import Conn


def register_operators(groups: Any) -> None:
    operator = groups.add_parser("operator", help="console operators").add_subparsers(
        dest="action", required=True
    )
    create = operator.add_parser(
        "create", help="create an operator; prints a temporary password (changed at sign-in)"
    )
    create.add_argument("--email", required=True)
    create.add_argument("--role", choices=operators.ROLES, default="admin")
    create.add_argument("--display-name", default="")
    create.add_argument("--pool", action="append", default=[], help="a Pool for an admin")
    with_json(create).set_defaults(handler=operator_create)
    role = operator.add_parser("role", help="make an operator owner or admin")
    role.add_argument("email")
    role.add_argument("role", choices=operators.ROLES)
    with_json(role).set_defaults(handler=operator_role)
    assign = operator.add_parser("pools", help="set exactly the Pools of an admin")
    assign.add_argument("email")
    assign.add_argument("pools", nargs="*", metavar="POOL")
    with_json(assign).set_defaults(handler=operator_pools)
    mcp = operator.add_parser(
        "mcp", help="turn an operator's own MCP switch on or off (the instance's is mcp.enabled)"
    )
    mcp.add_argument("state", choices=["on", "off"])
    mcp.add_argument("--email", required=True)
    with_json(mcp).set_defaults(handler=operator_mcp)
    for name, help_text in (
        ("deactivate", "deactivate an operator (their sessions end)"),
        ("reactivate", "let a deactivated operator sign in again"),
        ("reset-password", "a new temporary password, printed once (their sessions end)"),
        ("delete", "delete an operator"),
    ):
        sub = operator.add_parser(name, help=help_text)
        sub.add_argument("email")
        with_json(sub).set_defaults(handler=operator_change, change=name)


def _pool_ids(conn: Conn, names: list[str]) -> list[Any]:
    return [pools.get_pool(conn, name).id for name in names]


def operator_create(args: argparse.Namespace) -> int:
    def create(conn: Conn) -> tuple[Any, str]:
        return operators.create_operator_with_temporary_password(
            conn,
            args.email,
            args.role,
            display_name=args.display_name,
            pool_ids=_pool_ids(conn, args.pool),
            actor="cli",
        )

    operator, password = run_in_store(create)
    text = f"{operator.role} {operator.email} created; temporary password: {password}"
    return emit(args, {"operator": operator, "temporary_password": password}, text)


def operator_role(args: argparse.Namespace) -> int:
    operator = run_in_store(
        lambda conn: operators.set_role(
            conn, operators.find_operator(conn, args.email).id, args.role, actor="cli"
        )
    )
    return emit(args, operator, f"{operator.email} is now {operator.role}")


def operator_pools(args: argparse.Namespace) -> int:
    def assign(conn: Conn) -> None:
        found = operators.find_operator(conn, args.email)
        operators.set_pools(conn, found.id, _pool_ids(conn, args.pools), actor="cli")

    run_in_store(assign)
    return emit(args, {"pools": args.pools}, f"pools of {args.email}: {', '.join(args.pools)}")


def operator_mcp(args: argparse.Namespace) -> int:
    enabled = args.state == "on"
    run_in_store(lambda conn: mcp_tokens.set_operator_mcp(conn, args.email, enabled, actor="cli"))
    return emit(
        args, {"email": args.email, "mcp_enabled": enabled}, f"MCP {args.state} for {args.email}"
    )


def operator_change(args: argparse.Namespace) -> int:
    def change(conn: Conn) -> str | None:
        found = operators.find_operator(conn, args.email)
        if args.change == "reset-password":
            return operators.reset_password(conn, found.id, actor="cli")
        if args.change == "delete":
            operators.delete_operator(conn, found.id, actor="cli")
        else:
            status = "disabled" if args.change == "deactivate" else "active"
            operators.set_status(conn, found.id, status, actor="cli")
        return None

    password = run_in_store(change)
    if password is not None:
        text = f"password of {args.email} reset; temporary password: {password}"
        return emit(args, {"temporary_password": password}, text)
    return emit(args, {"done": args.change}, f"{args.change}: {args.email}")
