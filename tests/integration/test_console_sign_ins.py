"""The console's sign-ins under way live in PostgreSQL (`store.console_sign_ins`): a browser
PKCE sign-in started on one gateway node is finished on another, a device sign-in polled to
the end on another; concurrent loads of a due device page poll the auth server once; a
sign-in is its session's only, bounded per session, gone once expired or cancelled, and
its secrets are never stored in clear and are wiped once it is over."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import trio
from console_support import browser, csrf_of, sign_in
from harness import Stack, open_two_nodes
from test_console_upstreams import (
    AUTHORIZE,
    USER_CODE,
    account_count,
    land,
    owner_stack_setup,
    start_browser,
    start_device,
    wait_for,
)

from pooler import store
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.store import console_sessions, operators
from pooler.store import console_sign_ins as sign_ins
from pooler.upstream.oauth_login import BrowserSignIn, DeviceSignIn

DEVICE_TOKEN = "/api/accounts/deviceauth/token"


def shared(stack: Stack, signed_in: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same browser (its session cookie) talking to another node."""
    return browser(stack, cookies=signed_in.cookies)


async def rows(stack: Stack) -> list[tuple[Any, ...]]:
    return list(
        await stack.database.run(
            lambda conn: conn.execute(
                "SELECT id, s::text, ciphertext IS NULL FROM console_sign_ins s ORDER BY created_at"
            ).fetchall()
        )
    )


async def polls(stack: Stack) -> int:
    return len(await stack.upstream_requests(DEVICE_TOKEN))


async def test_a_browser_sign_in_started_on_one_node_is_finished_on_another(
    db_url: str, tmp_path: Path
) -> None:
    async with open_two_nodes(db_url, tmp_path) as (one, two):
        await owner_stack_setup(one)
        third = one.emulator.accounts[2]
        ids = await one.account_ids()
        await one.database.run(lambda conn: store.delete_account(conn, UUID(ids[third.label])))
        team = await one.database.run(lambda conn: store.create_pool(conn, "team"))
        async with browser(one) as owner:
            await sign_in(owner)
            async with shared(two, owner) as owner_two, browser(two) as other:
                await sign_in(other)
                flow = await start_browser(owner, team.id)
                page = await owner_two.get(flow)  # shown by the other node
                assert page.status_code == 200, page.text
                found = AUTHORIZE.search(page.text)
                assert found
                authorize = found.group(1).replace("&amp;", "&")
                state = re.search(r"state=([^&]+)", authorize)
                assert state
                [(_, text, wiped)] = await rows(one)
                assert state.group(1) not in text and not wiped  # the state is not in clear
                assert (await other.get(flow)).status_code == 404  # another session's

                landed = await land(authorize, emulator_account=third.label)
                token = csrf_of(page.text)
                forged = re.sub(r"state=[^&]+", "state=forged", landed)
                wrong = await owner.post(flow, data={"csrf_token": token, "callback_url": forged})
                assert wrong.status_code == 400 and "state does not match" in wrong.text
                done = await owner_two.post(
                    flow, data={"csrf_token": token, "callback_url": landed}
                )
                assert done.status_code == 200, done.text
                assert "the account was added to team" in done.text
                assert await account_count(one) == 3
                # over: only the outcome stays, shown by either node
                [(_, text, wiped)] = await rows(one)
                assert wiped and state.group(1) not in text
                again = await owner.get(flow)
                assert again.status_code == 200 and "the account was added to team" in again.text


async def test_a_device_sign_in_is_polled_to_the_end_on_another_node(
    db_url: str, tmp_path: Path
) -> None:
    async with open_two_nodes(db_url, tmp_path) as (one, two):
        await owner_stack_setup(one)
        await one.control("POST", "signin", {"device_interval_seconds": 1})
        ids = await one.account_ids()
        demo = await one.database.run(lambda conn: store.get_pool(conn, "demo"))
        async with browser(one) as owner:
            await sign_in(owner)
            async with shared(two, owner) as owner_two:
                flow = await start_device(owner, str(demo.id), ids["account-1"])
                page = await owner_two.get(flow)
                assert page.status_code == 200, page.text
                code = USER_CODE.search(page.text)
                assert code
                await one.control("POST", "device/approve", {"user_code": code.group(1)})
                done = await wait_for(owner_two, flow, "re-linked in demo")
                assert "http-equiv" not in done
                assert await account_count(one) == 3
                [(_, _, wiped)] = await rows(one)
                assert wiped


async def test_concurrent_loads_of_a_due_device_page_poll_once(db_url: str, tmp_path: Path) -> None:
    async with open_two_nodes(db_url, tmp_path) as (one, two):
        await owner_stack_setup(one)
        await one.control("POST", "signin", {"device_interval_seconds": 30})
        demo = await one.database.run(lambda conn: store.get_pool(conn, "demo"))
        async with browser(one) as owner:
            await sign_in(owner)
            async with shared(two, owner) as owner_two:
                flow = await start_device(owner, str(demo.id))
                assert (await owner.get(flow)).status_code == 200
                assert await polls(one) == 0  # not due before the server's interval
                await one.database.run(
                    lambda conn: conn.execute(
                        "UPDATE console_sign_ins SET next_poll_at = now() - interval '1 s'"
                    )
                )
                pages: list[int] = []

                async def load(client: httpx.AsyncClient) -> None:
                    pages.append((await client.get(flow)).status_code)

                with trio.fail_after(30):
                    async with trio.open_nursery() as nursery:
                        for client in (owner, owner_two, owner, owner_two):
                            nursery.start_soon(load, client)
                assert pages == [200] * 4
                assert await polls(one) == 1
                page = await owner_two.get(flow)
                assert 'http-equiv="refresh"' in page.text  # still waiting, not due
                assert await polls(one) == 1


async def test_expired_bounded_and_cancelled_sign_ins(db_url: str, tmp_path: Path) -> None:
    async with open_two_nodes(db_url, tmp_path) as (one, two):
        await owner_stack_setup(one)
        demo = await one.database.run(lambda conn: store.get_pool(conn, "demo"))
        async with browser(one) as owner:
            await sign_in(owner)
            async with shared(two, owner) as owner_two:
                flows = [await start_browser(owner, demo.id) for _ in range(5)]
                assert len(await rows(one)) == sign_ins.MAX_PER_SESSION
                gone = await owner_two.get(flows[0])  # the oldest of the session went
                assert gone.status_code == 404 and "over or unknown" in gone.text
                for flow in flows[1:]:
                    assert (await owner_two.get(flow)).status_code == 200
                assert (await owner.get("/admin/upstreams/sign-in/not-a-uuid")).status_code == 404

                # past its time: over or unknown, on any node
                await one.database.run(
                    lambda conn: conn.execute(
                        "UPDATE console_sign_ins SET expires_at = now() - interval '1 s'"
                        " WHERE id = %s",
                        (UUID(flows[1].rsplit("/", 1)[1]),),
                    )
                )
                expired = await owner_two.get(flows[1])
                assert expired.status_code == 404 and "over or unknown" in expired.text

                # cancel (on the other node) deletes the row
                page = await owner.get(flows[2])
                cancelled = await owner_two.post(
                    f"{flows[2]}/cancel", data={"csrf_token": csrf_of(page.text)}
                )
                assert cancelled.status_code == 303
                left = {row[0] for row in await rows(one)}
                assert UUID(flows[2].rsplit("/", 1)[1]) not in left
                assert (await owner.get(flows[2])).status_code == 404

                # a new start deletes every expired row
                await start_browser(owner_two, demo.id)
                left = {row[0] for row in await rows(one)}
                assert UUID(flows[1].rsplit("/", 1)[1]) not in left


# -- the store itself ------------------------------------------------------------------


def session_of(database: Database, secret_key: bytes, email: str) -> tuple[UUID, UUID]:
    """A console session of a new owner, and a Pool: (session id, pool id)."""

    def make(conn: Any) -> tuple[UUID, UUID]:
        operator = operators.create_owner(conn, email, "a password of the tests")
        _, session = console_sessions.create_session(
            conn, secret_key, operator.id, ip=None, user_agent=None
        )
        row = conn.execute("SELECT id FROM pools WHERE name = 'p'").fetchone()
        pool_id = row[0] if row else store.create_pool(conn, "p").id
        return session.id, pool_id

    return database.run_sync(make)


BROWSER = BrowserSignIn(
    "http://auth/oauth/authorize?state=STATE-the-secret-state",
    "STATE-the-secret-state",
    "VERIFIER-the-secret-verifier",
)


def device(interval: float = 5.0, expires_in: float = 600) -> DeviceSignIn:
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    return DeviceSignIn("ABCD-1234", "http://auth/codex/device", interval, expires_at, "DEVID-xyz")


@pytest.fixture
def secret_key_of_sessions() -> bytes:
    return b"k" * 32


def test_no_secret_is_stored_in_clear_and_the_secrets_go_when_over(
    database: Database, keyring: Keyring, secret_key_of_sessions: bytes
) -> None:
    session, pool = session_of(database, secret_key_of_sessions, "a@example.com")
    browser_id = database.run_sync(
        lambda conn: sign_ins.start(conn, keyring, session, pool, None, BROWSER)
    )
    device_id = database.run_sync(
        lambda conn: sign_ins.start(conn, keyring, session, pool, None, device())
    )
    secrets = ("STATE-the-secret-state", "VERIFIER-the-secret-verifier", "DEVID-xyz")

    def stored() -> str:
        return " ".join(
            row[0]
            for row in database.run_sync(
                lambda conn: conn.execute("SELECT s::text FROM console_sign_ins s").fetchall()
            )
        )

    text = stored()
    for secret in secrets:
        assert secret not in text and secret.encode().hex() not in text
    found = database.run_sync(lambda conn: sign_ins.get(conn, keyring, browser_id, session))
    assert found is not None and found.browser == BROWSER and not found.finished
    claimed = database.run_sync(lambda conn: sign_ins.claim_poll(conn, keyring, device_id, session))
    assert claimed is None  # not due before the server's interval

    assert database.run_sync(lambda conn: sign_ins.fail(conn, browser_id, session, "no"))
    assert database.run_sync(lambda conn: sign_ins.fail(conn, device_id, session, "denied"))
    assert not database.run_sync(lambda conn: sign_ins.fail(conn, device_id, session, "again"))
    wiped = database.run_sync(
        lambda conn: conn.execute(
            "SELECT count(*) FROM console_sign_ins WHERE ciphertext IS NULL AND nonce IS NULL"
            " AND key_version IS NULL"
        ).fetchone()[0]
    )
    assert wiped == 2
    over = database.run_sync(lambda conn: sign_ins.get(conn, keyring, device_id, session))
    assert over is not None and over.finished and over.error == "denied"


def test_a_poll_is_claimed_once_per_interval_by_its_session_only(
    database: Database, keyring: Keyring, secret_key_of_sessions: bytes
) -> None:
    session, pool = session_of(database, secret_key_of_sessions, "a@example.com")
    other, _ = session_of(database, secret_key_of_sessions, "b@example.com")
    flow = database.run_sync(
        lambda conn: sign_ins.start(conn, keyring, session, pool, None, device(interval=30))
    )
    database.run_sync(lambda conn: conn.execute("UPDATE console_sign_ins SET next_poll_at = now()"))
    assert database.run_sync(lambda conn: sign_ins.get(conn, keyring, flow, other)) is None
    assert database.run_sync(lambda conn: sign_ins.claim_poll(conn, keyring, flow, other)) is None
    first = database.run_sync(lambda conn: sign_ins.claim_poll(conn, keyring, flow, session))
    assert first is not None and first.device_auth_id == "DEVID-xyz"
    assert database.run_sync(lambda conn: sign_ins.claim_poll(conn, keyring, flow, session)) is None
    database.run_sync(lambda conn: sign_ins.drop(conn, flow, other))  # not theirs: stays
    assert database.run_sync(lambda conn: sign_ins.get(conn, keyring, flow, session)) is not None
    database.run_sync(lambda conn: sign_ins.drop(conn, flow, session))
    assert database.run_sync(lambda conn: sign_ins.get(conn, keyring, flow, session)) is None


def test_bounded_per_session_and_expired_rows_go_on_start(
    database: Database, keyring: Keyring, secret_key_of_sessions: bytes
) -> None:
    session, pool = session_of(database, secret_key_of_sessions, "a@example.com")
    other, _ = session_of(database, secret_key_of_sessions, "b@example.com")
    theirs = database.run_sync(
        lambda conn: sign_ins.start(conn, keyring, other, pool, None, BROWSER)
    )
    mine = [
        database.run_sync(lambda conn: sign_ins.start(conn, keyring, session, pool, None, BROWSER))
        for _ in range(sign_ins.MAX_PER_SESSION + 2)
    ]
    kept = {
        row[0]
        for row in database.run_sync(
            lambda conn: conn.execute(
                "SELECT id FROM console_sign_ins WHERE session_id = %s", (session,)
            ).fetchall()
        )
    }
    assert kept == set(mine[-sign_ins.MAX_PER_SESSION :])
    assert database.run_sync(lambda conn: sign_ins.get(conn, keyring, theirs, other)) is not None
    database.run_sync(
        lambda conn: conn.execute(
            "UPDATE console_sign_ins SET expires_at = now() - interval '1 s' WHERE id = %s",
            (theirs,),
        )
    )
    assert database.run_sync(lambda conn: sign_ins.get(conn, keyring, theirs, other)) is None
    database.run_sync(lambda conn: sign_ins.start(conn, keyring, session, pool, None, BROWSER))
    left = database.run_sync(
        lambda conn: conn.execute(
            "SELECT count(*) FROM console_sign_ins WHERE id = %s", (theirs,)
        ).fetchone()[0]
    )
    assert left == 0  # another session's start deleted the expired row


def test_a_device_code_past_its_expiry_says_so_and_an_unreadable_secret_ends_it(
    database: Database, keyring: Keyring, secret_key_of_sessions: bytes
) -> None:
    session, pool = session_of(database, secret_key_of_sessions, "a@example.com")
    flow = database.run_sync(
        lambda conn: sign_ins.start(conn, keyring, session, pool, None, device(expires_in=-1))
    )
    found = database.run_sync(lambda conn: sign_ins.get(conn, keyring, flow, session))
    assert found is not None and found.error == sign_ins.DEVICE_EXPIRED  # shown a while
    other_key = Keyring(uuid4().bytes * 2)
    browser_flow = database.run_sync(
        lambda conn: sign_ins.start(conn, keyring, session, pool, None, BROWSER)
    )
    lost = database.run_sync(lambda conn: sign_ins.get(conn, other_key, browser_flow, session))
    assert lost is not None and lost.error == sign_ins.KEY_GONE and lost.browser is None


def test_a_sign_in_goes_with_its_session(
    database: Database, keyring: Keyring, secret_key_of_sessions: bytes
) -> None:
    session, pool = session_of(database, secret_key_of_sessions, "a@example.com")
    database.run_sync(lambda conn: sign_ins.start(conn, keyring, session, pool, None, BROWSER))
    database.run_sync(
        lambda conn: conn.execute("DELETE FROM console_sessions WHERE id = %s", (session,))
    )
    count = database.run_sync(
        lambda conn: conn.execute("SELECT count(*) FROM console_sign_ins").fetchone()[0]
    )
    assert count == 0
