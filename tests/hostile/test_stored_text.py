"""Hostile text that reaches a row (DESIGN §8): a NUL in the model name once made
PostgreSQL refuse the request-log batch, and the LogWriter retried it forever, so request
logging stopped for the whole process. Now the answer is a clean error, the row is stored
(escaped), and the next honest request is logged. Names with terminal escapes are refused
by the store, and the CLI says so in one line."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from harness import Stack, open_stack, responses_body

from pooler.store.logs import recent_request_logs

HOSTILE_MODEL = "x\u0000\u001b[31m"
STORED_MODEL = "x\\x00\\x1b[31m"


def assert_clean_error(status: int, body: bytes) -> None:
    assert 400 <= status < 600, body
    assert b"Traceback" not in body and b"\x00" not in body
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert "code" in error and "type" in error


async def logged_models(stack: Stack) -> list[Any]:
    rows = await stack.database.run(lambda conn: recent_request_logs(conn, 50))
    return [row.model for row in rows]


async def test_a_nul_in_the_model_is_logged_escaped_and_logging_goes_on(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path, accounts=1) as stack, stack.client() as client:
        with trio.fail_after(60):
            chat = {"model": HOSTILE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
            answer = await client.post("/v1/chat/completions", json=chat)
            assert_clean_error(answer.status_code, answer.content)
            answer = await client.post(
                "/backend-api/codex/responses", json=responses_body(model=HOSTILE_MODEL)
            )
            assert_clean_error(answer.status_code, answer.content)
            # Both hostile rows are stored, escaped ...
            await stack.wait_for_logs(2)
            assert (await logged_models(stack)).count(STORED_MODEL) == 2

            # ... and the LogWriter is not wedged: honest requests are logged after them.
            honest = await client.post("/backend-api/codex/responses", json=responses_body())
            assert honest.status_code == 200, honest.text
            await stack.wait_for_logs(3)
            writer = stack.gateway.log_writer
            assert writer.pending == 0 and writer.refused == 0
            metrics = (await client.get("/metrics")).text
            assert "codex_pooler_log_rows_refused_total 0.0" in metrics


def admin_env(stack: Stack, db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "CODEX_POOLER_DATA_DIR": str(stack.config.data_dir),
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
    }


def pooler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pooler.cli.main", "admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_names_with_terminal_escapes_are_refused_in_one_line(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path, accounts=1) as stack:
        env = admin_env(stack, db_url)
        for args in (
            ("pool", "create", "bad\x1b[31m"),
            ("pool", "create", "bell\x07"),
            ("key", "create", "--pool", "demo", "--name", "red\x1b[31mkey"),
        ):
            done = await trio.to_thread.run_sync(lambda: pooler(env, *args))  # noqa: B023
            assert done.returncode != 0
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "control" in lines[0], done.stderr
            assert "\x1b" not in done.stderr and "\x07" not in done.stderr
        listed = await trio.to_thread.run_sync(lambda: pooler(env, "pool", "list"))
        assert "bad" not in listed.stdout and "bell" not in listed.stdout
        # A second key of one name in one Pool is refused too (a name must find one key).
        first = await trio.to_thread.run_sync(
            lambda: pooler(env, "key", "create", "--pool", "demo", "--name", "ci")
        )
        assert first.returncode == 0, first.stderr
        second = await trio.to_thread.run_sync(
            lambda: pooler(env, "key", "create", "--pool", "demo", "--name", "ci")
        )
        assert second.returncode != 0
        assert "already has an active key named 'ci'" in second.stderr
