"""`pooler serve`, `pooler migrate`, `pooler emulator` and `pooler demo`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from pooler.cli.common import CommandError, one_line, open_database
from pooler.config import Config, load_config
from pooler.db import Database
from pooler.embedded import release_embedded_postgres, resolve_database_url
from pooler.log_format import apply_log_format
from pooler.migrate import migrate
from pooler.roles import serves_gateway
from pooler.serving import host_port, wait_for_signal

log = logging.getLogger("pooler.cli")


# What binding a listening socket raises for a cause the user can fix.
BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the gateway (migrates first)")
    serve.add_argument("--host", default=None, help="listen address (CODEX_POOLER_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (CODEX_POOLER_HTTP_PORT, 4000)")
    serve.set_defaults(handler=serve_command)

    mig = commands.add_parser("migrate", help="apply database migrations")
    mig.add_argument("--json", action="store_true", help="print JSON")
    mig.set_defaults(handler=migrate_command)

    rotate = commands.add_parser(
        "rotate-keys", help="re-encrypt every upstream secret under the current key"
    )
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(handler=rotate_keys_command)

    emu = commands.add_parser("emulator", help="run the fake Codex upstream and OAuth server")
    emu.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    emu.add_argument("--port", type=int, default=4100, help="port (default 4100; 0: any free)")
    emu.add_argument(
        "--accounts", type=int, default=3, help="how many fake accounts it serves (default 3)"
    )
    emu.add_argument(
        "--token-ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime of the access tokens it issues (default 3600)",
    )
    emu.add_argument(
        "--percent-per-request",
        type=float,
        default=2.0,
        metavar="PCT",
        help="5-hour quota each response uses, in percent (the weekly one: a tenth; default 2)",
    )
    emu.add_argument(
        "--write-auth-json",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/account-N/auth.json per fake account, for `pooler admin account import`",
    )
    emu.set_defaults(handler=emulator_command)

    demo = commands.add_parser("demo", help="emulator + gateway + a seeded Pool, account and key")
    demo.add_argument(
        "--host", default="127.0.0.1", help="gateway listen address (default 127.0.0.1)"
    )
    demo.add_argument("--port", type=int, default=4000, help="gateway port (default 4000)")
    demo.add_argument(
        "--emulator-port",
        type=int,
        default=0,
        help="port of the fake upstream, on 127.0.0.1 (default 0: any free port)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the database and secrets here (default: a temporary dir, removed on exit)",
    )
    demo.set_defaults(handler=demo_command)


@contextlib.contextmanager
def listening_on(address: str) -> Iterator[None]:
    """Turn a failure to bind `address` (in use, not local, not permitted; raised inside
    Hypercorn's nurseries) into a CommandError naming it."""
    try:
        yield
    except (OSError, BaseExceptionGroup) as exc:
        failure = bind_failure(exc)
        if failure is None:
            raise
        raise CommandError(f"cannot listen on {address}: {failure}") from None


def bind_failure(exc: BaseException) -> str | None:
    """What went wrong binding a socket, if that is what `exc` (or a group holding it) is."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = bind_failure(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno in BIND_ERRNOS:
        return exc.strerror or os.strerror(exc.errno or 0)
    return None


def serve_command(args: argparse.Namespace) -> int:
    config = load_config()
    logging.getLogger().setLevel(config.log_level.upper())
    apply_log_format(config.log_format)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    _, db = open_database(config)
    try:
        with listening_on(host_port(host, port)):
            trio.run(_serve, config, db, host, port)
    finally:
        db.close()
    return 0


async def _serve(config: Config, db: Database, host: str, port: int) -> None:
    from pooler.server import run_gateway

    if not serves_gateway(config.role):
        await _serve_background(config, db, host, port)
        return
    async with trio.open_nursery() as nursery:
        running = await nursery.start(
            partial(run_gateway, config, db, host, port, shutdown_trigger=wait_for_signal)
        )
        print(f"Codex Pooler listening on http://{host_port(host, running.port)}", flush=True)


async def _serve_background(config: Config, db: Database, host: str, port: int) -> None:
    from pooler.background import run_background

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            partial(run_background, config, db, host, port, shutdown_trigger=wait_for_signal)
        )
        print(
            f"Codex Pooler ({config.role}: jobs and probes only) listening on"
            f" http://{host_port(host, bound)}",
            flush=True,
        )


def migrate_command(args: argparse.Namespace) -> int:
    config = load_config()
    try:
        url = resolve_database_url(config)
        applied = migrate(url)
    except Exception as exc:
        raise CommandError(f"cannot migrate the database: {one_line(exc)}") from exc
    if args.json:
        import json

        print(json.dumps({"applied": applied}))
    else:
        print(
            f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
        )
    return 0


def rotate_keys_command(args: argparse.Namespace) -> int:
    from pooler.crypto import Keyring
    from pooler.store.alerts import reencrypt_alert_secrets
    from pooler.store.credentials import reencrypt_all_secrets

    config = load_config()
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    _, db = open_database(config)
    try:
        count = db.run_sync(
            lambda conn: (
                reencrypt_all_secrets(conn, keyring) + reencrypt_alert_secrets(conn, keyring)
            )
        )
    finally:
        db.close()
    if args.json:
        import json

        print(json.dumps({"reencrypted": count}))
    else:
        print(f"re-encrypted {count} secret(s) under the current key")
    return 0


def emulator_command(args: argparse.Namespace) -> int:
    from pooler.emulator.server import run_emulator_cli

    with listening_on(host_port(args.host, args.port)):
        run_emulator_cli(
            args.host,
            args.port,
            args.accounts,
            args.token_ttl,
            args.write_auth_json,
            args.percent_per_request,
        )
    return 0


def demo_command(args: argparse.Namespace) -> int:
    """The demo on `--data-dir`, or on a temporary dir removed (with the embedded server it
    started) however the demo ends."""
    if args.data_dir is not None:
        return _demo_in(args.data_dir, args)
    data_dir = Path(tempfile.mkdtemp(prefix="codex-pooler-demo-"))
    try:
        return _demo_in(data_dir, args)
    finally:
        remove_demo_dir(data_dir)


def remove_demo_dir(data_dir: Path) -> None:
    with contextlib.suppress(Exception):  # a server that never started has nothing to stop
        release_embedded_postgres(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def _demo_in(data_dir: Path, args: argparse.Namespace) -> int:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["CODEX_POOLER_DATA_DIR"] = str(data_dir)
    config = load_config(env)
    logging.getLogger().setLevel(config.log_level.upper())
    apply_log_format(config.log_format)
    _, db = open_database(config)
    try:
        trio.run(_demo, config, db, args)
    finally:
        db.close()
    return 0


async def _demo(config: Config, db: Database, args: argparse.Namespace) -> None:
    from pooler.cli.demo import seed_demo
    from pooler.emulator.server import serve_emulator
    from pooler.emulator.state import EmulatorState
    from pooler.server import run_gateway
    from pooler.web.settings import GatewaySettings

    state = EmulatorState(accounts=3)
    async with trio.open_nursery() as nursery:
        with listening_on(f"127.0.0.1:{args.emulator_port} (the emulator)"):
            emulator_port = await nursery.start(
                serve_emulator, state, "127.0.0.1", args.emulator_port
            )
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        config = replace(config, upstream_base_url=emulator_url, auth_base_url=emulator_url)
        raw_key = await db.run(partial(seed_demo, config=config, state=state))

        async def gateway_then_stop(task_status: trio.TaskStatus[Any]) -> None:
            await run_gateway(
                config,
                db,
                args.host,
                args.port,
                # One local process, no balancer in front: Ctrl-C needs no accept grace.
                settings=GatewaySettings(drain_accept_grace_s=0.0),
                shutdown_trigger=wait_for_signal,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()

        with listening_on(host_port(args.host, args.port)):
            running = await nursery.start(gateway_then_stop)
        from pooler.cli.demo import demo_banner

        print(
            demo_banner(host_port(args.host, running.port), emulator_url, raw_key, config),
            flush=True,
        )
