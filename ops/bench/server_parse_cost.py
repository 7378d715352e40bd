"""What Hypercorn and h11, with the gateway's wrappers, cost the server per request,
in-process, old code against new.

A Codex-like request (POST with the headers the Codex CLI 0.169 sends, a JSON body of
`--body` bytes, keep-alive) answered by a trivial ASGI app with a small JSON body: all the
server does is Hypercorn's and h11's (and our wrappers') work, reading the request and
writing the answer. Each round starts a server process for one arm: it accepts
`--connections` loopback connections from a client process of its own (so
`time.process_time()` counts only the server), serves each with Hypercorn's `TCPServer`
(`hypercorn.trio.tcp_server`: its `ProtocolWrapper` builds the HTTP/1.1 protocol, Hypercorn's
`H11Protocol` in the `hypercorn` arm and in a `pooler` from before issue 17's own protocol,
`pooler.http_server.Http1Protocol` after it; then Hypercorn's `HTTPStream`), and reports its
CPU over `--requests` requests per connection, sent one after another on each.

The arms: `hypercorn` (Hypercorn's own classes, no wrappers: what the wrappers add),
`--baseline` (a git ref, default `main`: its `pooler` package, extracted with `git
archive`, with `pooler.serving.hypercorn_config`'s wrappers installed) and `tree` (the
working tree's). They alternate over `--rounds` rounds; medians are reported, then one
cProfile run per arm: function calls per request, split by package (self time too, which
cProfile inflates and measures on the wall clock, so epoll's waiting is a row of its own:
compare it between arms, not with the CPU figures), and a digest of every
byte the client received, which must be the same in the two gateway arms (the Date
header is off for this).

    PYTHONPATH=$PWD python ops/bench/server_parse_cost.py [--requests 3000] [--rounds 5]
        [--connections 10] [--body 12000] [--baseline main]   # ~1 min; from the root
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ANSWER = b'{"id":"resp_0123456789","object":"response","status":"completed"}'


def codex_request(body_size: int) -> bytes:
    """A Codex CLI `POST /responses` (protocol §2.1) with a JSON body of about `body_size`."""
    filler = max(0, body_size - 60)
    body = json.dumps({"model": "gpt-5", "input": "x" * filler, "stream": False}).encode()
    thread = "0199a213-81c0-7800-8aa1-bbab2a035a53"
    metadata = json.dumps(
        {"installation_id": "5f7b8c9d", "session_id": thread, "turn_id": "1", "model": "gpt-5"}
    )
    headers = [
        ("host", "127.0.0.1:8080"),
        ("authorization", "Bearer sk-cxp-0123456789abcdef0123456789abcdef"),
        ("originator", "codex_exec"),
        ("user-agent", "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)"),
        ("accept", "text/event-stream"),
        ("content-type", "application/json"),
        ("session-id", thread),
        ("thread-id", thread),
        ("x-client-request-id", thread),
        ("x-codex-window-id", f"{thread}:0"),
        ("x-codex-turn-metadata", metadata),
        ("x-codex-beta-features", "remote_compaction_v2"),
        ("content-length", str(len(body))),
    ]
    head = "POST /v1/responses HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode() + b"\r\n" + body


# The client: sends each connection's requests one after another, reading each answer
# (head, then its Content-Length) before the next; starts on a byte on stdin.
CLIENT = """
import hashlib, selectors, socket, sys
port, connections, requests = (int(arg) for arg in sys.argv[1:4])
path = sys.argv[4]
request = open(path, "rb").read()
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
sys.stdin.buffer.read(1)
digest = hashlib.sha256()
state = {sock: [requests, bytearray()] for sock in socks}
selector = selectors.DefaultSelector()
for sock in socks:
    sock.sendall(request)
    selector.register(sock, selectors.EVENT_READ)
while selector.get_map():
    for key, _ in selector.select():
        sock = key.fileobj
        left, buf = state[sock]
        data = sock.recv(1 << 16)
        if not data:
            raise SystemExit("the server closed a connection")
        buf += data
        end = buf.find(b"\\r\\n\\r\\n")
        if end < 0:
            continue
        length = int(buf[:end].lower().split(b"content-length: ")[1].split(b"\\r\\n")[0])
        if len(buf) < end + 4 + length:
            continue
        digest.update(buf)
        buf.clear()
        state[sock][0] = left - 1
        if left - 1:
            sock.sendall(request)
        else:
            selector.unregister(sock)
            sock.close()
print(digest.hexdigest())
"""


async def trivial_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, answers a small JSON body."""
    if scope["type"] == "lifespan":
        from pooler.serving import serve_lifespan

        await serve_lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def server_config(arm: str) -> Any:
    """The config as the gateway serves (its wrappers installed), or Hypercorn's own."""
    if arm == "hypercorn":
        from hypercorn.config import Config

        config: Any = Config()
        config.keep_alive_max_requests = 1_000_000_000
        config.h11_max_incomplete_size = 16 * 1024
        config.include_server_header = False
    else:
        from pooler.serving import hypercorn_config

        config = hypercorn_config("127.0.0.1", 0)
    config.include_date_header = False  # the same bytes in every arm
    return config


def serve(arm: str, request_path: str, connections: int, requests: int, profile: bool) -> None:
    """One round in this process (the arm's `pooler` on sys.path): prints a JSON line."""
    import trio
    import trio.testing
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext

    config = server_config(arm)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, *map(str, (port, connections, requests)), request_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        accepted = [listener.accept()[0] for _ in range(connections)]
        listener.close()
        profiler = cProfile.Profile() if profile else None

        async def run() -> float:
            app = ASGIWrapper(trivial_app)  # type: ignore[arg-type]
            context = WorkerContext(None)
            async with trio.open_nursery() as nursery:
                for sock in accepted:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                    server = TCPServer(app, config, context, {}, stream)  # type: ignore[arg-type]
                    nursery.start_soon(server.run)
                await trio.testing.wait_all_tasks_blocked()
                if profiler is not None:
                    profiler.enable()
                start = time.process_time()
                assert client.stdin is not None
                client.stdin.write(b"g")
                client.stdin.flush()
            spent = time.process_time() - start
            if profiler is not None:
                profiler.disable()
            return spent

        spent = trio.run(run)
        out, _ = client.communicate(timeout=300)
        if client.returncode != 0:
            raise SystemExit(f"the client failed ({client.returncode})")
    finally:
        client.kill()
    total = connections * requests
    result: dict[str, Any] = {"us": spent / total * 1e6, "digest": out.decode().strip()}
    if profiler is not None:
        result["packages"] = by_package(pstats.Stats(profiler), total)
    print(json.dumps(result))


def package_of(filename: str, function: str) -> str:
    if "poll' of 'select.epoll" in function:
        return "epoll wait"  # cProfile's clock is wall time: this is mostly waiting
    for name in ("h11", "hypercorn", "trio", "httptools", "pooler", "outcome", "sniffio"):
        if f"/{name}/" in filename:
            return name
    return "python" if filename.startswith("~") or "/lib/python" in filename else "other"


def by_package(stats: pstats.Stats, total: int) -> dict[str, list[float]]:
    """Per package: [calls per request, self µs per request (cProfile's)]."""
    packages: dict[str, list[float]] = {}
    for (filename, _, function), (_, calls, self_s, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        entry = packages.setdefault(package_of(filename, function), [0.0, 0.0])
        entry[0] += calls / total
        entry[1] += self_s / total * 1e6
    return dict(sorted(packages.items(), key=lambda item: -item[1][0]))


def extract(ref: str, folder: Path) -> Path:
    """The `pooler` package at `ref`, in `folder`."""
    archive = subprocess.run(["git", "archive", ref, "pooler"], capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def one_round(arm: str, root: Path, args: argparse.Namespace, path: str, profile: bool) -> Any:
    command = [sys.executable, __file__, "--serve", "hypercorn" if arm == "hypercorn" else arm]
    command += ["--request-file", path, "--connections", str(args.connections)]
    command += ["--requests", str(args.requests if not profile else max(200, args.requests // 5))]
    if profile:
        command.append("--profile")
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(command, env=env, capture_output=True, check=True, timeout=600)
    return json.loads(out.stdout.decode().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per connection")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--body", type=int, default=12_000, help="request body bytes")
    parser.add_argument("--baseline", default="main", help="git ref of the old pooler")
    parser.add_argument("--arms", default="hypercorn,baseline,tree")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--request-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.request_file, args.connections, args.requests, args.profile)
        return
    here = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as folder:
        request = Path(folder) / "request.bin"
        request.write_bytes(codex_request(args.body))
        roots = {"hypercorn": here, "tree": here}
        roots["baseline"] = extract(args.baseline, Path(folder) / "baseline")
        arms = [arm.strip() for arm in args.arms.split(",")]
        figures: dict[str, list[float]] = {arm: [] for arm in arms}
        digests: dict[str, set[str]] = {arm: set() for arm in arms}
        for number in range(args.rounds):
            for arm in arms:
                result = one_round(arm, roots[arm], args, str(request), profile=False)
                figures[arm].append(result["us"])
                print(f"round {number + 1}: {arm}: {result['us']:.1f} µs/request", file=sys.stderr)
        size = len(request.read_bytes())
        print(
            f"{args.connections} connections x {args.requests} keep-alive requests of {size}"
            f" bytes, {args.rounds} rounds, server process CPU per request"
        )
        for arm in arms:
            profiled = one_round(arm, roots[arm], args, str(request), profile=True)
            digests[arm].add(profiled["digest"])
            values = figures[arm]
            label = f"{arm} ({args.baseline})" if arm == "baseline" else arm
            calls = sum(entry[0] for entry in profiled["packages"].values())
            print(
                f"\n{label}: median {statistics.median(values):.1f} µs/request "
                f"(min {min(values):.1f}, max {max(values):.1f}); {calls:.0f} calls/request"
            )
            print("  package     calls/req  self µs/req (cProfile)")
            for package, (count, self_us) in profiled["packages"].items():
                print(f"  {package:<11} {count:9.1f}  {self_us:8.1f}")
    gateway = [digests[arm] for arm in arms if arm != "hypercorn"]
    if len(gateway) == 2:
        same = gateway[0] == gateway[1] and len(gateway[0]) == 1
        print(f"\nbytes the client received identical in the two gateway arms: {same}")


if __name__ == "__main__":
    main()
