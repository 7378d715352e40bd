"""Several replicas behind a real reverse proxy (issue 16, item 6): three `pooler serve`
processes, each with its own data dir, on one PostgreSQL, behind Debian's nginx, under
mixed load from real clients: Codex-style SSE on `/backend-api/codex/responses` (an httpx
stream, as the Codex CLI sends it), Codex responses-websocket turns, and the OpenAI Python
SDK on `/v1` (chat and responses). Mid-load one node is SIGKILLed and restarted, another
is SIGTERMed (it drains). Then:

- every client request completed, or got a retryable error before its first byte (a 502
  or 503 status, a refused connection, a websocket closed before the turn's first frame);
  never a 200 stream that ends cleanly without its completion event. A stream in flight on
  the SIGKILLed node cannot finish: it is cut, and its client sees a transport error (the
  chunked body or websocket ends abnormally), never a clean end. Those cuts are counted
  apart and must all have run through the killed node; the client retries and completes.
- each conversation stayed on one account (the emulator's record of who served every
  turn), although its turns crossed nodes: the continuity pins live in PostgreSQL;
- every request answered by the drained node has its request-log row;
- quota evidence seen on one node (a usage-limit 429) keeps another node off the account
  within about a second (measured; the bound checked is loose).

With POOLER_REPLICAS_SUMMARY=<path> the figures are written there as JSON (ops/bench/README.md
"Several replicas behind nginx")."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
import trio_websocket
from harness import QUIET_POLLS, parse_sse, responses_body, seed_stack, shared_env
from replicas_support import Node, Proxy, Seen, Tally, access_lines, nginx_binary, start_nginx

from pooler.config import load_config
from pooler.db import Database
from pooler.emulator.control import arm_fault
from pooler.emulator.inbound import session_tag
from pooler.emulator.server import serve_emulator
from pooler.emulator.state import EmulatorState
from pooler.web.leasing import continuity_digest

pytestmark = pytest.mark.e2e

RESPONSES = "/backend-api/codex/responses"
MODEL = "gpt-5.5"
DRAIN_SECONDS = 15
THINK_S = 0.4  # between a conversation's turns
RETRY_S = 0.3  # before a client retries a refused or cut turn
MAX_TRIES = 12  # per turn
PACE = {"x-emulator-delay-ms": "100", "x-emulator-events": "10"}  # ~1 s per Codex turn
CLIENTS = {"sse": 6, "ws": 4, "chat": 3, "responses": 3}
PROPAGATION_BOUND_S = 5.0  # the issue says within a second; CI is a loaded 2-core machine


@dataclass
class Run:
    """What the clients share: where to send, the tally, and the phase events."""

    base: str
    key: str
    tally: Tally = field(default_factory=Tally)
    stop: trio.Event = field(default_factory=trio.Event)
    warm: Counter[str] = field(default_factory=Counter)
    gave_up: list[str] = field(default_factory=list)
    counter: int = 0

    def rid(self, conversation: str) -> str:
        self.counter += 1
        return f"{conversation}-r{self.counter}"


def codex_body(conversation: str, turn: int) -> dict[str, Any]:
    return responses_body(
        f"{conversation} turn {turn}: reply with exactly: ok",
        prompt_cache_key=conversation,
        client_metadata=PACE,
    )


# --- the clients: each returns True once its turn completed -------------------------------


async def sse_turn(run: Run, client: httpx.AsyncClient, conversation: str, turn: int) -> bool:
    rid = run.rid(conversation)
    headers = {
        "session-id": conversation,
        "x-client-request-id": rid,
        "originator": "codex_cli_rs",
        "accept": "text/event-stream",
    }
    answered = False
    raw = ""
    try:
        async with client.stream(
            "POST", RESPONSES, json=codex_body(conversation, turn), headers=headers
        ) as response:
            if response.status_code != 200:
                await response.aread()
                run.tally.add("sse", conversation, rid, "refused", str(response.status_code))
                return False
            answered = True
            async for text in response.aiter_text():
                raw += text
    except httpx.HTTPError as exc:
        run.tally.add(
            "sse", conversation, rid, "cut" if answered else "refused", type(exc).__name__
        )
        return False
    events = parse_sse(raw)
    if not events or events[-1]["type"] != "response.completed":
        run.tally.add("sse", conversation, rid, "truncated", events[-1]["type"] if events else "")
        return False
    run.tally.add("sse", conversation, rid, "completed")
    return True


async def ws_turn(
    run: Run, ws: trio_websocket.WebSocketConnection, rid: str, conversation: str, turn: int
) -> bool:
    frames = 0
    try:
        await ws.send_message(
            json.dumps({"type": "response.create", **codex_body(conversation, turn)})
        )
        while True:
            frame = json.loads(await ws.get_message())
            frames += 1
            if frame["type"] == "response.completed":
                run.tally.add("ws", conversation, rid, "completed")
                return True
            if frame["type"] in ("error", "response.failed"):
                outcome = "refused" if frames == 1 else "failed"
                run.tally.add("ws", conversation, rid, outcome, frame["type"])
                return False
    except trio_websocket.ConnectionClosed as closed:
        detail = f"close {closed.reason.code}"
        run.tally.add("ws", conversation, rid, "cut" if frames else "refused", detail)
        return False


async def ws_conversation(run: Run, conversation: str) -> None:
    """Turns over one socket; when it closes (1012 on a drain, or a dead node), the client
    reconnects through the proxy and resends the turn, as the Codex CLI does."""
    url = run.base.replace("http://", "ws://") + RESPONSES
    turn, tries = 1, 0
    while not run.stop.is_set() or turn == 1:
        rid = run.rid(conversation)
        headers = [
            (b"authorization", f"Bearer {run.key}".encode()),
            (b"session-id", conversation.encode()),
            (b"x-client-request-id", rid.encode()),
            (b"originator", b"codex_cli_rs"),
        ]
        try:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=headers, connect_timeout=10, disconnect_timeout=5
            ) as ws:
                while not run.stop.is_set() or turn == 1:
                    tries += 1
                    if not await ws_turn(run, ws, rid, conversation, turn):
                        break
                    run.warm[conversation] += 1
                    turn, tries = turn + 1, 0
                    await trio.sleep(THINK_S)
        except trio_websocket.HandshakeError as exc:
            tries += 1
            status = getattr(exc, "status_code", None)
            run.tally.add("ws", conversation, rid, "refused", f"handshake {status or exc!r}")
        except (trio_websocket.ConnectionClosed, OSError):
            pass  # the closing handshake of a socket whose node is gone
        if tries >= MAX_TRIES:
            run.gave_up.append(conversation)
            return
        await trio.sleep(RETRY_S)


async def sdk_turn(
    run: Run, sdk: openai.AsyncOpenAI, kind: str, conversation: str, turn: int
) -> bool:
    rid = run.rid(conversation)
    text = f"{conversation} turn {turn}: reply with exactly: ok"
    extra = {"x-client-request-id": rid}
    answered = False
    try:
        if kind == "chat":
            chat = await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], extra_headers=extra
            )
            answered = True
            assert chat.choices[0].message.content
        else:
            stream = await sdk.responses.create(
                model=MODEL, input=text, stream=True, extra_headers=extra
            )
            answered = True
            types = [event.type async for event in stream]
            if not types or types[-1] != "response.completed":
                run.tally.add(kind, conversation, rid, "truncated", types[-1] if types else "")
                return False
    except openai.APIStatusError as exc:
        run.tally.add(kind, conversation, rid, "refused", str(exc.status_code))
        return False
    except (openai.APIError, httpx.HTTPError) as exc:
        run.tally.add(kind, conversation, rid, "cut" if answered else "refused", type(exc).__name__)
        return False
    run.tally.add(kind, conversation, rid, "completed")
    return True


async def conversation_loop(
    run: Run, conversation: str, turn_once: Callable[[int], Awaitable[bool]]
) -> None:
    turn = tries = 0
    while not run.stop.is_set() or turn == 0:
        tries += 1
        if await turn_once(turn + 1):
            run.warm[conversation] += 1
            turn, tries = turn + 1, 0
            await trio.sleep(THINK_S)
        elif tries >= MAX_TRIES:
            run.gave_up.append(conversation)
            return
        else:
            await trio.sleep(RETRY_S)


async def client(run: Run, kind: str, conversation: str) -> None:
    if kind == "ws":
        await ws_conversation(run, conversation)
        return
    if kind == "sse":
        headers = {"authorization": f"Bearer {run.key}", "user-agent": "codex_cli_rs/0.169.0"}
        async with httpx.AsyncClient(base_url=run.base, headers=headers, timeout=30) as http:
            await conversation_loop(
                run, conversation, lambda turn: sse_turn(run, http, conversation, turn)
            )
        return
    sdk = openai.AsyncOpenAI(
        base_url=f"{run.base}/v1",
        api_key=run.key,
        max_retries=0,  # the test retries, and counts every refusal
        timeout=30,
        default_headers={"session-id": conversation},
    )
    try:
        await conversation_loop(
            run, conversation, lambda turn: sdk_turn(run, sdk, kind, conversation, turn)
        )
    finally:
        await sdk.close()


# --- the database and the emulator -----------------------------------------------------------


async def rows_by_client_id(database: Database, rids: list[str]) -> Counter[str]:
    found = await database.run(
        lambda conn: conn.execute(
            "SELECT client_request_id FROM request_logs WHERE client_request_id = ANY(%s)",
            (rids,),
        ).fetchall()
    )
    return Counter(row[0] for row in found)


async def continuity_stories(database: Database, run: Run) -> dict[str, list[tuple[Any, ...]]]:
    """Per conversation, what the gateways recorded of its requests (time, account,
    continuity and why it moved): the story a failed continuity check prints."""
    conversation_of = {s.rid: s.conversation for s in run.tally.seen}
    found = await database.run(
        lambda conn: conn.execute(
            "SELECT client_request_id, created_at, account_label, continuity,"
            " routing->>'continuity_reason', status_code, outcome FROM request_logs"
            " WHERE client_request_id = ANY(%s) ORDER BY created_at",
            (list(conversation_of),),
        ).fetchall()
    )
    stories: dict[str, list[tuple[Any, ...]]] = {}
    for row in found:
        stories.setdefault(conversation_of[row[0]], []).append(tuple(row))
    return stories


async def wait_for_pins(database: Database, conversations: list[str]) -> None:
    digests = [continuity_digest("session", c) for c in conversations]
    with trio.fail_after(10):
        while True:
            found = await database.run(
                lambda conn: conn.execute(
                    "SELECT count(*) FROM continuity_pins WHERE key_digest = ANY(%s)", (digests,)
                ).fetchone()
            )
            if found is not None and found[0] >= len(digests):
                return
            await trio.sleep(0.1)


def turns_of(state: EmulatorState, conversation: str) -> list[dict[str, Any]]:
    """The emulator's record of a conversation's answered turns (HTTP and websocket)."""
    tag = session_tag({b"session-id": conversation})
    return [
        r
        for r in state.requests
        if r.get("session_hash") == tag and str(r["path"]).endswith("/responses")
    ]


# --- the scenario ----------------------------------------------------------------------------


async def test_three_replicas_behind_nginx_survive_a_kill_and_a_drain(
    db_url: str, tmp_path: Path
) -> None:
    nginx_binary()  # skipped (failed in CI) when nginx is missing
    state = EmulatorState(accounts=3, percent_per_request=0.05)
    database = Database.open(db_url, max_size=4)
    try:
        with trio.fail_after(150):
            async with trio.open_nursery() as nursery:
                upstream = f"http://127.0.0.1:{await nursery.start(serve_emulator, state)}"
                env = shared_env(tmp_path, db_url, upstream)
                key = await seed_stack(database, load_config(env), state, QUIET_POLLS)
                nodes = [
                    Node(
                        name,
                        {
                            **env,
                            "CODEX_POOLER_DATA_DIR": str(tmp_path / f"node-{name}"),
                            "CODEX_POOLER_DRAIN_SECONDS": str(DRAIN_SECONDS),
                        },
                        tmp_path / f"node-{name}.log",
                    )
                    for name in ("a", "b", "c")
                ]
                async with trio.open_nursery() as starting:
                    for node in nodes:
                        starting.start_soon(node.start, nursery)
                proxy = await start_nginx(nursery, tmp_path / "nginx", [n.port for n in nodes])
                summary = await _scenario(nursery, state, database, nodes, proxy, key)
                nursery.cancel_scope.cancel()
    finally:
        database.close()
    write_summary(summary)


def write_summary(summary: dict[str, Any]) -> None:
    target = os.environ.get("POOLER_REPLICAS_SUMMARY")
    if target:
        Path(target).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


async def _scenario(
    nursery: trio.Nursery,
    state: EmulatorState,
    database: Database,
    nodes: list[Node],
    proxy: Proxy,
    key: str,
) -> dict[str, Any]:
    killed, drained, steady = nodes
    run = Run(proxy.url, key)
    conversations = {f"{kind}-{i}": kind for kind, count in CLIENTS.items() for i in range(count)}
    marks: dict[str, float] = {"start": trio.current_time()}
    async with trio.open_nursery() as load:
        for conversation, kind in conversations.items():
            load.start_soon(client, run, kind, conversation)
        # Every conversation has its first turn and its pin in the database before the chaos.
        with trio.fail_after(30):
            while len(run.warm) < len(conversations):
                await trio.sleep(0.1)
        await wait_for_pins(database, list(conversations))
        await trio.sleep(1.5)  # load over all three nodes
        assert killed.process is not None and drained.process is not None
        marks["kill"] = trio.current_time()
        killed.process.send_signal(signal.SIGKILL)
        with trio.fail_after(5):
            await killed.process.wait()
        await trio.sleep(2.0)  # nginx skips the dead node
        await killed.start(nursery)  # same port, same data dir
        marks["restarted"] = trio.current_time()
        await trio.sleep(1.5)
        marks["sigterm"] = trio.current_time()
        drained.process.send_signal(signal.SIGTERM)
        with trio.fail_after(DRAIN_SECONDS + 10):
            assert await drained.process.wait() == 0
        marks["drained"] = trio.current_time()
        await trio.sleep(1.5)  # load on the two left
        run.stop.set()
    marks["load_end"] = trio.current_time()

    propagation = await _quota_propagation(state, database, killed, steady, key)
    await proxy.quit()  # nginx writes a websocket's line when it closes
    lines = access_lines(proxy.workdir)
    expected = expected_rows(run, lines, killed, marks)
    with trio.move_on_after(10):  # the live nodes' LogWriters flush within a second
        while True:
            rows = await rows_by_client_id(database, list(expected))
            missing = {rid: n for rid, n in expected.items() if rows[rid] < n}
            if not missing:
                break
            await trio.sleep(0.2)
    assert not missing, f"request-log rows missing (by client request id): {missing}"
    rows = await rows_by_client_id(database, [s.rid for s in run.tally.seen])
    stories = await continuity_stories(database, run)
    return _check(run, state, rows, lines, nodes, conversations, marks, propagation, stories)


def expected_rows(
    run: Run, lines: list[dict[str, Any]], killed: Node, marks: dict[str, float]
) -> dict[str, int]:
    """The request-log rows a node must have written: one per completed request (a
    websocket: per completed turn on that connection), except those answered by the
    SIGKILLed node before it died (its LogWriter's buffer dies with it)."""
    node_of = {line["rid"]: line["node"] for line in lines}
    expected: Counter[str] = Counter()
    for seen in run.tally.by("completed"):
        if node_of.get(seen.rid) == killed.address and seen.at < marks["restarted"]:
            continue
        expected[seen.rid] += 1
    return dict(expected)


def refusal_is_expected(seen: Seen, node: str | None, killed: Node, drained: Node) -> bool:
    """A refusal a client may retry, where it can happen: a 502/503 (from nginx, or from a
    node that is going away) or a failed connection; a websocket closed before the turn's
    first frame, 1012 by the draining node or abruptly (1006) by the killed one."""
    if seen.detail in ("502", "503", "handshake 502", "handshake 503"):
        return True
    if seen.detail in ("ConnectError", "APIConnectionError"):
        return True
    if seen.detail == "close 1012":
        return node == drained.address
    return seen.detail == "close 1006" and node == killed.address


def _check(
    run: Run,
    state: EmulatorState,
    rows: Counter[str],
    lines: list[dict[str, Any]],
    nodes: list[Node],
    conversations: dict[str, str],
    marks: dict[str, float],
    propagation: dict[str, Any],
    stories: dict[str, list[tuple[Any, ...]]],
) -> dict[str, Any]:
    killed, drained, _ = nodes
    tally = run.tally
    node_of = {line["rid"]: line["node"] for line in lines}
    names = {node.address: node.name for node in nodes}
    assert not run.gave_up, run.gave_up
    assert len(node_of) == len(lines), "a client request id twice in the access log"
    # Never a 200 that ends without its completion event, never a failure after the start.
    assert not tally.by("truncated") and not tally.by("failed"), tally.seen
    # A cut (a stream that had begun) only where a node was killed, at or after the kill.
    cuts = tally.by("cut")
    for cut in cuts:
        assert node_of.get(cut.rid) == killed.address and cut.at >= marks["kill"], cut
    unexpected = [
        s
        for s in tally.by("refused")
        if not refusal_is_expected(s, node_of.get(s.rid), killed, drained)
    ]
    assert not unexpected, unexpected

    # Each conversation stayed on its account (the emulator's record), across nodes.
    crossed = 0
    for conversation in conversations:
        served = [r for r in turns_of(state, conversation) if r["status"] == 200]
        accounts = {r["account_id"] for r in served}
        assert served and len(accounts) == 1, (conversation, stories.get(conversation), served)
        rids = {s.rid for s in tally.seen if s.conversation == conversation}
        crossed += len({node_of[r] for r in rids if r in node_of}) >= 2
    continued_on_restarted = {
        s.conversation
        for s in tally.by("completed")
        if node_of.get(s.rid) == killed.address and s.at > marks["restarted"]
    }
    # Round robin moves nearly every conversation; the check above must have been tested.
    assert crossed >= len(conversations) // 2 and continued_on_restarted, crossed

    # Every request the drained node answered has its row (a websocket: one per turn).
    drained_rids = [line["rid"] for line in lines if line["node"] == drained.address]
    drained_completed = Counter(
        s.rid for s in tally.by("completed") if node_of.get(s.rid) == drained.address
    )
    missing = {rid: n for rid, n in drained_completed.items() if rows[rid] < n}
    assert not missing, missing
    assert drained_completed, "the drained node answered nothing"

    killed_before = Counter(
        s.rid
        for s in tally.by("completed")
        if node_of.get(s.rid) == killed.address and s.at < marks["kill"]
    )
    lost = sum(max(0, n - rows[rid]) for rid, n in killed_before.items())
    by_node = Counter(names.get(line["node"], "none") for line in lines)
    return {
        **tally.summary(lambda rid: names.get(node_of.get(rid, ""), "none")),
        "requests": len(tally.seen),
        "clients": dict(CLIENTS),
        "access_log_lines_by_node": dict(by_node),
        "skipped_by_nginx": sum(len(line["tried"]) > 1 for line in lines),
        "conversations": len(conversations),
        "conversations_on_one_account": len(conversations),
        "conversations_across_nodes": crossed,
        "conversations_continued_on_the_restarted_node": len(continued_on_restarted),
        "drained_node_requests": len(drained_rids),
        "drained_node_completed": sum(drained_completed.values()),
        "drained_node_completed_after_sigterm": Counter(
            s.kind
            for s in tally.by("completed")
            if node_of.get(s.rid) == drained.address and s.at > marks["sigterm"]
        ),
        "drained_node_rows_missing": 0,
        "killed_node_completed_before_kill": sum(killed_before.values()),
        "killed_node_rows_lost": lost,
        "seconds": {k: round(v - marks["start"], 2) for k, v in marks.items()},
        "quota": propagation,
    }


async def _quota_propagation(
    state: EmulatorState, database: Database, seen_by: Node, steered: Node, key: str
) -> dict[str, Any]:
    """Twice: two conversations pinned to one account; that account then answers one
    request through `seen_by` with a usage-limit 429, first with quota headers saying
    100 %, then (another account) with its body alone; how long until `steered` routes the
    other conversation elsewhere. `steered`'s probes ask for answers without quota
    headers, so it can learn only from `seen_by` (through PostgreSQL)."""
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:

        async def turn(node: Node, conversation: str, quiet: bool = False) -> dict[str, Any]:
            # A quiet answer carries no quota headers (a 429 too): only its body says it.
            knobs = {"x-emulator-quiet-headers": "1"} if quiet else {}
            response = await http.post(
                node.url + RESPONSES,
                json=responses_body(prompt_cache_key=conversation, client_metadata=knobs),
                headers={"session-id": conversation},
            )
            assert response.status_code == 200, response.text
            assert parse_sse(response.text)[-1]["type"] == "response.completed"
            return turns_of(state, conversation)[-1]

        async def once(name: str, quiet_429: bool) -> dict[str, Any]:
            by_account: dict[str, list[str]] = defaultdict(list)
            for i in range(12):
                conversation = f"{name}-{i}"
                account = (await turn(steered, conversation))["account_id"]
                by_account[account].append(conversation)
                if len(by_account[account]) == 2:
                    break
            first, second = by_account[account]
            await wait_for_pins(database, [first, second])
            await trio.sleep(0.6)  # each node reads the pins on NOTIFY
            fault = {"account_id": account, "kind": "usage_limit_429", "resets_in_seconds": 600}
            assert isinstance(arm_fault(state, fault), dict)

            await turn(seen_by, first, quiet=quiet_429)  # the 429, then a failover
            refused = [r for r in turns_of(state, first) if r["status"] == 429]
            assert [r["account_id"] for r in refused] == [account], turns_of(state, first)
            seen_at = refused[0]["time"]
            on_account: list[float] = []
            with trio.fail_after(PROPAGATION_BOUND_S):
                while (served := await turn(steered, second, quiet=True))["account_id"] == account:
                    on_account.append(served["time"])
            return {
                "propagation_s": round(served["time"] - seen_at, 3),
                "last_probe_on_the_account_s": (
                    round(on_account[-1] - seen_at, 3) if on_account else None
                ),
                "probes_still_on_the_account": len(on_account),
            }

        return {
            "with_quota_headers": await once("quota", quiet_429=False),
            "body_only": await once("quota-body", quiet_429=True),
        }
