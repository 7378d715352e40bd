"""`pooler admin account login` run as a process, as an operator runs it, against the
emulator's auth server, with the real database and gateway (`open_stack`): the browser
(PKCE) and device-code sign-ins, their refusals, and an account that is already in the Pool
(re-linked, not duplicated). The test plays the operator's browser: it opens the authorize
URL the command prints and pastes back where it lands, or approves the device code through
the emulator's control API."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import trio
from harness import Stack, open_stack, responses_body

from pooler import store
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.emulator.state import EmulatorState
from pooler.emulator.tokens import mint_unsigned_jwt
from pooler.store.keys import create_key
from pooler.store.sign_in import add_signed_in_account
from pooler.upstream.oauth_login import SignInTokens

RESPONSES = "/backend-api/codex/responses"
URL = re.compile(rb"(http://\S+/oauth/authorize\?\S+)")
USER_CODE = re.compile(rb"^\s+([A-Z0-9]{4}-[A-Z0-9]{4})\s*$", re.M)


def cli_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_POOLER_")}
    config = stack.config
    assert config.database_url is not None
    return {
        **env,
        "DATABASE_URL": config.database_url,
        "CODEX_POOLER_DATA_DIR": str(config.data_dir),
        "CODEX_POOLER_SECRET_KEY": base64.b64encode(config.secret_key).decode(),
        "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(config.upstream_secret_key).decode(),
        "CODEX_POOLER_UPSTREAM_BASE_URL": stack.emulator_url,
        "CODEX_POOLER_AUTH_BASE_URL": stack.emulator_url,
    }


@dataclass
class Login:
    """A running `pooler admin account login`: its output so far, and its stdin."""

    proc: trio.Process
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    ended: list[trio.Event] = field(default_factory=lambda: [trio.Event(), trio.Event()])

    async def prompt(self, pattern: re.Pattern[bytes]) -> str:
        """The first match of `pattern` in what the command printed on stderr."""
        with trio.fail_after(60):
            while (found := pattern.search(self.err)) is None:
                assert not self.ended[1].is_set(), self.err.decode(errors="replace")
                await trio.sleep(0.02)
        return found.group(1).decode()

    async def paste(self, text: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(text.encode() + b"\n")

    async def result(self) -> tuple[int, str, str]:
        """Its exit status, stdout and stderr once it has ended."""
        with trio.fail_after(60):
            code = await self.proc.wait()
            for ended in self.ended:
                await ended.wait()
        return code, self.out.decode(), self.err.decode()


@asynccontextmanager
async def login(stack: Stack, *args: str) -> AsyncIterator[Login]:
    command = [sys.executable, "-m", "pooler.cli.main", "admin", "account", "login", *args]
    proc = await trio.lowlevel.open_process(
        command,
        env=cli_env(stack),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    running = Login(proc)

    async def pump(stream: Any, into: bytearray, ended: trio.Event) -> None:
        while chunk := await stream.receive_some(65536):
            into.extend(chunk)
        ended.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, proc.stdout, running.out, running.ended[0])
            nursery.start_soon(pump, proc.stderr, running.err, running.ended[1])
            yield running
            await running.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(5, shield=True):
                await proc.wait()


async def open_in_browser(url: str, **choices: str) -> str:
    """What the operator's browser does with the authorize URL: where it is sent back."""
    extra = "".join(f"&{name}={value}" for name, value in choices.items())
    async with httpx.AsyncClient(timeout=10) as browser:
        answer = await browser.get(url + extra, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith("http://localhost:1455/auth/callback?")
    return str(location)


async def audit(stack: Stack, action: str) -> list[store.AuditEvent]:
    events = await stack.database.run(lambda conn: store.list_audit_events(conn, 500))
    return [e for e in events if e.action == action]


async def account_count(stack: Stack) -> int:
    return int(
        await stack.database.run(
            lambda conn: conn.execute("SELECT count(*) FROM upstream_accounts").fetchone()[0]
        )
    )


async def served_by(stack: Stack, key: str, account_id: str) -> dict[str, Any]:
    """Send turns through the gateway until one reaches `account_id` upstream with tokens a
    sign-in minted (the gateway picks up new tokens and assignments within a second); the
    emulator's record of that request."""
    async with stack.client(headers={"Authorization": f"Bearer {key}"}) as client:
        with trio.fail_after(20):
            while True:
                answer = await client.post(RESPONSES, json=responses_body())
                assert answer.status_code == 200, answer.text
                last = (await stack.upstream_requests())[-1]
                if last["account_id"] == account_id and last["token_fresh"]:
                    return last
                await trio.sleep(0.1)


def assert_no_tokens(stack: Stack, *texts: str) -> None:
    for account in stack.emulator.accounts:
        for token in (account.access_token, account.refresh_token, account.id_token):
            assert all(token not in text for text in texts)


async def test_browser_sign_in_adds_an_account_that_serves(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        third = stack.emulator.accounts[2]
        ids = await stack.account_ids()
        await stack.database.run(
            lambda conn: store.delete_account(conn, store.resolve_account(conn, third.label).id)
        )
        await stack.database.run(lambda conn: store.create_pool(conn, "team"))
        assert await account_count(stack) == 2

        async with login(stack, "--pool", "team", "--json") as running:
            url = await running.prompt(URL)
            landed = await open_in_browser(url, emulator_account=third.label)
            await running.paste(landed)
            code, out, err = await running.result()
        assert code == 0, err
        added = json.loads(out)
        assert added["created"] is True and added["email"] == third.email
        assert added["chatgpt_account_id"] == third.account_id and added["lifecycle"] == "active"
        assert await account_count(stack) == 3
        [event] = await audit(stack, "upstream_account.sign_in")
        assert event.details == {
            "pool": "team",
            "label": third.email,
            "created": True,
            "method": "browser",
        }
        assert event.actor == "cli" and event.target_id == added["id"]
        assert added["id"] not in ids.values()

        raw, _ = await stack.database.run(
            lambda conn: create_key(conn, stack.config.secret_key, "team", "k", actor="test")
        )
        await stack.gateway.reload()
        await served_by(stack, raw, third.account_id)
        audit_text = json.dumps([e.details for e in await audit(stack, "upstream_account.sign_in")])
        assert_no_tokens(stack, out, err, audit_text)


async def test_browser_sign_in_refusals(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        # a callback that is not the answer to this sign-in: refused, nothing stored
        async with login(stack, "--pool", "demo") as running:
            url = await running.prompt(URL)
            landed = await open_in_browser(url)
            forged = re.sub(r"state=[^&]+", "state=forged", landed)
            await running.paste(forged)
            code, _out, err = await running.result()
        assert code == 2 and "state mismatch" in err and "Traceback" not in err

        # the person refuses the sign-in: error=access_denied is surfaced
        async with login(stack, "--pool", "demo") as running:
            url = await running.prompt(URL)
            await running.paste(await open_in_browser(url, emulator_deny="1"))
            code, _out, err = await running.result()
        assert code == 2 and "denied" in err and "Traceback" not in err

        # a callback URL from an earlier sign-in, pasted into a new one
        async with login(stack, "--pool", "demo") as running:
            url = await running.prompt(URL)
            landed = await open_in_browser(url)
            await running.paste(landed)
            assert (await running.result())[0] == 0
        async with login(stack, "--pool", "demo") as running:
            await running.prompt(URL)
            await running.paste(landed)
            code, _out, err = await running.result()
        assert code == 2 and "state mismatch" in err  # another sign-in's state

        # an unknown Pool is refused before any sign-in starts
        async with login(stack, "--pool", "nope") as running:
            code, _out, err = await running.result()
        assert code == 2 and "nope" in err and "authorize" not in err

        assert len(await audit(stack, "upstream_account.sign_in")) == 1
        assert await account_count(stack) == 3


async def test_device_code_sign_in_relinks_an_account_already_in_the_pool(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.control("POST", "signin", {"device_interval_seconds": 1})
        first = stack.emulator.accounts[0]
        ids = await stack.account_ids()
        known = ids[first.label]
        await stack.database.run(
            lambda conn: store.set_lifecycle(conn, UUID(known), "reauth_required", "refused")
        )
        async with login(stack, "--pool", "demo", "--device-code") as running:
            user_code = await running.prompt(USER_CODE)
            assert "/codex/device" in running.err.decode()
            await stack.control("POST", "device/approve", {"user_code": user_code})
            code, out, err = await running.result()
        assert code == 0, err
        assert f"account {first.label} ({first.email}) already known: re-linked in demo" in out
        assert await account_count(stack) == 3  # no duplicate
        relinked = await stack.database.run(lambda conn: store.resolve_account(conn, first.label))
        assert str(relinked.id) == known and relinked.lifecycle == "active"
        [event] = await audit(stack, "upstream_account.sign_in")
        assert event.details["created"] is False and event.details["method"] == "device_code"

        # the re-linked account serves with its new tokens
        for other in stack.emulator.accounts[1:]:
            await stack.database.run(
                lambda conn, label=other.label: store.pause_account(conn, UUID(ids[label]))
            )
        await stack.gateway.reload()
        await served_by(stack, stack.key, first.account_id)
        assert_no_tokens(stack, out, err)


async def test_device_code_sign_in_denied_or_expired(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await stack.control("POST", "signin", {"device_interval_seconds": 1})
        for action, words in (("deny", "denied"), ("expire", "expired")):
            async with login(stack, "--pool", "demo", "--device-code") as running:
                user_code = await running.prompt(USER_CODE)
                await stack.control("POST", f"device/{action}", {"user_code": user_code})
                code, _out, err = await running.result()
            assert code == 2 and words in err and "Traceback" not in err, err
        assert await audit(stack, "upstream_account.sign_in") == []

        # the command stops once the code's lifetime is over, with nobody approving it
        await stack.control("POST", "signin", {"device_ttl_seconds": 2})
        async with login(stack, "--pool", "demo", "--device-code") as running:
            code, _out, err = await running.result()
        assert code == 2 and "expired" in err


def test_the_service_refuses_what_names_no_account(database: Database, keyring: Keyring) -> None:
    """The sign-in's tokens go through the import's own checks (`parse_tokens`)."""
    database.run_sync(lambda conn: store.create_pool(conn, "team"))
    fake = EmulatorState(accounts=1).accounts[0]
    good = SignInTokens(fake.access_token, fake.refresh_token, fake.id_token)
    anonymous = mint_unsigned_jwt({"exp": 4_000_000_000})
    cases = [
        (SignInTokens("not-a-jwt", "rt", "not-a-jwt"), "browser", "not readable JWTs"),
        (SignInTokens(anonymous, "rt", anonymous), "browser", "no ChatGPT account id"),
        (good, "carrier_pigeon", "sign-in method"),
    ]
    for tokens, method, message in cases:
        with pytest.raises(store.InvalidInputError, match=message):
            database.run_sync(
                lambda conn, t=tokens, m=method: add_signed_in_account(
                    conn, keyring, "team", t, method=m
                )
            )
    with pytest.raises(store.NotFoundError):
        database.run_sync(
            lambda conn: add_signed_in_account(conn, keyring, "nope", good, method="browser")
        )
    first = database.run_sync(
        lambda conn: add_signed_in_account(conn, keyring, "team", good, method="browser")
    )
    again = database.run_sync(
        lambda conn: add_signed_in_account(
            conn, keyring, "team", good, method="device_code", label="mine"
        )
    )
    assert first.created and not again.created
    assert again.account.id == first.account.id and again.account.label == "mine"
    stored = database.run_sync(
        lambda conn: store.load_account_credentials(conn, keyring, first.account.id)
    )
    assert (stored.access_token, stored.refresh_token, stored.id_token) == (
        good.access_token,
        good.refresh_token,
        good.id_token,
    )
