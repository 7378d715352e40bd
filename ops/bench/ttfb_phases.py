"""Where the time to the first byte of an SSE answer goes, phase by phase, at c=1.

The gateway runs in THIS process, its phases timestamped by wrappers put around the
methods that mark them (nothing of the gateway's code is edited); the emulator and the
client are child processes, PostgreSQL is the embedded server in a temporary directory.
The client sends the bench's SSE request (`scenarios.request_body`, 28 events) one at a
time on one keep-alive connection (to the gateway, then straight to the emulator, in
alternated rounds), and notes when it sent each request, when the head arrived and when
the first body byte did (the bench's TTFB: `loadgen.py` counts it at the first body
chunk). All timestamps are CLOCK_MONOTONIC (`time.monotonic_ns`), shared by the
processes, so the gateway's phases and the client's marks line up.

Per request, the gateway side (medians over the requests, µs from the client's send; then
the gateway's main thread's CPU time from the head, which the machine's noise moves less):

    head      the server protocol read the request head (`Http1Protocol._request`)
    handler   the route's handler started (`ResponsesRelay.__call__`)
    auth      the Codex route's reading of the request started (`read_json_request`)
    body      ... and returned (key, body read and parsed)
    proxy     the relay's attempts start (`ResponsesRelay._proxy`)
    attempts  `run_attempts` called (the lease is asked of the actors next)
    lease     an attempt has its lease (`ResponsesRelay._exchange`)
    enter     the upstream request's context entered (`_RequestContext.__aenter__`)
    take      an idle upstream connection looked for (`UpstreamPool._take_idle`) ...
    taken     ... and found (`connect`: none was, a new one is opened)
    sent      the upstream request is written (`UpstreamPool._send` returned)
    up_head   the upstream's response head is parsed (`UpstreamPool._read_head` returned)
    up_first  the first upstream body chunk is handed out (`UpstreamResponse.__anext__`)
    w<n>      each write to the client socket (`Http1Protocol._write`, and `raw_send`: the
              writes without a yield after them), with its size
    client    the client saw the head, its first body byte, the end

and the direct path's `client` marks for comparison; `added` = gateway - direct. A trio
Instrument counts, from the request head to the first body write, the loop's waits for
I/O (each a turn of the event loop: an epoll_wait(2), other tasks' steps, the GIL let go)
and the task steps; `--trace` prints one request's sequence of them with the marks. It
also counts the stretches of more than 500 µs between two of those events that are not a
wait for I/O, by the phase they fell in: the main thread not running Python although it
had work (the GIL held by a database worker thread, the process preempted: by the
PostgreSQL backend writing the previous request's rows, say) or running it for long.

`--cores A,B` pins the processes as bench.py does (this process, so the gateway, on core
A; the emulator and the client on B); the embedded PostgreSQL, started from this process,
inherits core A as the bench's does from the gateway (`--postgres-core other` moves it
to B, to see what it costs the gateway's core).

`--background N` runs N more SSE streams on their own connections meanwhile (a thread
each in one child process, `--background-pause` seconds between a stream's requests):
only the probe's requests (a header of their own) are marked, and the trace then holds
the other streams' steps too, so the turns and task steps from head to first body write are
those of a loaded loop; it also says how many of the lease's actor messages were taken
inline (`Mailbox.handle_now`) or queued. `--profile TOP` runs cProfile from each probe's
head to its first body write and prints the Python calls per request and the TOP functions.

    python ops/bench/ttfb_phases.py [--requests 300] [--rounds 3] [--deltas 20] [--trace]
        [--cores 0,1 [--postgres-core gateway|other]]
        [--background 50 [--background-pause 0.1]] [--profile 40]

Run from the repository root with PYTHONPATH=$PWD (and a `pooler` console script on
PATH). It needs no other service; everything it starts is stopped on the way out. The
figures are wall-clock latencies of a single request on a (hopefully) quiet machine: run
it a few times and read the medians, not one run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROUTE = b"/backend-api/codex/responses"
SSE_DELTAS = 20


# --- the client (a child process) -------------------------------------------------------


def client_main(port: int, headers: list[tuple[bytes, bytes]], body: bytes, count: int) -> None:
    """Send `count` requests one after another on one connection; print one JSON line
    per request: [sent, head, first body byte, end] in monotonic ns."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = [b"POST " + ROUTE + b" HTTP/1.1", b"host: 127.0.0.1:%d" % port]
    lines += [k + b": " + v for k, v in headers]
    lines += [b"content-length: %d" % len(body), b"", b""]
    request = b"\r\n".join(lines) + body
    out = []
    for _ in range(count):
        sent = time.monotonic_ns()
        sock.sendall(request)
        buffer = b""
        head_at = first_at = 0
        while True:
            data = sock.recv(65536)
            now = time.monotonic_ns()
            if not data:
                raise SystemExit("the server closed the connection")
            buffer += data
            if not head_at and b"\r\n\r\n" in buffer:
                head_at = now
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"refused: {head[:200]!r}")
            if head_at and not first_at and buffer:
                first_at = now
            if head_at and buffer.endswith(b"\r\n0\r\n\r\n") and b"response.completed" in buffer:
                out.append([sent, head_at, first_at, now])
                break
    sock.close()
    print(json.dumps(out), flush=True)


def background_main(
    port: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    streams: int,
    seconds: float,
    pause: float,
) -> None:
    """`streams` connections, each sending SSE requests one after another for `seconds`,
    `pause` seconds apart (a thread each): the load under which the probe's turns are
    counted."""
    import threading

    lines = [b"POST " + ROUTE + b" HTTP/1.1", b"host: 127.0.0.1:%d" % port]
    lines += [k + b": " + v for k, v in headers]
    lines += [b"content-length: %d" % len(body), b"", b""]
    request = b"\r\n".join(lines) + body
    stop_at = time.monotonic() + seconds
    done = [0]

    def stream() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while time.monotonic() < stop_at:
            sock.sendall(request)
            buffer = b""
            while not buffer.endswith(b"\r\n0\r\n\r\n"):
                data = sock.recv(65536)
                if not data:
                    return
                buffer = buffer[-8:] + data
            done[0] += 1
            time.sleep(pause)
        sock.close()

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"streams_done": done[0]}), flush=True)


def run_client(port: int, headers: list[tuple[bytes, bytes]], body: bytes, count: int) -> Any:
    spec = json.dumps(
        {
            "port": port,
            "headers": [[k.decode(), v.decode()] for k, v in headers],
            "body": body.decode(),
            "count": count,
        }
    )
    return [sys.executable, __file__, "--client", spec]


# --- the instrumented gateway -------------------------------------------------------------


class Marks(trio.abc.Instrument):
    """The phases' timestamps, and trio's view of the same stretch: each wait for I/O
    (a loop turn) and each task step, from the request head to the first body write."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.trace: list[tuple[int, str, str]] | None = None

        self.background = False
        self.probe: Any = None
        self.profile: Any = None  # a cProfile.Profile with --profile
        self.profiled = 0

    def _open(self) -> bool:
        return bool(self.requests) and self.trace is not None

    def before_io_wait(self, timeout: float) -> None:
        if self.trace is not None:
            self.trace.append((time.monotonic_ns(), "io_wait", f"{timeout:.4f}"))

    def after_io_wait(self, timeout: float) -> None:
        if self.trace is not None:
            self.trace.append((time.monotonic_ns(), "io_woke", ""))

    def before_task_step(self, task: Any) -> None:
        if self.trace is not None:
            self.trace.append((time.monotonic_ns(), "step", task.name))

    def after_task_step(self, task: Any) -> None:
        # Where the probe's application task stopped: a wait for I/O or for another task (the
        # upstream, an actor) or a yield that waits for nothing (a pass of the loop).
        if (
            self.trace is not None
            and "task_group._handle" in task.name  # the application's, not the connection's
            and task.context.get(self.probe, False)
        ):
            self.trace.append((time.monotonic_ns(), "suspended", suspended_in(task)))

    def mark(self, name: str) -> None:
        if self.requests and self.probe.get():
            self.requests[-1].setdefault(name, time.monotonic_ns())
            self.requests[-1].setdefault("cpu_" + name, time.thread_time_ns())
            if self.trace is not None:
                self.trace.append((time.monotonic_ns(), "MARK", name))

    def write(self, size: int) -> None:
        if self.requests and self.probe.get():
            self.requests[-1].setdefault("writes", []).append((time.monotonic_ns(), size))
            self.requests[-1].setdefault(
                f"cpu_w{len(self.requests[-1]['writes'])}", time.thread_time_ns()
            )
            if self.trace is not None:
                self.trace.append((time.monotonic_ns(), "WRITE", str(size)))


PROBE_HEADER = b"x-ttfb-probe"


def awaiting(task: Any) -> list[str]:
    """The function names down a task's chain of awaits, outermost first (the tests that
    pin a path's turns read it too, `tests/turn_counts.py`)."""
    names = []
    coro: Any = task.coro
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            names.append(frame.f_code.co_name)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return names


def suspended_in(task: Any) -> str:
    """The innermost functions (up to three) of the chain of awaits a task is suspended in,
    innermost last: what it waits for."""
    return " > ".join(awaiting(task)[-3:])


def instrument(marks: Marks) -> None:
    import contextvars

    from pooler.actors.runtime import Mailbox
    from pooler.http_server.protocol import Http1Protocol

    # With --background, only the probe's requests (its header) are marked: the flag is
    # set in its connection's task and inherited by the application task spawned there.
    probe = contextvars.ContextVar("ttfb_probe", default=False)
    marks.probe = probe
    handle_now = getattr(Mailbox, "handle_now", None)  # absent from older trees

    def counted_handle_now(self: Any, message: Any) -> bool:
        assert handle_now is not None
        taken: bool = handle_now(self, message)
        if probe.get() and marks.requests:
            key = "inline" if taken else "queued"
            marks.requests[-1][key] = marks.requests[-1].get(key, 0) + 1
        return taken

    if handle_now is not None:
        Mailbox.handle_now = counted_handle_now  # type: ignore[method-assign]
    from pooler.upstream import http1
    from pooler.web.responses_relay import ResponsesRelay

    request = Http1Protocol._request

    async def _request(self: Any, head: Any) -> None:
        if head.target == ROUTE and (
            not marks.background or any(k == PROBE_HEADER for k, _ in head.headers)
        ):
            probe.set(True)
            if marks.profile is not None:
                marks.profile.enable()
            marks.requests.append({"head": time.monotonic_ns(), "cpu_head": time.thread_time_ns()})
            marks.trace = []
            marks.requests[-1]["trace"] = marks.trace
        await request(self, head)

    write = Http1Protocol._write

    def noted(data: bytes) -> None:
        """A write to a client: marked; the probe's trace and profile end at the first
        that carries body bytes (a head written alone does not)."""
        if not (probe.get() and marks.requests):
            marks.write(len(data))
            return
        request = marks.requests[-1]
        marks.write(len(data))
        head_only = data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n")
        if not head_only and not request.get("body_written"):
            request["body_written"] = len(request["writes"])
            if marks.profile is not None:
                marks.profile.disable()
                marks.profiled += 1
            marks.trace = None

    async def _write(self: Any, data: bytes) -> None:
        noted(data)
        await write(self, data)

    # The writes made without a yield after them (a relayed body piece: `PieceWriter`; a
    # head whose next step is a wait: WAIT_FOLLOWS) go through the protocol's `raw_send`,
    # not `_write`: marked too, or the first body write is missed.
    init = Http1Protocol.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        raw = self.raw_send
        if raw is None:
            return

        async def raw_send(data: bytes) -> Any:
            noted(data)
            return await raw(data)

        self.raw_send = raw_send

    Http1Protocol.__init__ = __init__  # type: ignore[method-assign]

    call = ResponsesRelay.__call__

    async def __call__(self: Any, client: Any) -> Any:
        marks.mark("handler")
        return await call(self, client)

    exchange = ResponsesRelay._exchange

    async def _exchange(self: Any, *args: Any) -> Any:
        marks.mark("lease")
        return await exchange(self, *args)

    send = http1.UpstreamPool._send

    async def _send(self: Any, conn: Any, req: Any) -> None:
        await send(self, conn, req)
        marks.mark("sent")

    read_head = http1.UpstreamPool._read_head

    async def _read_head(self: Any, conn: Any, parsed: Any) -> Any:
        response = await read_head(self, conn, parsed)
        marks.mark("up_head")
        return response

    anext = http1.UpstreamResponse.__anext__

    async def __anext__(self: Any) -> bytes:
        chunk = await anext(self)
        marks.mark("up_first")
        return chunk

    enter = http1._RequestContext.__aenter__

    async def __aenter__(self: Any) -> Any:
        marks.mark("enter")
        return await enter(self)

    take_idle = http1.UpstreamPool._take_idle

    def _take_idle(self: Any) -> Any:
        marks.mark("take")
        conn = take_idle(self)
        marks.mark("taken" if conn is not None else "connect")
        return conn

    http1._RequestContext.__aenter__ = __aenter__  # type: ignore[method-assign]
    http1.UpstreamPool._take_idle = _take_idle  # type: ignore[method-assign]
    from pooler.web import responses_relay
    from pooler.web.backend_codex import responses

    read_json = responses.read_json_request

    async def read_json_request(*args: Any) -> Any:
        marks.mark("auth")
        found = await read_json(*args)
        marks.mark("body")
        return found

    responses.read_json_request = read_json_request  # type: ignore[assignment]
    proxy = ResponsesRelay._proxy

    async def _proxy(self: Any, *args: Any) -> Any:
        marks.mark("proxy")
        return await proxy(self, *args)

    ResponsesRelay._proxy = _proxy  # type: ignore[method-assign,assignment]
    attempts = responses_relay.run_attempts  # type: ignore[attr-defined]

    async def run_attempts(*args: Any, **kwargs: Any) -> Any:
        marks.mark("attempts")
        return await attempts(*args, **kwargs)

    responses_relay.run_attempts = run_attempts  # type: ignore[attr-defined]
    Http1Protocol._request = _request  # type: ignore[method-assign]
    Http1Protocol._write = _write  # type: ignore[method-assign]
    ResponsesRelay.__call__ = __call__  # type: ignore[method-assign]
    ResponsesRelay._exchange = _exchange  # type: ignore[method-assign,assignment]
    http1.UpstreamPool._send = _send  # type: ignore[method-assign,assignment]
    http1.UpstreamPool._read_head = _read_head  # type: ignore[method-assign]
    http1.UpstreamResponse.__anext__ = __anext__  # type: ignore[method-assign]


PHASES = (
    "head",
    "handler",
    "auth",
    "body",
    "proxy",
    "attempts",
    "lease",
    "enter",
    "take",
    "taken",
    "connect",
    "sent",
    "up_head",
    "up_first",
)


args_verbose = False
STALL_US = 500


def summarize(marks: Marks, gateway: list[list[int]], direct: list[list[int]], skip: int) -> None:
    def median_us(values: list[float]) -> float:
        return statistics.median(values) / 1000 if values else float("nan")

    rows = list(zip(gateway, marks.requests, strict=True))[skip:]
    print(f"\ngateway, {len(rows)} requests (median µs after the client's send):")
    for phase in PHASES:
        print(f"  {phase:9s} {median_us([m[phase] - c[0] for c, m in rows if phase in m]):9.1f}")
    most = max(len(m.get("writes", [])) for _, m in rows)
    for i in range(min(most, 4)):
        at = [m["writes"][i][0] - c[0] for c, m in rows if len(m.get("writes", [])) > i]
        size = statistics.median(
            [m["writes"][i][1] for _, m in rows if len(m.get("writes", [])) > i]
        )
        print(f"  w{i + 1:<8d} {median_us(at):9.1f}  ({size:.0f} bytes)")
    gw_head = median_us([c[1] - c[0] for c in gateway[skip:]])
    gw_first = median_us([c[2] - c[0] for c in gateway[skip:]])
    gw_end = median_us([c[3] - c[0] for c in gateway[skip:]])
    d_head = median_us([c[1] - c[0] for c in direct[skip:]])
    d_first = median_us([c[2] - c[0] for c in direct[skip:]])
    d_end = median_us([c[3] - c[0] for c in direct[skip:]])
    print(f"  client    head {gw_head:.1f}  first byte {gw_first:.1f}  end {gw_end:.1f}")
    print(f"direct      head {d_head:.1f}  first byte {d_first:.1f}  end {d_end:.1f}")
    print(f"added       TTFB {gw_first - d_first:.1f}  total {gw_end - d_end:.1f}")
    print("main thread CPU µs from the head (medians):")
    for phase in (*PHASES[1:], "w1", "w2"):
        values = [m["cpu_" + phase] - m["cpu_head"] for _, m in rows if "cpu_" + phase in m]
        print(f"  {phase:9s} {median_us(values):9.1f}")
    traces = [m["trace"] for _, m in rows if "trace" in m]
    turns = statistics.median([sum(1 for e in t if e[1] == "io_wait") for t in traces])
    steps = statistics.median([sum(1 for e in t if e[1] == "step") for t in traces])
    print(f"head to first body write: {turns} loop turns (I/O waits), {steps} task steps (medians)")
    # Split by how the head went: with its first piece (one write), or alone first (the
    # piece was not at hand), whose mix moves the medians above from run to run.
    for alone, label in ((False, "with its first piece"), (True, "written alone")):
        split = [
            m["trace"] for _, m in rows if "trace" in m and (m.get("body_written") == 2) is alone
        ]
        if split:
            print(
                f"  head {label}: {len(split)} requests,"
                f" {statistics.median([sum(1 for e in t if e[1] == 'io_wait') for t in split])}"
                f" turns, {statistics.median([sum(1 for e in t if e[1] == 'step') for t in split])}"
                " task steps"
            )
    # The probe's application task's suspensions from head to first body write, by where.
    where: dict[str, int] = {}
    for t in traces:
        for _, what, detail in t:
            if what == "suspended":
                where[detail] = where.get(detail, 0) + 1
    if where:
        print(f"the probe's application task suspended, per request ({len(traces)} requests):")
        for detail, count in sorted(where.items(), key=lambda kv: -kv[1]):
            print(f"  {count / len(traces):6.2f}  {detail}")
    inline = sum(m.get("inline", 0) for _, m in rows)
    queued = sum(m.get("queued", 0) for _, m in rows)
    if inline or queued:
        print(f"actor messages on the lease's path: {inline} taken inline, {queued} queued")
    # A stretch of more than STALL_US between two consecutive events of the trace that is
    # not a wait for I/O: the main thread did not run Python (the GIL held by another
    # thread, say a database worker, or the process not scheduled) or ran it long.
    stalls: dict[str, int] = {}
    for t in traces:
        last_mark = "head"
        for (at, what, detail), (after, _, _) in itertools.pairwise(t):
            if what == "MARK":
                last_mark = detail
            if what != "io_wait" and after - at > STALL_US * 1000:
                stalls[last_mark] = stalls.get(last_mark, 0) + 1
    stalled = sum(stalls.values())
    print(
        f"stretches over {STALL_US} µs outside I/O waits: {stalled} in {len(traces)} requests,"
        f" after: {dict(sorted(stalls.items(), key=lambda kv: -kv[1]))}"
    )
    if args_verbose:
        t = traces[len(traces) // 2]
        start = rows[len(traces) // 2][1]["head"]
        for at, what, detail in t:
            print(f"    {(at - start) / 1000:8.1f} {what} {detail}")
    up = median_us([m["up_first"] - m["sent"] for _, m in rows if "up_first" in m])
    up_head = median_us([m["up_head"] - m["sent"] for _, m in rows if "up_head" in m])
    print(
        f"upstream as the gateway sees it: head {up_head:.1f}, first chunk {up:.1f} after sending"
    )


def postgres_pids(data_dir: Path) -> list[int]:
    """The embedded PostgreSQL under `data_dir`: its postmaster and every child of it."""
    postmaster = None
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
        if b"postgres" in cmdline and str(data_dir).encode() in cmdline:
            postmaster = int(entry.name)
    if postmaster is None:
        return []
    return [postmaster, *children.get(postmaster, [])]


def pin(pids: Sequence[int], core: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {core})


def print_profile(profile: Any, requests: int, top: int) -> None:
    """Python calls from the request head to the first body write, per request, and the
    functions that took the most time there (the whole thread: with --background, other
    requests' work too)."""
    import pstats

    stats = pstats.Stats(profile)
    total = stats.total_calls  # type: ignore[attr-defined]
    print(f"\nprofile, head to first body write: {total / max(requests, 1):.0f} calls per request")
    stats.sort_stats("tottime").print_stats(top)


async def stop_after(process: trio.Process, seconds: float) -> None:
    """The background client ends by itself; this ends it should the run stop first."""
    try:
        await trio.sleep(seconds)
    finally:
        process.kill()


async def main(args: argparse.Namespace) -> None:
    from idle_memory import gateway_parts, start_emulator, stop_gateway_parts
    from scenarios import request_body

    from pooler.server import run_gateway

    marks = Marks()
    if args.profile:
        import cProfile

        marks.profile = cProfile.Profile()
    instrument(marks)
    trio.lowlevel.add_instrument(marks)
    root = Path(tempfile.mkdtemp(prefix="pooler-ttfb-"))
    os.chmod(root, 0o755)  # the embedded PostgreSQL runs as its own user when root
    emulator: subprocess.Popen[bytes] | None = None
    database: Any = None
    body = request_body(args.deltas, stream=True)
    try:
        emulator, port, auth_files = start_emulator(root)
        tokens = json.loads(auth_files[0].read_text())["tokens"]
        config, database, key = await gateway_parts(root, port, auth_files)
        direct_headers = [
            (b"authorization", b"Bearer " + tokens["access_token"].encode()),
            (b"chatgpt-account-id", tokens["account_id"].encode()),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
        ]
        gateway_headers = [
            (b"authorization", b"Bearer " + key.encode()),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
        ]
        cores: list[int] = [int(c) for c in args.cores.split(",")] if args.cores else []
        if cores:
            # As bench.py: the gateway on one core, the emulator and the client on the
            # other; the embedded PostgreSQL where `--postgres-core` says.
            os.sched_setaffinity(0, {cores[0]})
            pin([emulator.pid], cores[1])
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_gateway, config, database, "127.0.0.1", 0)
            if cores:
                where = cores[0] if args.postgres_core == "gateway" else cores[1]
                pin(postgres_pids(root / "data"), where)
            gateway: list[list[int]] = []
            direct: list[list[int]] = []
            background: trio.Process | None = None
            if args.background:
                marks.background = True
                gateway_headers.append((PROBE_HEADER, b"1"))
                spec = json.dumps(
                    {
                        "port": running.port,
                        "headers": [[k.decode(), v.decode()] for k, v in gateway_headers[:-1]],
                        "body": body.decode(),
                        "streams": args.background,
                        "seconds": args.background_seconds,
                        "pause": args.background_pause,
                    }
                )
                argv = [sys.executable, __file__, "--background-client", spec]
                if cores:
                    argv = ["taskset", "-c", str(cores[1]), *argv]
                background = await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL)
                nursery.start_soon(stop_after, background, args.background_seconds + 30)
                await trio.sleep(1.0)  # the streams under way
            for round_ in range(args.rounds):
                for path in ("gateway", "direct") if round_ % 2 == 0 else ("direct", "gateway"):
                    target = running.port if path == "gateway" else port
                    headers = gateway_headers if path == "gateway" else direct_headers
                    argv = run_client(target, headers, body, args.requests)
                    if cores:
                        argv = ["taskset", "-c", str(cores[1]), *argv]
                    done = await trio.run_process(argv, capture_stdout=True)
                    result = json.loads(done.stdout)
                    skip = args.requests // 10  # warm-up: connection, caches
                    if path == "gateway":
                        gateway += result[skip:]
                        start = len(marks.requests) - args.requests
                        del marks.requests[start : start + skip]
                    else:
                        direct += result[skip:]
            if background is not None:
                background.kill()
                await background.wait()
            global args_verbose
            args_verbose = args.trace
            if marks.profile is not None:
                print_profile(marks.profile, marks.profiled, args.profile)
            summarize(marks, gateway, direct, 0)
            nursery.cancel_scope.cancel()
    finally:
        stop_gateway_parts(emulator, database, root)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deltas", type=int, default=SSE_DELTAS)
    parser.add_argument("--trace", action="store_true", help="print one request's loop trace")
    parser.add_argument(
        "--cores", help="A,B: the gateway on core A, the emulator and client on B (as bench.py)"
    )
    parser.add_argument(
        "--postgres-core",
        choices=("gateway", "other"),
        default="gateway",
        help="with --cores: the embedded PostgreSQL on the gateway's core (as in bench.py,"
        " where it inherits the gateway's) or on the other",
    )
    parser.add_argument(
        "--background",
        type=int,
        default=0,
        help="N SSE streams on their own connections to the gateway meanwhile (closed"
        " loop); the probe's requests alone are marked and counted",
    )
    parser.add_argument("--background-seconds", type=float, default=120.0)
    parser.add_argument(
        "--background-pause",
        type=float,
        default=0.1,
        help="seconds each background stream waits between its requests (keep the"
        " gateway below saturation: the bench's c=50 runs at 70 %% of it)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TOP",
        help="cProfile from each request's head to its first body write; print the TOP functions",
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--background-client", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    if args.background_client:
        spec = json.loads(args.background_client)
        background_main(
            spec["port"],
            [(k.encode(), v.encode()) for k, v in spec["headers"]],
            spec["body"].encode(),
            spec["streams"],
            spec["seconds"],
            spec["pause"],
        )
    elif args.client:
        spec = json.loads(args.client)
        client_main(
            spec["port"],
            [(k.encode(), v.encode()) for k, v in spec["headers"]],
            spec["body"].encode(),
            spec["count"],
        )
    else:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(main, args)
