"""What the alert tests share: the test as the cluster's leader, and the alert pass it runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from harness import Stack

from pooler.actors.leader import LEADER_LOCK_KEY
from pooler.alerts.job import AlertJob
from pooler.crypto import Keyring

QUIET = {
    "usage_poll_interval_seconds": 86_400,
    "circuit_failure_threshold": 1000,  # failures here must not stop the successes after
}


@contextmanager
def leading(db_url: str) -> Iterator[None]:
    """The test holds the leader's lock: the gateway never leads, so the only alert passes
    are the test's own (run as the leader's Scheduler runs them)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
        assert row is not None and row[0]
        yield


def keyring(stack: Stack) -> Keyring:
    return Keyring(stack.config.upstream_secret_key, stack.config.upstream_secret_keys_old)


def job(stack: Stack, **kwargs: Any) -> AlertJob:
    return AlertJob(stack.database, keyring(stack), backoff_base_s=0.0, **kwargs)
