"""Serving the emulator with Hypercorn's trio worker, and the `pooler emulator` entry."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio
from hypercorn.trio import serve

from pooler.emulator.app import build_emulator_app
from pooler.emulator.authjson import write_auth_json_files
from pooler.emulator.state import EmulatorState
from pooler.serving import (
    ShutdownTrigger,
    bound_port,
    host_port,
    hypercorn_config,
    wait_for_signal,
)


async def serve_emulator(
    state: EmulatorState,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_trigger: ShutdownTrigger | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled (or until `shutdown_trigger` returns); reports the bound port."""
    app = build_emulator_app(state)
    config = hypercorn_config(host, port, graceful_timeout=1.0)
    async with trio.open_nursery() as nursery:
        run = partial(
            serve,
            app,  # type: ignore[arg-type]  # hypercorn's TypedDict scopes vs our plain dicts
            config,
            shutdown_trigger=shutdown_trigger,
            mode="asgi",
        )
        binds: list[str] = await nursery.start(run)
        task_status.started(bound_port(binds))


async def _cli_main(state: EmulatorState, host: str, port: int, auth_dir: Path | None) -> None:
    async with trio.open_nursery() as nursery:
        run = partial(serve_emulator, state, host, port, shutdown_trigger=wait_for_signal)
        bound = await nursery.start(run)
        print(f"emulator listening on http://{host_port(host, bound)}", flush=True)
        if auth_dir is not None:
            for account, path in zip(
                state.accounts, write_auth_json_files(state, auth_dir), strict=True
            ):
                print(f"{account.label} ({account.account_id}): {path}", flush=True)


def run_emulator_cli(
    host: str,
    port: int,
    accounts: int,
    token_ttl: float,
    write_auth_json: Path | None,
    percent_per_request: float,
) -> None:
    """Blocking: serve until SIGINT/SIGTERM, then return."""
    state = EmulatorState(
        accounts=accounts, token_ttl=token_ttl, percent_per_request=percent_per_request
    )
    trio.run(_cli_main, state, host, port, write_auth_json)
