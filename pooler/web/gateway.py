"""The running gateway: caches, the PoolSupervisor, the LogWriter, and what ties them to
the database. Handlers read its in-memory state; nothing on a request's path awaits Postgres.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
import trio

from pooler import pricing
from pooler.actors import messages as m
from pooler.actors.account import Credentials, RefreshResult, UsageResult, credentials_from_token
from pooler.actors.account_tree import AccountDeps
from pooler.actors.leader import Leader
from pooler.actors.log_writer import LogWriter
from pooler.actors.pool import PoolSupervisor
from pooler.actors.restart import RestartBudget
from pooler.actors.runtime import Supervisor, call
from pooler.actors.scheduler import Job, Scheduler
from pooler.actors.write_split import write_splitting
from pooler.cluster_jobs import cluster_jobs
from pooler.config import Config
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.drain import Drain
from pooler.instance_settings import InstanceSettings
from pooler.pricing import Catalog
from pooler.protocol.ratelimit import RateLimitSnapshot
from pooler.roles import may_lead
from pooler.routing.choose import PoolPolicy
from pooler.store import pricing as pricing_store
from pooler.store.common import (
    CONFIG_CHANNEL,
    CONTINUITY_CHANNEL,
    QUOTA_CHANNEL,
    TOKENS_CHANNEL,
)
from pooler.upstream import usage_api
from pooler.upstream.http1 import UpstreamPool
from pooler.web import runtime_store
from pooler.web.admission import Admission
from pooler.web.catalog import CATALOG_REFRESH_S, ModelCatalog
from pooler.web.heap_trim import TRIM_INTERVAL_S, HeapTrimmer
from pooler.web.ingress import Ingress, IngressCollector
from pooler.web.keys import KeyCache
from pooler.web.loop_lag import LoopLagMonitor
from pooler.web.metrics import LOOP_LAG_QUANTILES, Metrics, NodeState, node_state
from pooler.web.metrics_auth import MetricsAuth
from pooler.web.news_pacer import NewsPacer
from pooler.web.request_record import RequestRecord, log_line, reduced_record
from pooler.web.settings import GatewaySettings
from pooler.web.stats_jobs import StatsRollups
from pooler.write_stall import WriteStall

log = logging.getLogger("pooler.gateway")

RELOAD_DEBOUNCE_S = 0.05
# Write-behind of quota evidence and continuity pins: short, so another node sees a
# conversation's pin within about a second (DESIGN §11).
WRITE_BEHIND_INTERVAL_S = 0.5
PIN_NEWS_GATHER_S = 0.01
PIN_NEWS_SPACING_S = 0.05  # writes of pin news start at least this far apart (NewsPacer)
USAGE_TICK_S = 1.0
APPLY_CONFIG_TIMEOUT_S = 120.0
MAX_QUOTA_NOTES_PER_ACCOUNT = 8
RESTORE_SLICE = 2_000  # pins per RestorePins message
PINS_READ_OVERLAP = timedelta(seconds=5)
# The gateway's own actors: five crashes a minute each, then the process ends.
CORE_BUDGET = RestartBudget(5, 60.0)


class Gateway:
    def __init__(
        self, config: Config, db: Database, settings: GatewaySettings | None = None
    ) -> None:
        self.config = config
        self.db = db
        self.settings = settings or GatewaySettings()
        self.keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
        self.keys = KeyCache(config.secret_key)
        self.configured = False
        # Set on SIGTERM (pooler.drain).
        self.drain = Drain(config.drain_seconds, self.settings.drain_accept_grace_s)
        self.instance_settings = InstanceSettings()
        self.admission = Admission(self.instance_settings.bulkheads)
        # The HTTP server's write deadline (pooler.write_stall), kept to the setting.
        self.write_stall = WriteStall(self.instance_settings.write_stall_timeout_seconds)
        self._policies: dict[str, PoolPolicy] = {}
        self.pool_supervisor = PoolSupervisor(
            AccountDeps(
                upstream_base_url=f"{config.upstream_base_url}/backend-api/codex",
                load_credentials=self._load_credentials,
                refresh_credentials=self._refresh_credentials,
                persist_quota=self._note_quota,
                fetch_usage=self._fetch_usage,
            ),
            continuity_ttl=self.settings.continuity_ttl_s,
            on_pin_news=self._pin_news_now,
        )
        self.pool_mailbox = self.pool_supervisor.mailbox  # where leases are asked for
        self.actors: Supervisor | None = None  # while running: the PoolSupervisor, LogWriter
        # and Scheduler, each under its restart budget
        self.catalog = ModelCatalog(self.pool_supervisor)
        self.log_writer: LogWriter[RequestRecord] = LogWriter(
            self._write_logs, reduce=reduced_record
        )
        self.loop_lag = LoopLagMonitor()
        self.metrics = Metrics(self._metrics_state, self._node_state)
        self.ingress = Ingress()  # the allowlist gate (pooler.web.ingress)
        self.metrics.registry.register(IngressCollector(self.ingress))
        self.metrics_auth = MetricsAuth(config.secret_key)
        self._http = httpx.Client(timeout=20.0)
        # Control-plane calls under /backend-api that no single account's pool serves
        # (files, transcription); closed with the gateway.
        self.backend_upstream = UpstreamPool(
            f"{config.upstream_base_url}/backend-api", max_connections=64, max_idle=8
        )
        self._reload_wanted = trio.Event()
        # Reloads run one at a time, so one that read the database before a change cannot
        # be applied after one that read it after the change.
        self._reload_lock = trio.Lock()
        self._dirty_quota: dict[str, list[runtime_store.QuotaNote]] = {}
        # One write-behind at a time: a flush returns only once what it took, and what an
        # earlier flush had taken, is stored (a caller may rely on it, e.g. before a stop).
        self._write_behind_lock = trio.Lock()
        self.write_behind_refused: Counter[str] = Counter()
        # Names this process in its NOTIFY payloads, so it skips its own announcements.
        self.node_id = os.urandom(6).hex()
        self._request_id_prefix = "req_" + os.urandom(6).hex()
        self._request_ids = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self._pins_read_up_to: dict[str, datetime] = {}
        self._quota_from_peers: set[str] = set()
        self._pins_from_peers: set[str] = set()
        self._peer_news = trio.Event()
        # A conversation pinned anew or moved here: written within milliseconds.
        self.pin_news = NewsPacer(
            self._flush_pin_news, gather=PIN_NEWS_GATHER_S, spacing=PIN_NEWS_SPACING_S
        )
        # Memory freed by large bodies goes back, at a moment with no request in flight.
        self.heap_trimmer = HeapTrimmer(busy=self._requests_in_flight)
        self.stats_rollups = StatsRollups(db)  # the stats page's hourly rollups
        # The price catalog each request's cost is computed with (pooler.pricing): the
        # bundled one, or the one fetched from `pricing.refresh_url`; swapped whole.
        self.prices: Catalog = pricing.bundled()
        self.scheduler = Scheduler(
            [
                Job("heap_trim", TRIM_INTERVAL_S, self.heap_trimmer.run),
                Job("usage_tick", USAGE_TICK_S, self._usage_tick),
                Job("write_behind", WRITE_BEHIND_INTERVAL_S, self.flush_write_behind),
                Job("model_catalog", CATALOG_REFRESH_S, self.catalog.refresh, timeout_s=120.0),
            ]
        )
        # The once-per-cluster jobs, run while this node leads (pooler.roles).
        self.cluster_jobs = Scheduler(cluster_jobs(db, config, self.stats_rollups), run_first=True)
        self.leader = cluster_leader(config, db, self.node_id, self.cluster_jobs)

    # --- used by handlers (synchronous, in memory) ----------------------------------------

    def pool_policy(self, pool_id: str) -> PoolPolicy:
        return self._policies.get(pool_id) or PoolPolicy(pool_id)

    def models_etag(self, pool_id: str | None) -> str | None:
        """The ETag of the Pool's merged `/models` catalog (None while it is unknown)."""
        catalog = self.catalog.for_pool(pool_id) if pool_id else None
        return catalog.etag if catalog is not None else None

    def new_request_id(self) -> str:
        """`req_` and 24 hex digits: this process's random prefix and a counter. Unique
        across nodes and restarts without a system call per request (os.urandom was ~1 %
        of a short request's CPU under py-spy); an id is a label, never a secret."""
        return self._request_id_prefix + format(next(self._request_ids), "012x")

    @property
    def lease_decisions(self) -> Counter[str]:
        """Where the attempt loop counts lease decisions (/metrics)."""
        return self.metrics.counters.leases

    def _requests_in_flight(self) -> bool:
        return any(gate.in_flight for gate in self.admission.stats().values())

    def log_request(self, record: RequestRecord) -> None:
        log_line(record)
        counters = self.metrics.counters
        counters.count(record.route, record.outcome)
        if record.stream:
            counters.count_stream(record.transport, record.outcome, record.error_code)
        self.log_writer.enqueue(record)

    # --- lifetime -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                # The root of the actor tree: each of these restarts within its budget; past
                # it, the escalation leaves this nursery and ends the gateway.
                self.actors = actors = Supervisor(nursery)
                await actors.start_child("log-writer", self.log_writer.run, budget=CORE_BUDGET)
                await actors.start_actor(self.pool_supervisor, budget=CORE_BUDGET)
                await self.reload()
                await self.restore_continuity()
                await nursery.start(
                    partial(
                        self.db.listen_channels,
                        (CONFIG_CHANNEL, QUOTA_CHANNEL, TOKENS_CHANNEL, CONTINUITY_CHANNEL),
                        self._on_notify,
                        # Notifications sent while the listener was away are lost: reload.
                        on_reconnect=self._reload_wanted_now,
                    )
                )
                nursery.start_soon(self._reload_loop)
                nursery.start_soon(self._peer_news_loop)
                nursery.start_soon(self.pin_news.run)
                await actors.start_child("scheduler", self.scheduler.run, budget=CORE_BUDGET)
                nursery.start_soon(self._first_catalog)
                nursery.start_soon(self.loop_lag.run)
                self.configured = True
                task_status.started()
        finally:
            self.configured = False
            self.actors = None
            self._http.close()
            await self.pool_supervisor.aclose()
            with trio.move_on_after(2, shield=True):
                await self.backend_upstream.aclose()

    async def stand_for_leader(self) -> None:
        """Stand for the cluster's leader (the once-per-cluster jobs), once this node serves:
        a node that fails to start (a port in use) never leads, even for a moment."""
        if self.leader is not None and self.actors is not None:
            await self.actors.start_child("leader", self.leader.run, budget=CORE_BUDGET)

    async def reload(self) -> None:
        """Read the configuration and apply it (also called by the console after a change
        it must see applied on this node before it answers, e.g. a key rotated)."""
        async with self._reload_lock:
            await self._reload()

    async def _reload(self) -> None:
        snapshot = await self.db.run(runtime_store.load_runtime)
        self.keys.replace(snapshot.keys, snapshot.pools)
        self._policies = snapshot.runtime.pools
        self.instance_settings = snapshot.settings
        self.admission.configure(snapshot.settings.bulkheads)
        self.write_stall.seconds = snapshot.settings.write_stall_timeout_seconds
        await self._apply_prices(snapshot.settings.pricing.refresh_url)
        self.metrics_auth.configure(snapshot.settings.metrics_token_digest)
        await call(
            self.pool_mailbox,
            lambda reply: m.ApplyConfig(snapshot.runtime, reply),
            timeout=APPLY_CONFIG_TIMEOUT_S,
        )

    async def _apply_prices(self, url: str) -> None:
        """Price new rows with the catalog fetched from `url` (the leader's job stores it),
        or the bundled one while no URL is set."""
        current = self.prices
        if url:
            found = await self.db.run(lambda conn: pricing_store.catalog_in_use(conn, url, current))
        else:
            found = pricing.bundled()
        if found is not current:
            self.prices = found  # one reference swapped: a batch prices with one or the other
            log.info("pricing with the catalog of %s (%d models)", found.as_of, len(found.models))

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == CONFIG_CHANNEL:
            self._reload_wanted.set()
            return
        payload, _, origin = payload.partition("/")
        if origin == self.node_id:
            return  # this node's own write-behind: it knows already
        if channel == TOKENS_CHANNEL:
            self.pool_mailbox.try_send(m.ForwardToAccount(payload, m.ReloadCredentials()))
            return
        if channel == QUOTA_CHANNEL:
            self._quota_from_peers.add(payload)
        elif channel == CONTINUITY_CHANNEL:
            self._pins_from_peers.add(payload)
        self._peer_news.set()

    def _pin_news_now(self) -> None:
        self.pin_news.news()

    async def _flush_pin_news(self) -> None:
        """Write a new or moved pin within milliseconds rather than at the next tick: a
        conversation's next turn may reach another node that soon. Pins only used again
        wait for the tick (their expiry moves, nothing another node routes by)."""
        try:
            await self.flush_continuity()
        except Exception as exc:  # the tick's flush takes them again
            log.warning("continuity write failed: %s", type(exc).__name__)

    async def _peer_news_loop(self) -> None:
        """Read back what other nodes wrote: quota evidence and pins."""
        while True:
            await self._peer_news.wait()
            self._peer_news = trio.Event()
            accounts, self._quota_from_peers = self._quota_from_peers, set()
            pools, self._pins_from_peers = self._pins_from_peers, set()
            try:
                known = [a for a in accounts if a in self.pool_supervisor.accounts]
                if known:
                    evidence_by_account = await self.db.run(
                        partial(runtime_store.load_accounts_evidence, account_ids=known)
                    )
                    for account_id, pieces in evidence_by_account.items():
                        for evidence, observed_at in pieces:
                            message = m.QuotaEvidence(evidence, observed_at)
                            self.pool_mailbox.try_send(m.ForwardToAccount(account_id, message))
                for pool_id in pools:
                    await self.restore_pool_pins(pool_id)
            except Exception as exc:  # the next notification, or a reload, catches up
                log.warning("reading peer updates failed: %s", type(exc).__name__)
                await trio.sleep(1.0)

    def _reload_wanted_now(self) -> None:
        self._reload_wanted.set()

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_wanted.wait()
            await trio.sleep(RELOAD_DEBOUNCE_S)
            self._reload_wanted = trio.Event()
            try:
                await self.reload()
            except Exception as exc:  # keep serving from the last good configuration
                log.warning("configuration reload failed: %s", type(exc).__name__)
                await trio.sleep(1.0)
                self._reload_wanted.set()

    # --- account I/O (database and OAuth, in worker threads) ------------------------------

    async def _load_credentials(self, account_id: str) -> Credentials:
        access_token = await self.db.run(
            lambda conn: runtime_store.load_access_token(conn, self.keyring, account_id)
        )
        return credentials_from_token(access_token)

    async def _refresh_credentials(self, account_id: str, stale_token: str) -> RefreshResult:
        outcome = "cancelled"  # its deadline ran out, or the account stopped
        try:
            result = await self.db.run(
                lambda conn: runtime_store.refresh_account(
                    conn,
                    self.keyring,
                    self._http,
                    self.config.auth_base_url,
                    account_id,
                    stale_token,
                )
            )
            if result.access_token is not None:
                outcome = "refreshed"
            else:
                outcome = "reauth_required" if result.reauth_reason else "failed"
            return result
        except Exception:
            outcome = "error"
            raise
        finally:
            self.metrics.counters.refreshes[outcome] += 1

    def _note_quota(
        self, account_id: str, evidence: RateLimitSnapshot, observed_at: float, source: str
    ) -> None:
        notes = self._dirty_quota.setdefault(account_id, [])
        notes.append((evidence, observed_at, source))
        del notes[:-MAX_QUOTA_NOTES_PER_ACCOUNT]

    async def _fetch_usage(self, access_token: str, chatgpt_account_id: str) -> UsageResult:
        def fetch() -> UsageResult:
            try:
                evidence = usage_api.fetch_usage(
                    self._http,
                    self.config.upstream_base_url,
                    access_token,
                    chatgpt_account_id,
                    now=time.time(),
                )
            except usage_api.UsageUnauthorized:
                return UsageResult(None, unauthorized=True)
            except usage_api.UsageError:
                return UsageResult(None)
            return UsageResult(evidence)

        # Not abandoned on cancel: the call has its own timeout, and a thread left running
        # would hold a socket past the gateway's life.
        return await trio.to_thread.run_sync(fetch)

    async def _first_catalog(self) -> None:
        try:
            await self.catalog.refresh()
        except Exception as exc:  # the Scheduler's job tries again
            log.warning("model catalog refresh failed: %s", type(exc).__name__)

    async def _usage_tick(self) -> None:
        self.pool_mailbox.try_send(m.UsageTick())

    async def flush_write_behind(self) -> None:
        await self.flush_quota()
        await self.flush_continuity()

    async def flush_continuity(self) -> None:
        """Write behind the conversation pins changed since the last flush (hashed keys)."""
        async with self._write_behind_lock:
            await self._flush_continuity()

    async def _flush_continuity(self) -> None:
        pins = await call(self.pool_mailbox, m.TakeDirtyPins, timeout=APPLY_CONFIG_TIMEOUT_S)
        if not pins:
            return

        async def write(some: Sequence[runtime_store.Pin]) -> None:
            await self.db.run(
                lambda conn: runtime_store.store_pins(conn, some, self.node_id), autocommit=True
            )

        try:
            refused = await write_splitting(write, pins)
            self._count_refused("pins", refused)
        except Exception as exc:  # kept in memory; the next change of each pin retries
            log.warning("continuity write-behind failed: %s", type(exc).__name__)

    def _count_refused(self, kind: str, refused: Sequence[object]) -> None:
        """Write-behind items the database refused for their values: dropped, counted."""
        if refused:
            self.write_behind_refused[kind] += len(refused)
            log.error("%s write-behind: %d item(s) refused by the database", kind, len(refused))

    async def restore_continuity(self) -> None:
        """Read the pins back at start-up, so a restart keeps conversations on their account."""
        for pool_id in list(self._policies):
            await self.restore_pool_pins(pool_id)

    async def restore_pool_pins(self, pool_id: str) -> None:
        """Read the Pool's pins written since the last read (by other nodes, or before a
        restart), in slices, so the supervisor never stops routing for long."""
        since = self._pins_read_up_to.get(pool_id)
        if since is not None:  # a write stamped earlier may commit after the last read
            since -= PINS_READ_OVERLAP
        pins, latest = await self.db.run(
            partial(runtime_store.load_pins, pool_id=pool_id, since=since)
        )
        if latest is not None:
            self._pins_read_up_to[pool_id] = latest
        for start in range(0, len(pins), RESTORE_SLICE):
            piece = tuple(pins[start : start + RESTORE_SLICE])
            await self.pool_mailbox.send(m.RestorePins(pool_id, piece))

    async def flush_quota(self) -> None:
        async with self._write_behind_lock:
            await self._flush_quota()

    async def _flush_quota(self) -> None:
        if not self._dirty_quota:
            return
        dirty, self._dirty_quota = self._dirty_quota, {}

        async def write(some: Sequence[tuple[str, list[runtime_store.QuotaNote]]]) -> None:
            notes = dict(some)
            await self.db.run(lambda conn: runtime_store.store_quota(conn, notes, self.node_id))

        try:  # an account whose evidence is refused never holds back the others
            refused_quota = await write_splitting(write, list(dirty.items()))
            self._count_refused("quota", refused_quota)
        except Exception as exc:
            log.warning("quota write-behind failed: %s", type(exc).__name__)
            for account_id, notes in dirty.items():
                kept = self._dirty_quota.setdefault(account_id, [])
                kept[:0] = notes
                del kept[:-MAX_QUOTA_NOTES_PER_ACCOUNT]

    async def _write_logs(self, records: Any) -> None:
        prices = self.prices  # the catalog as it is now: a later swap changes no written row
        await runtime_store.store_request_records(self.db, records, prices)

    def _node_state(self) -> NodeState:
        return node_state(self.leader, (self.scheduler, self.cluster_jobs))

    def _metrics_state(self) -> dict[str, Any]:
        handles = list(self.pool_supervisor.accounts.values())
        return {
            "accounts_by_lifecycle": Counter(h.snapshot.lifecycle for h in handles),
            "in_flight": sum(h.snapshot.in_flight for h in handles),
            "continuity_pins": sum(len(m) for m in self.pool_supervisor.continuity.values()),
            "actor_crashes": self.pool_supervisor.crashes,
            "log_pending": self.log_writer.pending,
            "log_lag": self.log_writer.lag_seconds(),
            "log_written": self.log_writer.written,
            "log_dropped": self.log_writer.dropped,
            "log_reduced": self.log_writer.reduced,
            "log_refused": self.log_writer.refused,
            "write_behind_refused": dict(self.write_behind_refused),
            "loop_lag": {q: self.loop_lag.quantile(q) for q in LOOP_LAG_QUANTILES},
            "loop_lag_histogram": self.loop_lag.histogram(),
            "circuits": Counter(
                (route_class, circuit.state)
                for h in handles
                for route_class, circuit in h.state.circuits.items()
                if circuit.state != "closed"
            ),
            "circuit_transitions": sum(h.state.circuit_transitions for h in handles),
            "admission": self.admission.stats(),
        }


def cluster_leader(config: Config, db: Database, node: str, jobs: Scheduler) -> Leader | None:
    """The election for the once-per-cluster `jobs`, if this process's role takes part."""
    if not may_lead(config.role):
        return None
    return Leader(db.url, jobs.run, node=node)
