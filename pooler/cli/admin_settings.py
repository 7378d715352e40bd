"""`pooler admin settings ...`: show, change and reset the instance settings. A running
gateway applies a change at once (NOTIFY)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pooler.cli.common import CommandError, emit, run_in_store, table, with_json
from pooler.config import load_config
from pooler.crypto import generate_metrics_token
from pooler.instance_settings import InstanceSettings, flat_settings, settings_as_dict
from pooler.store.instance_settings import (
    get_instance_settings,
    reset_instance_settings,
    set_metrics_token_digest,
    update_instance_settings,
)
from pooler.web.metrics_auth import metrics_token_digest


def register_settings(groups: Any) -> None:
    settings = groups.add_parser(
        "settings", help="instance settings (circuits, bulkheads, usage polling)"
    ).add_subparsers(dest="action", required=True)
    show = settings.add_parser("show", help="every setting, its value and its default")
    with_json(show).set_defaults(handler=settings_show)
    change = settings.add_parser(
        "set", help="change settings, e.g. bulkheads.stream.concurrency=64"
    )
    change.add_argument(
        "changes", nargs="+", metavar="KEY=VALUE", help="VALUE is read as JSON, else as text"
    )
    with_json(change).set_defaults(handler=settings_set)
    reset = settings.add_parser("reset", help="put settings back to their defaults")
    reset.add_argument("keys", nargs="+", metavar="KEY")
    with_json(reset).set_defaults(handler=settings_reset)
    token = settings.add_parser(
        "metrics-token", help="the bearer token /metrics requires (printed once, stored hashed)"
    ).add_subparsers(dest="token_action", required=True)
    create = token.add_parser(
        "create", help="require a new token on /metrics (replaces any other); prints it once"
    )
    with_json(create).set_defaults(handler=metrics_token_create)
    clear = token.add_parser("clear", help="open /metrics again (no token)")
    with_json(clear).set_defaults(handler=metrics_token_clear)
    status = token.add_parser("status", help="whether /metrics requires a token")
    with_json(status).set_defaults(handler=metrics_token_status)


def parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CommandError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def settings_show(args: argparse.Namespace) -> int:
    _, effective = run_in_store(get_instance_settings)
    return _report(args, effective, _listing(effective))


def settings_set(args: argparse.Namespace) -> int:
    changes = dict(parse_assignment(text) for text in args.changes)
    effective = run_in_store(lambda conn: update_instance_settings(conn, changes, actor="cli"))
    return _report(args, effective, f"updated {', '.join(changes)}")


def settings_reset(args: argparse.Namespace) -> int:
    effective = run_in_store(lambda conn: reset_instance_settings(conn, args.keys, actor="cli"))
    return _report(args, effective, f"reset {', '.join(args.keys)} to the default")


def metrics_token_create(args: argparse.Namespace) -> int:
    raw = generate_metrics_token()
    digest = metrics_token_digest(load_config().secret_key, raw)
    run_in_store(lambda conn: set_metrics_token_digest(conn, digest, actor="cli"))
    text = (
        f"metrics token: {raw}\n"
        "Shown once, stored only as a digest. Scrapers send it as"
        " 'Authorization: Bearer <token>'; /metrics refuses others from now on."
    )
    return emit(args, {"metrics_token": raw}, text)


def metrics_token_clear(args: argparse.Namespace) -> int:
    run_in_store(lambda conn: set_metrics_token_digest(conn, None, actor="cli"))
    return emit(args, {"metrics_token": None}, "metrics token cleared: /metrics is open")


def metrics_token_status(args: argparse.Namespace) -> int:
    _, effective = run_in_store(get_instance_settings)
    configured = effective.metrics_token_digest is not None
    text = "metrics token: " + ("configured" if configured else "not configured")
    return emit(args, {"metrics_token_configured": configured}, text)


def _report(args: argparse.Namespace, effective: InstanceSettings, text: str) -> int:
    values, defaults = flat_settings(effective), _defaults()
    changed = [key for key, value in values.items() if value != defaults.get(key)]
    payload = {
        "settings": settings_as_dict(effective),
        "changed": changed,
        "metrics_token_configured": effective.metrics_token_digest is not None,
    }
    return emit(args, payload, text)


def _listing(effective: InstanceSettings) -> str:
    defaults = _defaults()
    rows = [
        [
            key,
            json.dumps(value),
            json.dumps(defaults.get(key)),
            "*" if value != defaults.get(key) else "",
        ]
        for key, value in flat_settings(effective).items()
    ]
    return table(rows, ["KEY", "VALUE", "DEFAULT", "CHANGED"])


def _defaults() -> dict[str, Any]:
    return flat_settings(InstanceSettings())
