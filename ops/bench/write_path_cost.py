"""What writing one streamed response body piece costs the gateway, old code against new,
in-process.

A relay pushes each SSE event through Hypercorn's ASGI `send` (`HTTPStream.app_send`),
then `H11Protocol.stream_send`, h11's `Connection.send` and `TCPServer.protocol_send`, as
our wrappers (`pooler.response_head`, `pooler.write_stall`, `pooler.chunked_body`, and
`pooler.http1_framing`'s connection class, the same in both arms) leave them. This drives
that chain with Hypercorn's own classes over real loopback TCP connections (`--streams`
of them at once, each pushing `--events` pieces), read to the end by one child process
(so the reading costs this process nothing), and times `time.process_time()` over the
pushes.

The two arms are the response-writing modules at `--baseline` (a git ref, default `main`,
loaded from `git show`) and the ones in the working tree, each installed on Hypercorn's
pristine classes; the arms alternate over `--rounds` rounds and the medians are reported,
with cProfile's function calls per event and a check that both arms put the same bytes on
the wire (a digest of all the reader got).

With one stream every yield to trio's scheduler is a whole turn of its loop (an epoll
call and its bookkeeping) for one event; with many streams a turn serves many events, as
in a loaded gateway, so `--streams 50` is nearer the c=50 SSE bench.

    PYTHONPATH=$PWD python ops/bench/write_path_cost.py [--events 20000] [--rounds 5]
        [--streams 1] [--size 220] [--baseline main]    # ~30 s; from the repository's root

Since issue 17 the server no longer writes through H11Protocol and h11 (pooler.http_server
frames responses itself; ops/bench/server_parse_cost.py measures it): this script measures
that older chain only, and needs a checkout whose `pooler` still has its modules
(`response_head`, `chunked_body`, `http1_framing`) for both arms.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import h11
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.protocol.events import EndBody
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio import tcp_server
from hypercorn.trio.worker_context import WorkerContext

from pooler.write_stall import WriteStall

# Every attribute of Hypercorn an arm may replace; restored to Hypercorn's own between arms.
PATCHED = [
    (H11Protocol, "__init__"),
    (H11Protocol, "_send_error_response"),
    (tcp_server.TCPServer, "protocol_send"),
    (H11Protocol, "_send_h11_event"),
    (H11Protocol, "stream_send"),
    (HTTPStream, "app_send"),
]
PRISTINE = {(cls, name): cls.__dict__[name] for cls, name in PATCHED}
# module -> its installer, for each module that writes responses (those a ref lacks are skipped)
MODULES = {
    "response_head": "coalesce_fixed_length_heads",
    "write_stall": "stall_bounded_writes",
    "chunked_body": "frame_chunks_directly",
}
READER = """
import hashlib, selectors, socket, sys
socks = [socket.socket(fileno=int(fd)) for fd in sys.argv[1:]]
received = {sock: hashlib.sha256() for sock in socks}
total = 0
selector = selectors.DefaultSelector()
for sock in socks:
    selector.register(sock, selectors.EVENT_READ)
while selector.get_map():
    for key, _ in selector.select():
        chunk = key.fileobj.recv(1 << 20)
        if chunk:
            received[key.fileobj].update(chunk)
            total += len(chunk)
        else:
            selector.unregister(key.fileobj)
whole = hashlib.sha256(b"".join(received[sock].digest() for sock in socks))
print(total, whole.hexdigest())
"""
REQUEST = b"POST /backend-api/codex/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-request-id", b"req_0123456789abcdef"),
]
Arm = dict[tuple[type, str], Any]
NOTHING: Any = None  # what the write path never uses: the application, its task group


def installed(load: Callable[[str], Any | None]) -> Arm:
    """Hypercorn's attributes after the modules `load` finds have installed themselves."""
    for (cls, name), value in PRISTINE.items():
        setattr(cls, name, value)
    framing = load("http1_framing")  # the server's h11 connection class, as it was served
    if framing is not None:
        framing.strict_request_framing()
    for module_name, installer in MODULES.items():
        module = load(module_name)
        if module is not None:
            getattr(module, installer)()
    arm = {(cls, name): cls.__dict__[name] for cls, name in PATCHED}
    for (cls, name), value in PRISTINE.items():
        setattr(cls, name, value)
    return arm


def load_at(ref: str, folder: Path) -> Callable[[str], Any | None]:
    def load(module_name: str) -> Any | None:
        shown = subprocess.run(
            ["git", "show", f"{ref}:pooler/{module_name}.py"], capture_output=True, check=False
        )
        if shown.returncode != 0:
            return None
        path = folder / f"{module_name}_at_{ref.replace('/', '_')}.py"
        path.write_bytes(shown.stdout)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module

    return load


def load_here(module_name: str) -> Any | None:
    try:
        return importlib.import_module(f"pooler.{module_name}")
    except ModuleNotFoundError:
        return None


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


async def one_stream(
    events: int, piece: bytes, server_sock: socket.socket, started: trio.Event
) -> None:
    """Push `events` pieces through Hypercorn's chain once `started`, then end the body."""
    config: Any = Config()
    config.write_stall = WriteStall()
    config.include_date_header = False  # the same bytes in every round
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_sock))
    context = WorkerContext(None)
    server = tcp_server.TCPServer(NOTHING, config, context, NOTHING, cast(Any, stream))
    proto = H11Protocol(
        NOTHING, config, context, NOTHING, NOTHING, False, None, None, server.protocol_send
    )
    server.protocol = cast(Any, proto)
    proto.connection.receive_data(REQUEST)
    while type(proto.connection.next_event()) is not h11.EndOfMessage:
        pass
    http = HTTPStream(NOTHING, config, context, NOTHING, False, None, None, proto.stream_send, 1)
    http.scope = {"method": "POST", "http_version": "1.1", "headers": []}  # type: ignore[typeddict-item]
    send = http.app_send
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await started.wait()
    for _ in range(events):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await proto.stream_send(EndBody(stream_id=1))
    await stream.aclose()


async def streams_at_once(events: int, piece: bytes, socks: list[socket.socket]) -> float:
    """CPU seconds for `events` pushes on each of `socks`, all at once."""
    started = trio.Event()
    async with trio.open_nursery() as nursery:
        for sock in socks:
            nursery.start_soon(one_stream, events, piece, sock, started)
        await trio.testing.wait_all_tasks_blocked()
        start = time.process_time()
        started.set()
    return time.process_time() - start


def run_round(
    arm: Arm, streams: int, events: int, piece: bytes, profile: cProfile.Profile | None = None
) -> tuple[float, str]:
    """`streams` connections through `arm`: CPU µs per event, and the reader's byte count
    and digest."""
    for (cls, name), value in arm.items():
        setattr(cls, name, value)
    pairs = [tcp_pair() for _ in range(streams)]
    fds = [client.fileno() for _, client in pairs]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, *map(str, fds)], pass_fds=fds, stdout=subprocess.PIPE
    )
    for _, client in pairs:
        client.close()
    try:
        if profile is not None:
            profile.enable()
        spent = trio.run(streams_at_once, events, piece, [server for server, _ in pairs])
        if profile is not None:
            profile.disable()
        out, _ = reader.communicate(timeout=120)
    finally:
        reader.kill()
        for (cls, name), value in PRISTINE.items():
            setattr(cls, name, value)
    return spent / (events * streams) * 1e6, out.decode().strip()


def calls_per_event(arm: Arm, streams: int, events: int, piece: bytes) -> tuple[float, list[str]]:
    """cProfile's function calls per pushed event (the stream's setup and end subtracted by
    running it twice), and the functions called most."""
    totals = []
    top: list[str] = []
    for count in (events, 2 * events):
        profile = cProfile.Profile()
        run_round(arm, streams, count, piece, profile)
        stats = pstats.Stats(profile)
        totals.append(stats.total_calls)  # type: ignore[attr-defined]
        if count == 2 * events:
            rows = sorted(stats.stats.items(), key=lambda item: -item[1][1])  # type: ignore[attr-defined]
            top = [
                f"{c[1] / (2 * events * streams):5.2f}  {f[2]} ({Path(f[0]).name}:{f[1]})"
                for f, c in rows[:14]
            ]
    return (totals[1] - totals[0]) / (events * streams), top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=1, help="connections at once")
    parser.add_argument("--size", type=int, default=220, help="bytes per event (an SSE delta)")
    parser.add_argument("--baseline", default="main", help="git ref of the old modules")
    args = parser.parse_args()
    piece = b"data: " + b"x" * (args.size - 8) + b"\n\n"
    with tempfile.TemporaryDirectory() as folder:
        arms = {
            args.baseline: installed(load_at(args.baseline, Path(folder))),
            "working tree": installed(load_here),
        }
    figures: dict[str, list[float]] = {name: [] for name in arms}
    wire: dict[str, set[str]] = {name: set() for name in arms}
    for number in range(args.rounds):
        for name, arm in arms.items():
            cost, digest = run_round(arm, args.streams, args.events, piece)
            figures[name].append(cost)
            wire[name].add(digest)
            print(f"round {number + 1}: {name}: {cost:.2f} µs/event", file=sys.stderr)
    print(
        f"{args.streams} stream(s) x {args.events} events of {len(piece)} bytes, "
        f"{args.rounds} rounds, process CPU per event"
    )
    for name, arm in arms.items():
        calls, top = calls_per_event(arm, args.streams, max(1, 2000 // args.streams), piece)
        values = figures[name]
        print(
            f"\n{name}: median {statistics.median(values):.2f} µs/event "
            f"(min {min(values):.2f}, max {max(values):.2f}); {calls:.1f} calls/event"
        )
        print("  calls/event  function\n" + "\n".join("  " + line for line in top))
    digests = set.union(*wire.values())
    print(f"\nbytes on the wire identical in both arms: {len(digests) == 1} ({digests})")


if __name__ == "__main__":
    main()
