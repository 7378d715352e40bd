"""How long a request-log row waits in memory before it is committed: what `kill -9` can lose.

    python ops/bench/log_commit_latency.py      # ~25 s: an embedded PostgreSQL in a temp dir

Runs the gateway's own LogWriter against a real (embedded) PostgreSQL with the gateway's
own row writer, enqueues rows at a steady rate (a trickle, then a load), and times each
row from `enqueue` to the commit of its batch. The time is also the window of rows a hard
crash loses; a graceful stop loses none (tests/e2e/test_graceful_stop.py).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import trio

from pooler import embedded
from pooler.actors.log_writer import LogWriter
from pooler.db import Database
from pooler.migrate import migrate
from pooler.web.request_record import RequestRecord
from pooler.web.runtime_store import write_request_records

RATES = (20, 200, 1000)  # rows per second
SECONDS = 6.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(db: Database, rate: int) -> list[float]:
    enqueued: dict[str, float] = {}
    waits: list[float] = []
    total = int(rate * SECONDS)
    all_written = trio.Event()

    async def write(records: Sequence[RequestRecord]) -> None:
        await db.run(lambda conn: write_request_records(conn, records))
        now = trio.current_time()
        waits.extend((now - enqueued[r.request_id]) * 1000 for r in records)
        if len(waits) >= total:
            all_written.set()

    writer: LogWriter[RequestRecord] = LogWriter(write)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        start = trio.current_time()
        for n in range(total):
            await trio.sleep_until(start + n / rate)
            record = RequestRecord(f"req_{uuid.uuid4().hex}", "responses", "http_sse")
            record.finish(200, "completed")
            enqueued[record.request_id] = trio.current_time()
            writer.enqueue(record)
        await all_written.wait()
        nursery.cancel_scope.cancel()
    return waits


async def main(url: str) -> None:
    db = Database.open(url)
    try:
        for rate in RATES:
            waits = await measure(db, rate)
            print(
                f"{rate:>5} rows/s: enqueue -> commit p50 {percentile(waits, 0.5):.1f} ms, "
                f"p99 {percentile(waits, 0.99):.1f} ms, max {max(waits):.1f} ms "
                f"({len(waits)} rows)"
            )
    finally:
        db.close()


if __name__ == "__main__":
    data_dir = Path(tempfile.mkdtemp(prefix="pooler-logbench-"))
    data_dir.chmod(0o755)  # the embedded server runs as its own user when root
    try:
        url = embedded.start_embedded_postgres(data_dir)
        migrate(url)
        trio.run(main, url)
    finally:
        embedded.release_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
