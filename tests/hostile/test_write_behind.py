"""The quota write-behind is never wedged by one account's evidence: a piece the database
(or the row builder) refuses is dropped and counted, and the other accounts' evidence is
stored. Before, the whole flush failed, was put back, and failed again at every tick."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import trio
from harness import open_stack

from pooler.protocol.ratelimit import RateLimitSnapshot, ReportedWindow
from pooler.store.logs import recent_request_logs
from pooler.store.quota import load_quota
from pooler.web.request_record import RequestRecord


def evidence(used: float) -> RateLimitSnapshot:
    return RateLimitSnapshot(
        ReportedWindow(used, 300, time.time() + 3600), None, None, {}, None, None
    )


async def test_refused_quota_evidence_is_dropped_and_the_rest_stored(
    db_url: str, tmp_path: Path
) -> None:
    async with open_stack(db_url, tmp_path, accounts=2) as stack:
        gateway = stack.gateway
        good = sorted((await stack.account_ids()).values())
        with trio.fail_after(30):
            async with gateway._write_behind_lock:  # no scheduled flush in between
                gateway._note_quota("not-an-account-id", evidence(10.0), time.time(), "headers")
                for account_id in good:
                    gateway._note_quota(account_id, evidence(42.5), time.time(), "headers")
            await gateway.flush_quota()
            assert gateway.write_behind_refused["quota"] == 1
            assert not gateway._dirty_quota  # nothing left to fail again at the next tick
            stored = await stack.database.run(load_quota)
            for account_id in good:
                windows = stored[UUID(account_id)].windows
                assert [w.used_percent for w in windows if w.window == "primary"] == [42.5]
            async with stack.client() as client:
                metrics = (await client.get("/metrics")).text
            assert 'codex_pooler_write_behind_refused_total{kind="quota"} 1.0' in metrics


async def test_a_row_the_database_refuses_is_stored_reduced(db_url: str, tmp_path: Path) -> None:
    # The sanitizer leaves nothing for PostgreSQL to refuse in text; a CHECK constraint
    # (continuity IN (...)) stands for whatever else a row might carry one day.
    async with open_stack(db_url, tmp_path, accounts=1) as stack:
        gateway = stack.gateway
        refused = RequestRecord("req_refused", "responses", "http", model="m", continuity="bogus")
        honest = RequestRecord("req_honest", "responses", "http", model="m", continuity="new")
        with trio.fail_after(30):
            gateway.log_request(refused)
            gateway.log_request(honest)
            await stack.wait_for_logs(2)
        rows = await stack.database.run(lambda conn: recent_request_logs(conn, 10))
        by_id = {row.request_id: row for row in rows}
        assert by_id["req_honest"].model == "m" and by_id["req_honest"].continuity == "new"
        assert by_id["req_refused"].model is None
        assert by_id["req_refused"].error_code == "log_row_reduced"
        assert gateway.log_writer.reduced == 1 and gateway.log_writer.refused == 0
