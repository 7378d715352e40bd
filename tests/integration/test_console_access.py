"""The operator console's foundation against the real stack: bootstrap, sign-in and its
throttling, sessions and their cookies, CSRF, headers, escaping, role scoping, and that no
secret reaches the logs."""

from __future__ import annotations

import base64
import io
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import zstandard
from console_support import (
    OWNER_EMAIL,
    OWNER_PASSWORD,
    bootstrap_owner,
    browser,
    csrf_of,
    post_form,
    sign_in,
)
from harness import QUIET_POLLS, Stack, open_stack, open_two_nodes

from pooler import store
from pooler.cli.main import main
from pooler.crypto import hash_password_scrypt
from pooler.store import operators
from pooler.store.instance_settings import update_instance_settings

SECURITY = {
    "content-security-policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


async def one_value(stack: Stack, sql: str, *params: Any) -> Any:
    row = await stack.database.run(lambda conn: conn.execute(sql, params).fetchone())
    return row[0] if row else None


async def make_owner(
    stack: Stack, email: str = OWNER_EMAIL, password: str = OWNER_PASSWORD
) -> None:
    await stack.database.run(lambda conn: operators.create_owner(conn, email, password))


def session_cookie(response: Any) -> str:
    [header] = [h for h in response.headers.get_list("set-cookie") if "pooler_session=" in h]
    return str(header)


async def test_bootstrap_creates_the_owner_then_is_gone(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        first = await client.get("/")
        assert (first.status_code, first.headers["location"]) == (303, "/bootstrap")
        page = await client.get("/bootstrap")
        assert page.status_code == 200
        for label in ("Email", "Display name", "Password"):
            assert re.search(rf'<label for="[^"]+">{label}</label>', page.text)
        assert page.text.count("<h1>") == 1

        refused = await bootstrap_owner(client, password="1qaz2wsx3edc")  # a common one
        assert refused.status_code == 400 and "most common" in refused.text
        short = await bootstrap_owner(client, password="short")
        assert short.status_code == 400 and "at least 12" in short.text
        assert not await one_value(stack, "SELECT count(*) FROM operators")

        created = await bootstrap_owner(client)
        assert (created.status_code, created.headers["location"]) == (303, "/admin")
        home = await client.get("/admin/pools")
        assert home.status_code == 200 and ">demo<" in home.text
        assert "The Owner" in home.text

        for method in ("GET", "POST"):
            gone = await client.request(method, "/bootstrap")
            assert gone.status_code == 404
            assert gone.headers["content-type"].startswith("text/html")
        assert await one_value(stack, "SELECT count(*) FROM operators") == 1
        actions = [e.action for e in await stack.database.run(store.list_audit_events)]
        assert "operator.create" in actions and "console.sign_in" in actions


async def test_bootstrap_is_gone_once_the_cli_made_an_owner(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        assert (await client.get("/bootstrap")).status_code == 404
        first = await client.get("/")
        assert (first.status_code, first.headers["location"]) == (303, "/login")


async def test_wrong_password_and_unknown_email_answer_alike(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        wrong = await sign_in(client, OWNER_EMAIL, "not the right password")
        unknown = await sign_in(client, "nobody@example.com", OWNER_PASSWORD)
        assert wrong.status_code == unknown.status_code == 401
        assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers
        same = wrong.text.replace(OWNER_EMAIL, "X")
        assert same == unknown.text.replace("nobody@example.com", "X")
        assert "Wrong email or password." in wrong.text

        good = await sign_in(client)
        assert (good.status_code, good.headers["location"]) == (303, "/")
        assert (await client.get("/")).headers["location"] == "/admin"
        events = await stack.database.run(store.list_audit_events)
        failures = [e for e in events if e.action == "console.sign_in_failed"]
        assert len(failures) == 2 and all(e.actor == "anonymous" for e in failures)


async def test_session_cookie_flags_and_a_new_session_at_each_sign_in(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        client.cookies.set("pooler_session", "planted-by-an-attacker")
        first = await sign_in(client)
        cookie = session_cookie(first)
        assert cookie.startswith("pooler_session=")
        token = cookie.split(";")[0].split("=", 1)[1]
        assert token != "planted-by-an-attacker" and len(token) >= 43
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/"} <= flags
        assert "secure" not in flags  # plain http, no trusted proxy
        assert any(flag.startswith("max-age=1209600") for flag in flags)  # 14 days

        again = await sign_in(client)
        other = session_cookie(again).split(";")[0].split("=", 1)[1]
        assert other != token

        # A forwarded "https" from an untrusted peer is not believed ...
        https = {"x-forwarded-proto": "https"}
        shown = await client.get("/login", headers=https)
        assert all("__Host-" not in h for h in shown.headers.get_list("set-cookie"))
        # ... and from a trusted proxy it is: Secure and the __Host- prefix.
        await stack.database.run(
            lambda conn: update_instance_settings(
                conn, {"trusted_proxies": ["127.0.0.0/8"]}, actor="test"
            )
        )
        await stack.gateway.reload()
        async with browser(stack, headers=https) as proxied:
            page = await proxied.get("/login")
            anon = page.headers["set-cookie"]
            assert anon.startswith("__Host-pooler_csrf=") and "Secure" in anon
            token_field = csrf_of(page.text)
            seed = anon.split(";")[0].split("=", 1)[1]
            proxied.cookies.set("__Host-pooler_csrf", seed)  # httpx keeps Secure ones for https
            signed = await proxied.post(
                "/login",
                data={"csrf_token": token_field, "email": OWNER_EMAIL, "password": OWNER_PASSWORD},
            )
            host = session_cookie(signed)
            assert host.startswith("__Host-pooler_session=") and "Secure" in host


async def test_forms_without_the_csrf_token_are_refused_and_change_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        before = await one_value(stack, "SELECT password_hash FROM operators")
        login = {"email": OWNER_EMAIL, "password": OWNER_PASSWORD}
        await client.get("/login")
        for data in (login, {**login, "csrf_token": "forged"}):
            refused = await client.post("/login", data=data)
            assert refused.status_code == 403 and "set-cookie" not in refused.headers
            assert refused.headers["content-type"].startswith("text/html")
        assert not await one_value(stack, "SELECT count(*) FROM console_sessions")

        await sign_in(client)
        change = {
            "current_password": OWNER_PASSWORD,
            "new_password": "a brand new password",
            "confirm_password": "a brand new password",
        }
        for data in (change, {**change, "csrf_token": "forged"}):
            refused = await client.post("/password/change", data=data)
            assert refused.status_code == 403
            assert (await client.post("/logout", data={"csrf_token": "x"})).status_code == 403
        cross = await client.post(
            "/logout",
            data={"csrf_token": csrf_of((await client.get("/admin/pools")).text)},
            headers={"sec-fetch-site": "cross-site"},
        )
        assert cross.status_code == 403
        assert await one_value(stack, "SELECT password_hash FROM operators") == before
        assert await one_value(stack, "SELECT count(*) FROM console_sessions") == 1
        assert (await client.get("/admin/pools")).status_code == 200


async def test_every_console_answer_has_the_security_headers(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        await sign_in(client)
        answers = [
            await client.get("/login"),
            await client.get("/admin/pools"),
            await client.get("/admin/no-such-page"),
            await client.get("/logout"),  # 405, raised by routing
            await client.get("/admin/static/console.css"),
            await client.post("/logout", data={"x": "1"}),
        ]
        assert [a.status_code for a in answers] == [303, 200, 404, 405, 200, 403]
        for answer in answers:
            for name, value in SECURITY.items():
                assert answer.headers.get(name) == value, (answer.url, name)
        for answer in answers[2:4]:
            assert answer.headers["content-type"].startswith("text/html")
            assert answer.text.count("<h1>") == 1
        assert answers[4].headers["content-type"].startswith("text/css")
        # The gateway's own surfaces keep their JSON errors.
        async with stack.client() as api_client:
            api = await api_client.get("/v1/no-such-endpoint")
        assert api.status_code == 404 and api.json()["error"]["code"]


async def test_a_pool_name_is_escaped(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        await stack.database.run(lambda conn: store.create_pool(conn, "<script>alert(1)</script>"))
        await sign_in(client)
        page = await client.get("/admin/pools")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>alert(1)" not in page.text


async def test_failed_sign_ins_are_delayed_more_and_more(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        statuses = [(await sign_in(client, OWNER_EMAIL, "wrong password!")).status_code]
        statuses += [(await sign_in(client, OWNER_EMAIL, "wrong password!")).status_code]
        statuses += [(await sign_in(client, OWNER_EMAIL, "wrong password!")).status_code]
        statuses += [(await sign_in(client, OWNER_EMAIL, "wrong password!")).status_code]
        assert statuses == [401, 401, 401, 401]  # the fourth starts a 1 s block
        waits = []
        for _ in range(3):
            blocked = await sign_in(client)  # even the right password waits
            assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
            waits.append(int(blocked.headers["retry-after"]))
            # Let the block end (instead of sleeping), then fail once more.
            await stack.database.run(
                lambda conn: conn.execute(
                    "UPDATE console_signin_failures SET blocked_until = now()"
                )
            )
            assert (await sign_in(client, OWNER_EMAIL, "wrong password!")).status_code == 401
        assert waits[0] <= 1 < waits[1] < waits[2]
        # An unknown email is throttled the same way (nothing says it does not exist).
        for _ in range(4):
            await sign_in(client, "nobody@example.com", "wrong password!")
        assert (await sign_in(client, "nobody@example.com", "x" * 12)).status_code == 429
        await stack.database.run(
            lambda conn: conn.execute("UPDATE console_signin_failures SET blocked_until = now()")
        )
        assert (await sign_in(client)).status_code == 303
        assert not await one_value(
            stack,
            "SELECT count(*) FROM console_signin_failures WHERE scope = 'account'"
            " AND failures > 0 AND blocked_until > now()",
        )


async def test_sign_out_ends_the_session(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        await sign_in(client)
        token = client.cookies["pooler_session"]
        out = await post_form(client, "/admin/pools", {}, action="/logout")
        assert (out.status_code, out.headers["location"]) == (303, "/login")
        assert not await one_value(stack, "SELECT count(*) FROM console_sessions")
        async with browser(stack, cookies={"pooler_session": token}) as replay:
            again = await replay.get("/admin/pools")
            assert (again.status_code, again.headers["location"]) == (303, "/login")
        actions = [e.action for e in await stack.database.run(store.list_audit_events)]
        assert "console.sign_out" in actions


async def test_an_idle_session_is_signed_out(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        await make_owner(stack)
        await sign_in(client)
        assert (await client.get("/admin/pools")).status_code == 200
        await stack.database.run(
            lambda conn: conn.execute(
                "UPDATE console_sessions SET last_seen_at = now() - interval '61 minutes'"
            )
        )
        idle = await client.get("/admin/pools")
        assert (idle.status_code, idle.headers["location"]) == (303, "/login")
        assert not await one_value(stack, "SELECT count(*) FROM console_sessions")


async def test_an_admin_sees_only_its_pools(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:

        def setup(conn: Any) -> None:
            operators.create_owner(conn, OWNER_EMAIL, OWNER_PASSWORD)
            mine = store.create_pool(conn, "admins-pool")
            store.create_pool(conn, "someone-elses-pool")
            admin = operators.create_operator(conn, "admin@example.com", "admin password 123")
            operators.assign_pools(conn, admin.id, [mine.id], actor="test")

        await stack.database.run(setup)
        await sign_in(client, "admin@example.com", "admin password 123")
        page = await client.get("/admin/pools")
        assert ">admins-pool<" in page.text
        assert "someone-elses-pool" not in page.text and ">demo<" not in page.text
        assert "/admin/operators" not in page.text and "/admin/system" not in page.text
        async with browser(stack) as owner:
            await sign_in(owner)
            everything = (await owner.get("/admin/pools")).text
            assert all(f">{n}<" in everything for n in ("admins-pool", "someone-elses-pool"))
            assert "/admin/operators" in everything


async def test_a_scrypt_hash_is_upgraded_at_sign_in(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        old = hash_password_scrypt(OWNER_PASSWORD)
        await stack.database.run(
            lambda conn: conn.execute(
                "INSERT INTO operators (email, password_hash, role) VALUES (%s, %s, 'owner')",
                (OWNER_EMAIL, old),
            )
        )
        assert (await sign_in(client)).status_code == 303
        upgraded = await one_value(stack, "SELECT password_hash FROM operators")
        assert upgraded.startswith("$argon2id$") and upgraded != old
        client.cookies.clear()
        assert (await sign_in(client)).status_code == 303


async def test_a_temporary_password_must_be_changed_and_ends_other_sessions(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        temporary = "temporary password 1"
        await stack.database.run(
            lambda conn: operators.create_operator(
                conn, "admin@example.com", temporary, must_change_password=True
            )
        )
        async with browser(stack) as elsewhere:
            await sign_in(elsewhere, "admin@example.com", temporary)
            await sign_in(client, "admin@example.com", temporary)
            forced = await client.get("/admin/pools")
            assert (forced.status_code, forced.headers["location"]) == (303, "/password/change")
            page = await client.get("/password/change")
            for label in ("Current password", "New password", "Confirm new password"):
                assert f">{label}</label>" in page.text
            common = await post_form(
                client,
                "/password/change",
                {
                    "current_password": temporary,
                    "new_password": "qwerty123456",
                    "confirm_password": "qwerty123456",
                },
            )
            assert common.status_code == 400 and "most common" in common.text
            changed = await post_form(
                client,
                "/password/change",
                {
                    "current_password": temporary,
                    "new_password": "my own new password",
                    "confirm_password": "my own new password",
                },
            )
            assert (changed.status_code, changed.headers["location"]) == (303, "/admin")
            assert (await client.get("/admin/pools")).status_code == 200
            assert (await elsewhere.get("/admin/pools")).status_code == 303
        assert await one_value(stack, "SELECT count(*) FROM console_sessions") == 1
        assert not await one_value(stack, "SELECT must_change_password FROM operators")


async def test_no_secret_reaches_the_logs_or_the_audit_trail(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        created = await bootstrap_owner(client)
        token = client.cookies["pooler_session"]
        csrf = csrf_of((await client.get("/admin/pools")).text)
        await post_form(client, "/admin/pools", {}, action="/logout")
        await sign_in(client, OWNER_EMAIL, "a wrong password here")
        await sign_in(client)
        assert created.status_code == 303
        audit = repr(await stack.database.run(store.list_audit_events))
        stored = repr(
            await stack.database.run(
                lambda conn: conn.execute("SELECT * FROM console_sessions").fetchall()
            )
        )
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    for secret in (OWNER_PASSWORD, "a wrong password here", token):
        assert secret not in logged and secret not in audit
        assert secret not in stored
    assert csrf not in logged and csrf not in audit


async def test_the_admin_bulkhead_admits_console_pages(db_url: str, tmp_path: Path) -> None:
    # One admin slot, no queue, set as an instance setting (a configuration reload, e.g.
    # after the sign-in's audit, keeps it).
    settings = {**QUIET_POLLS, "bulkheads": {"admin": {"concurrency": 1, "queue": 0}}}
    async with (
        open_stack(db_url, tmp_path, instance_settings=settings) as stack,
        browser(stack) as client,
    ):
        await make_owner(stack)
        await sign_in(client)
        async with stack.gateway.admission.admit("admin"):  # the one slot is taken
            busy = await client.get("/admin/pools")
            assert busy.status_code == 503 and busy.headers["content-type"].startswith("text/html")
            assert busy.headers.get("retry-after")
        assert (await client.get("/admin/pools")).status_code == 200


async def test_the_cli_owner_can_sign_in_to_the_console(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        config = stack.config
        monkeypatch.setenv("DATABASE_URL", db_url)
        monkeypatch.setenv("CODEX_POOLER_DATA_DIR", str(config.data_dir))
        monkeypatch.setenv("CODEX_POOLER_SECRET_KEY", base64.b64encode(config.secret_key).decode())
        monkeypatch.setenv(
            "CODEX_POOLER_UPSTREAM_SECRET_KEY",
            base64.b64encode(config.upstream_secret_key).decode(),
        )
        argv = ["admin", "owner", "create", "--email", OWNER_EMAIL, "--password-stdin"]
        monkeypatch.setattr("sys.stdin", io.StringIO("qwerty123456\n"))
        assert await trio.to_thread.run_sync(main, argv) == 2
        assert "most common" in capsys.readouterr().err
        monkeypatch.setattr("sys.stdin", io.StringIO(OWNER_PASSWORD + "\n"))
        assert await trio.to_thread.run_sync(main, [*argv, "--display-name", "Cli Owner"]) == 0
        assert OWNER_PASSWORD not in capsys.readouterr().out
        stored = await one_value(stack, "SELECT password_hash FROM operators")
        assert stored.startswith("$argon2id$")
        assert (await client.get("/bootstrap")).status_code == 404
        assert (await sign_in(client)).status_code == 303
        assert "Cli Owner" in (await client.get("/admin/pools")).text


async def test_throttling_holds_across_two_nodes(db_url: str, tmp_path: Path) -> None:
    async with open_two_nodes(db_url, tmp_path) as (first, second):
        await make_owner(first)
        async with browser(first) as one, browser(second) as two:
            for _ in range(4):
                assert (await sign_in(one, OWNER_EMAIL, "wrong password!")).status_code == 401
            blocked = await sign_in(two)  # the other node knows
            assert blocked.status_code == 429 and blocked.headers["retry-after"]
            await second.database.run(
                lambda conn: conn.execute(
                    "UPDATE console_signin_failures SET blocked_until = now()"
                )
            )
            assert (await sign_in(two)).status_code == 303
            assert (await two.get("/admin/pools")).status_code == 200
            # The session is in the database: the first node knows it as well.
            one.cookies.set("pooler_session", two.cookies["pooler_session"])
            assert (await one.get("/admin/pools")).status_code == 200


async def test_hostile_forms_get_html_answers_and_change_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as client:
        page = await client.get("/bootstrap")
        token = csrf_of(page.text)
        big = await client.post("/bootstrap", data={"csrf_token": token, "x": "y" * 70_000})
        assert big.status_code == 413 and big.headers["content-type"].startswith("text/html")
        as_json = await client.post("/bootstrap", json={"csrf_token": token})
        assert as_json.status_code == 415
        control = await client.post(
            "/bootstrap",
            data={
                "csrf_token": token,
                "email": "owner@example.com",
                "display_name": "bad\x1b[31mname",
                "password": OWNER_PASSWORD,
            },
        )
        assert control.status_code == 400 and "control" in control.text
        assert not await one_value(stack, "SELECT count(*) FROM operators")
        await make_owner(stack)
        form = "application/x-www-form-urlencoded"
        for email, status in ((b"owner%40example.com%00", 401), (b"a" * 5000, 401), (b"\xff", 400)):
            login = await client.post(
                "/login",
                content=b"csrf_token=" + token.encode() + b"&password=x&email=" + email,
                headers={"content-type": form},
            )
            assert login.status_code == status, email
            assert login.headers["content-type"].startswith("text/html")
        # A compressed form is not read as one (the console takes no Content-Encoding).
        packed = zstandard.ZstdCompressor().compress(
            b"csrf_token=" + token.encode() + b"&email=owner%40example.com&password=x"
        )
        zstd_form = {"content-type": form, "content-encoding": "zstd"}
        squeezed = await client.post("/login", content=packed, headers=zstd_form)
        assert squeezed.status_code == 400, squeezed.status_code
        # A forged session cookie signs nobody in.
        async with browser(stack, cookies={"pooler_session": "forged" * 8}) as forger:
            assert (await forger.get("/admin/pools")).status_code in (302, 303)
        assert (await sign_in(client)).status_code == 303
        assert (await client.get("/admin/pools")).status_code == 200


async def test_a_session_paging_flat_out_is_paced_and_others_are_not(
    db_url: str, tmp_path: Path
) -> None:
    """A script asking for many pages at once: past the burst each waits for its slot, and
    those whose slot is too far away are refused at once (429, Retry-After); another
    operator's session is not affected."""
    async with open_stack(db_url, tmp_path) as stack, browser(stack) as script:
        assert (await bootstrap_owner(script)).status_code == 303
        statuses: list[int] = []

        async def page() -> None:
            answer = await script.get("/admin/pools")
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
                assert answer.text.startswith("Too many pages")

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(120):
                    nursery.start_soon(page)
        # A burst of 40, ~20 more slots within the 2 s a page may wait, the rest refused.
        assert 45 <= statuses.count(200) <= 90, statuses.count(200)  # arrivals spread out
        assert statuses.count(429) == 120 - statuses.count(200)
        async with browser(stack) as person:
            assert (await sign_in(person)).status_code == 303
            assert (await person.get("/admin/pools")).status_code == 200
