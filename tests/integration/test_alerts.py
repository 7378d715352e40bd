"""Alerts through the real stack: conditions made real (an account needing a new login, quota
evidence from the emulator's headers, failing upstream answers), the leader's pass run as
the Scheduler runs it, a local webhook receiver that checks every signature (and fails the
first attempts) and a local SMTP sink. Each incident opens once, notifies each channel once,
resolves by itself and notifies once more."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import trio
from alert_sinks import hostile_server, silent_server, smtp_sink, webhook_receiver
from alert_support import QUIET, job, keyring, leading
from harness import POOL, Stack, open_stack, responses_body
from routing_support import arm, post, set_usage

from pooler.alerts.job import AlertJob, PassResult
from pooler.store import alert_incidents as incidents
from pooler.store import alerts as alert_store
from pooler.store.accounts import set_lifecycle
from pooler.store.common import Conn
from pooler.store.instance_settings import update_instance_settings
from pooler.store.pools import get_pool, update_pool


async def pool_id(stack: Stack) -> UUID:
    pool = await stack.database.run(lambda conn: get_pool(conn, POOL))
    return pool.id


async def add_rule(stack: Stack, kind: str, threshold: float | None, **kw: Any) -> UUID:
    pid = await pool_id(stack)
    rule = await stack.database.run(
        lambda conn: alert_store.add_rule(conn, pid, kind, threshold, actor="test", **kw)
    )
    return rule.id


async def add_webhook(stack: Stack, url: str, name: str = "hook") -> tuple[UUID, bytes]:
    pid = await pool_id(stack)
    channel, secret = await stack.database.run(
        lambda conn: alert_store.add_webhook(conn, keyring(stack), pid, name, url, actor="test")
    )
    return channel.id, secret.encode()


async def open_incidents(stack: Stack) -> list[incidents.Incident]:
    return await stack.database.run(lambda conn: incidents.list_incidents(conn, open_only=True))


async def all_incidents(stack: Stack) -> list[incidents.Incident]:
    return await stack.database.run(lambda conn: incidents.list_incidents(conn))


async def deliveries(stack: Stack) -> list[tuple[str, str, int, str | None]]:
    def read(conn: Conn) -> list[tuple[str, str, int, str | None]]:
        rows = conn.execute(
            "SELECT event, status, attempts, last_error FROM alert_deliveries ORDER BY created_at"
        ).fetchall()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    return await stack.database.run(read)


async def stored_primary(stack: Stack) -> float:
    """Once the gateway has written the evidence behind: the stored primary window's use."""

    def read(conn: Conn) -> float:
        row = conn.execute(
            "SELECT max(used_percent)::float8 FROM quota_windows WHERE window_kind = 'primary'"
        ).fetchone()
        return -1.0 if row is None or row[0] is None else float(row[0])

    await stack.gateway.flush_write_behind()
    return await stack.database.run(read)


async def wait_for_stored(stack: Stack, check: Any) -> None:
    """The evidence of the last answer reaches its account as the lease is released, just
    after the client has the answer: flush until it is stored."""
    with trio.fail_after(10):
        while not check(await stored_primary(stack)):
            await trio.sleep(0.05)


async def passes_until_delivered(stack: Stack, alerts: AlertJob, n: int = 10) -> list[PassResult]:
    out = []
    with trio.fail_after(60):
        for _ in range(n):
            out.append(await alerts.run_pass())
            if all(status != "pending" for _, status, _, _ in await deliveries(stack)):
                break
    return out


async def test_reauth_incident_opens_once_notifies_each_channel_once_and_resolves(
    db_url: str, tmp_path: Path
) -> None:
    with leading(db_url), webhook_receiver(fail_first=2) as receiver, smtp_sink() as mailbox:
        async with open_stack(db_url, tmp_path, accounts=1, instance_settings=QUIET) as stack:
            smtp = {"host": "127.0.0.1", "port": mailbox.port, "starttls": False}
            smtp["from_address"] = "pooler@example.test"
            await stack.database.run(
                lambda conn: update_instance_settings(
                    conn,
                    {"smtp": smtp, "alerts": {"console_url": "https://pooler.example.test"}},
                    actor="test",
                )
            )
            channel_id, receiver.secret = await add_webhook(stack, receiver.url)
            pid = await pool_id(stack)
            await stack.database.run(
                lambda conn: alert_store.add_email(
                    conn, pid, "oncall", "oncall@example.test", actor="test"
                )
            )
            await add_rule(stack, "reauth_required", None)
            await add_rule(stack, "usable_below", 1)
            alerts = job(stack)

            first = await alerts.run_pass()
            assert (first.opened, first.resolved) == (0, 0)
            assert await open_incidents(stack) == []

            (account_id,) = (await stack.account_ids()).values()
            await stack.database.run(
                lambda conn: set_lifecycle(
                    conn, UUID(account_id), "reauth_required", "refresh_token_reused", actor="test"
                )
            )
            await passes_until_delivered(stack, alerts)
            opened = await open_incidents(stack)
            assert sorted(i.kind for i in opened) == ["reauth_required", "usable_below"]
            assert {i.subject for i in opened} == {account_id, "pool"}
            # Each incident reached each channel once; the webhook after two refusals.
            assert sorted(receiver.events()) == [
                ("incident.opened", "reauth_required"),
                ("incident.opened", "usable_below"),
            ]
            assert receiver.bad_signatures == 0 and receiver.attempts == 4
            assert len(mailbox.messages) == 2
            assert set(mailbox.recipients) == {"oncall@example.test"}
            statuses = await deliveries(stack)
            assert [s for _, s, _, _ in statuses] == ["sent"] * 4
            assert max(attempts for _, _, attempts, _ in statuses) <= 3
            assert any(error == "http_503" for _, _, _, error in statuses)
            payload = receiver.received[0]
            assert payload["pool"]["name"] == POOL
            assert payload["incident"]["link"].startswith(
                "https://pooler.example.test/admin/alerts"
            )

            # The condition holds: later passes neither reopen nor notify again.
            for _ in range(2):
                again = await alerts.run_pass()
                assert (again.opened, again.resolved, again.sent) == (0, 0, 0)
            assert len(receiver.received) == 2 and len(mailbox.messages) == 2

            await stack.database.run(
                lambda conn: set_lifecycle(conn, UUID(account_id), "active", None, actor="test")
            )
            await passes_until_delivered(stack, alerts)
            assert await open_incidents(stack) == []
            assert len(await all_incidents(stack)) == 2
            assert sorted(receiver.events()) == [
                ("incident.opened", "reauth_required"),
                ("incident.opened", "usable_below"),
                ("incident.resolved", "reauth_required"),
                ("incident.resolved", "usable_below"),
            ]
            assert len(mailbox.messages) == 4
            assert sum("resolved" in m for m in mailbox.messages) >= 2
            # Metadata only: no key, no token reached a receiver.
            everything = repr(receiver.received) + "".join(mailbox.messages)
            assert stack.key not in everything
            assert str(channel_id)  # the channel stays; its secret never travels
            assert receiver.secret.decode() not in everything


async def test_quota_and_error_rate_incidents_from_real_traffic(
    db_url: str, tmp_path: Path
) -> None:
    with leading(db_url), webhook_receiver() as receiver:
        async with (
            open_stack(
                db_url, tmp_path, accounts=1, percent_per_request=0.0, instance_settings=QUIET
            ) as stack,
            stack.client() as client,
        ):
            _, receiver.secret = await add_webhook(stack, receiver.url)
            await add_rule(stack, "quota_above", 70)
            await add_rule(stack, "error_rate_above", 50, min_requests=3)
            alerts = job(stack)
            (label,) = [a.label for a in stack.emulator.accounts]

            # Quota: the emulator reports 85 % used; the gateway stores the evidence.
            await set_usage(stack, label, 85.0)
            await post(client, responses_body())
            await wait_for_stored(stack, lambda used: used >= 85)
            await passes_until_delivered(stack, alerts)
            (quota,) = await open_incidents(stack)
            assert (quota.kind, quota.subject) == ("quota_above", "primary")
            assert quota.details["used_percent"] >= 85 and quota.details["reset_at"]

            # Errors: three failing upstream answers in a row.
            await arm(stack, label, "server_error_500", times=3)
            for _ in range(3):
                await client.post("/backend-api/codex/responses", json=responses_body())
            await stack.wait_for_logs(4)
            await passes_until_delivered(stack, alerts)
            found = {i.kind: i for i in await open_incidents(stack)}
            assert set(found) == {"quota_above", "error_rate_above"}
            assert found["error_rate_above"].details["errors"] == 3

            # Both clear: usage back down, and successes dilute the errors below 50 %.
            await set_usage(stack, label, 10.0)
            for _ in range(3):
                await post(client, responses_body())
            await wait_for_stored(stack, lambda used: 0 <= used < 70)
            await stack.wait_for_logs(7)
            await passes_until_delivered(stack, alerts)
            assert await open_incidents(stack) == []
            assert sorted(receiver.events()) == [
                ("incident.opened", "error_rate_above"),
                ("incident.opened", "quota_above"),
                ("incident.resolved", "error_rate_above"),
                ("incident.resolved", "quota_above"),
            ]


async def test_overlapping_passes_open_and_notify_once(db_url: str, tmp_path: Path) -> None:
    """Two leaders for a moment (a takeover): their passes run at once, on two databases
    pools; the unique index and the delivery claims keep it to one incident, one send."""
    with leading(db_url), webhook_receiver() as receiver:
        async with open_stack(db_url, tmp_path, accounts=1, instance_settings=QUIET) as stack:
            _, receiver.secret = await add_webhook(stack, receiver.url)
            await add_rule(stack, "usable_below", 5)
            # The gateway's own job (what its Scheduler runs while it leads) and another.
            jobs = {j.name: j for j in stack.gateway.cluster_jobs.jobs}
            assert jobs["alerts"].interval_s == 30
            a = job(stack)
            async with trio.open_nursery() as nursery:
                for run in (jobs["alerts"].run, a.run_pass, jobs["alerts"].run, a.run_pass):
                    nursery.start_soon(run)
            await passes_until_delivered(stack, a)
            assert len(await all_incidents(stack)) == 1
            assert receiver.events() == [("incident.opened", "usable_below")]

            # A disabled Pool serves nothing: its conditions are moot and its incidents resolve.
            await stack.database.run(
                lambda conn: update_pool(conn, POOL, status="disabled", actor="test")
            )
            await passes_until_delivered(stack, a)
            assert await open_incidents(stack) == []
            assert receiver.events()[-1] == ("incident.resolved", "usable_below")


async def test_a_delivery_cut_by_a_leader_change_is_sent_by_the_next_leader(
    db_url: str, tmp_path: Path
) -> None:
    """The leader dies mid-send (its pass cancelled while the receiver has not answered):
    the delivery stays queued, claimed for `CLAIM`; once that has passed, the next leader's
    pass sends it. At least once: the receiver may see it twice, with one delivery id."""
    with leading(db_url), webhook_receiver(stall_first_s=3.0) as receiver:
        async with open_stack(db_url, tmp_path, accounts=1, instance_settings=QUIET) as stack:
            _, receiver.secret = await add_webhook(stack, receiver.url)
            await add_rule(stack, "usable_below", 5)
            with trio.move_on_after(1.0) as cut:
                await job(stack).run_pass()
            assert cut.cancelled_caught
            ((event, status, attempts, _),) = await deliveries(stack)
            assert (event, status, attempts) == ("opened", "pending", 0)
            successor = job(stack)
            assert (await successor.run_pass()).sent == 0  # still claimed by the dead leader

            def claim_expired(conn: Conn) -> None:  # time passing, as CLAIM would
                conn.execute("UPDATE alert_deliveries SET next_attempt_at = now()")

            await stack.database.run(claim_expired)
            assert (await successor.run_pass()).sent == 1
            ((event, status, attempts, _),) = await deliveries(stack)
            assert (event, status, attempts) == ("opened", "sent", 1)
            with trio.fail_after(10):
                while len(receiver.events()) < 2:  # the stalled first one answers late
                    await trio.sleep(0.05)
            ids = {
                value
                for h in receiver.headers
                for k, value in h.items()
                if k.lower() == "x-pooler-delivery"
            }
            assert len(ids) == 1 and len(receiver.headers) == 2 and receiver.bad_signatures == 0


async def test_hostile_webhooks_are_bounded(db_url: str, tmp_path: Path) -> None:
    """A receiver that never answers times out; one that answers an endless body is not
    read; a redirect is not followed (a failure); failures stop at the attempts' bound."""
    with (
        leading(db_url),
        webhook_receiver() as receiver,
        silent_server() as silent,
        hostile_server("huge") as huge,
        hostile_server("redirect", receiver.url) as redirect,
    ):
        async with open_stack(db_url, tmp_path, accounts=1, instance_settings=QUIET) as stack:
            for name, url in (("silent", silent), ("huge", huge.url), ("redirect", redirect.url)):
                await add_webhook(stack, url, name)
            await add_rule(stack, "usable_below", 5)
            alerts = job(stack, attempt_timeout_s=1.0)
            with trio.fail_after(60):
                result = await alerts.run_pass()
            assert result.opened == 1
            by_error = {error for _, _, _, error in await deliveries(stack)}
            assert by_error == {"timeout", None, "http_307"}
            assert huge.sent_bytes < 64 * 1024**2  # the endless body was not read
            assert receiver.attempts == 0  # the redirect was not followed
            # Retried up to the bound, then failed for good.
            with trio.fail_after(120):
                for _ in range(incidents.MAX_ATTEMPTS + 2):
                    await alerts.run_pass()
            rows = await deliveries(stack)
            failed = [(s, n) for _, s, n, e in rows if e is not None]
            assert failed == [("failed", incidents.MAX_ATTEMPTS)] * 2
