"""Fetching a newer price catalog from `pricing.refresh_url` (off when empty, the default):
a once-per-cluster job (pooler.cluster_jobs) that stores what it fetched for every node.

Every CHECK_INTERVAL_S the leader reads the settings; when the URL is set and was not
checked within `pricing.refresh_interval_hours`, it GETs it under strict bounds (a
timeout, no redirects, at most MAX_CATALOG_BYTES read, status 200) and checks it with
`pooler.pricing.parse_catalog` (schema, bounds on every price). A catalog that passes is
stored (pooler.store.pricing) and, when it differs, announced: each node reloads and
prices new rows with it; rows already written keep their cost. Anything else (unreachable,
too large, not a catalog) leaves the current catalog in place and is logged with its reason
and the URL's host only (never the body, nor a query string that may hold a token).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

import httpx
import trio

from pooler.actors.scheduler import Job
from pooler.db import Database
from pooler.pricing import MAX_CATALOG_BYTES, Catalog, PricingError, parse_catalog
from pooler.store import pricing as pricing_store
from pooler.store.instance_settings import get_instance_settings

log = logging.getLogger("pooler.pricing")

CHECK_INTERVAL_S: Final = 300.0
FETCH_TIMEOUT_S: Final = 10.0  # to connect, and between two reads
TOTAL_TIMEOUT_S: Final = 30.0  # for the whole body
JOB_TIMEOUT_S: Final = 60.0


class FetchError(Exception):
    """The URL gave no usable catalog; the message says why (no body)."""


def fetch_catalog(client: httpx.Client, url: str, total_s: float = TOTAL_TIMEOUT_S) -> Catalog:
    """GET `url` and check what it answers, in at most about `total_s` however slowly the
    body drips (blocking: run it in a thread)."""
    deadline = time.monotonic() + total_s
    try:
        with client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_CATALOG_BYTES:
                raise FetchError(f"larger than {MAX_CATALOG_BYTES} bytes")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_CATALOG_BYTES:
                    raise FetchError(f"larger than {MAX_CATALOG_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"not read within {total_s:g} s")
    except httpx.HTTPError as exc:
        raise FetchError(type(exc).__name__) from None
    try:
        return parse_catalog(bytes(body))
    except PricingError as exc:
        raise FetchError(str(exc)) from None


def is_due(state: pricing_store.FetchedState | None, url: str, hours: float, now: datetime) -> bool:
    """Whether `url` should be fetched now: never fetched, another URL, or last checked
    `hours` ago or more."""
    if state is None or state.source_url != url:
        return True
    return now - state.checked_at >= timedelta(hours=hours)


class PricingRefresh:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.fetches = 0
        self.failures = 0
        # After a failure the URL is tried again no sooner than this (one bad URL must
        # not be fetched every check).
        self._retry_after: datetime | None = None

    def jobs(self) -> list[Job]:
        return [Job("pricing_refresh", CHECK_INTERVAL_S, self._run, timeout_s=JOB_TIMEOUT_S)]

    async def _run(self) -> None:
        await self.run_once()

    async def run_once(self, *, force: bool = False) -> bool | None:
        """One check: None when nothing was due, else whether a new catalog was stored."""
        now = datetime.now(UTC)
        _, settings = await self.db.run(get_instance_settings)
        url, hours = settings.pricing.refresh_url, settings.pricing.refresh_interval_hours
        if not url:
            return None
        state = await self.db.run(pricing_store.fetched_state)
        if not force and (
            not is_due(state, url, hours, now)
            or (self._retry_after is not None and now < self._retry_after)
        ):
            return None
        self.fetches += 1
        try:
            catalog = await trio.to_thread.run_sync(self._fetch, url)
        except FetchError as exc:
            self.failures += 1
            self._retry_after = now + min(timedelta(hours=hours), timedelta(hours=1))
            log.warning(
                "price catalog from %s refused (%s): the current catalog stays",
                urlsplit(url).hostname,
                exc,
            )
            return False
        self._retry_after = None
        changed = await self.db.run(lambda conn: pricing_store.save_fetched(conn, url, catalog))
        if changed:
            log.info(
                "price catalog of %s (%d models) fetched from %s",
                catalog.as_of,
                len(catalog.models),
                urlsplit(url).hostname,
            )
        return changed

    @staticmethod
    def _fetch(url: str) -> Catalog:
        timeout = httpx.Timeout(FETCH_TIMEOUT_S)
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            return fetch_catalog(client, url)
