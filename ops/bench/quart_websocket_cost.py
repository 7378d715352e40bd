"""What Quart-trio's websocket layer adds over a raw ASGI websocket handler.

Two bare echo apps, each served alone by Hypercorn's trio worker in its own subprocess
(pinned to core 1; the client runs on core 0): `raw`, an ASGI callable, and `quart`, a
`QuartTrio` app with one `@app.websocket("/ws")` handler. Per app and round: one warm-up
session, then 2,000 echo turns of a ~300-byte text frame on one session (0 held), the
server's VmRSS, N idle sessions opened and held (raw wsproto client over trio TCP), VmRSS
again after 2 s, and 2,000 more turns on one extra session with the N held. Rounds run
raw, quart, raw, quart, ...; the table gives each round, the medians and quart - raw.

    python ops/bench/quart_websocket_cost.py [--sessions 5000] [--rounds 2] [--turns 2000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Message, Request, TextMessage

HOST = "127.0.0.1"
PAYLOAD = "x" * 300
BATCH = 100
GATEWAY_KIB_TODAY = 46.0


def raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})


def quart_app() -> Any:
    from quart import websocket
    from quart_trio import QuartTrio

    app = QuartTrio(__name__)

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        while True:
            data = await websocket.receive()
            await websocket.send(data)

    return app


def serve(kind: str, port: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hc_serve

    raise_fd_limit()
    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.websocket_ping_interval = None
    config.accesslog = None
    config.backlog = 1024
    app = raw_app if kind == "raw" else quart_app()
    trio.run(lambda: hc_serve(app, config, mode="asgi"))


class Client:
    """One websocket session: wsproto over a trio TCP stream, no reader task."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Client:
        c = cls(await trio.open_tcp_stream(HOST, port))
        await c.stream.send_all(c.ws.send(Request(host=f"{HOST}:{port}", target="/ws")))
        await c.until(AcceptConnection)
        return c

    async def until(self, kind: type[Event]) -> Event:
        while True:
            for event in self.ws.events():
                if isinstance(event, kind):
                    return event
            data = await self.stream.receive_some(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.ws.receive_data(data)

    async def turn(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))
        event = await self.until(TextMessage)
        assert isinstance(event, TextMessage) and event.data == text


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def timed_turns(port: int, turns: int) -> tuple[float, float]:
    c = await Client.open(port)
    samples: list[float] = []
    for _ in range(turns):
        t0 = time.perf_counter()
        await c.turn(PAYLOAD)
        samples.append((time.perf_counter() - t0) * 1000)
    await c.stream.aclose()
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49], qs[98]


async def measure(kind: str, port: int, sessions: int, turns: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    proc = await trio.lowlevel.open_process(cmd)  # taskset execs: proc.pid is the server
    held: list[Client] = []
    try:
        for _ in range(200):
            try:
                warm = await Client.open(port)
                break
            except OSError:
                await trio.sleep(0.05)
        else:
            raise RuntimeError(f"{kind} server did not start")
        for _ in range(200):
            await warm.turn(PAYLOAD)
        await warm.stream.aclose()
        p50_0, p99_0 = await timed_turns(port, turns)
        await trio.sleep(1.0)
        before = rss_kib(proc.pid)
        error = ""

        async def open_one() -> None:
            held.append(await Client.open(port))

        try:
            while len(held) < sessions:
                async with trio.open_nursery() as nursery:
                    for _ in range(min(BATCH, sessions - len(held))):
                        nursery.start_soon(open_one)
        except Exception as exc:  # report the largest N that worked
            error = repr(exc)[:200]
        await trio.sleep(2.0)
        after = rss_kib(proc.pid)
        p50, p99 = await timed_turns(port, turns)
        n = len(held)
        kib = (after - before) / n if n else float("nan")
        return dict(app=kind, sessions=n, before=before, after=after, kib=kib, error=error,
                    p50_0=p50_0, p99_0=p99_0, p50=p50, p99=p99)  # fmt: skip
    finally:
        for c in held:
            c.stream.socket.close()
        proc.terminate()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def row(r: dict[str, Any], label: str) -> list[str]:
    mib = f"{r['before'] / 1024:.1f}", f"{r['after'] / 1024:.1f}"
    return [
        f"| {label} | 0 | | | | {r['p50_0']:.3f} | {r['p99_0']:.3f} |",
        f"| {label} | {int(r['sessions'])} | {mib[0]} | {mib[1]} | {r['kib']:.2f} "
        f"| {r['p50']:.3f} | {r['p99']:.3f} |",
    ]


async def main(args: argparse.Namespace) -> None:
    limit = raise_fd_limit()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    print(f"fd limit {limit}, sessions {args.sessions}", file=sys.stderr, flush=True)
    results: list[dict[str, Any]] = []
    port = args.port
    for rnd in range(args.rounds):
        for kind in ("raw", "quart"):
            port += 1
            r = await measure(kind, port, args.sessions, args.turns)
            r["round"] = rnd + 1
            results.append(r)
            print(f"round {rnd + 1} {kind}: {r}", file=sys.stderr, flush=True)
    lines = [
        "| app | sessions | RSS before MiB | RSS after MiB | KiB/session "
        "| turn p50 ms | turn p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines += row(r, f"{r['app']} (round {r['round']})")
    med: dict[str, dict[str, Any]] = {}
    for kind in ("raw", "quart"):
        rs = [r for r in results if r["app"] == kind]
        med[kind] = {
            k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("app", "error")
        }
        med[kind]["error"] = ""
        lines += row(med[kind], f"**{kind} (median)**")
    print("\n".join(lines))
    d_kib, d_p50, d_p50_0, d_p99 = (
        med["quart"][k] - med["raw"][k] for k in ("kib", "p50", "p50_0", "p99")
    )
    print(
        f"\nquart - raw: {d_kib:+.2f} KiB/session; turn p50 {d_p50:+.3f} ms "
        f"({d_p50_0:+.3f} ms with 0 held), turn p99 {d_p99:+.3f} ms"
    )
    total = GATEWAY_KIB_TODAY + d_kib
    fits = total <= 48.0 and d_p50 <= 0.2
    print(
        f"rule: {GATEWAY_KIB_TODAY} + {d_kib:.2f} = {total:.2f} KiB (<= 48), "
        f"added p50 {d_p50:+.3f} ms (<= 0.2): {'FITS' if fits else 'DOES NOT FIT'}"
    )
    for r in results:
        if r["error"] or r["sessions"] < args.sessions:
            print(f"note: {r['app']} round {r['round']} held {r['sessions']}: {r['error']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=("raw", "quart"))
    parser.add_argument("--port", type=int, default=18800)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--turns", type=int, default=2000)
    ns = parser.parse_args()
    if ns.serve:
        serve(ns.serve, ns.port)
    else:
        trio.run(main, ns)
