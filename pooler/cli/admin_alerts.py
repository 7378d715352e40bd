"""`pooler admin alerts ...`: alert rules and channels per Pool, the SMTP password, and the
incidents (`pooler.alerts`). A webhook channel's signing secret is printed once, at
creation; `channel test` sends a test notification now, bypassing the queue."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import trio

from pooler.alerts.mail import SmtpServer, send_email
from pooler.alerts.payload import body_of, email_text, notification, subject_line
from pooler.alerts.rules import KINDS
from pooler.alerts.webhook import post_webhook, webhook_client
from pooler.cli.common import CommandError, emit, run_in_store, table, with_json
from pooler.config import load_config
from pooler.crypto import Keyring
from pooler.store import alert_incidents as incidents
from pooler.store import alerts as alert_store
from pooler.store.common import Conn
from pooler.store.instance_settings import get_instance_settings
from pooler.store.pools import get_pool


def register_alerts(groups: Any) -> None:
    alerts = groups.add_parser("alerts", help="alert rules, channels and incidents")
    sub = alerts.add_subparsers(dest="what", required=True)
    rule = sub.add_parser("rule", help="alert rules of a Pool").add_subparsers(
        dest="action", required=True
    )
    add = rule.add_parser("add", help="add a rule to a Pool")
    add.add_argument("--pool", required=True)
    add.add_argument("kind", choices=KINDS)
    add.add_argument(
        "--threshold",
        type=float,
        help="usable_below: accounts; quota_above, error_rate_above: percent",
    )
    add.add_argument(
        "--min-requests", type=int, default=10, help="error_rate_above: fewest requests in 5 min"
    )
    with_json(add).set_defaults(handler=rule_add)
    listing = rule.add_parser("list", help="list rules")
    listing.add_argument("--pool")
    with_json(listing).set_defaults(handler=rule_list)
    delete = rule.add_parser("delete", help="delete a rule (and its incidents)")
    delete.add_argument("rule_id", type=UUID)
    with_json(delete).set_defaults(handler=rule_delete)

    channel = sub.add_parser("channel", help="where a Pool's alerts go").add_subparsers(
        dest="action", required=True
    )
    hook = channel.add_parser("add-webhook", help="a webhook (its secret is printed once)")
    hook.add_argument("--pool", required=True)
    hook.add_argument("--name", required=True)
    hook.add_argument("--url", required=True)
    with_json(hook).set_defaults(handler=channel_add_webhook)
    mail = channel.add_parser("add-email", help="an email recipient (needs the smtp.* settings)")
    mail.add_argument("--pool", required=True)
    mail.add_argument("--name", required=True)
    mail.add_argument("--to", required=True)
    with_json(mail).set_defaults(handler=channel_add_email)
    listing = channel.add_parser("list", help="list channels")
    listing.add_argument("--pool")
    with_json(listing).set_defaults(handler=channel_list)
    delete = channel.add_parser("delete", help="delete a channel")
    delete.add_argument("channel_id", type=UUID)
    with_json(delete).set_defaults(handler=channel_delete)
    test = channel.add_parser("test", help="send a test notification to a channel now")
    test.add_argument("channel_id", type=UUID)
    with_json(test).set_defaults(handler=channel_test)

    found = sub.add_parser("incidents", help="open and recent incidents")
    found.add_argument("--pool")
    found.add_argument("--open", action="store_true", help="open incidents only")
    found.add_argument("--limit", type=int, default=50)
    with_json(found).set_defaults(handler=incident_list)

    smtp = sub.add_parser("smtp-password", help="the SMTP password (stored encrypted)")
    which = smtp.add_mutually_exclusive_group(required=True)
    which.add_argument("--stdin", action="store_true", help="read it from standard input")
    which.add_argument("--clear", action="store_true", help="forget it")
    with_json(smtp).set_defaults(handler=smtp_password)


def _keyring() -> Keyring:
    config = load_config()
    return Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)


def _scope(conn: Conn, pool: str | None) -> frozenset[UUID] | None:
    return None if pool is None else frozenset({get_pool(conn, pool).id})


def rule_add(args: argparse.Namespace) -> int:
    rule = run_in_store(
        lambda conn: alert_store.add_rule(
            conn,
            get_pool(conn, args.pool).id,
            args.kind,
            args.threshold,
            min_requests=args.min_requests,
            actor="cli",
        )
    )
    return emit(
        args, rule, f"rule {rule.id} added to Pool {rule.pool_name}: {rule.rule().describe()}"
    )


def rule_list(args: argparse.Namespace) -> int:
    rules = run_in_store(lambda conn: alert_store.list_rules(conn, _scope(conn, args.pool)))
    rows = [[str(r.id), r.pool_name, r.kind, r.rule().describe()] for r in rules]
    return emit(args, rules, table(rows, ["ID", "POOL", "KIND", "CONDITION"]))


def rule_delete(args: argparse.Namespace) -> int:
    rule = run_in_store(lambda conn: alert_store.delete_rule(conn, args.rule_id, actor="cli"))
    return emit(args, rule, f"rule {rule.id} deleted from Pool {rule.pool_name}")


def channel_add_webhook(args: argparse.Namespace) -> int:
    keyring = _keyring()
    channel, secret = run_in_store(
        lambda conn: alert_store.add_webhook(
            conn, keyring, get_pool(conn, args.pool).id, args.name, args.url, actor="cli"
        )
    )
    text = (
        f"webhook channel {channel.id} added to Pool {channel.pool_name}\n"
        f"signing secret (shown once): {secret}\n"
        "Each request carries X-Pooler-Timestamp and X-Pooler-Signature:"
        " sha256=HMAC-SHA256(secret, timestamp + '.' + body) in hex."
    )
    return emit(args, {"channel": channel, "secret": secret}, text)


def channel_add_email(args: argparse.Namespace) -> int:
    channel = run_in_store(
        lambda conn: alert_store.add_email(
            conn, get_pool(conn, args.pool).id, args.name, args.to, actor="cli"
        )
    )
    return emit(args, channel, f"email channel {channel.id} added to Pool {channel.pool_name}")


def channel_list(args: argparse.Namespace) -> int:
    channels = run_in_store(lambda conn: alert_store.list_channels(conn, _scope(conn, args.pool)))
    rows = [[str(c.id), c.pool_name, c.kind, c.name, c.target] for c in channels]
    return emit(args, channels, table(rows, ["ID", "POOL", "KIND", "NAME", "TARGET"]))


def channel_delete(args: argparse.Namespace) -> int:
    channel = run_in_store(
        lambda conn: alert_store.delete_channel(conn, args.channel_id, actor="cli")
    )
    return emit(args, channel, f"channel {channel.id} deleted from Pool {channel.pool_name}")


def channel_test(args: argparse.Namespace) -> int:
    keyring = _keyring()

    def load(conn: Conn) -> tuple[alert_store.Channel, bytes | None, Any, str | None]:
        channel = alert_store.get_channel(conn, args.channel_id)
        secret = (
            alert_store.webhook_secret(conn, keyring, channel.id)
            if channel.kind == "webhook"
            else None
        )
        settings = get_instance_settings(conn)[1]
        return channel, secret, settings, alert_store.smtp_password(conn, keyring)

    channel, secret, settings, password = run_in_store(load)
    now = datetime.now(UTC)
    incident = incidents.Incident(
        uuid4(),
        uuid4(),
        channel.pool_id,
        channel.pool_name,
        "test",
        "test",
        "a test notification from pooler admin alerts channel test",
        {},
        now,
        None,
    )
    payload = notification("test", incident, settings.alerts.console_url, now)

    async def send() -> str | None:
        if channel.kind == "webhook":
            assert secret is not None
            async with webhook_client() as client:
                return await post_webhook(
                    client,
                    channel.url or "",
                    secret,
                    body_of(payload),
                    delivery_id=f"test-{uuid4()}",
                    event="incident.test",
                )
        smtp = settings.smtp
        if not smtp.host or not smtp.from_address:
            return "smtp_not_configured"
        server = SmtpServer(
            smtp.host, smtp.port, smtp.from_address, smtp.username, password, smtp.starttls
        )
        return await send_email(
            server, channel.email_to or "", subject_line("test", incident), email_text(payload)
        )

    error = trio.run(send)
    if error is not None:
        raise CommandError(f"the test notification to {channel.name!r} failed: {error}")
    return emit(
        args, {"channel": channel, "sent": True}, f"test notification sent to {channel.name}"
    )


def incident_list(args: argparse.Namespace) -> int:
    limit = max(1, min(args.limit, 1000))

    def load(conn: Conn) -> list[incidents.Incident]:
        return incidents.list_incidents(
            conn, _scope(conn, args.pool), open_only=args.open, limit=limit
        )

    found = run_in_store(load)
    rows = [
        [
            str(i.id),
            i.pool_name,
            i.kind,
            i.subject,
            "open" if i.open else "resolved",
            f"{i.opened_at:%Y-%m-%d %H:%M:%S}",
            i.summary,
        ]
        for i in found
    ]
    header = ["ID", "POOL", "RULE", "SUBJECT", "STATE", "OPENED", "SUMMARY"]
    return emit(args, found, table(rows, header) if rows else "no incidents")


def smtp_password(args: argparse.Namespace) -> int:
    keyring = _keyring()
    password = None if args.clear else sys.stdin.readline().rstrip("\n")
    if password == "":
        raise CommandError("no password on standard input")
    run_in_store(lambda conn: alert_store.set_smtp_password(conn, keyring, password, actor="cli"))
    text = "SMTP password cleared" if password is None else "SMTP password stored (encrypted)"
    return emit(args, {"stored": password is not None}, text)
