"""Quota evidence from every source the upstream offers (protocol §1.6, §4.2, §5), each
alone where the emulator can make it so: response headers, a 429 `usage_limit_reached`
body, the `codex.rate_limits` stream event, `/wham/usage` polling, and model-scoped limit
families; a fresh account probes, and evidence survives a restart.

Each test checks the routing decision (which account the emulator saw, and why the gateway
skipped the others in its request log) and where the gateway's knowledge came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from harness import Stack, open_stack, parse_sse, responses_body
from routing_support import (
    arm,
    attempt_rows,
    completed,
    log_row,
    now,
    open_restartable_stack,
    pause,
    post,
    seen,
    seen_labels,
    serve_many,
    set_instance_settings,
    set_reporting,
    set_usage,
    snapshot_of,
    until,
    update_pool_live,
)

from pooler.actors import messages as m
from pooler.crypto import Keyring
from pooler.emulator.authjson import auth_json_for
from pooler.routing.eligibility import QUOTA_CODES
from pooler.store.accounts import delete_account, import_account

SPARK = "GPT-5.3-Codex-Spark"
SPARK_MODEL = "gpt-5.3-codex-spark"
FAMILY = "codex_bengalfox"


async def meet(stack: Stack, client: Any, label: str, **extra: Any) -> list[Any]:
    """Send requests (each its own conversation) until one reaches `label` upstream; every
    one must answer 200. Three suffice: until an account is known, it looks least used."""
    responses = []
    mark = len(await seen(stack))
    for i in range(3):
        body = responses_body(prompt_cache_key=f"meet-{label}-{i}", **extra)
        responses.append(await post(client, body))
        completed(responses[-1])
        if label in await seen_labels(stack, since=mark):
            return responses
    raise AssertionError(f"no request reached {label}")


async def stored_windows(stack: Stack, account_id: str) -> list[tuple[Any, ...]]:
    await stack.gateway.flush_quota()
    rows: list[tuple[Any, ...]] = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT family, window_kind, used_percent::float8, source, limit_name"
            " FROM quota_windows WHERE account_id = %s ORDER BY family, window_kind",
            (account_id,),
        ).fetchall()
    )
    return rows


async def refused_after_pausing(stack: Stack, client: Any, *labels: str) -> dict[str, Any]:
    """Pause `labels` and send one request: it must be refused before any upstream
    dispatch; its request-log row (which says why each account was skipped)."""
    for label in labels:
        await pause(stack, label)
    before = len(await seen(stack))
    refused = await post(client)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert len(await seen(stack)) == before
    return await log_row(stack, refused.headers["x-request-id"])


# --- (i) headers ------------------------------------------------------------------------------


async def test_headers_of_a_refusal_teach_the_gateway(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await set_usage(stack, "account-1", 100)
        responses = await meet(stack, client, "account-1")
        [hit] = [e for e in await seen(stack) if e["label"] == "account-1"]
        assert hit["status"] == 429  # the client still got 200: the gateway failed over
        met = await log_row(stack, responses[-1].headers["x-request-id"])
        assert met["retries"] == 1 and met["exclusions"]["account-1"] in QUOTA_CODES
        attempts = await attempt_rows(stack, responses[-1].headers["x-request-id"])
        assert (attempts[0]["account_label"], attempts[0]["status_code"]) == ("account-1", 429)

        await serve_many(client, 6)
        assert "account-1" not in await seen_labels(stack, since=len(responses))
        snapshot = snapshot_of(stack, ids["account-1"])
        reset_at = stack.emulator.accounts[0].primary.reset_at(now())
        assert (snapshot.primary.used_percent, snapshot.primary.reset_at) == (100, reset_at)
        assert ("codex", "primary", 100.0, "headers", None) in await stored_windows(
            stack, ids["account-1"]
        )
        row = await refused_after_pausing(stack, client, "account-2", "account-3")
        assert row["exclusions"]["account-1"] in QUOTA_CODES


async def test_headers_of_an_answer_under_the_pool_threshold(db_url: str, tmp_path: Path) -> None:
    """A 200 whose headers show a window over the Pool's threshold: quota_exhausted."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await update_pool_live(stack, quota_threshold_percent=80)
        await set_usage(stack, "account-2", 90)
        responses = await meet(stack, client, "account-2")
        assert responses[-1].headers["x-codex-primary-used-percent"] == "90"
        pinned_key = f"meet-account-2-{len(responses) - 1}"

        await serve_many(client, 4)
        assert "account-2" not in await seen_labels(stack, since=len(responses))
        moved = await post(client, responses_body(prompt_cache_key=pinned_key))
        completed(moved)
        row = await log_row(stack, moved.headers["x-request-id"])
        assert (row["continuity"], str(row["continuity_from"])) == ("moved", ids["account-2"])
        assert row["exclusions"] == {"account-2": "quota_exhausted"}


# --- (ii) a usage_limit_reached body ----------------------------------------------------------


async def test_usage_limit_body_blocks_until_its_reset(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await set_reporting(stack, "account-1", quiet_headers=True)  # the body alone says it
        await arm(stack, "account-1", "usage_limit_429", resets_in_seconds=2)
        responses = await meet(stack, client, "account-1")
        resets_at = float(parse_resets_at(stack, ids["account-1"]))
        attempts = await attempt_rows(stack, responses[-1].headers["x-request-id"])
        assert (attempts[0]["account_label"], attempts[0]["status_code"]) == ("account-1", 429)
        row = await log_row(stack, responses[-1].headers["x-request-id"])
        assert row["exclusions"]["account-1"] == "usage_limit_reached"
        snapshot = snapshot_of(stack, ids["account-1"])
        assert snapshot.primary is None  # no header evidence: quiet
        assert now() - 1 < resets_at <= now() + 3

        mark = len(await seen(stack))
        await serve_many(client, 4)
        assert "account-1" not in await seen_labels(stack, since=mark)
        await trio.sleep(max(0.0, resets_at - now()) + 0.2)
        # Past its reset it serves again, first in line (it looks least used: quiet).
        completed(await post(client))
        assert (await seen(stack))[-1]["label"] == "account-1"


def parse_resets_at(stack: Stack, account_id: str) -> float:
    blocked_until = snapshot_of(stack, account_id).blocked_until
    assert blocked_until is not None
    return float(blocked_until)


# --- (iii) the codex.rate_limits stream event -------------------------------------------------


async def test_rate_limits_event_alone_teaches_the_gateway(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await update_pool_live(stack, quota_threshold_percent=80)
        await set_usage(stack, "account-2", 90)
        await set_reporting(stack, "account-2", quiet_headers=True, rate_limits_event=True)
        responses = await meet(stack, client, "account-2")
        answer = responses[-1]
        assert not any(name.startswith("x-codex-primary") for name in answer.headers)
        event = parse_sse(answer.text)[0]  # relayed to the client as it came
        assert event["type"] == "codex.rate_limits"
        assert event["rate_limits"]["primary"]["used_percent"] == 90
        assert snapshot_of(stack, ids["account-2"]).primary.used_percent == 90

        await serve_many(client, 4)
        assert "account-2" not in await seen_labels(stack, since=len(responses))
        pinned_key = f"meet-account-2-{len(responses) - 1}"
        moved = await post(client, responses_body(prompt_cache_key=pinned_key))
        completed(moved)
        row = await log_row(stack, moved.headers["x-request-id"])
        assert row["exclusions"] == {"account-2": "quota_exhausted"}
        assert ("codex", "primary", 90.0, "event", None) in await stored_windows(
            stack, ids["account-2"]
        )


async def test_every_rate_limits_event_of_a_stream_counts(db_url: str, tmp_path: Path) -> None:
    """With an extra family the stream carries one event per family: the default one is
    not lost behind the family's."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await set_usage(stack, "account-2", 90)
        await set_usage(stack, "account-2", 30, family=FAMILY, limit_name=SPARK)
        await set_reporting(stack, "account-2", quiet_headers=True, rate_limits_event=True)
        responses = await meet(stack, client, "account-2")
        events = [e for e in parse_sse(responses[-1].text) if e["type"] == "codex.rate_limits"]
        assert [e["metered_limit_name"] for e in events] == ["codex", FAMILY]
        snapshot = snapshot_of(stack, ids["account-2"])
        assert snapshot.primary is not None and snapshot.primary.used_percent == 90
        [scoped] = snapshot.scoped
        assert (scoped.family, scoped.primary.used_percent) == (FAMILY, 30)


# --- (iv) /wham/usage polling -----------------------------------------------------------------


async def test_usage_polling_alone_teaches_the_gateway(db_url: str, tmp_path: Path) -> None:
    """Quiet headers and no request at all: the gateway learns an exhausted account from
    polling `/wham/usage`, one poll at a time per account, and never polls a paused one."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await set_instance_settings(stack, usage_poll_interval_seconds=5)
        began = now()
        await set_reporting(stack, "account-1", quiet_headers=True)
        await set_usage(stack, "account-1", 100)
        await pause(stack, "account-2")

        def polled(label: str) -> int:
            return sum(
                1
                for e in stack.emulator.requests
                if e["path"].endswith("/wham/usage") and stack.label_of(e["account_id"]) == label
            )

        # First polls are spread over one interval (5 s) from the first tick (1 s).
        with trio.fail_after(12):
            await until(lambda: polled("account-1") >= 1 and polled("account-3") >= 1)
            await until(lambda: snapshot_of(stack, ids["account-1"]).primary is not None)
        assert snapshot_of(stack, ids["account-1"]).primary.used_percent == 100
        await trio.sleep(max(0.0, began + 7.5 - now()))  # account-2 was due by now
        assert polled("account-2") == 0
        assert [w[:4] for w in await stored_windows(stack, ids["account-1"])] == [
            ("codex", "primary", 100.0, "usage_api"),
            ("codex", "secondary", 0.0, "usage_api"),
        ]

        # Single flight: however often it is asked, an account polls once at a time.
        await set_reporting(stack, "account-3", usage_delay_ms=1500)
        asked = now()
        for _ in range(5):
            stack.gateway.pool_mailbox.try_send(m.ForwardToAccount(ids["account-3"], m.PollUsage()))
        await trio.sleep(1.4)
        started = [
            e
            for e in await seen(stack, "/wham/usage")
            if e["label"] == "account-3" and e["time"] >= asked
        ]
        assert len(started) == 1, started

        # Routing: the exhausted account is never tried, though nothing upstream said so.
        await serve_many(client, 4)
        assert set(await seen_labels(stack)) == {"account-3"}
        row = await refused_after_pausing(stack, client, "account-3")
        assert row["exclusions"] == {
            "account-1": "quota_exhausted",
            "account-2": "not_active",
            "account-3": "not_active",
        }


async def test_a_shorter_poll_interval_applies_to_polls_already_scheduled(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        await trio.sleep(1.5)  # the first usage tick has spread first polls over 60 s
        await set_instance_settings(stack, usage_poll_interval_seconds=5)

        def polled() -> set[str]:
            return {
                stack.label_of(e["account_id"])
                for e in stack.emulator.requests
                if e["path"].endswith("/wham/usage")
            }

        with trio.fail_after(7):  # one new interval and a tick
            await until(lambda: polled() == {"account-1", "account-2", "account-3"})


# --- (v) a model-scoped limit family ----------------------------------------------------------


async def test_model_scoped_limit_blocks_only_its_model(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        await update_pool_live(stack, strategy="round_robin")
        await set_usage(stack, "account-1", 100, family=FAMILY, limit_name=SPARK)
        for i in range(3):  # one each; account-1's headers carry its Spark family at 100 %
            completed(await post(client, responses_body(prompt_cache_key=f"k{i}")))
        assert set(await seen_labels(stack)) == {"account-1", "account-2", "account-3"}
        [scoped] = snapshot_of(stack, ids["account-1"]).scoped
        assert (scoped.family, scoped.primary.used_percent) == (FAMILY, 100)

        await serve_many(client, 4, model=SPARK_MODEL)
        assert "account-1" not in await seen_labels(stack, since=3)
        await serve_many(client, 3)  # other models: account-1 still takes its turn
        assert set(await seen_labels(stack, since=7)) == {"account-1", "account-2", "account-3"}

        pinned = [e["label"] for e in (await seen(stack))[:3]].index("account-1")
        spark = responses_body(prompt_cache_key=f"k{pinned}", model=SPARK_MODEL)
        moved = await post(client, spark)
        completed(moved)
        row = await log_row(stack, moved.headers["x-request-id"])
        assert (row["continuity"], str(row["continuity_from"])) == ("moved", ids["account-1"])
        assert row["exclusions"] == {"account-1": "quota_model_exhausted"}
        assert (FAMILY, "primary", 100.0, "headers", SPARK) in await stored_windows(
            stack, ids["account-1"]
        )


async def test_model_scoped_refusal_does_not_block_other_models(
    db_url: str, tmp_path: Path
) -> None:
    """The first evidence is the upstream's 429 for the Spark model itself."""
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await update_pool_live(stack, strategy="round_robin")
        for label in ("account-1", "account-2", "account-3"):
            await set_usage(stack, label, 100, family=FAMILY, limit_name=SPARK)
        refused = await post(client, responses_body(model=SPARK_MODEL))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "usage_limit_reached"
        assert [e["status"] for e in await seen(stack)] == [429, 429, 429]

        await serve_many(client, 3)  # every account still serves other models
        assert set(await seen_labels(stack, since=3)) == {"account-1", "account-2", "account-3"}
        again = await post(client, responses_body(model=SPARK_MODEL))
        assert again.status_code == 429  # known now: refused without an upstream request
        reset_at = stack.emulator.accounts[0].families[FAMILY].primary.reset_at(now())
        for answer in (refused, again):
            assert answer.json()["error"]["resets_at"] == reset_at
            assert int(answer.headers["retry-after"]) >= 1
        assert len(await seen(stack)) == 6
        row = await log_row(stack, again.headers["x-request-id"])
        assert set(row["exclusions"].values()) == {"quota_model_exhausted"}


# --- (vi) a fresh account probes --------------------------------------------------------------


async def test_a_freshly_imported_account_serves_its_first_request(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        ids = await stack.account_ids()
        fresh = stack.emulator.accounts[2]
        await stack.database.run(lambda conn: delete_account(conn, _uuid(ids[fresh.label])))
        with trio.fail_after(2):
            await until(lambda: ids[fresh.label] not in stack.gateway.pool_supervisor.accounts)
        for label in ("account-1", "account-2"):
            await set_usage(stack, label, 100)
        refused = await post(client)  # both known out of quota from now on
        assert refused.status_code == 429, refused.text

        keyring = Keyring(stack.config.upstream_secret_key)
        account = await stack.database.run(
            lambda conn: import_account(conn, keyring, "demo", auth_json_for(fresh), fresh.label)
        )
        with trio.fail_after(2):
            await until(lambda: str(account.id) in stack.gateway.pool_supervisor.accounts)
        assert snapshot_of(stack, str(account.id)).primary is None  # no evidence at all
        completed(await post(client))
        assert [(e["label"], e["status"]) for e in await seen(stack)][-1] == (fresh.label, 200)


def _uuid(value: str) -> Any:
    from uuid import UUID

    return UUID(value)


# --- (vii) evidence survives a restart --------------------------------------------------------


async def test_quota_evidence_survives_a_restart(db_url: str, tmp_path: Path) -> None:
    async with open_restartable_stack(db_url, tmp_path) as restartable:
        stack = restartable.stack
        ids = await stack.account_ids()
        await set_usage(stack, "account-1", 100)
        async with stack.client() as client:
            await meet(stack, client, "account-1")
        await stack.gateway.flush_quota()

        await restartable.restart()
        assert snapshot_of(stack, ids["account-1"]).primary.used_percent == 100
        mark = len(await seen(stack))
        async with stack.client() as client:
            await serve_many(client, 4)
            assert "account-1" not in await seen_labels(stack, since=mark)
            # Learned just before a graceful stop, with no flush: written on the way out.
            await set_usage(stack, "account-2", 100)
            await meet(stack, client, "account-2")
        await restartable.restart()
        assert snapshot_of(stack, ids["account-2"]).primary.used_percent == 100
        mark = len(await seen(stack))
        async with stack.client() as client:
            await serve_many(client, 3)
            assert set(await seen_labels(stack, since=mark)) == {"account-3"}
            row = await refused_after_pausing(stack, client, "account-3")
        # Only stored windows are left after a restart (not the 429s of the last life).
        assert row["exclusions"] == {
            "account-1": "quota_exhausted",
            "account-2": "quota_exhausted",
            "account-3": "not_active",
        }
