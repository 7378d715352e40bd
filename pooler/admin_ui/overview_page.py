"""`/admin`, the signed-in home: each Pool the operator may see working (usable accounts,
capacity left per quota window, requests and errors per minute, added latency, cached
tokens, in-flight requests and websocket sessions), with the accounts that need attention
listed first; and `/admin/overview/events`, the same numbers pushed live (Server-Sent
Events) while the page is visible (`static/overview.js`; the page is whole without it).

Where the numbers come from: the database for the stored facts and the request log's last
five minutes (every node's rows; one read per `STORED_TTL_S` and scope, shared by every
page and stream of this process), this node's memory for the rest: the PoolSupervisor's
snapshots (asked by message, as the Upstreams pages do) and the websocket routes' open
sockets.

The stream is bounded: it takes an `admin` slot for each refresh only (never while it
waits), re-checks the session each time (a sign-out or revocation ends it within a
refresh) without moving the session's idle clock, lives at most `STREAM_LIFETIME_S` (the
browser reconnects), ends at once when the client leaves, and a session opens at most
`MAX_STREAMS_PER_SESSION` of them (`MAX_STREAMS` per process).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

import orjson
import trio
from quart import Blueprint, current_app
from quart.wrappers import Response

from pooler.admin_ui import console
from pooler.admin_ui.console import SESSION_COOKIE, SignedIn
from pooler.admin_ui.errors import SECURITY_HEADERS, add_security_headers
from pooler.admin_ui.overview_figures import LastSent, Overview, overview
from pooler.admin_ui.page_pace import MAX_WAIT_S
from pooler.admin_ui.pages import PAGE_PACE, operator_required, render
from pooler.admin_ui.upstream_view import AccountRow, live_state, load_accounts
from pooler.errors import ServerOverloaded
from pooler.store import pools as pools_store
from pooler.store.common import Conn
from pooler.store.models import Pool
from pooler.store.overview import PoolActivity, Watcher, recent_activity, watching_session
from pooler.web.backend_codex.responses_ws import ResponsesWebsocketRoute
from pooler.web.quart_http import PUSHED, current_request

if TYPE_CHECKING:
    from pooler.web.gateway import Gateway

log = logging.getLogger("pooler.admin_ui.overview")

HOME: Final = "/admin"
EVENTS: Final = "/admin/overview/events"
REFRESH_S: Final = 2.0
KEEPALIVE_S: Final = 15.0  # a comment when nothing changed, so proxies keep the stream
STREAM_LIFETIME_S: Final = 600.0
RETRY_MS: Final = 3000  # the browser's wait before it reconnects after the lifetime
MAX_STREAMS_PER_SESSION: Final = 3
MAX_STREAMS: Final = 200
STORED_TTL_S: Final = 1.5
STORED_ENTRIES: Final = 64
SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS),
]


@dataclass(frozen=True, slots=True)
class Stored:
    """What the overview reads from the database, for one scope."""

    pools: list[Pool]
    accounts: list[AccountRow]
    activity: dict[UUID, PoolActivity]


def read_stored(conn: Conn, scope: frozenset[UUID] | None) -> Stored:
    pools = [p for p in pools_store.list_pools(conn) if scope is None or p.id in scope]
    accounts = load_accounts(conn, scope)
    return Stored(pools, accounts, recent_activity(conn, [p.id for p in pools]))


class StoredCache:
    """The last read of each (gateway, scope), reused for `ttl` seconds: however many
    pages and streams are open, the database answers one read per scope per `ttl`."""

    def __init__(self, ttl: float = STORED_TTL_S, limit: int = STORED_ENTRIES) -> None:
        self.ttl, self.limit = ttl, limit
        self._entries: dict[tuple[str, frozenset[UUID] | None], tuple[float, Stored]] = {}
        self._lock = trio.Lock()

    async def get(self, gw: Gateway, scope: frozenset[UUID] | None) -> Stored:
        key = (gw.node_id, scope)
        async with self._lock:  # one read at a time: the others wait and reuse it
            found = self._entries.get(key)
            if found is not None and trio.current_time() < found[0]:
                return found[1]
            stored = await gw.db.run(lambda conn: read_stored(conn, scope))
            self._entries.pop(key, None)
            if len(self._entries) >= self.limit:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (trio.current_time() + self.ttl, stored)
            return stored


class OpenStreams:
    """The live streams open on this process, by session."""

    def __init__(self, per_session: int = MAX_STREAMS_PER_SESSION, total: int = MAX_STREAMS):
        self.per_session, self.limit = per_session, total
        self.by_session: Counter[UUID] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_session.values())

    def open(self, session_id: UUID) -> bool:
        if self.by_session[session_id] >= self.per_session or self.total >= self.limit:
            return False
        self.by_session[session_id] += 1
        return True

    def close(self, session_id: UUID) -> None:
        self.by_session[session_id] -= 1
        if self.by_session[session_id] <= 0:
            del self.by_session[session_id]


# One of each per process, as the page pace.
STORED = StoredCache()
STREAMS = OpenStreams()


def websocket_routes() -> list[ResponsesWebsocketRoute]:
    routes = getattr(current_app, "websocket_routes", {}).values()
    return list({id(r): r for r in routes if isinstance(r, ResponsesWebsocketRoute)}.values())


async def gather(
    gw: Gateway, scope: frozenset[UUID] | None, routes: Iterable[ResponsesWebsocketRoute]
) -> Overview:
    stored = await STORED.get(gw, scope)
    live = await live_state(gw, stored.accounts)
    sessions: Counter[str] = Counter()
    for route in routes:
        sessions.update(route.open_sessions())
    return overview(stored.pools, stored.accounts, live, stored.activity, sessions, time.time())


def overview_blueprint() -> Blueprint:
    bp = Blueprint("overview", __name__)

    @bp.get(HOME)
    @operator_required()
    async def home(found: SignedIn) -> Response:
        now = await gather(console.gateway(), found.pool_ids, websocket_routes())
        return await render(
            "overview.html",
            ov=now,
            values=now.values(),
            meters=now.meters(),
            events=EVENTS,
            as_of=time.strftime("%H:%M:%S UTC", time.gmtime()),
        )

    @bp.get(EVENTS)
    async def events() -> Response:
        gw = console.gateway()
        token = console.read_cookie(SESSION_COOKIE)
        if not token:
            return plain(401, "Not signed in.")
        wait_s = PAGE_PACE.reserve(hash(token), trio.current_time())
        if wait_s is None:
            return plain(429, "Too many pages at once: wait a moment.", MAX_WAIT_S)
        await trio.sleep(wait_s)
        async with gw.admission.admit("admin"):
            watcher = await watch(gw, token)
        if watcher is None:
            return plain(401, "Not signed in.")
        if not STREAMS.open(watcher.session_id):
            return plain(429, "Too many live overviews open: close another tab.", RETRY_MS / 1000)
        try:
            await stream(gw, token, websocket_routes())
        finally:
            STREAMS.close(watcher.session_id)
        return PUSHED

    return bp


def plain(status: int, text: str, retry_after: float | None = None) -> Response:
    headers = {"retry-after": str(round(retry_after) or 1)} if retry_after else {}
    response = Response(
        text + "\n", status=status, headers=headers, content_type="text/plain; charset=utf-8"
    )
    return add_security_headers(response)


async def watch(gw: Gateway, token: str) -> Watcher | None:
    secret, idle = gw.config.secret_key, console.idle_timeout()
    return await gw.db.run(lambda conn: watching_session(conn, secret, token, idle))


def event(name: str, data: Any) -> dict[str, Any]:
    body = b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
    return {"type": "http.response.body", "body": body, "more_body": True}


async def stream(gw: Gateway, token: str, routes: list[ResponsesWebsocketRoute]) -> None:
    """Push the overview's changes until the lifetime ends, the session ends (an `end`
    event) or the client leaves (at once: nothing more is sent)."""
    request = current_request()
    send = request.send
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    retry = f"retry: {RETRY_MS}\n\n".encode()
    await send({"type": "http.response.body", "body": retry, "more_body": True})
    left = False

    async def watch_disconnect(cancel_scope: trio.CancelScope) -> None:
        nonlocal left
        await request.wait_for_disconnect()
        left = True
        cancel_scope.cancel()

    with trio.move_on_after(STREAM_LIFETIME_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, nursery.cancel_scope)
            try:
                await push(gw, token, routes, send)
            except Exception:  # a send to a client that is gone: nothing more to say
                left = True
            nursery.cancel_scope.cancel()
    if not left:
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def push(gw: Gateway, token: str, routes: list[ResponsesWebsocketRoute], send: Any) -> None:
    sent = LastSent()
    quiet_since = trio.current_time()
    failing = False  # logged once per run of failed refreshes
    while True:
        now: Overview | None = None
        signed_out = False
        try:
            async with gw.admission.admit("admin"):  # a slot per refresh, none in between
                found = await watch(gw, token)
                signed_out = found is None  # signed out, revoked, idle, operator disabled
                if found is not None:  # its Pools as they are now (an owner may change them)
                    now = await gather(gw, found.pool_ids, routes)
        except ServerOverloaded:
            pass  # the console is busy: this refresh is skipped
        except Exception as exc:  # the database is away, say: the next refresh tries again
            if not failing:
                log.warning("the overview's live refresh failed: %s", type(exc).__name__)
            failing = True
        else:
            failing = False
        if signed_out:
            await send(event("end", "signed-out"))
            return
        changes = sent.changes(now) if now is not None else None
        if changes is not None:
            await send(event("overview", changes))
            quiet_since = trio.current_time()
        elif trio.current_time() - quiet_since >= KEEPALIVE_S:
            await send({"type": "http.response.body", "body": b": idle\n\n", "more_body": True})
            quiet_since = trio.current_time()
        await trio.sleep(REFRESH_S)
