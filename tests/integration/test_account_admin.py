"""`pooler admin account pause|resume|refresh|delete` run in-process, as an operator would,
against a real database and, for refresh, the emulator's OAuth server."""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import trio

from pooler import store
from pooler.cli.main import main
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.emulator import EmulatorState, FakeAccount, serve_emulator, write_auth_json_files
from pooler.store.models import ContinuityPin, QuotaWindowRow
from pooler.upstream.oauth import RefreshFailed, refresh_tokens


@dataclass
class Admin:
    """The CLI with its environment, the emulator behind it, and what NOTIFY announced."""

    database: Database
    emulator: EmulatorState
    emulator_url: str
    keyring: Keyring
    auth_files: dict[str, Path]
    capsys: pytest.CaptureFixture[str]
    notices: list[tuple[str, str]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    async def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await trio.to_thread.run_sync(main, ["admin", *args])
        out, err = self.capsys.readouterr()
        self.output += [out, err]
        return code, out, err

    async def ok(self, *args: str) -> str:
        code, out, err = await self.run(*args)
        assert code == 0, err
        return out

    async def account(self, fake: FakeAccount) -> store.Account:
        def find(conn: Any) -> store.Account:
            return store.resolve_account(conn, fake.email)

        return await self.database.run(find)

    async def audit(self, action: str) -> list[store.AuditEvent]:
        events = await self.database.run(lambda conn: store.list_audit_events(conn, 500))
        return [e for e in events if e.action == action]

    async def wait_for_notice(self, channel: str, payload: str) -> None:
        with trio.fail_after(5):
            while (channel, payload) not in self.notices:
                await trio.sleep(0.01)


@pytest.fixture
async def admin(
    db_url: str,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    nursery: trio.Nursery,
) -> AsyncIterator[Admin]:
    state = EmulatorState(accounts=2)
    port = await nursery.start(serve_emulator, state)
    url = f"http://127.0.0.1:{port}"
    upstream_key = os.urandom(32)
    for name in list(os.environ):
        if name.startswith("CODEX_POOLER_"):
            monkeypatch.delenv(name)
    env = {
        "DATABASE_URL": db_url,
        "CODEX_POOLER_DATA_DIR": str(tmp_path / "data"),
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(upstream_key).decode(),
        "CODEX_POOLER_UPSTREAM_BASE_URL": url,
        "CODEX_POOLER_AUTH_BASE_URL": url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    paths = write_auth_json_files(state, tmp_path / "auth")
    files = {a.label: p for a, p in zip(state.accounts, paths, strict=True)}
    admin = Admin(database, state, url, Keyring(upstream_key), files, capsys)

    def collect(channel: str, payload: str) -> None:
        admin.notices.append((channel, payload))

    await nursery.start(
        database.listen_channels,
        (store.CONFIG_CHANNEL, store.TOKENS_CHANNEL),
        collect,
    )
    await admin.ok("pool", "create", "team")
    for path in files.values():
        await admin.ok("account", "import", str(path), "--pool", "team")
    yield admin


async def assert_no_secrets(admin: Admin, *fakes: FakeAccount, extra: tuple[str, ...] = ()) -> None:
    """No token of these accounts in what the CLI printed or the audit trail holds."""
    audit = await admin.database.run(
        lambda conn: conn.execute("SELECT details::text FROM audit_events").fetchall()
    )
    haystack = "\n".join([*admin.output, *(row[0] for row in audit)])
    for fake in fakes:
        tokens = [fake.access_token, fake.refresh_token, fake.id_token, *extra]
        for token in tokens:
            assert token not in haystack


async def test_pause_and_resume(admin: Admin) -> None:
    fake = admin.emulator.accounts[0]
    account = await admin.account(fake)
    paused = json.loads(
        await admin.ok("account", "pause", fake.email.upper(), "--reason", "maintenance", "--json")
    )
    assert (paused["lifecycle"], paused["lifecycle_reason"]) == ("paused", "maintenance")
    await admin.wait_for_notice(store.CONFIG_CHANNEL, f"account:{account.id}")
    assert "resumed" in await admin.ok("account", "resume", str(account.id))
    assert (await admin.account(fake)).lifecycle == "active"
    changes = [e.details for e in await admin.audit("upstream_account.lifecycle")]
    assert [(d["from"], d["to"]) for d in changes] == [("paused", "active"), ("active", "paused")]
    assert all(e.actor == "cli" for e in await admin.audit("upstream_account.lifecycle"))
    # The other account was not touched; assignment by label still resolves the same way.
    other = await admin.account(admin.emulator.accounts[1])
    assert other.lifecycle == "active"
    assert "assigned" in await admin.ok("account", "assign", other.label, "--pool", "team")


async def test_unknown_and_ambiguous_accounts_are_refused(admin: Admin) -> None:
    code, _, err = await admin.run("account", "pause", "nobody@example.com")
    assert code == 2 and "no account matches" in err
    for fake in admin.emulator.accounts:
        account = await admin.account(fake)
        await admin.ok("account", "assign", str(account.id), "--pool", "team")
    await admin.database.run(
        lambda conn: conn.execute("UPDATE upstream_accounts SET label = 'twin'")
    )
    code, _, err = await admin.run("account", "delete", "TWIN")
    assert code == 2 and "give the account id" in err
    assert len(await admin.database.run(store.list_accounts)) == 2


async def test_refresh_rotates_and_stores_the_tokens(admin: Admin) -> None:
    fake = admin.emulator.accounts[0]
    account = await admin.account(fake)
    old_access, old_refresh, old_id = fake.access_token, fake.refresh_token, fake.id_token
    admin.notices.clear()

    out = await admin.ok("account", "refresh", fake.email)
    assert out.strip() == f"account {account.label} refreshed"
    assert fake.refresh_token != old_refresh and fake.access_token != old_access

    stored = await admin.database.run(
        lambda conn: store.load_account_credentials(conn, admin.keyring, account.id)
    )
    assert (stored.access_token, stored.refresh_token) == (fake.access_token, fake.refresh_token)
    assert stored.id_token == fake.id_token
    after = await admin.account(fake)
    assert after.last_refresh_at is not None and after.lifecycle == "active"
    await admin.wait_for_notice(store.TOKENS_CHANNEL, str(account.id))
    await admin.wait_for_notice(store.CONFIG_CHANNEL, f"account:{account.id}")

    # The old refresh token is spent: the auth server refuses it for good.
    def reuse() -> None:
        with httpx.Client(timeout=10) as http:
            refresh_tokens(http, admin.emulator_url, old_refresh)

    with pytest.raises(RefreshFailed) as caught:
        await trio.to_thread.run_sync(reuse)
    assert (caught.value.code, caught.value.permanent) == ("refresh_token_reused", True)

    # A second refresh uses the stored (rotated) token.
    await admin.ok("account", "refresh", str(account.id), "--json")
    (latest, first) = await admin.audit("account.refresh")
    assert first.details == {"label": account.label, "ok": True, "rotated": True}
    assert latest.actor == "cli" and latest.target_id == str(account.id)
    await assert_no_secrets(admin, fake, extra=(old_access, old_refresh, old_id))


async def test_permanent_refresh_failure_needs_a_reimport(admin: Admin) -> None:
    fake = admin.emulator.accounts[1]
    account = await admin.account(fake)
    admin.emulator.arm_fault(fake.account_id, "refresh_token_reused")

    code, _, err = await admin.run("account", "refresh", account.label)
    assert code != 0 and "refresh_token_reused" in err and "reauth_required" in err
    after = await admin.account(fake)
    assert (after.lifecycle, after.lifecycle_reason) == ("reauth_required", "refresh_token_reused")
    (event,) = await admin.audit("account.refresh")
    assert event.details == {
        "label": account.label,
        "ok": False,
        "error": "refresh_token_reused",
        "permanent": True,
    }
    oauth = [r for r in admin.emulator.requests if r["path"] == "/oauth/token"]
    assert len(oauth) == 1  # a permanent refusal is not retried

    code, _, err = await admin.run("account", "resume", account.label)
    assert code == 2 and "reauth_required" in err and "re-import" in err
    code, _, err = await admin.run("account", "pause", account.label)
    assert code == 2 and "re-import" in err
    code, _, err = await admin.run("account", "refresh", account.label)
    assert code == 2 and "re-import" in err
    assert (await admin.account(fake)).lifecycle == "reauth_required"
    assert len([r for r in admin.emulator.requests if r["path"] == "/oauth/token"]) == 1

    # Re-importing a fresh auth.json is the way back.
    await admin.ok("account", "import", str(admin.auth_files[fake.label]), "--pool", "team")
    assert (await admin.account(fake)).lifecycle == "active"
    await assert_no_secrets(admin, fake)


async def test_transient_refresh_failure_changes_nothing(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = admin.emulator.accounts[0]
    before = await admin.account(fake)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("CODEX_POOLER_AUTH_BASE_URL", refused)
    code, _, err = await admin.run("account", "refresh", fake.email)
    assert code == 2 and "ConnectError" in err and "try again" in err
    after = await admin.account(fake)
    assert after.lifecycle == "active" and after.last_refresh_at == before.last_refresh_at
    (event,) = await admin.audit("account.refresh")
    assert event.details["ok"] is False and event.details["permanent"] is False


async def test_delete_cascades(admin: Admin) -> None:
    fake = admin.emulator.accounts[0]
    account = await admin.account(fake)
    keep = await admin.account(admin.emulator.accounts[1])

    def seed(conn: Any) -> None:
        pool = store.get_pool(conn, "team")
        for account_id in (account.id, keep.id):
            store.upsert_quota_windows(conn, account_id, [QuotaWindowRow("primary", 12.0, 300)])
            pin = ContinuityPin(
                pool.id, os.urandom(32), account_id, datetime.now(UTC) + timedelta(hours=1)
            )
            store.upsert_continuity_pins(conn, [pin])

    await admin.database.run(seed)
    admin.notices.clear()

    deleted = json.loads(await admin.ok("account", "delete", str(account.id), "--json"))
    assert deleted["label"] == account.label
    await admin.wait_for_notice(store.CONFIG_CHANNEL, f"account:{account.id}")

    def remaining(conn: Any) -> dict[str, set[UUID]]:
        tables = ("account_secrets", "pool_assignments", "quota_windows", "continuity_pins")
        return {
            table: {row[0] for row in conn.execute(f"SELECT account_id FROM {table}")}
            for table in tables
        }

    left = await admin.database.run(remaining)
    assert left == {table: {keep.id} for table in left}
    listed = json.loads(await admin.ok("account", "list", "--json"))
    assert [a["id"] for a in listed] == [str(keep.id)]
    (event,) = await admin.audit("account.delete")
    assert (event.actor, event.target_id) == ("cli", str(account.id))
    assert event.details == {"label": account.label, "lifecycle": "active"}
    code, _, err = await admin.run("account", "delete", str(account.id))
    assert code == 2 and "no account matches" in err
    await assert_no_secrets(admin, fake)
