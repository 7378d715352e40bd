"""The command line's answer to common mistakes, run as a user runs it (a `pooler` process):
one `error: ...` line on stderr and exit status 2, never a traceback; `pooler demo` leaves
no temporary data dir and no database server behind; and `pooler serve` logs one line per
answered request, with no content."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import psutil
import pytest
import trio
from harness import free_port, responses_body, run_process, wait_for_line

from pooler.cli.demo import seed_demo
from pooler.config import load_config
from pooler.db import Database
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState

POOLER = [sys.executable, "-m", "pooler.cli.main"]
UNREACHABLE = "postgresql://127.0.0.1:1/x"
MARKER = "PROMPT-MARKER-7f3c"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_POOLER_")}
    env.pop("DATABASE_URL", None)
    return {**env, **extra}


def key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def shared_env(data_dir: Path, db_url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        CODEX_POOLER_DATA_DIR=str(data_dir),
        DATABASE_URL=db_url,
        CODEX_POOLER_SECRET_KEY=key_b64(),
        CODEX_POOLER_UPSTREAM_SECRET_KEY=key_b64(),
        **extra,
    )


def pooler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLER, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def refused(env: dict[str, str], *args: str) -> str:
    """The one error line of a `pooler` command that must fail cleanly."""
    result = pooler(env, *args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A TMPDIR for `pooler demo`, outside pytest's basetemp: as root the embedded server
    runs as its own user, which must traverse the path."""
    path = Path(tempfile.mkdtemp(prefix="pooler-test-demo-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def demo_dirs(tmpdir: Path) -> list[Path]:
    """The demo's temporary data dirs in `tmpdir` (beside the embedded-server library's own
    lock dir, `runtime-<uid>`, which it keeps there when XDG_RUNTIME_DIR is unset)."""
    return list(tmpdir.glob("codex-pooler-demo-*"))


def servers_in(path: Path) -> list[int]:
    """Pids of PostgreSQL servers whose data dir is under `path`."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(path) in " ".join(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def test_configuration_mistakes_are_one_line(tmp_path: Path) -> None:
    unreachable = shared_env(tmp_path / "data", UNREACHABLE)
    assert "127.0.0.1" in refused(unreachable, "migrate")
    assert "cannot open the database" in refused(unreachable, "admin", "pool", "list")

    no_secret = {k: v for k, v in unreachable.items() if k != "CODEX_POOLER_SECRET_KEY"}
    line = refused(no_secret, "admin", "pool", "list")
    assert "CODEX_POOLER_SECRET_KEY is required when DATABASE_URL is set" in line

    malformed = {**unreachable, "CODEX_POOLER_UPSTREAM_SECRET_KEY": "too-short"}
    line = refused(malformed, "serve")
    assert line == "error: CODEX_POOLER_UPSTREAM_SECRET_KEY must be 32 bytes, raw or base64"
    no_upstream = {k: v for k, v in unreachable.items() if k != "CODEX_POOLER_UPSTREAM_SECRET_KEY"}
    assert "CODEX_POOLER_UPSTREAM_SECRET_KEY is required" in refused(no_upstream, "migrate")

    version = pooler(clean_env(), "--version")
    assert version.returncode == 0 and re.fullmatch(r"pooler \d+\.\d+\S*\n", version.stdout)


def test_revoke_a_key_by_name(tmp_path: Path, db_url: str) -> None:
    env = shared_env(tmp_path / "data", db_url)
    assert pooler(env, "admin", "pool", "create", "team").returncode == 0
    created = pooler(env, "admin", "key", "create", "--pool", "team", "--name", "laptop")
    assert created.returncode == 0, created.stderr
    revoked = pooler(env, "admin", "key", "revoke", "laptop", "--pool", "team")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    assert "no key with id, prefix or name 'laptop'" in refused(
        env, "admin", "key", "revoke", "laptop"
    )


async def test_serve_logs_one_line_per_request_and_refuses_a_taken_port(
    tmp_path: Path, db_url: str
) -> None:
    state = EmulatorState(accounts=1)
    database = Database.open(db_url, max_size=2)
    port = free_port()
    try:
        async with trio.open_nursery() as nursery:
            upstream = f"http://127.0.0.1:{await nursery.start(serve_emulator, state)}"
            env = shared_env(
                tmp_path / "data",
                db_url,
                CODEX_POOLER_UPSTREAM_BASE_URL=upstream,
                CODEX_POOLER_AUTH_BASE_URL=upstream,
            )
            key = await database.run(partial(seed_demo, config=load_config(env), state=state))
            gateway = await nursery.start(run_process, [*POOLER, "serve", "--port", str(port)], env)
            await wait_for_line(gateway, b"listening on", 60)

            # A second gateway on the same port: one line, no traceback.
            line = await trio.to_thread.run_sync(lambda: refused(env, "serve", "--port", str(port)))
            assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.post(
                    "/backend-api/codex/responses",
                    json=responses_body(f"Reply with exactly: {MARKER}"),
                    headers={"authorization": f"Bearer {key}"},
                    timeout=30,
                )
            assert response.status_code == 200 and MARKER in response.text
            request_id = response.headers["x-request-id"]
            gateway.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await gateway.wait() == 0
            assert gateway.stdout is not None
            output = b""
            while chunk := await gateway.stdout.receive_some(65536):
                output += chunk
            nursery.cancel_scope.cancel()
    finally:
        database.close()
    text = output.decode()
    expected = rf"INFO pooler\.requests: POST responses 200 \d+ms account=account-1 id={request_id}"
    assert re.search(expected, text), text[-3000:]
    assert MARKER not in text and key not in text


def test_demo_on_a_taken_port_fails_cleanly_and_leaves_nothing(scratch: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(clean_env(TMPDIR=str(scratch)), "demo", "--port", str(port))
    assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert demo_dirs(scratch) == []  # the temporary data dir is gone ...
    assert servers_in(scratch) == []  # ... and the database server it started has stopped


async def test_demo_stopped_by_ctrl_c_leaves_nothing(scratch: Path) -> None:
    command = [*POOLER, "demo", "--port", str(free_port())]
    async with trio.open_nursery() as nursery:
        demo = await nursery.start(run_process, command, clean_env(TMPDIR=str(scratch)))
        banner = await wait_for_line(demo, b"Press Ctrl-C", 60)
        assert str(scratch).encode() in banner  # the banner names its temporary data dir
        assert len(demo_dirs(scratch)) == 1 and servers_in(scratch)
        demo.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await demo.wait() == 0
    assert demo_dirs(scratch) == []
    assert servers_in(scratch) == []
