"""The once-per-cluster jobs (`pooler.roles`): what the leader runs, on whichever node leads.

One list for both kinds of node that may lead (an `all` gateway and a `worker`/`scheduler`
process), so a job added here runs wherever the leader is.
"""

from __future__ import annotations

from pooler.actors.scheduler import Job
from pooler.alerts.job import AlertJob
from pooler.config import Config
from pooler.crypto import Keyring
from pooler.db import Database
from pooler.pricing_refresh import PricingRefresh
from pooler.retention import Retention
from pooler.web.stats_jobs import StatsRollups


def cluster_jobs(db: Database, config: Config, stats: StatsRollups | None = None) -> list[Job]:
    """The leader's jobs. `stats`: the node's own rollup runner, when it keeps one (the
    gateway does, for the console and tests to run a pass at once)."""
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    return [
        *(stats or StatsRollups(db)).jobs(),
        *Retention(db).jobs(),
        *PricingRefresh(db).jobs(),
        *AlertJob(db, keyring).jobs(),
    ]
