"""Where the memory of one idle SSE stream (or websocket session) goes in the gateway.

The gateway runs in THIS process (so tracemalloc sees every allocation it makes); the
emulator and the client holding the streams are child processes, PostgreSQL is the
embedded server in a temporary directory. The client (this script with `--client`)
holds idle streams through the gateway as `held_streams.py` does for the bench (the
emulator is asked to wait 600 s before each event: the stream idles after its head),
or idle websocket sessions as `websocket_run.py` does (connected, no turn).

Figures are differences between two levels held, so one-time allocations (caches,
first-use imports, pools) fall out: with `--levels 500,1000`, KiB per stream is
(snapshot at 1,000 - snapshot at 500) / 500, grouped by allocation traceback (`--frames`
innermost frames, `--top` sites) and by the package that owns each allocation (the
innermost frame in pooler, hypercorn, h11, wsproto, quart, werkzeug or trio; the rest is
"other"). RSS per stream is given both between the levels and from before the first
stream, as the bench reports it (tracemalloc's own bookkeeping inflates RSS: run with
`--no-trace` for a clean RSS figure).

    python ops/bench/idle_memory.py [--kind sse|websocket] [--levels 500,1000]
        [--frames 4] [--top 25] [--no-trace]

Run from the repository root with PYTHONPATH=$PWD (and a `pooler` console script on
PATH). It needs no other service; everything it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import CoroutineType
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROUTE = b"/backend-api/codex/responses"
IDLE_DELAY_MS = 600_000  # the emulator waits this long before each event
SETTLE_S = 1.0
OWNERS = ("pooler", "hypercorn", "h11", "wsproto", "quart_trio", "quart", "werkzeug", "trio")


# --- the client (a child process) -------------------------------------------------------


async def client_main(kind: str, port: int, key: str, input_kib: int) -> None:
    """Read a total from stdin, hold that many idle streams (or sessions), answer
    `held <n> <errors as JSON>`; an empty line or EOF ends."""
    stdin = trio.lowlevel.FdStream(os.dup(0))
    lines = _lines(stdin)
    total = 0
    async with trio.open_nursery() as nursery:
        async for line in lines:
            if not line:
                break
            wanted = int(line)
            opened, errors = await _hold_more(nursery, kind, port, key, wanted - total, input_kib)
            total += opened
            print(f"held {total} {json.dumps(errors)}", flush=True)
        nursery.cancel_scope.cancel()


async def _lines(stream: trio.lowlevel.FdStream) -> Any:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await stream.receive_some()
            if not data:
                return
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        yield line.decode().strip()


async def _hold_more(
    nursery: trio.Nursery, kind: str, port: int, key: str, count: int, input_kib: int
) -> tuple[int, dict[str, int]]:
    auth = (b"authorization", b"Bearer " + key.encode())
    if kind == "sse":
        from held_streams import HeldStreams, hold_streams
        from loadgen import Target
        from scenarios import SSE_DONE, request_body

        body = request_body(1, stream=True, delay_ms=IDLE_DELAY_MS)
        if input_kib:  # a conversation's worth of input, as a Codex turn sends
            payload = json.loads(body)
            text = "x" * (input_kib * 1024)
            payload["input"].append(
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                }
            )
            body = json.dumps(payload).encode()
        headers = (auth, (b"content-type", b"application/json"), (b"accept", b"text/event-stream"))
        target = Target("127.0.0.1", port, b"POST", ROUTE, headers, body, SSE_DONE)
        held = HeldStreams()
        await nursery.start(hold_streams, target, count, held)
        return len(held.open_s), dict(held.errors)
    from websocket_run import Held, _hold

    ws = Held()
    url = f"ws://127.0.0.1:{port}{ROUTE.decode()}"
    await nursery.start(_hold, nursery, url, [auth], count, 50, ws)
    return len(ws.open_s), dict(ws.errors)


# --- the stack ---------------------------------------------------------------------------


def _pooler() -> str:
    beside = Path(sys.executable).with_name("pooler")
    found = str(beside) if beside.exists() else shutil.which("pooler")
    if found is None:
        raise SystemExit("the `pooler` console script is not on PATH (pip install -e .)")
    return found


def start_emulator(root: Path) -> tuple[subprocess.Popen[bytes], int, list[Path]]:
    auth_dir, out = root / "auth", root / "emulator.out"
    with out.open("wb") as stdout:
        process = subprocess.Popen(
            [
                *(_pooler(), "emulator", "--host", "127.0.0.1", "--port", "0"),
                *("--accounts", "3", "--percent-per-request", "0"),
                *("--write-auth-json", str(auth_dir)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    files = [auth_dir / f"account-{i}" / "auth.json" for i in (1, 2, 3)]
    deadline = time.monotonic() + 60
    while True:
        found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", out.read_bytes())
        if found and all(f.exists() for f in files):
            return process, int(found.group(1)), files
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the emulator did not start:\n{out.read_text()[-2000:]}")
        time.sleep(0.05)


def seed(conn: Any, config: Any, auth_files: Sequence[Path]) -> str:
    from pooler.crypto import Keyring
    from pooler.store import accounts, keys, pools

    pools.create_pool(conn, "bench", actor="bench")
    pools.update_pool(conn, "bench", max_in_flight_per_account=10_000, actor="bench")
    keyring = Keyring(config.upstream_secret_key, config.upstream_secret_keys_old)
    for path in auth_files:
        accounts.import_account(conn, keyring, "bench", json.loads(path.read_text()))
    raw, _ = keys.create_key(conn, config.secret_key, "bench", "bench", actor="bench")
    return raw


async def gateway_parts(root: Path, port: int, auth_files: Sequence[Path]) -> tuple[Any, Any, str]:
    """For an in-process gateway on the emulator at `port`: the embedded PostgreSQL under
    `root` started and migrated, the gateway's config, an open Database and a seeded key
    (this script's and loop_turns.py's)."""
    from pooler import embedded
    from pooler.config import load_config
    from pooler.db import Database
    from pooler.migrate import migrate

    upstream = f"http://127.0.0.1:{port}"
    db_url = await trio.to_thread.run_sync(embedded.start_embedded_postgres, root / "data")
    await trio.to_thread.run_sync(migrate, db_url)
    config = load_config(
        {
            "CODEX_POOLER_DATA_DIR": str(root / "data"),
            "DATABASE_URL": db_url,
            "CODEX_POOLER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CODEX_POOLER_UPSTREAM_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CODEX_POOLER_UPSTREAM_BASE_URL": upstream,
            "CODEX_POOLER_AUTH_BASE_URL": upstream,
            "CODEX_POOLER_LOG_LEVEL": "warning",
        }
    )
    database = Database.open(db_url, max_size=8)
    key = await database.run(lambda conn: seed(conn, config, auth_files))
    return config, database, key


def stop_gateway_parts(emulator: subprocess.Popen[bytes] | None, database: Any, root: Path) -> None:
    """Stop what `start_emulator` and `gateway_parts` started under `root`, and remove it."""
    from pooler import embedded

    if emulator is not None:
        emulator.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            emulator.wait(5)
        if emulator.poll() is None:
            emulator.kill()
    if database is not None:
        database.close()
    with contextlib.suppress(Exception):
        embedded.release_embedded_postgres(root / "data")
    shutil.rmtree(root, ignore_errors=True)


# --- measuring ---------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def owner_of(trace: tracemalloc.Traceback, owners: Sequence[str] = OWNERS) -> tuple[str, str]:
    """The package owning an allocation and the line in it: its innermost frame in one of
    `owners` (the traceback lists the oldest frame first)."""
    for frame in reversed(trace):
        path = frame.filename.replace("\\", "/")
        for name in owners:
            if f"/{name}/" in path or path.endswith(f"/{name}.py"):
                package = f"pooler ({'/'.join(path.split('/')[-2:])})" if name == "pooler" else name
                return package, short(frame)
    return "other", short(trace[-1])


def short(frame: tracemalloc.Frame) -> str:
    path = frame.filename.replace("\\", "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/pooler/" in path:
        path = "pooler/" + path.rsplit("/pooler/", 1)[1]
    else:
        path = "/".join(path.split("/")[-2:])
    return f"{path}:{frame.lineno}"


def objects_by_type() -> tuple[Counter[str], Counter[str]]:
    """Live objects the garbage collector tracks, by type (bytes and str are not tracked):
    how many, and their `sys.getsizeof` (the object itself, not what it refers to)."""
    found: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if kind is CoroutineType:  # which one: a held stream is mostly suspended calls
            name = (
                f"coroutine {obj.cr_code.co_filename.rsplit('/', 1)[-1]}:{obj.cr_code.co_qualname}"
            )
        found[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return found, sizes


def report_objects(
    low: tuple[Counter[str], Counter[str]],
    high: tuple[Counter[str], Counter[str]],
    streams: int,
    top: int,
) -> None:
    grown = Counter({name: high[1][name] - low[1][name] for name in high[1]})
    print(f"\nobjects per stream, by type (the {top} largest; gc-tracked only; KiB, count):")
    for name, size in grown.most_common(top):
        count = (high[0][name] - low[0][name]) / streams
        if count >= 0.5:
            print(f"  {size / 1024 / streams:6.2f}  {count:5.1f}  {name}")


def report(
    low: tracemalloc.Snapshot | None,
    high: tracemalloc.Snapshot | None,
    streams: int,
    frames: int,
    top: int,
) -> None:
    if low is None or high is None:
        return
    # tracemalloc's and this script's own allocations (its counters of objects by type).
    noise = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    low, high = low.filter_traces(noise), high.filter_traces(noise)
    by_site = high.compare_to(low, "traceback")
    total = sum(d.size_diff for d in by_site)
    print(f"\ntraced: {total / 1024 / streams:.2f} KiB per stream (Python allocations)")
    owners: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    callers: Counter[str] = Counter()  # who asked trio (or the stdlib) for it
    asked: Counter[str] = Counter()
    for diff in by_site:
        package, line = owner_of(diff.traceback)
        owners[package] += diff.size_diff
        lines[line] += diff.size_diff
        package, line = owner_of(diff.traceback, OWNERS[:-1])
        callers[line] += diff.size_diff
        asked[package] += diff.size_diff
    print("\nby owner (KiB per stream):")
    for name, size in owners.most_common():
        if abs(size) / 1024 / streams >= 0.05:
            print(f"  {size / 1024 / streams:7.2f}  {name}")
    print("\nby the package that asked (trio's allocations counted at its caller; KiB):")
    for name, size in asked.most_common():
        if abs(size) / 1024 / streams >= 0.05:
            print(f"  {size / 1024 / streams:7.2f}  {name}")
    print(f"\ntop {top} owning lines (KiB per stream):")
    for line, size in lines.most_common(top):
        print(f"  {size / 1024 / streams:7.2f}  {line}")
    print(
        f"\ntop {top} lines outside trio (KiB per stream, trio's allocations counted at"
        " the line that called into trio):"
    )
    for line, size in callers.most_common(top):
        print(f"  {size / 1024 / streams:7.2f}  {line}")
    sites: Counter[tuple[str, ...]] = Counter()
    counts: Counter[tuple[str, ...]] = Counter()
    for diff in by_site:
        site = tuple(short(f) for f in list(reversed(diff.traceback))[:frames])
        sites[site] += diff.size_diff
        counts[site] += diff.count_diff
    print(f"\ntop {top} sites (KiB per stream, blocks per stream; innermost frame first):")
    for site, size in sites.most_common(top):
        print(f"  {size / 1024 / streams:7.2f}  {counts[site] / streams:5.1f}  {site[0]}")
        for frame in site[1:]:
            print(f"  {'':7}  {'':5}    <- {frame}")


async def main(args: argparse.Namespace) -> None:
    from pooler.db import Database
    from pooler.server import run_gateway

    levels = [int(v) for v in args.levels.split(",")]
    root = Path(tempfile.mkdtemp(prefix="pooler-idle-"))
    os.chmod(root, 0o755)  # the embedded PostgreSQL runs as its own user when root
    emulator: subprocess.Popen[bytes] | None = None
    client: trio.Process | None = None
    database: Database | None = None
    try:
        emulator, port, auth_files = start_emulator(root)
        config, database, key = await gateway_parts(root, port, auth_files)
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_gateway, config, database, "127.0.0.1", 0)
            argv = [sys.executable, __file__, "--client", args.kind, str(running.port), key]
            argv.append(str(args.input_kib))
            client = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            assert client.stdin is not None and client.stdout is not None
            replies = _lines_of(client.stdout)

            async def hold(total: int) -> int:
                assert client is not None and client.stdin is not None
                await client.stdin.send_all(f"{total}\n".encode())
                with trio.fail_after(600):
                    line = await replies.__anext__()
                _, held, errors = line.split(" ", 2)
                if json.loads(errors):
                    print(f"errors while opening: {errors}")
                return int(held)

            await trio.sleep(SETTLE_S)
            gc.collect()
            rss0 = rss_bytes()
            if args.trace:  # from here on: what streams allocate (not the process's start)
                tracemalloc.start(args.depth)
            snapshots: list[tracemalloc.Snapshot | None] = []
            rss: list[int] = []
            objects: list[tuple[Counter[str], Counter[str]]] = []
            held: list[int] = []
            for level in levels:
                held.append(await hold(level))
                await trio.sleep(SETTLE_S)
                gc.collect()
                rss.append(rss_bytes())
                # Objects first: a snapshot's own list of traces would count as the stream's.
                objects.append(objects_by_type() if args.trace else (Counter(), Counter()))
                snapshots.append(tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None)
                print(f"held {held[-1]}: RSS {rss[-1] / 2**20:.1f} MiB", flush=True)
            print(f"\n{args.kind}: RSS before any {rss0 / 2**20:.1f} MiB")
            print(
                f"RSS per stream from before: {(rss[-1] - rss0) / 1024 / held[-1]:.1f} KiB"
                f" ({held[-1]} held)"
            )
            if len(levels) > 1:
                streams = held[-1] - held[0]
                print(
                    f"RSS per stream between {held[0]} and {held[-1]}:"
                    f" {(rss[-1] - rss[0]) / 1024 / streams:.1f} KiB"
                )
                report(snapshots[0], snapshots[-1], streams, args.frames, args.top)
                if args.trace:
                    report_objects(objects[0], objects[-1], streams, args.top)
            await client.stdin.send_all(b"\n")
            nursery.cancel_scope.cancel()
    finally:
        if client is not None:
            with contextlib.suppress(ProcessLookupError):
                client.kill()
        stop_gateway_parts(emulator, database, root)


async def _lines_of(stream: Any) -> Any:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            data = await stream.receive_some()
            if not data:
                return
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        yield line.decode().strip()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("sse", "websocket"), default="sse")
    parser.add_argument("--levels", default="500,1000", help="streams held at each snapshot")
    parser.add_argument("--frames", type=int, default=4, help="frames shown per site")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-trace", dest="trace", action="store_false", help="RSS only")
    parser.add_argument("--depth", type=int, default=10, help="frames traced per allocation")
    parser.add_argument(
        "--input-kib", type=int, default=0, help="a Codex-sized body: this much input text"
    )
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse_args(sys.argv[1:])
    if options.client:
        kind, port, key, input_kib = options.client
        trio.run(client_main, kind, int(port), key, int(input_kib))
    else:
        trio.run(main, options)
