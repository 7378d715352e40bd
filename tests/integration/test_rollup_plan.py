"""The per-minute rollup pass reads the hour's raw rows once (issue 17): its plan scans
`request_logs` once and keeps no intermediate copy of the rows (the old plan built a JSON
key per row into a CTE, spilled it to disk at bench volumes and read it three times). Its
results are checked against a direct aggregation in test_stats_rollups.py."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from pooler import latency_histogram
from pooler.store import rollups


def test_a_rollup_pass_scans_the_raw_rows_once_without_a_materialized_copy(db_url: str) -> None:
    start = rollups.hour_of(datetime.now(UTC))
    params = {
        "start": start,
        "end": start + rollups.HOUR,
        "edges": list(latency_histogram.EDGES),
        "top": rollups.TOP_CODES_PER_ROW,
    }
    with psycopg.connect(db_url) as conn:
        plan = [row[0] for row in conn.execute("EXPLAIN " + rollups._RECOMPUTE, params)]
    assert sum(" on request_logs" in line for line in plan) == 1, "\n".join(plan)
    assert not any("CTE Scan" in line for line in plan), "\n".join(plan)
