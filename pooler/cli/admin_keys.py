"""`pooler admin key ...`: create, list, rotate, pause, resume and revoke Pool API keys and
change their name and policy (the models a key may use, its reasoning effort). A running
gateway applies a change at once (NOTIFY)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pooler.cli.common import CommandError, emit, plain, run_in_store, table, with_json
from pooler.config import load_config
from pooler.store import key_lifecycle, keys
from pooler.store.common import StoreError
from pooler.store.models import ApiKey

T = TypeVar("T")


def register_keys(groups: Any) -> None:
    key = groups.add_parser("key", help="Pool API keys").add_subparsers(
        dest="action", required=True
    )
    create = key.add_parser("create", help="create a key (printed once)")
    create.add_argument("--pool", required=True)
    create.add_argument(
        "--name", default="", help="unique among the Pool's active keys (default: unnamed)"
    )
    _key_policy_args(create, updating=False)
    with_json(create).set_defaults(handler=key_create)
    update = key.add_parser("update", help="change a key's model and reasoning policy")
    update.add_argument("key", help="key prefix, id or name")
    update.add_argument("--pool", help="the Pool of a key named by its name")
    update.add_argument("--name", help="a new name (unique among the Pool's keys)")
    _key_policy_args(update, updating=True)
    with_json(update).set_defaults(handler=key_update)
    lst = key.add_parser("list", help="list keys")
    lst.add_argument("--pool")
    with_json(lst).set_defaults(handler=key_list)
    revoke = key.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key", help="key prefix, id or name")
    revoke.add_argument("--pool", help="the Pool of a key named by its name")
    with_json(revoke).set_defaults(handler=key_revoke)
    rotate = key.add_parser(
        "rotate", help="a new secret for the key (printed once); the old one stops working"
    )
    for parser, handler in (
        (rotate, key_rotate),
        (key.add_parser("pause", help="refuse a key until it is resumed"), key_pause),
        (key.add_parser("resume", help="accept a paused key again"), key_resume),
    ):
        parser.add_argument("key", help="key prefix, id or name")
        parser.add_argument("--pool", help="the Pool of a key named by its name")
        with_json(parser).set_defaults(handler=handler)


def _key_policy_args(parser: argparse.ArgumentParser, *, updating: bool) -> None:
    any_ = "'any' or " if updating else ""
    none = "'none', " if updating else ""
    parser.add_argument(
        "--allowed-models",
        metavar="MODELS",
        help=f"{any_}a comma-separated list of the models the key may use (default: any)",
    )
    parser.add_argument(
        "--reasoning-effort",
        metavar="POLICY",
        help=f"{none}enforce:EFFORT (always that effort) or max:EFFORT (refuse above it);"
        " EFFORT is none, minimal, low, medium, high or xhigh",
    )


def key_create(args: argparse.Namespace) -> int:
    config = load_config()
    models = _parsed(keys.parse_allowed_models, args.allowed_models)
    effort = _parsed(keys.parse_effort_policy, args.reasoning_effort)
    raw, key = run_in_store(
        lambda conn: keys.create_key(
            conn,
            config.secret_key,
            args.pool,
            args.name,
            allowed_models=None if models is keys.KEEP else models,
            effort=None if effort is keys.KEEP else effort,
            actor="cli",
        )
    )
    if args.json:
        return emit(args, {"key": raw, **plain(key)}, "")
    print(raw)
    print(
        f"(key {key.key_prefix}… for pool {key.pool_name}: shown once, store it now)",
        file=sys.stderr,
    )
    return 0


def key_update(args: argparse.Namespace) -> int:
    models = _parsed(keys.parse_allowed_models, args.allowed_models)
    effort = _parsed(keys.parse_effort_policy, args.reasoning_effort)
    name = keys.KEEP if args.name is None else args.name
    key = run_in_store(
        lambda conn: keys.update_key(
            conn,
            args.key,
            pool_name=args.pool,
            allowed_models=models,
            effort=effort,
            name=name,
            actor="cli",
        )
    )
    return emit(args, key, f"key {key.key_prefix} updated ({_key_policy_text(key)})")


def _parsed(parse: Callable[[str], T], text: str | None) -> T | Literal[keys.Keep.KEEP]:
    """A policy flag parsed (the store's parsers), or KEEP when the flag is absent."""
    if text is None:
        return keys.KEEP
    try:
        return parse(text)
    except StoreError as exc:
        raise CommandError(exc.message) from exc


def _key_policy_text(key: ApiKey) -> str:
    models = ",".join(key.allowed_models) if key.allowed_models is not None else "any"
    effort = key.reasoning_effort
    mode = key.reasoning_effort_mode
    return f"models {models}, reasoning {f'{mode}:{effort}' if effort else 'any'}"


def key_list(args: argparse.Namespace) -> int:
    found = run_in_store(lambda conn: keys.list_keys(conn, args.pool))
    rows = [
        [
            k.key_prefix,
            k.pool_name,
            k.name,
            k.status,
            ",".join(k.allowed_models) if k.allowed_models is not None else "any",
            f"{k.reasoning_effort_mode}:{k.reasoning_effort}" if k.reasoning_effort else "any",
        ]
        for k in found
    ]
    header = ["PREFIX", "POOL", "NAME", "STATUS", "MODELS", "REASONING"]
    return emit(args, found, table(rows, header))


def key_revoke(args: argparse.Namespace) -> int:
    key = run_in_store(
        lambda conn: keys.revoke_key(conn, args.key, pool_name=args.pool, actor="cli")
    )
    return emit(args, key, f"key {key.key_prefix} revoked")


def key_rotate(args: argparse.Namespace) -> int:
    config = load_config()
    raw, key = run_in_store(
        lambda conn: key_lifecycle.rotate_key(
            conn, config.secret_key, args.key, pool_name=args.pool, actor="cli"
        )
    )
    if args.json:
        return emit(args, {"key": raw, **plain(key)}, "")
    print(raw)
    print(
        f"(key {key.key_prefix}… of pool {key.pool_name} rotated: the old secret no longer"
        " works; the new one is shown once, store it now)",
        file=sys.stderr,
    )
    return 0


def key_pause(args: argparse.Namespace) -> int:
    key = run_in_store(
        lambda conn: key_lifecycle.pause_key(conn, args.key, pool_name=args.pool, actor="cli")
    )
    return emit(args, key, f"key {key.key_prefix} paused")


def key_resume(args: argparse.Namespace) -> int:
    key = run_in_store(
        lambda conn: key_lifecycle.resume_key(conn, args.key, pool_name=args.pool, actor="cli")
    )
    return emit(args, key, f"key {key.key_prefix} resumed")
