"""The command line as a user runs it: `pooler emulator`, `pooler serve` on the embedded
database, and `pooler admin` commands against the same data directory while it serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from harness import free_port, responses_body, run_process, wait_for_line


def pooler(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pooler.cli.main", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


async def test_serve_and_admin_share_the_embedded_database(tmp_path: Path) -> None:
    emulator_port, gateway_port = free_port(), free_port()
    auth_dir = tmp_path / "auth"
    env = {
        **os.environ,
        "CODEX_POOLER_DATA_DIR": str(tmp_path / "data"),
        "CODEX_POOLER_UPSTREAM_BASE_URL": f"http://127.0.0.1:{emulator_port}",
        "CODEX_POOLER_AUTH_BASE_URL": f"http://127.0.0.1:{emulator_port}",
        "CODEX_POOLER_LOG_LEVEL": "warning",
    }
    env.pop("DATABASE_URL", None)
    python = [sys.executable, "-m", "pooler.cli.main"]
    async with trio.open_nursery() as nursery:
        emulator = await nursery.start(
            run_process,
            [*python, "emulator", "--port", str(emulator_port), "--write-auth-json", str(auth_dir)],
            env,
        )
        await wait_for_line(emulator, b"account-3", 30)
        gateway = await nursery.start(
            run_process, [*python, "serve", "--port", str(gateway_port)], env
        )
        await wait_for_line(gateway, b"listening on", 60)
        base = f"http://127.0.0.1:{gateway_port}"

        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.get("/readyz")).status_code == 200

            # Configure the running gateway from another process, on the same data dir.
            await trio.to_thread.run_sync(lambda: pooler(env, "admin", "pool", "create", "team"))
            imported = await trio.to_thread.run_sync(
                lambda: pooler(
                    env,
                    "admin",
                    "account",
                    "import",
                    "--pool",
                    "team",
                    str(auth_dir / "account-1" / "auth.json"),
                    "--json",
                )
            )
            assert json.loads(imported)["lifecycle"] == "active"
            created = await trio.to_thread.run_sync(
                lambda: pooler(env, "admin", "key", "create", "--pool", "team", "--json")
            )
            key = json.loads(created)["key"]
            assert key.startswith("sk-cxp-")

            headers = {"authorization": f"Bearer {key}"}
            with trio.fail_after(10):
                while True:  # NOTIFY reaches the gateway within moments
                    response = await client.post(
                        "/backend-api/codex/responses",
                        json=responses_body("Reply with exactly: configured live"),
                        headers=headers,
                    )
                    if response.status_code != 401:
                        break
                    await trio.sleep(0.1)
            assert response.status_code == 200
            assert "configured live" in response.text

            listed = json.loads(
                await trio.to_thread.run_sync(
                    lambda: pooler(env, "admin", "account", "list", "--json")
                )
            )
            assert [a["email"] for a in listed] == ["user1@emulator.test"]
            keys = json.loads(
                await trio.to_thread.run_sync(lambda: pooler(env, "admin", "key", "list", "--json"))
            )
            assert key not in json.dumps(keys)  # the raw key is shown once, never listed

            revoked = await trio.to_thread.run_sync(
                lambda: pooler(env, "admin", "key", "revoke", keys[0]["key_prefix"])
            )
            assert "revoked" in revoked
            with trio.fail_after(10):
                while (
                    await client.post(
                        "/backend-api/codex/responses", json=responses_body(), headers=headers
                    )
                ).status_code != 401:
                    await trio.sleep(0.1)

        # SIGTERM drains and exits 0.
        for proc in (gateway, emulator):
            proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await gateway.wait() == 0
            assert await emulator.wait() == 0


async def test_pooler_demo_serves_a_seeded_pool(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_POOLER_")}
    command = [
        sys.executable,
        "-m",
        "pooler.cli.main",
        "demo",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "demo"),
    ]
    async with trio.open_nursery() as nursery:
        demo = await nursery.start(run_process, command, env)
        banner = await wait_for_line(demo, b"Press Ctrl-C", 60)
        key = banner.split(b"CODEX_POOLER_API_KEY=", 1)[1].split(b"\n", 1)[0].decode().strip()
        assert key.startswith("sk-cxp-")
        assert f"http://127.0.0.1:{port}/backend-api/codex".encode() in banner
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(3):
                response = await client.post(
                    "/backend-api/codex/responses",
                    json=responses_body("Reply with exactly: demo works", prompt_cache_key=f"d{i}"),
                    headers={"authorization": f"Bearer {key}"},
                )
                assert response.status_code == 200
                assert "demo works" in response.text
        demo.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await demo.wait() == 0
