"""What the running gateway asks of the store, translated to its in-memory shapes.

Synchronous functions run by `Database.run` in a worker thread, inside one transaction
(`write_request_records` makes its own and `store_pins` is one statement: either may run
with `autocommit=True`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import httpx
import trio

from pooler import pricing
from pooler.actors.account import RefreshResult
from pooler.actors.pool import AccountConfig, RuntimeConfig
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.instance_settings import InstanceSettings
from pooler.pricing import Catalog
from pooler.protocol.jwt import jwt_expiry
from pooler.protocol.ratelimit import DEFAULT_FAMILY, Credits, RateLimitSnapshot, ReportedWindow
from pooler.routing.choose import PoolPolicy
from pooler.routing.evidence import apply_evidence
from pooler.routing.snapshot import AccountSnapshot
from pooler.store import accounts as account_store
from pooler.store import credentials as credential_store
from pooler.store import instance_settings as settings_store
from pooler.store import logs as log_store
from pooler.store import quota as quota_store
from pooler.store.common import Conn
from pooler.store.quota import AccountQuota, CreditsRecord, WindowRecord
from pooler.store.runtime import load_runtime_snapshot
from pooler.upstream.oauth import RefreshFailed, refresh_tokens
from pooler.web.keys import KeyInfo, PoolInfo, key_info, pool_info
from pooler.web.request_record import RequestRecord


@dataclass(frozen=True, slots=True)
class LoadedRuntime:
    keys: dict[bytes, KeyInfo]
    pools: dict[str, PoolInfo]
    runtime: RuntimeConfig
    settings: InstanceSettings


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _datetime(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def load_runtime(conn: Conn) -> LoadedRuntime:
    snapshot = load_runtime_snapshot(conn)
    keys = {digest: key_info(k) for digest, k in snapshot.keys.items()}
    pools = {str(p.id): pool_info(p) for p in snapshot.pools.values()}
    policies = {
        str(p.id): PoolPolicy(
            str(p.id),
            p.strategy,
            float(p.quota_threshold_percent),
            int(p.retry_budget),
            {str(e.account_id): int(e.weight) for e in snapshot.assignments.get(p.id, ())},
            continuity=bool(p.continuity_enabled),
        )
        for p in snapshot.pools.values()
    }
    stored_quota = quota_store.load_quota(conn)
    accounts: dict[str, AccountConfig] = {}
    for account in snapshot.accounts.values():
        quota = quota_snapshot(str(account.id), stored_quota.get(account.id))
        accounts[str(account.id)] = AccountConfig(
            account_id=str(account.id),
            label=account.label,
            chatgpt_account_id=account.chatgpt_account_id,
            lifecycle=account.lifecycle,
            plan_type=account.plan_type,
            primary=quota.primary,
            secondary=quota.secondary,
            scoped=quota.scoped,
            has_credits=quota.has_credits,
        )
    assignments = {
        str(pool_id): tuple(str(entry.account_id) for entry in entries)
        for pool_id, entries in snapshot.assignments.items()
        if str(pool_id) in pools and pools[str(pool_id)].status == "active"
    }
    caps = {str(p.id): int(p.max_in_flight_per_account) for p in snapshot.pools.values()}
    _, settings = settings_store.get_instance_settings(conn)
    runtime = RuntimeConfig(policies, accounts, assignments, caps, settings)
    return LoadedRuntime(keys, pools, runtime, settings)


def stored_evidence(quota: AccountQuota | None) -> list[tuple[RateLimitSnapshot, float]]:
    """Stored quota as evidence, one piece per window (each keeps its own observation time,
    so an older stored window never overwrites a newer one known in memory)."""
    if quota is None:
        return []
    pieces: list[tuple[RateLimitSnapshot, float]] = []
    for w in quota.windows:
        window = ReportedWindow(w.used_percent, w.window_minutes, _epoch(w.reset_at))
        pair = (window, None) if w.window == "primary" else (None, window)
        if w.family == DEFAULT_FAMILY:
            evidence = RateLimitSnapshot(pair[0], pair[1], None, {}, None, None)
        else:
            names = {w.family: w.limit_name} if w.limit_name else {}
            evidence = RateLimitSnapshot(None, None, None, {w.family: pair}, None, None, names)
        pieces.append((evidence, w.observed_at.timestamp()))
    if quota.credits is not None:
        c = quota.credits
        credits = Credits(c.has_credits, c.unlimited, c.balance)
        pieces.append(
            (RateLimitSnapshot(None, None, credits, {}, None, None), c.observed_at.timestamp())
        )
    return pieces


def quota_snapshot(account_id: str, quota: AccountQuota | None) -> AccountSnapshot:
    """The routing view of stored quota (an account snapshot with only quota fields set)."""
    snapshot = AccountSnapshot(account_id, account_id)
    for evidence, observed_at in stored_evidence(quota):
        snapshot = apply_evidence(snapshot, evidence, observed_at)
    return snapshot


def load_accounts_evidence(
    conn: Conn, account_ids: Sequence[str]
) -> dict[str, list[tuple[RateLimitSnapshot, float]]]:
    """Stored evidence of several accounts at once, one piece per window."""
    stored = quota_store.load_quota(conn, [UUID(a) for a in account_ids])
    return {str(account_id): stored_evidence(quota) for account_id, quota in stored.items()}


def load_access_token(conn: Conn, keyring: Keyring, account_id: str) -> str:
    return credential_store.load_account_credentials(conn, keyring, UUID(account_id)).access_token


def refresh_account(
    conn: Conn,
    keyring: Keyring,
    http: httpx.Client,
    auth_base_url: str,
    account_id: str,
    stale_token: str,
) -> RefreshResult:
    """Single-flight across nodes: lock, re-read, refresh only if nobody did, store."""
    uuid = UUID(account_id)
    credential_store.account_refresh_lock(conn, uuid)
    stored = credential_store.load_account_credentials(conn, keyring, uuid)
    if stored.access_token != stale_token:
        return RefreshResult(stored.access_token)  # another request or node refreshed it
    try:
        tokens = refresh_tokens(http, auth_base_url, stored.refresh_token)
    except RefreshFailed as failure:
        if failure.permanent:
            account_store.set_lifecycle(
                conn, uuid, "reauth_required", failure.code, actor="gateway"
            )
            return RefreshResult(None, reauth_reason=failure.code)
        return RefreshResult(None, error=failure.code)
    credential_store.store_refreshed_tokens(
        conn,
        keyring,
        uuid,
        tokens.access_token,
        tokens.refresh_token,
        tokens.id_token,
        _datetime(jwt_expiry(tokens.access_token)),
    )
    return RefreshResult(tokens.access_token)


QuotaNote = tuple[RateLimitSnapshot, float, str]  # evidence, observed at, source


def _quota_records(
    notes: Sequence[QuotaNote],
) -> tuple[list[WindowRecord], CreditsRecord | None]:
    windows: dict[tuple[str, str], WindowRecord] = {}
    credits: CreditsRecord | None = None
    for evidence, observed, source in notes:
        at = datetime.fromtimestamp(observed, UTC)
        families: list[tuple[str, ReportedWindow | None, ReportedWindow | None]] = [
            (DEFAULT_FAMILY, evidence.primary, evidence.secondary)
        ]
        families.extend((family, p, s) for family, (p, s) in evidence.extra.items())
        for family, primary, secondary in families:
            name = evidence.limit_names.get(family)
            for kind, window in (("primary", primary), ("secondary", secondary)):
                if window is None:
                    continue
                windows[(family, kind)] = WindowRecord(
                    family,
                    kind,
                    window.used_percent,
                    window.window_minutes,
                    _datetime(window.reset_at),
                    at,
                    name,
                    source,
                )
        if evidence.credits is not None:
            c = evidence.credits
            credits = CreditsRecord(c.has_credits, c.unlimited, c.balance, at)
    return list(windows.values()), credits


def store_quota(conn: Conn, notes: dict[str, list[QuotaNote]], origin: str = "") -> None:
    for account_id, account_notes in notes.items():
        windows, credits = _quota_records(account_notes)
        if windows or credits is not None:
            quota_store.record_quota(conn, UUID(account_id), windows, credits, origin)


def _log_values(record: RequestRecord, prices: Catalog) -> list[Any]:
    """The row of `record` as values in LOG_COLUMNS order (RequestLogRow's fields), before
    `logs.log_values` makes them storable; ids stay text (PostgreSQL reads them as uuid).
    Built directly, not through a RequestLogRow: it runs for every request."""
    usage = record.usage
    model = record.model[:200] if record.model else None
    if usage is not None:
        cost = prices.cost(
            model, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens
        )
        tokens: tuple[int | None, ...] = (
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            usage.total_tokens,
        )
    else:
        cost, tokens = None, (None, None, None, None, None)
    ttfb = record.ttfb_ms
    return [
        record.request_id,
        datetime.fromtimestamp(record.created_at, UTC),
        record.route,
        record.outcome,
        record.pool_id or None,
        record.key_prefix,
        record.transport,
        model,
        record.stream,
        record.status_code,
        record.error_code,
        record.account_id or None,
        record.account_label,
        record.retries,
        round(record.duration_ms, 3),
        round(ttfb, 3) if ttfb is not None else None,
        *tokens,
        record.exclusions or None,
        record.user_agent,
        record.continuity,
        record.continuity_from or None,
        record.client_request_id,
        record.client_ip,
        record.request_bytes,
        record.response_bytes,
        record.routing,
        cost,
    ]


def _attempt_values(record: RequestRecord) -> list[list[Any]]:
    """`record`'s attempts as values in ATTEMPT_COLUMNS order (AttemptRow's fields)."""
    base = record.created_at - (record.started)  # epoch of the monotonic zero, approximately
    return [
        [
            record.request_id,
            a.attempt,
            datetime.fromtimestamp(base + a.started_at, UTC),
            a.outcome or "unknown",
            a.account_id or None,  # text: PostgreSQL reads it as uuid
            a.account_label,
            round(a.duration_ms, 3),
            a.status_code,
            a.error_code,
            round(a.ttfb_ms, 3) if a.ttfb_ms is not None else None,
        ]
        for a in record.attempts
    ]


def write_request_records(
    conn: Conn, records: Sequence[RequestRecord], prices: Catalog | None = None
) -> None:
    """Store a batch of request records, their log rows and attempts (one COPY each), in
    one transaction of its own (a savepoint in the caller's, if any)."""
    log_store.insert_log_values(conn, *_record_values(records, prices or pricing.bundled()))


def _record_values(
    records: Sequence[RequestRecord], prices: Catalog
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The storable log rows and attempt rows of `records`."""
    return (
        [log_store.log_values(_log_values(r, prices)) for r in records],
        [log_store.attempt_values(values) for r in records for values in _attempt_values(r)],
    )


# Records formatted per step of the event loop: ~20 µs each (two attempts), a step ~0.2 ms.
RECORDS_PER_STEP: Final = 8


async def store_request_records(
    db: Database, records: Sequence[RequestRecord], prices: Catalog
) -> None:
    """`write_request_records` as the gateway's LogWriter does it: the COPY lines are made
    here, on the event loop, RECORDS_PER_STEP records a step, and the worker thread only
    sends them. Made in the thread, they kept it running Python for ~1.5 ms a batch while
    the event loop's thread waited for the GIL (store.logs)."""
    logs = bytearray()
    attempts = bytearray()
    for n, record in enumerate(records, 1):
        log_store.add_copy_line(logs, log_store.log_values(_log_values(record, prices)))
        for values in _attempt_values(record):
            log_store.add_copy_line(attempts, log_store.attempt_values(values))
        if n % RECORDS_PER_STEP == 0:
            await trio.lowlevel.checkpoint()
    log_lines, attempt_lines = bytes(logs), bytes(attempts)
    await db.run(
        lambda conn: log_store.insert_log_copy(
            conn, log_lines, attempt_lines, lambda: _record_values(records, prices)
        ),
        autocommit=True,  # it makes its own transaction
    )


Pin = tuple[str, bytes, str, float]  # pool id, key digest, account id, expiry


def store_pins(conn: Conn, pins: Sequence[Pin], origin: str = "") -> None:
    from pooler.store.continuity import upsert_continuity_pins
    from pooler.store.models import ContinuityPin

    upsert_continuity_pins(
        conn,
        [
            ContinuityPin(UUID(pool), key, UUID(account), datetime.fromtimestamp(expiry, UTC))
            for pool, key, account, expiry in pins
        ],
        origin,
    )


def load_pins(
    conn: Conn, pool_id: str, since: datetime | None = None
) -> tuple[list[tuple[bytes, str, float]], datetime | None]:
    """The Pool's pins written after `since`, and the time to ask from next."""
    from pooler.store.continuity import load_continuity_pins_since

    pins, latest = load_continuity_pins_since(conn, UUID(pool_id), since)
    found = [
        (bytes(pin.key_digest), str(pin.account_id), pin.expires_at.timestamp()) for pin in pins
    ]
    return found, latest
