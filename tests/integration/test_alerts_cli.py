"""`pooler admin alerts ...` in-process against the test database: rules, channels (the
webhook secret printed once, a test notification the local receiver verifies), the SMTP
password stored encrypted, the incidents listing."""

from __future__ import annotations

import io
import json
import os
from typing import Any
from uuid import UUID

import psycopg
import pytest
from alert_sinks import webhook_receiver

from pooler.cli.main import main
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.store import alerts as alert_store
from pooler.store.common import Conn
from pooler.store.pools import create_pool


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main(["admin", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(["admin", *argv]) == 2
    return capsys.readouterr().err


@pytest.mark.usefixtures("cli_env")
def test_rules_channels_and_incidents_from_the_cli(
    capsys: pytest.CaptureFixture[str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli(capsys, "pool", "create", "team")
    rule = cli(
        capsys, "alerts", "rule", "add", "--pool", "team", "usable_below", "--threshold", "2"
    )
    assert rule["kind"] == "usable_below" and rule["threshold"] == 2
    cli(capsys, "alerts", "rule", "add", "--pool", "team", "reauth_required")
    assert "threshold between 1 and 100" in refused(
        capsys, "alerts", "rule", "add", "--pool", "team", "quota_above", "--threshold", "400"
    )
    assert "takes no threshold" in refused(
        capsys, "alerts", "rule", "add", "--pool", "team", "reauth_required", "--threshold", "1"
    )
    rules = cli(capsys, "alerts", "rule", "list", "--pool", "team")
    assert [r["kind"] for r in rules] == ["usable_below", "reauth_required"]

    with webhook_receiver() as receiver:
        made = cli(
            capsys,
            "alerts",
            "channel",
            "add-webhook",
            "--pool",
            "team",
            "--name",
            "ops",
            "--url",
            receiver.url,
        )
        secret = made["secret"]
        assert secret.startswith("whsec_")
        receiver.secret = secret.encode()
        # Shown once: the listing and the database hold no clear secret.
        listed = cli(capsys, "alerts", "channel", "list")
        assert secret not in json.dumps(listed)
        with psycopg.connect(db_url) as conn:
            dump = repr(conn.execute("SELECT * FROM alert_channels").fetchall())
        assert secret not in dump and secret.encode().hex() not in dump
        sent = cli(capsys, "alerts", "channel", "test", made["channel"]["id"])
        assert sent["sent"] is True
        (payload,) = receiver.received
        assert payload["event"] == "incident.test" and payload["pool"]["name"] == "team"
        assert receiver.bad_signatures == 0

    assert "must be http:// or https://" in refused(
        capsys,
        "alerts",
        "channel",
        "add-webhook",
        "--pool",
        "team",
        "--name",
        "x",
        "--url",
        "file:///etc/passwd",
    )
    mail = cli(
        capsys,
        "alerts",
        "channel",
        "add-email",
        "--pool",
        "team",
        "--name",
        "oncall",
        "--to",
        "oncall@example.com",
    )
    # No SMTP host configured: a test email is refused with its reason, nothing hangs.
    assert "smtp_not_configured" in refused(capsys, "alerts", "channel", "test", mail["id"])

    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2-smtp\n"))
    assert cli(capsys, "alerts", "smtp-password", "--stdin") == {"stored": True}
    with psycopg.connect(db_url) as conn:
        dump = repr(conn.execute("SELECT * FROM alert_secrets").fetchall())
    assert "hunter2" not in dump and b"hunter2".hex() not in dump

    assert cli(capsys, "alerts", "incidents", "--open") == []
    capsys.readouterr()
    assert main(["admin", "alerts", "incidents"]) == 0
    assert "no incidents" in capsys.readouterr().out

    cli(capsys, "alerts", "rule", "delete", rules[0]["id"])
    cli(capsys, "alerts", "channel", "delete", mail["id"])
    assert len(cli(capsys, "alerts", "rule", "list")) == 1
    assert [c["kind"] for c in cli(capsys, "alerts", "channel", "list")] == ["webhook"]


def test_rotate_keys_reencrypts_the_alert_secrets(database: Database) -> None:
    old_raw, new = os.urandom(32), os.urandom(32)
    old = Keyring(old_raw)

    def setup(conn: Conn) -> tuple[UUID, str]:
        pool = create_pool(conn, "rotating")
        channel, secret = alert_store.add_webhook(
            conn, old, pool.id, "hook", "https://hooks.example.com/x", actor="test"
        )
        alert_store.set_smtp_password(conn, old, "smtp secret", actor="test")
        return channel.id, secret

    channel_id, secret = database.run_sync(setup)
    rotated = Keyring(new, [old_raw])
    assert database.run_sync(lambda c: alert_store.reencrypt_alert_secrets(c, rotated)) == 2
    assert database.run_sync(lambda c: alert_store.reencrypt_alert_secrets(c, rotated)) == 0
    only_new = Keyring(new)
    assert (
        database.run_sync(lambda c: alert_store.webhook_secret(c, only_new, channel_id))
        == secret.encode()
    )
    assert database.run_sync(lambda c: alert_store.smtp_password(c, only_new)) == "smtp secret"
