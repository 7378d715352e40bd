"""Continuity (DESIGN §4) across a gateway restart for every kind of key, hard and soft
pins on a paused account, the upstream prompt cache through the gateway, and admission
(bulkheads changed live). Each routing decision is checked against the emulator's log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
from harness import message, open_stack, responses_body
from routing_support import (
    RESPONSES,
    completed,
    log_row,
    now,
    open_restartable_stack,
    pause,
    post,
    seen,
    set_usage,
    sha256,
    slow,
    until,
)

from pooler.store.instance_settings import update_instance_settings
from pooler.web.leasing import continuity_digest


def _body(kind: str, key: str) -> dict[str, Any]:
    """A turn's body for a conversation continued by `kind`: a prompt_cache_key, a
    session-id header (`_headers`) or a previous_response_id (the last response's id)."""
    extra = {kind: key} if kind in ("prompt_cache_key", "previous_response_id") else {}
    body: dict[str, Any] = responses_body(**extra)
    return body


def _headers(kind: str, key: str) -> dict[str, str]:
    return {"session-id": key} if kind == "session" else {}


async def turn(client: httpx.AsyncClient, kind: str, key: str) -> httpx.Response:
    response = await post(client, _body(kind, key), **_headers(kind, key))
    completed(response)
    return response


async def test_conversations_keep_their_account_across_a_restart(
    db_url: str, tmp_path: Path
) -> None:
    """For each kind of key: a conversation on account P, P made the most used (so least
    used routing would leave it), pins and quota written behind, the gateway restarted:
    the next turn still goes to P."""
    async with open_restartable_stack(db_url, tmp_path) as restartable:
        stack = restartable.stack
        for step, kind in enumerate(("prompt_cache_key", "session", "previous_response_id")):
            async with stack.client() as client:
                if kind == "previous_response_id":  # the first turn has no key yet
                    key = completed(await post(client))["response"]["id"]
                else:
                    key = f"conversation-{kind}"
                    await turn(client, kind, key)
                served = (await seen(stack))[-1]["label"]
                await set_usage(stack, served, 90 + 3 * step)  # above every other account
                answer = await turn(client, kind, key)  # kept on P; P's 9x % is now known
                if kind == "previous_response_id":
                    key = completed(answer)["response"]["id"]
            await stack.gateway.flush_continuity()
            await stack.gateway.flush_quota()
            await restartable.restart()

            mark = len(await seen(stack))
            async with stack.client() as client:
                answer = await turn(client, kind, key)
            after = await seen(stack)
            assert [e["label"] for e in after[mark:]] == [served], kind
            assert after[-2]["label"] == served  # and the turn before the restart
            if kind == "session":
                assert after[-1]["session_hash"] == after[-2]["session_hash"] is not None
            row = await log_row(stack, answer.headers["x-request-id"])
            assert row["continuity"] == "kept"


async def test_a_graceful_stop_writes_pins_behind(db_url: str, tmp_path: Path) -> None:
    """No flush and no wait: the stop itself stores the pins the write-behind had not."""
    async with open_restartable_stack(db_url, tmp_path) as restartable:
        stack = restartable.stack
        async with stack.client() as client:
            for attempt in range(5):  # until a pin is still only in memory when we stop
                key = f"just-in-time-{attempt}"
                completed(await post(client, responses_body(prompt_cache_key=key)))
                if not await stored_pin(stack, key):
                    break
            else:
                raise AssertionError("every pin was written behind before the stop")
        await restartable.restart()
        assert await stored_pin(stack, key)
        served = (await seen(stack))[-1]["label"]
        async with stack.client() as client:
            for _ in range(2):
                completed(await post(client, responses_body(prompt_cache_key=key)))
        assert [e["label"] for e in (await seen(stack))[-2:]] == [served] * 2


async def stored_pin(stack: Any, key: str) -> bool:
    digest = continuity_digest("prompt_cache_key", key)
    row = await stack.database.run(
        lambda conn: conn.execute(
            "SELECT 1 FROM continuity_pins WHERE key_digest = %s", (digest,)
        ).fetchone()
    )
    return row is not None


async def test_paused_account_hard_pin_fails_soft_pin_moves(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        first = completed(await post(client, responses_body(prompt_cache_key="soft")))
        [served] = await seen(stack)
        account_id = await pause(stack, served["label"])

        hard = await post(client, responses_body(previous_response_id=first["response"]["id"]))
        assert hard.status_code == 409, hard.text
        error = hard.json()["error"]
        assert (error["code"], error["param"]) == (
            "pinned_continuation_unavailable",
            "previous_response_id",
        )
        assert "previous_response_id" in error["message"]
        assert len(await seen(stack)) == 1  # never sent upstream
        row = await log_row(stack, hard.headers["x-request-id"])
        assert (row["status_code"], row["error_code"]) == (409, "pinned_continuation_unavailable")
        assert (row["continuity"], str(row["continuity_from"])) == ("moved", account_id)
        assert row["exclusions"] == {served["label"]: "not_active"}

        soft = await post(client, responses_body(prompt_cache_key="soft"))
        completed(soft)
        moved_to = (await seen(stack))[-1]["label"]
        assert moved_to != served["label"]
        row = await log_row(stack, soft.headers["x-request-id"])
        assert (row["continuity"], str(row["continuity_from"])) == ("moved", account_id)
        assert row["account_label"] == moved_to
        assert row["exclusions"] == {served["label"]: "not_active"}


# --- 5. the upstream prompt cache through the gateway -----------------------------------------


async def test_prompt_cache_hits_on_every_later_turn(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        history: list[Any] = []
        sent: list[bytes] = []
        cached: list[int] = []
        request_ids: list[str] = []
        for turn in range(4):
            history.append(message(f"Turn {turn}: reply with exactly: answer {turn}"))
            body = {
                "model": "gpt-5.5",
                "instructions": "You are a test.",
                "input": history,
                "prompt_cache_key": "cached-conversation",
                "store": False,
                "stream": True,
            }
            # Unusual spacing and key order: the upstream must get these very bytes.
            raw = json.dumps(body, indent=1, separators=(", ", " : ")).encode()
            sent.append(raw)
            with trio.fail_after(20):
                response = await client.post(
                    RESPONSES, content=raw, headers={"content-type": "application/json"}
                )
            done = completed(response)
            usage = done["response"]["usage"]
            cached.append(usage["input_tokens_details"]["cached_tokens"])
            request_ids.append(response.headers["x-request-id"])
            history.extend(done["response"]["output"])  # the client resends what it got

        upstream = await seen(stack)
        assert [e["body_sha256"] for e in upstream] == [sha256(raw) for raw in sent]
        assert len({e["label"] for e in upstream}) == 1  # the key kept the cache's account
        assert cached[0] == 0 and all(c > 0 for c in cached[1:]), cached
        assert cached == [e["cached_tokens"] for e in upstream]
        assert cached[1:] == sorted(cached[1:]) and cached[3] > cached[1]  # the prefix grows
        for request_id, expected in zip(request_ids, cached, strict=True):
            row = await log_row(stack, request_id)
            assert row["cached_input_tokens"] == expected


# --- 6. admission -----------------------------------------------------------------------------


async def set_stream_bulkhead(stack: Any, **spec: float) -> None:
    """Change the stream bulkhead in the database; wait until the running gateway uses it."""
    changes = {f"bulkheads.stream.{key}": value for key, value in spec.items()}
    await stack.database.run(lambda conn: update_instance_settings(conn, changes, actor="test"))
    with trio.fail_after(1):
        await until(
            lambda: all(
                getattr(stack.gateway.admission.stats()["stream"], key) == value
                for key, value in spec.items()
            ),
            step=0.01,
        )


async def test_stream_bulkhead_refuses_then_queues(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack, stack.client() as client:
        await set_stream_bulkhead(stack, concurrency=1, queue=0)
        holder = responses_body(**slow(100))  # 12 events, 0.1 s apart

        async def hold_then(second: dict[str, Any]) -> tuple[httpx.Response, float, float]:
            """Keep one slow stream open and send `second` meanwhile; the second's answer,
            when it was sent and when the first one ended."""
            with trio.fail_after(20):
                async with client.stream("POST", RESPONSES, json=holder) as first:
                    assert first.status_code == 200
                    async with trio.open_nursery() as nursery:
                        result: list[Any] = []

                        async def send_second() -> None:
                            result.append(now())
                            result.append(await post(client, second))

                        nursery.start_soon(send_second)
                        await first.aread()
                        ended = now()
            return result[1], result[0], ended

        refused, sent_at, first_ended = await hold_then(responses_body())
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "server_is_overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert len(await seen(stack)) == 1  # the second never reached an upstream
        # Another route class has its own bulkhead: a non-streaming request still runs.
        plain = responses_body()
        plain.pop("stream")
        assert (await post(client, plain)).status_code == 200

        # A queue of one with a short wait: the second waits, then is refused.
        await set_stream_bulkhead(stack, queue=1, queue_timeout_s=0.3)
        mark = len(await seen(stack))
        refused, sent_at, first_ended = await hold_then(responses_body())
        assert refused.status_code == 503 and "retry-after" in refused.headers
        assert refused.json()["error"]["code"] == "server_is_overloaded"
        assert len(await seen(stack)) == mark + 1

        # A long enough wait: the second runs once the first is done.
        await set_stream_bulkhead(stack, queue_timeout_s=10)
        mark = len(await seen(stack))
        answer, sent_at, first_ended = await hold_then(responses_body())
        completed(answer)
        first_up, second_up = (await seen(stack))[mark:]
        assert second_up["time"] >= first_ended - 0.2 > sent_at + 0.6
        assert first_up["time"] < sent_at
