"""The model catalog cache: each account's upstream `/models` list, kept in memory.

The Scheduler refreshes every account's list (conditionally, with its last ETag); the
Pool's catalog is the union of its accounts' lists (first seen wins, upstream order and
fields kept), served from memory with a weak ETag. Each account's slugs also go to its
actor (`SetModels`), so routing sends a request only to accounts that list its model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from pooler.actors import messages as m
from pooler.actors.runtime import call
from pooler.errors import ModelNotFound
from pooler.routing.snapshot import normalize_scope
from pooler.upstream.errors import UpstreamTransportError
from pooler.web.leasing import account_headers, release

if TYPE_CHECKING:
    from pooler.actors.pool import PoolSupervisor

log = logging.getLogger("pooler.catalog")

CATALOG_REFRESH_S = 300.0  # the Codex CLI itself caches /models for 300 s (protocol §1.5)
CATALOG_FETCH_TIMEOUT_S = 15.0
CATALOG_CONCURRENCY = 8
CATALOG_CLIENT_VERSION = "0.169.0"
CATALOG_ROUTE_CLASS = "models"
MAX_CATALOG_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AccountCatalog:
    models: tuple[dict[str, Any], ...]
    etag: str | None  # the upstream's, sent back as If-None-Match


@dataclass(frozen=True, slots=True)
class MergedCatalog:
    body: bytes
    etag: str  # weak: W/"<hash of body>"
    # Every slug as listed and normalized as routing matches them (the exact spelling is
    # found without normalizing, on every request).
    scopes: frozenset[str] = frozenset()
    listed: tuple[str, ...] = ()  # the slugs a client is shown (not `visibility: none`)


def etag_matches(if_none_match: bytes | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): `W/` is ignored on either side; `*` matches."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for tag in if_none_match.decode("latin-1").split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def merge(catalogs: list[AccountCatalog]) -> MergedCatalog:
    seen: set[str] = set()
    models: list[dict[str, Any]] = []
    for catalog in catalogs:
        for model in catalog.models:
            slug = model.get("slug")
            if isinstance(slug, str) and slug not in seen:
                seen.add(slug)
                models.append(model)
    body = json.dumps({"models": models}, separators=(",", ":")).encode()
    return MergedCatalog(
        body,
        'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        frozenset(seen) | {normalize_scope(slug) for slug in seen},
        tuple(str(x["slug"]) for x in models if x.get("visibility") != "none"),
    )


def parse_models(body: bytes) -> tuple[dict[str, Any], ...] | None:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return None
    return tuple(x for x in models if isinstance(x, dict) and isinstance(x.get("slug"), str))


class ModelCatalog:
    def __init__(self, supervisor: PoolSupervisor) -> None:
        self.supervisor = supervisor
        self.accounts: dict[str, AccountCatalog] = {}
        # pool id -> (its members when merged, the merge); cleared when a list changes
        self._merged: dict[str, tuple[tuple[str, ...], MergedCatalog]] = {}
        self.refreshes = 0
        self._refreshing = trio.Lock()  # one refresh at a time: a late answer never wins

    # --- serving (synchronous, in memory) ---------------------------------------------

    def for_pool(self, pool_id: str) -> MergedCatalog | None:
        """The Pool's merged catalog; None while no member's list is known."""
        members = self.supervisor.assignments.get(pool_id, ())
        cached = self._merged.get(pool_id)
        if cached is not None and (cached[0] is members or cached[0] == members):
            return cached[1]
        known = [self.accounts[a] for a in members if a in self.accounts]
        if not known:
            return None
        merged = merge(known)
        self._merged[pool_id] = (members, merged)
        return merged

    def check_model(self, pool_id: str, model: str) -> None:
        """Raise ModelNotFound when no account of the Pool serves `model`.

        The Pool serves what its `/models` lists (the merged catalog of the accounts whose
        list is known). While that is not the whole answer it refuses nothing: before any
        account's list is known, or while an active account's list is not known yet (just
        added, or its fetch failed), the request goes on and the upstream decides (its own
        400 is relayed). A paused account's list is never fetched: it serves nothing now.
        """
        catalog = self.for_pool(pool_id)
        if catalog is None or model in catalog.scopes or normalize_scope(model) in catalog.scopes:
            return
        if any(self._may_serve_unlisted(a) for a in self.supervisor.assignments.get(pool_id, ())):
            return
        raise ModelNotFound(model, catalog.listed)

    def _may_serve_unlisted(self, account_id: str) -> bool:
        if account_id in self.accounts:
            return False
        handle = self.supervisor.accounts.get(account_id)
        snapshot = handle.snapshot if handle is not None else None
        return snapshot is not None and snapshot.alive and snapshot.lifecycle == "active"

    # --- refreshing (the Scheduler's job, and once at start) ----------------------------

    async def refresh(self) -> None:
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        account_ids = list(self.supervisor.accounts)
        for gone in set(self.accounts) - set(account_ids):
            del self.accounts[gone]
            self._merged.clear()
        limiter = trio.CapacityLimiter(CATALOG_CONCURRENCY)

        async def one(account_id: str) -> None:
            async with limiter:
                await self.refresh_account(account_id)

        async with trio.open_nursery() as nursery:
            for account_id in account_ids:
                nursery.start_soon(one, account_id)
        self.refreshes += 1

    async def refresh_account(self, account_id: str) -> None:
        """Fetch one account's list; a failure keeps the last known one."""
        handle = self.supervisor.accounts.get(account_id)
        if handle is None:
            return
        try:
            lease: m.Lease | None = await call(
                handle.mailbox,
                lambda reply: m.Confirm(reply, CATALOG_ROUTE_CLASS),
                timeout=CATALOG_FETCH_TIMEOUT_S,
            )
        except Exception as exc:
            log.info("model catalog of %s: no lease (%s)", account_id, type(exc).__name__)
            return
        if lease is None:
            return
        previous = self.accounts.get(account_id)
        headers = account_headers(lease, ((b"accept", b"application/json"),))
        if previous is not None and previous.etag:
            headers.append((b"if-none-match", previous.etag.encode()))
        target = f"/models?client_version={CATALOG_CLIENT_VERSION}"
        status, body, etag = 0, b"", None
        try:
            with trio.fail_after(CATALOG_FETCH_TIMEOUT_S):
                async with lease.upstream.request("GET", target, headers) as response:
                    body = (await response.read())[:MAX_CATALOG_BODY]
                    status = response.status
                    etag = next(
                        (v.decode("latin-1") for k, v in response.headers if k == b"etag"), None
                    )
        except (trio.TooSlowError, UpstreamTransportError) as exc:
            log.info("model catalog of %s: %s", lease.label, type(exc).__name__)
        finally:
            # Neutral: a catalog fetch says nothing about the account's quota or health.
            release(lease, m.Outcome(m.CANCELLED))
        if status == 304 and previous is not None:
            return
        models = parse_models(body) if status == 200 else None
        if models is None:
            if status:
                log.info("model catalog of %s: upstream answered %d", lease.label, status)
            return
        self.accounts[account_id] = AccountCatalog(models, etag)
        self._merged.clear()
        slugs = frozenset(normalize_scope(str(x["slug"])) for x in models) or None
        handle.mailbox.try_send(m.SetModels(slugs))
