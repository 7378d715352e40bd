"""Instance settings in the database: defaults, strict changes, resets, audit and NOTIFY, the
row lock under concurrent writers, and `pooler admin settings` run in-process."""

from __future__ import annotations

import argparse
import json
import re
import threading
from typing import Any

import psycopg
import pytest
import trio

from pooler.cli.admin_settings import parse_assignment, register_settings
from pooler.cli.run import CommandError
from pooler.db import Database
from pooler.instance_settings import DEFAULT_BULKHEADS, Bulkhead, InstanceSettings
from pooler.store import CONFIG_CHANNEL, InvalidInputError, list_audit_events
from pooler.store.instance_settings import (
    get_instance_settings,
    reset_instance_settings,
    update_instance_settings,
)


def test_an_untouched_instance_has_the_defaults(database: Database) -> None:
    raw, settings = database.run_sync(get_instance_settings)
    assert raw == {} and settings == InstanceSettings()


def test_changes_are_stored_and_read_back(database: Database) -> None:
    changes = {
        "circuit_open_seconds": 30,
        "bulkheads.stream.concurrency": 64,
        "bulkheads.files": {"queue": 2},
    }
    updated = database.run_sync(lambda c: update_instance_settings(c, changes, actor="cli"))
    raw, settings = database.run_sync(get_instance_settings)
    assert settings == updated
    assert raw == {
        "circuit_open_seconds": 30,
        "bulkheads": {"stream": {"concurrency": 64}, "files": {"queue": 2}},
    }
    assert settings.circuit_open_seconds == 30.0
    assert settings.circuit_failure_threshold == InstanceSettings().circuit_failure_threshold
    stream = DEFAULT_BULKHEADS["stream"]
    assert settings.bulkheads["stream"] == Bulkhead(64, stream.queue, stream.queue_timeout_s)
    assert settings.bulkheads["files"].queue == 2
    assert settings.bulkheads["compact"] == DEFAULT_BULKHEADS["compact"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"circuit_open_seconds": "soon"}, "circuit_open_seconds must be a number"),
        ({"circuit_failure_threshold": 2.5}, "circuit_failure_threshold must be a whole"),
        ({"bulkheads.stream.concurrency": 0}, "bulkheads.stream.concurrency must be between"),
        ({"bulkheads.stream.queue": True}, "bulkheads.stream.queue must be a number"),
        ({"bulkheads.stream": {"nope": 1}}, "bulkheads.stream.nope is not a bulkhead setting"),
        ({"bulkheads.stream": 5}, "bulkheads.stream must be an object"),
        ({"no_such_setting": 1}, "no_such_setting is not an instance setting"),
        ({"bulkheads.nope.queue": 1}, "bulkheads.nope.queue is not an instance setting"),
        ({"circuit_open_seconds.x": 1}, "circuit_open_seconds.x is not an instance setting"),
        ({"bulkheads": {"nope": {}}}, "bulkheads.nope: unknown route class"),
    ],
)
def test_invalid_changes_are_refused_naming_the_key(
    database: Database, changes: dict[str, Any], named: str
) -> None:
    valid_too = {"demotion_seconds": 5, **changes}
    with pytest.raises(InvalidInputError, match=re.escape(named)):
        database.run_sync(lambda c: update_instance_settings(c, valid_too, actor="cli"))
    assert database.run_sync(get_instance_settings)[0] == {}  # nothing applied
    assert database.run_sync(list_audit_events) == []


def test_reset_puts_keys_back_to_their_defaults(database: Database) -> None:
    changes = {
        "demotion_seconds": 5,
        "quota_freshness_seconds": 60,
        "bulkheads.stream.concurrency": 64,
        "bulkheads.audio.queue": 1,
    }
    database.run_sync(lambda c: update_instance_settings(c, changes, actor="cli"))
    keys = ["demotion_seconds", "bulkheads.stream.concurrency", "circuit_open_seconds"]
    settings = database.run_sync(lambda c: reset_instance_settings(c, keys, actor="ops"))
    raw, stored = database.run_sync(get_instance_settings)
    assert stored == settings
    assert raw == {"quota_freshness_seconds": 60, "bulkheads": {"audio": {"queue": 1}}}
    assert settings.demotion_seconds == InstanceSettings().demotion_seconds
    assert settings.bulkheads["stream"] == DEFAULT_BULKHEADS["stream"]

    database.run_sync(lambda c: reset_instance_settings(c, ["bulkheads"], actor="ops"))
    assert database.run_sync(get_instance_settings)[0] == {"quota_freshness_seconds": 60}
    with pytest.raises(InvalidInputError, match="bogus is not an instance setting"):
        database.run_sync(lambda c: reset_instance_settings(c, ["bogus"], actor="ops"))


def test_keys_only_a_newer_node_knows_survive_and_can_be_reset(database: Database) -> None:
    newer = {"future_knob": 7, "bulkheads": {"video": {"concurrency": 2}}}
    database.run_sync(
        lambda c: c.execute("UPDATE instance_settings SET settings = %s", (json.dumps(newer),))
    )
    database.run_sync(lambda c: update_instance_settings(c, {"demotion_seconds": 1}, actor="x"))
    assert database.run_sync(get_instance_settings)[0] == {**newer, "demotion_seconds": 1}
    database.run_sync(lambda c: reset_instance_settings(c, ["future_knob"], actor="x"))
    assert "future_knob" not in database.run_sync(get_instance_settings)[0]


def test_changes_are_audited(database: Database) -> None:
    changes = {"circuit_open_seconds": 30, "bulkheads.stream.concurrency": 64}
    database.run_sync(lambda c: update_instance_settings(c, changes, actor="ops@example.com"))
    database.run_sync(lambda c: reset_instance_settings(c, ["circuit_open_seconds"], actor="cli"))
    reset, update = database.run_sync(list_audit_events)
    assert (update.actor, update.action, update.target_type) == (
        "ops@example.com",
        "settings.update",
        "instance",
    )
    default = InstanceSettings()
    assert update.details == {
        "before": {
            "circuit_open_seconds": default.circuit_open_seconds,
            "bulkheads.stream.concurrency": default.bulkheads["stream"].concurrency,
        },
        "after": changes,
    }
    assert (reset.actor, reset.action) == ("cli", "settings.reset")
    assert reset.details == {
        "reset": ["circuit_open_seconds"],
        "before": {"circuit_open_seconds": 30},
        "after": {"circuit_open_seconds": default.circuit_open_seconds},
    }
    assert update.pool_id is None and reset.pool_id is None  # instance-wide


async def test_changes_are_notified_on_the_config_channel(database: Database) -> None:
    payloads: list[str] = []
    arrived = trio.Event()

    def on_notify(payload: str) -> None:
        payloads.append(payload)
        if len(payloads) == 2:
            arrived.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(database.listen, CONFIG_CHANNEL, on_notify)
            with pytest.raises(InvalidInputError):  # refused: no notification
                await database.run(
                    lambda c: update_instance_settings(c, {"demotion_seconds": -1}, actor="x")
                )
            await database.run(
                lambda c: update_instance_settings(c, {"demotion_seconds": 1}, actor="x")
            )
            await database.run(
                lambda c: reset_instance_settings(c, ["demotion_seconds"], actor="x")
            )
            await arrived.wait()
            nursery.cancel_scope.cancel()
    assert payloads == ["instance:settings", "instance:settings"]


def test_concurrent_changes_to_different_keys_both_land(db_url: str) -> None:
    outcome: list[BaseException | None] = []

    def second_writer() -> None:
        try:
            with psycopg.connect(db_url) as conn:
                update_instance_settings(conn, {"bulkheads.files.queue": 3}, actor="b")
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    with psycopg.connect(db_url) as first:
        update_instance_settings(first, {"demotion_seconds": 7}, actor="a")  # row now locked
        writer = threading.Thread(target=second_writer)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive()  # waiting for the lock, not merging a stale row
        first.commit()
    writer.join(10)
    assert outcome == [None]
    with psycopg.connect(db_url) as conn:
        raw, settings = get_instance_settings(conn)
    assert raw == {"demotion_seconds": 7, "bulkheads": {"files": {"queue": 3}}}
    assert settings.bulkheads["files"].queue == 3


# --- the command line, in-process ---------------------------------------------------------


def settings_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """`pooler admin settings ARGV`, through the parser `pooler admin` builds it into."""
    parser = argparse.ArgumentParser(prog="pooler admin")
    register_settings(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(["settings", *argv])
    capsys.readouterr()
    assert args.handler(args) == 0
    return capsys.readouterr().out


@pytest.mark.usefixtures("cli_env")
def test_cli_set_show_and_reset(capsys: pytest.CaptureFixture[str]) -> None:
    out = settings_cli(capsys, "set", "circuit_open_seconds=30", "bulkheads.stream.concurrency=64")
    assert "updated circuit_open_seconds, bulkheads.stream.concurrency" in out

    shown = json.loads(settings_cli(capsys, "show", "--json"))
    assert shown["settings"]["circuit_open_seconds"] == 30.0
    assert shown["settings"]["bulkheads"]["stream"]["concurrency"] == 64
    assert shown["settings"]["bulkheads"]["files"]["concurrency"] == 4
    assert shown["changed"] == ["circuit_open_seconds", "bulkheads.stream.concurrency"]

    table = settings_cli(capsys, "show").splitlines()
    assert table[0].split() == ["KEY", "VALUE", "DEFAULT", "CHANGED"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert rows["circuit_open_seconds"] == ["30.0", "60.0", "*"]
    assert rows["bulkheads.stream.concurrency"] == ["64", "8192", "*"]
    assert rows["circuit_failure_threshold"] == ["3", "3"]
    # 14: the MCP pair and the write stall among them; 3: retention.*; 3: ingress.*;
    # 2: pricing.*; 6: smtp.* and alerts.console_url
    assert len(rows) == 14 + 3 + 3 + 2 + 6 + 3 * len(DEFAULT_BULKHEADS)
    assert rows["trusted_proxies"] == ["[]", "[]"]

    reset = json.loads(settings_cli(capsys, "reset", "circuit_open_seconds", "--json"))
    assert reset["changed"] == ["bulkheads.stream.concurrency"]


@pytest.mark.usefixtures("cli_env")
def test_cli_refusals_are_command_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CommandError, match=re.escape("bulkheads.stream.queue must be a number")):
        settings_cli(capsys, "set", "bulkheads.stream.queue=lots")
    with pytest.raises(CommandError, match="expected KEY=VALUE"):
        settings_cli(capsys, "set", "circuit_open_seconds")
    assert json.loads(settings_cli(capsys, "show", "--json"))["changed"] == []


def test_cli_values_are_json_when_they_parse() -> None:
    assert parse_assignment("a=30") == ("a", 30)
    assert parse_assignment("a=1.5") == ("a", 1.5)
    assert parse_assignment('b={"queue": 2}') == ("b", {"queue": 2})
    assert parse_assignment("c=fast") == ("c", "fast")
    assert parse_assignment("d=x=y") == ("d", "x=y")
    assert parse_assignment(" e =true") == ("e", True)
