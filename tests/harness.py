"""The whole stack in one trio run: emulator + embedded PostgreSQL + gateway, seeded with a
Pool of emulated accounts and a key. Tests speak HTTP to it like any client would."""

from __future__ import annotations

import base64
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, NoReturn

import httpx
import pytest
import trio

from pooler.cli.demo import seed_demo
from pooler.config import Config, load_config
from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState
from pooler.server import RunningGateway, run_gateway
from pooler.store.instance_settings import update_instance_settings
from pooler.web.settings import GatewaySettings

POOL = "demo"


@dataclass
class Stack:
    config: Config
    database: Database
    emulator: EmulatorState
    emulator_url: str
    running: RunningGateway
    key: str

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def gateway(self) -> Any:
        return self.running.gateway

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)

    async def control(self, method: str, path: str, payload: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.emulator_url, timeout=10) as client:
            response = await client.request(method, f"/_emulator/{path}", json=payload)
            response.raise_for_status()
            return response.json()

    async def upstream_requests(self, path_suffix: str = "/responses") -> list[dict[str, Any]]:
        found = (await self.control("GET", "requests"))["requests"]
        return [r for r in found if str(r.get("path", "")).endswith(path_suffix)]

    async def fault(self, label: str, kind: str, times: int = 1) -> None:
        await self.control("POST", "faults", {"account_id": label, "kind": kind, "times": times})

    def label_of(self, upstream_account_id: str) -> str:
        for account in self.emulator.accounts:
            if account.account_id == upstream_account_id:
                return str(account.label)
        raise KeyError(upstream_account_id)

    async def account_ids(self) -> dict[str, str]:
        """Gateway account id by label."""
        rows = await self.database.run(
            lambda conn: conn.execute("SELECT label, id::text FROM upstream_accounts").fetchall()
        )
        return {label: account_id for label, account_id in rows}

    async def wait_for_logs(self, count: int) -> int:
        """Wait until at least `count` request-log rows are in the database (a handler logs
        after its last byte is sent, so the client can be ahead of the LogWriter)."""
        with trio.fail_after(15):
            while True:
                found = await self.database.run(
                    lambda conn: conn.execute("SELECT count(*) FROM request_logs").fetchone()[0]
                )
                if found >= count:
                    return int(found)
                await trio.sleep(0.05)


def test_config(data_dir: Path, db_url: str, upstream_url: str) -> Config:
    return load_config(
        {
            "CODEX_POOLER_DATA_DIR": str(data_dir),
            "DATABASE_URL": db_url,
            "CODEX_POOLER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CODEX_POOLER_UPSTREAM_BASE_URL": upstream_url,
            "CODEX_POOLER_AUTH_BASE_URL": upstream_url,
        }
    )


def process_env(config: Config, **extra: str) -> dict[str, str]:
    """The environment of a `pooler` process (serve, admin) on `config`'s database, data dir,
    secrets and upstream, logging warnings only; `extra` added."""
    assert config.database_url is not None
    return {
        **os.environ,
        "DATABASE_URL": config.database_url,
        "CODEX_POOLER_DATA_DIR": str(config.data_dir),
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(config.secret_key).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(config.upstream_secret_key).decode(),
        "CODEX_POOLER_UPSTREAM_BASE_URL": config.upstream_base_url,
        "CODEX_POOLER_AUTH_BASE_URL": config.auth_base_url,
        "CODEX_POOLER_LOG_LEVEL": "warning",
        **extra,
    }


def shared_env(tmp_path: Path, db_url: str, upstream: str) -> dict[str, str]:
    """What several `pooler` processes on one database share (the database, fresh secrets,
    the upstream), with a data dir a process may override; warnings only."""
    return {
        **os.environ,
        "CODEX_POOLER_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": db_url,
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "CODEX_POOLER_UPSTREAM_BASE_URL": upstream,
        "CODEX_POOLER_AUTH_BASE_URL": upstream,
        "CODEX_POOLER_LOG_LEVEL": "warning",
    }


# Usage polls (every 60 s by default, the first at a random moment) would make what the
# gateway knows about quota depend on timing; tests that poll set a short interval.
QUIET_POLLS: Mapping[str, Any] = {"usage_poll_interval_seconds": 86_400}


async def seed_stack(
    database: Database,
    config: Config,
    state: EmulatorState,
    instance_settings: Mapping[str, Any] | None = QUIET_POLLS,
) -> str:
    """The demo Pool with the emulator's accounts, instance settings; the Pool key."""
    key: str = await database.run(partial(seed_demo, config=config, state=state))
    if instance_settings:
        changes = dict(instance_settings)
        await database.run(lambda conn: update_instance_settings(conn, changes, actor="test"))
    return key


@asynccontextmanager
async def open_stack(
    db_url: str,
    data_dir: Path,
    *,
    accounts: int = 3,
    token_ttl: float = 3600.0,
    percent_per_request: float = 2.0,
    settings: GatewaySettings | None = None,
    instance_settings: Mapping[str, Any] | None = QUIET_POLLS,
) -> AsyncIterator[Stack]:
    state = EmulatorState(
        accounts=accounts, token_ttl=token_ttl, percent_per_request=percent_per_request
    )
    database = Database.open(db_url, max_size=8)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_emulator, state)
            emulator_url = f"http://127.0.0.1:{port}"
            config = test_config(data_dir, db_url, emulator_url)
            key = await seed_stack(database, config, state, instance_settings)
            running = await nursery.start(
                partial(run_gateway, config, database, "127.0.0.1", 0, settings=settings)
            )
            yield Stack(config, database, state, emulator_url, running, key)
            nursery.cancel_scope.cancel()
    finally:
        database.close()


@asynccontextmanager
async def open_two_nodes(
    db_url: str,
    data_dir: Path,
    *,
    accounts: int = 3,
    token_ttl: float = 3600.0,
    percent_per_request: float = 2.0,
    settings: GatewaySettings | None = None,
    instance_settings: Mapping[str, Any] | None = QUIET_POLLS,
) -> AsyncIterator[tuple[Stack, Stack]]:
    """Two gateways on one database and one emulator, as two `pooler serve` processes
    would be (DESIGN §11): each has its own `Database` pool, LISTEN connection and actors;
    they share the secrets, the seeded Pool, its accounts and its key. `instance_settings`
    are stored before either node starts."""
    state = EmulatorState(
        accounts=accounts, token_ttl=token_ttl, percent_per_request=percent_per_request
    )
    databases = [Database.open(db_url, max_size=8), Database.open(db_url, max_size=8)]
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_emulator, state)
            emulator_url = f"http://127.0.0.1:{port}"
            config = test_config(data_dir, db_url, emulator_url)
            key = await seed_stack(databases[0], config, state, instance_settings)
            nodes = []
            for database in databases:
                running = await nursery.start(
                    partial(run_gateway, config, database, "127.0.0.1", 0, settings=settings)
                )
                nodes.append(Stack(config, database, state, emulator_url, running, key))
            yield nodes[0], nodes[1]
            nursery.cancel_scope.cancel()
    finally:
        for database in databases:
            database.close()


LOWEST_TEST_PORT = 10_000
_ports_given: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default if unread)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, for a process started later to listen on.

    It is chosen below the kernel's ephemeral range: a port asked of bind(0) is in that
    range, so any outgoing connection (the suite's clients, PostgreSQL's) could take it
    between this check and the child's bind, which failed a run with "Address already in
    use". Ports handed out once are not handed out again in this process."""
    low, _ = ephemeral_port_range()
    candidates = range(LOWEST_TEST_PORT, low)
    for _ in range(100):
        port = random.choice(candidates) if candidates else 0
        if port in _ports_given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        _ports_given.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


async def run_process(
    command: list[str],
    env: dict[str, str],
    log: IO[bytes] | None = None,
    *,
    task_status: trio.TaskStatus[trio.Process],
) -> None:
    """Run `command` until it exits, its stdout and stderr piped together (or written to
    `log`, closed at the end); killed on cancel."""
    out: IO[bytes] | int = subprocess.PIPE if log is None else log
    proc = await trio.lowlevel.open_process(
        command, env=env, stdout=out, stderr=log if log is not None else subprocess.STDOUT
    )
    try:
        task_status.started(proc)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5, shield=True):
                await proc.wait()
        if log is not None:
            log.close()


async def run_client(
    argv: list[str], env: dict[str, str], seconds: float, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run an external client to its end (stdin empty, within `seconds`): its exit code,
    stripped stdout and stderr."""
    with trio.fail_after(seconds):
        result = await trio.run_process(
            argv,
            env=env,
            cwd=cwd,
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return (
        result.returncode,
        result.stdout.decode(errors="replace").strip(),
        result.stderr.decode(errors="replace"),
    )


async def wait_for_line(proc: trio.Process, needle: bytes, seconds: float) -> bytes:
    """Read the process's output until `needle` shows up; what was read."""
    assert proc.stdout is not None
    seen = b""
    with trio.fail_after(seconds):
        while needle not in seen:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"process ended before printing {needle!r}: {seen[-2000:]!r}")
            seen += chunk
    return seen


async def run_pooler(env: dict[str, str], *args: str) -> str:
    """`pooler <args>` as a user runs it, in a worker thread; its stdout (exit 0 required)."""
    command = [sys.executable, "-m", "pooler.cli.main", *args]
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def responses_body(text: str = "Reply with exactly: ok", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5.5", "stream": True, "store": False, "input": [message(text)], **extra}


def parse_sse(raw: str) -> list[dict[str, Any]]:
    import json

    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                data = line[5:].strip()
                if data and data != "[DONE]":
                    events.append(json.loads(data))
    return events


def require_tool(name: str, hint: str) -> str:
    """The path of an external client, or a skip (a failure when POOLER_REQUIRE_E2E=1) whose
    reason names the client and what installs it (`hint`, e.g. "npm install ...")."""
    local = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / name
    found = str(local) if local.exists() else shutil.which(name)
    if found:
        return found
    missing_client(
        f"the {name} client is not installed (node_modules/.bin or PATH): {hint} enables this test"
    )


def missing_client(reason: str) -> NoReturn:
    """Skip with `reason` (also a whole test module, from its top level), or fail when
    POOLER_REQUIRE_E2E=1 (CI)."""
    if os.environ.get("POOLER_REQUIRE_E2E") == "1":
        pytest.fail(reason + " and POOLER_REQUIRE_E2E=1")
    pytest.skip(reason, allow_module_level=True)
