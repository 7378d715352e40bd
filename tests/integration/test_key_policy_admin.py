"""Per-Pool and per-key policy through `pooler admin` run in-process, as an operator would:
the CLI stores and shows it, the audit trail records it, and a running gateway applies it
within a second (NOTIFY), refusing `/v1` for a Pool that turned it off."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from harness import POOL, open_stack

from pooler import store
from pooler.cli.main import main
from pooler.config import Config
from pooler.db import Database
from pooler.web.keys import KeyInfo, PoolInfo

WITHIN_A_SECOND = 1.0


@dataclass
class Cli:
    capsys: pytest.CaptureFixture[str]

    async def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await trio.to_thread.run_sync(main, ["admin", *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def ok(self, *args: str) -> str:
        code, out, err = await self.run(*args)
        assert code == 0, err
        return out

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok(*args, "--json"))

    async def refused(self, *args: str) -> str:
        code, _, err = await self.run(*args)
        assert code == 2, err
        return err


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith("CODEX_POOLER_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def stack_env(config: Config, db_url: str) -> dict[str, str]:
    """The environment of a `pooler admin` run against a test stack's database and secrets."""
    return {
        "DATABASE_URL": db_url,
        "CODEX_POOLER_DATA_DIR": str(config.data_dir),
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(config.secret_key).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(config.upstream_secret_key).decode(),
    }


@pytest.fixture
def cli(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    use_env(
        monkeypatch,
        {
            "DATABASE_URL": db_url,
            "CODEX_POOLER_DATA_DIR": str(tmp_path / "data"),
            "CODEX_POOLER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        },
    )
    yield Cli(capsys)


async def audit(database: Database, action: str) -> list[store.AuditEvent]:
    events = await database.run(lambda conn: store.list_audit_events(conn, 500))
    return [e for e in events if e.action == action]


async def test_cli_sets_and_shows_the_policy(cli: Cli, database: Database) -> None:
    await cli.ok("pool", "create", "team")
    assert (await cli.json("pool", "list"))[0]["v1_enabled"] is True  # on by default

    created = await cli.json(
        "key",
        "create",
        "--pool",
        "team",
        "--name",
        "bot",
        "--allowed-models",
        "gpt-5.5, gpt-5.4",
        "--reasoning-effort",
        "max:medium",
    )
    assert created["allowed_models"] == ["gpt-5.5", "gpt-5.4"]
    assert (created["reasoning_effort"], created["reasoning_effort_mode"]) == ("medium", "max")
    plain = await cli.json("key", "create", "--pool", "team", "--name", "plain")
    assert (plain["allowed_models"], plain["reasoning_effort"]) == (None, None)

    listed = {k["name"]: k for k in await cli.json("key", "list")}
    assert listed["bot"]["allowed_models"] == ["gpt-5.5", "gpt-5.4"]
    assert listed["bot"]["reasoning_effort_mode"] == "max"
    table = await cli.ok("key", "list")
    assert "MODELS" in table and "gpt-5.5,gpt-5.4" in table and "max:medium" in table

    # By name, then by prefix; each flag left out keeps its setting.
    updated = await cli.json("key", "update", "bot", "--reasoning-effort", "enforce:high")
    assert updated["allowed_models"] == ["gpt-5.5", "gpt-5.4"]
    assert (updated["reasoning_effort"], updated["reasoning_effort_mode"]) == ("high", "enforce")
    prefix = created["key_prefix"]
    updated = await cli.json("key", "update", prefix, "--allowed-models", "any")
    assert updated["allowed_models"] is None and updated["reasoning_effort"] == "high"
    out = await cli.ok("key", "update", prefix, "--reasoning-effort", "none")
    assert "models any, reasoning any" in out

    updated = await cli.json("pool", "update", "team", "--v1", "off")
    assert updated["v1_enabled"] is False
    assert "off" in (await cli.ok("pool", "list")).splitlines()[1]

    # Audited, with the policy in the details (and never the raw key).
    create_events = await audit(database, "api_key.create")
    bot = next(e for e in create_events if e.details["name"] == "bot")
    assert bot.details["allowed_models"] == ["gpt-5.5", "gpt-5.4"]
    assert bot.details["reasoning_effort_mode"] == "max"
    # Each edit, through the CLI as through the console, records what it changed.
    updates = [e.details for e in await audit(database, "api_key.update")]
    assert {
        "prefix": prefix,
        "pool": "team",
        "before": {"allowed_models": ["gpt-5.5", "gpt-5.4"]},
        "after": {"allowed_models": None},
    } in updates
    assert {
        "prefix": prefix,
        "pool": "team",
        "before": {"reasoning_effort": "high", "reasoning_effort_mode": "enforce"},
        "after": {"reasoning_effort": None, "reasoning_effort_mode": None},
    } in updates
    pool_updates = await audit(database, "pool.update")
    assert pool_updates[0].details == {
        "name": "team",
        "before": {"v1_enabled": True},
        "after": {"v1_enabled": False},
    }
    team = await database.run(lambda conn: store.get_pool(conn, "team"))
    assert pool_updates[0].pool_id == team.id
    assert all(created["key"] not in json.dumps(e.details) for e in create_events)


async def test_cli_refuses_bad_policies(cli: Cli) -> None:
    await cli.ok("pool", "create", "team")
    await cli.ok("pool", "create", "other")
    for flags in (
        ["--reasoning-effort", "max:ultra"],
        ["--reasoning-effort", "high"],
        ["--reasoning-effort", "cap:high"],
        ["--allowed-models", " , "],
    ):
        err = await cli.refused("key", "create", "--pool", "team", *flags)
        assert err.startswith("error: ")
    assert await cli.json("key", "list") == []

    await cli.ok("key", "create", "--pool", "team", "--name", "dup")
    # A second active key of the same name in one Pool is refused; another Pool may have it.
    assert "already has an active key named" in await cli.refused(
        "key", "create", "--pool", "team", "--name", "dup"
    )
    await cli.ok("key", "create", "--pool", "other", "--name", "dup")
    other = await cli.json("key", "create", "--pool", "other", "--name", "solo")
    err = await cli.refused("key", "update", "dup", "--allowed-models", "gpt-5.5")
    assert "several active keys" in err
    assert "no key" in await cli.refused("key", "update", "nope", "--allowed-models", "any")
    assert "no key" in await cli.refused(
        "key", "update", "solo", "--pool", "team", "--allowed-models", "any"
    )
    updated = await cli.json("key", "update", "solo", "--pool", "other", "--allowed-models", "m")
    assert (updated["id"], updated["allowed_models"]) == (other["id"], ["m"])
    assert "enforce:EFFORT" in await cli.refused("key", "update", "solo", "--reasoning-effort", "x")


async def test_a_running_gateway_applies_policy_within_a_second(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_stack(db_url, tmp_path, accounts=1) as stack, stack.client() as client:
        use_env(monkeypatch, stack_env(stack.config, db_url))
        cli = Cli(capsys)
        bearer = f"Bearer {stack.key}".encode()

        def cached() -> tuple[KeyInfo, PoolInfo]:
            found: tuple[KeyInfo, PoolInfo] = stack.gateway.keys.authenticate(bearer)
            return found

        assert (await client.get("/v1/models")).status_code == 200
        assert cached()[1].v1_enabled is True

        # /v1 off: every /v1 route answers 403 in OpenAI's shape; the backend still serves.
        await cli.ok("pool", "update", POOL, "--v1", "off")
        with trio.fail_after(WITHIN_A_SECOND):
            while (response := await client.get("/v1/models")).status_code != 403:
                await trio.sleep(0.02)
        assert response.json() == {
            "error": {
                "message": "the OpenAI-compatible /v1 API is disabled for this Pool",
                "type": "permission_error",
                "code": "v1_compatibility_disabled",
                "param": None,
            }
        }
        for method, path in (("POST", "/v1/responses"), ("POST", "/v1/embeddings")):
            refused = await client.request(method, path, json={"model": "gpt-5.5"})
            assert (refused.status_code, refused.json()["error"]["code"]) == (
                403,
                "v1_compatibility_disabled",
            )
        assert (await client.get("/backend-api/codex/models")).status_code == 200
        unknown = await client.get("/v1/models", headers={"Authorization": "Bearer sk-cxp-nope"})
        assert unknown.status_code == 401  # the key is checked before the Pool's switch

        await cli.ok("pool", "update", POOL, "--v1", "on")
        with trio.fail_after(WITHIN_A_SECOND):
            while (await client.get("/v1/models")).status_code != 200:
                await trio.sleep(0.02)

        # A key's policy reaches the gateway's key cache, model names normalized.
        await cli.ok(
            "key",
            "update",
            "demo",
            "--pool",
            POOL,
            "--allowed-models",
            "GPT-5.5,gpt_5.4",
            "--reasoning-effort",
            "max:low",
        )
        with trio.fail_after(WITHIN_A_SECOND):
            while cached()[0].allowed_models is None:
                await trio.sleep(0.02)
        key = cached()[0]
        assert key.allowed_models == frozenset({"gpt5.5", "gpt5.4"})
        assert (key.reasoning_effort, key.reasoning_effort_mode) == ("low", "max")

        await cli.ok(
            "key", "update", key.prefix, "--allowed-models", "any", "--reasoning-effort", "none"
        )
        with trio.fail_after(WITHIN_A_SECOND):
            while cached()[0].allowed_models is not None:
                await trio.sleep(0.02)
        assert (cached()[0].reasoning_effort, cached()[0].reasoning_effort_mode) == (None, None)


async def test_v1_websocket_is_refused_for_a_disabled_pool(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path, accounts=1) as stack:
        await stack.database.run(
            lambda conn: store.update_pool(conn, POOL, v1_enabled=False, actor="test")
        )
        with trio.fail_after(WITHIN_A_SECOND):
            while stack.gateway.keys.authenticate(f"Bearer {stack.key}".encode())[1].v1_enabled:
                await trio.sleep(0.02)
        url = stack.url.replace("http://", "ws://") + "/v1/responses"
        headers = [("Authorization", f"Bearer {stack.key}")]
        with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with trio_websocket.open_websocket_url(url, extra_headers=headers):
                pass
        assert refused.value.status_code == 403
        assert json.loads(refused.value.body or b"{}")["error"]["code"] == (
            "v1_compatibility_disabled"
        )


async def test_turning_v1_off_closes_open_v1_sockets_only(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path, accounts=1) as stack:
        base = stack.url.replace("http://", "ws://")
        headers = [(b"authorization", f"Bearer {stack.key}".encode())]
        with trio.fail_after(10):
            async with (
                trio_websocket.open_websocket_url(
                    base + "/v1/responses", extra_headers=headers
                ) as v1,
                trio_websocket.open_websocket_url(
                    base + "/backend-api/codex/responses", extra_headers=headers
                ) as backend,
            ):
                await stack.database.run(
                    lambda conn: store.update_pool(conn, POOL, v1_enabled=False, actor="test")
                )
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await v1.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1008
                assert backend.closed is None  # the Codex route is not /v1
            del v1, backend, closed
