"""The fetched price catalog (table `pricing_catalog`, migration 0018): at most one row, the
catalog last fetched from `pricing.refresh_url`, stored only once it passed
`pooler.pricing.parse_catalog`. Not audited (fetched data, not an operator's change); a new
catalog is announced on CONFIG_CHANNEL so that every node reloads and picks it up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from psycopg.types.json import Jsonb

from pooler.db import notify
from pooler.pricing import Catalog, PricingError, bundled, parse_catalog
from pooler.store.common import CONFIG_CHANNEL, Conn

log = logging.getLogger("pooler.pricing")
NOTICE: Final = "pricing:catalog"


@dataclass(frozen=True, slots=True)
class FetchedState:
    source_url: str
    digest: str
    fetched_at: datetime  # when this content was first fetched
    checked_at: datetime  # when the URL last answered with it


def fetched_state(conn: Conn) -> FetchedState | None:
    row = conn.execute(
        "SELECT source_url, digest, fetched_at, checked_at FROM pricing_catalog"
    ).fetchone()
    return FetchedState(*row) if row else None


def save_fetched(conn: Conn, url: str, catalog: Catalog) -> bool:
    """Store `catalog` as fetched from `url` now; True (and announced) when it differs
    from the stored one."""
    before = fetched_state(conn)
    changed = before is None or (before.source_url, before.digest) != (url, catalog.digest)
    conn.execute(
        "INSERT INTO pricing_catalog (id, source_url, catalog, digest) VALUES (true, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET source_url = excluded.source_url,"
        " catalog = excluded.catalog, digest = excluded.digest, checked_at = now(),"
        " fetched_at = CASE WHEN pricing_catalog.digest = excluded.digest"
        "  AND pricing_catalog.source_url = excluded.source_url"
        "  THEN pricing_catalog.fetched_at ELSE now() END",
        (url, Jsonb(catalog.as_json()), catalog.digest),
    )
    if changed:
        notify(conn, CONFIG_CHANNEL, NOTICE)
    return changed


def catalog_in_use(conn: Conn, url: str, current: Catalog) -> Catalog:
    """The catalog a node prices with while `pricing.refresh_url` is `url`: the last one
    fetched (`current` itself when it is already that one), even from an earlier URL, for a
    refresh that fails (a new URL that does not answer) changes nothing; the bundled one
    when the refresh is off or nothing was fetched yet. A stored catalog this node cannot
    read leaves the bundled one."""
    if not url:
        return bundled()
    row = conn.execute("SELECT digest FROM pricing_catalog").fetchone()
    if row is None:
        return bundled()
    if row[0] == current.digest:
        return current
    stored = conn.execute("SELECT catalog FROM pricing_catalog").fetchone()
    try:
        return parse_catalog(stored[0]) if stored else bundled()
    except PricingError as exc:
        log.warning("the stored price catalog is refused (%s): the bundled one is used", exc)
        return bundled()
