"""`/metrics` behind a bearer token (`pooler admin settings metrics-token create|clear`):
stored only as a digest, applied live by the gateway and by a worker node, every wrong or
hostile Authorization refused with the same 401, the probes left open, and the System page
saying whether a token is configured, never its value."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio
from console_support import bootstrap_owner, browser
from harness import open_stack, process_env, run_pooler

from pooler.background import run_background
from pooler.config import Config
from pooler.db import Database
from pooler.store.instance_settings import get_instance_settings


async def raw_get(port: int, path: str, headers: list[bytes]) -> tuple[int, bytes]:
    """GET `path` with these header lines exactly as given (bytes a client library would
    refuse: NUL, a repeated header); the status and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        await stream.send_all(head + b"".join(h + b"\r\n" for h in headers) + b"\r\n")
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def until(check: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not check():
            await trio.sleep(0.01)


def hostile_authorizations(token: str) -> list[list[bytes]]:
    t = token.encode()
    return [
        [],  # missing
        [b"authorization: Bearer " + t[:-1] + (b"A" if t[-1:] != b"A" else b"B")],  # wrong
        [b"authorization: Bearer cxp-metrics-" + b"x" * 43],  # well-formed, never issued
        [b"authorization: Basic " + t],  # another scheme
        [b"authorization: " + t],  # no scheme
        [b"authorization: Bearer"],
        [b"authorization: Bearer   "],
        [b"authorization: Bearer " + t + b"\x00"],  # NUL appended
        [b"authorization: Bearer " + t[:5] + b"\x00" + t[5:]],
        [b"authorization: Bearer " + t + b"x" * 6000],  # very long, its prefix right
        [b"authorization: Bearer " + b"\xff\xfe" * 100],  # not ASCII
        [b"authorization: Bearer " + t, b"authorization: Bearer wrong"],  # two headers
        [b"authorization: Bearer wrong", b"authorization: Bearer " + t],
        [b"x-authorization: Bearer " + t],
        [b"authorization: Bearer " + t + b" " + t],
    ]


async def assert_guarded(port: int, token: str) -> None:
    bodies = set()
    for headers in hostile_authorizations(token):
        status, body = await raw_get(port, "/metrics", headers)
        assert status in (400, 401), (headers, status)  # 400: the HTTP server refused the line
        assert token.encode() not in body
        if status == 401:
            bodies.add(body)
    assert len(bodies) == 1, bodies  # one answer for every refusal: no hint
    error = json.loads(bodies.pop())["error"]
    assert error["code"] == "metrics_token_required" and error["type"]
    for path in ("/healthz", "/readyz"):
        status, _ = await raw_get(port, path, [])
        assert status == 200, path
    status, body = await raw_get(port, "/metrics", [b"authorization: Bearer " + token.encode()])
    assert status == 200 and b"codex_pooler_leader" in body
    status, _ = await raw_get(port, "/metrics", [b"Authorization: bearer  " + token.encode()])
    assert status == 200  # the scheme's case and extra spaces do not matter


async def open_worker(nursery: trio.Nursery, config: Config, db_url: str) -> tuple[int, Database]:
    """A `worker` node (jobs and probes only) of the same instance, in this process."""
    worker_db = Database.open(db_url, max_size=2)
    worker_config = dataclasses.replace(config, role="worker")
    port = await nursery.start(partial(run_background, worker_config, worker_db, "127.0.0.1", 0))
    return port, worker_db


async def test_a_metrics_token_guards_metrics_on_every_node(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, trio.open_nursery() as nursery:
        port = stack.running.port
        worker_port, worker_db = await open_worker(nursery, stack.config, db_url)
        try:
            for p in (port, worker_port):  # open until a token is created
                assert (await raw_get(p, "/metrics", []))[0] == 200
            env = process_env(stack.config)
            created = json.loads(
                await run_pooler(env, "admin", "settings", "metrics-token", "create", "--json")
            )
            token = created["metrics_token"]
            assert token.startswith("cxp-metrics-") and len(token) > 50
            raw, settings = await stack.database.run(get_instance_settings)
            assert token not in json.dumps(raw)  # only its digest is stored
            assert settings.metrics_token_digest is not None
            await until(lambda: stack.gateway.metrics_auth.required)
            await assert_guarded(port, token)
            await until_refused(worker_port)
            await assert_guarded(worker_port, token)

            # Neither `settings show` nor the audit log holds the token or its digest.
            status = await run_pooler(env, "admin", "settings", "metrics-token", "status")
            assert status.strip() == "metrics token: configured"
            shown = await run_pooler(env, "admin", "settings", "show")
            assert settings.metrics_token_digest not in shown and token not in shown
            shown_json = await run_pooler(env, "admin", "settings", "show", "--json")
            assert json.loads(shown_json)["metrics_token_configured"] is True
            assert settings.metrics_token_digest not in shown_json
            audit = await stack.database.run(
                lambda conn: conn.execute(
                    "SELECT action, details::text FROM audit_events"
                    " WHERE action LIKE 'settings.metrics_token%'"
                ).fetchall()
            )
            assert [a for a, _ in audit] == ["settings.metrics_token_created"]
            assert all(settings.metrics_token_digest not in d for _, d in audit)

            # A second token replaces the first.
            again = json.loads(
                await run_pooler(env, "admin", "settings", "metrics-token", "create", "--json")
            )["metrics_token"]
            await until(lambda: not stack.gateway.metrics_auth.allows(bearer(token)))
            assert (await raw_get(port, "/metrics", bearer_lines(token)))[0] == 401
            assert (await raw_get(port, "/metrics", bearer_lines(again)))[0] == 200

            await run_pooler(env, "admin", "settings", "metrics-token", "clear")
            await until(lambda: not stack.gateway.metrics_auth.required)
            with trio.fail_after(5):
                while (await raw_get(worker_port, "/metrics", []))[0] != 200:
                    await trio.sleep(0.02)
            assert (await raw_get(port, "/metrics", []))[0] == 200
        finally:
            nursery.cancel_scope.cancel()
            worker_db.close()


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Bearer " + token.encode())]


def bearer_lines(token: str) -> list[bytes]:
    return [b"authorization: Bearer " + token.encode()]


async def until_refused(port: int) -> None:
    with trio.fail_after(5):
        while (await raw_get(port, "/metrics", []))[0] != 401:
            await trio.sleep(0.02)


async def test_the_digest_cannot_be_set_as_a_setting(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        env = process_env(stack.config)
        command = [
            "admin",
            "settings",
            "set",
            "metrics_token_digest=" + "0" * 64,
        ]
        result = await trio.run_process(
            [sys.executable, "-m", "pooler.cli.main", *command],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 2
        assert b"not an instance setting" in result.stderr
        _, settings = await stack.database.run(get_instance_settings)
        assert settings.metrics_token_digest is None


async def test_the_system_page_says_whether_a_token_is_configured(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as owner:
        await bootstrap_owner(owner)
        page = await owner.get("/admin/system")
        assert '<strong id="metrics-token-state">not configured</strong>' in page.text
        env = process_env(stack.config)
        token = json.loads(
            await run_pooler(env, "admin", "settings", "metrics-token", "create", "--json")
        )["metrics_token"]
        page = await owner.get("/admin/system")
        assert '<strong id="metrics-token-state">configured</strong>' in page.text
        _, settings = await stack.database.run(get_instance_settings)
        assert token not in page.text and settings.metrics_token_digest not in page.text
        assert "metrics_token_digest" not in page.text
