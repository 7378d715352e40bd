"""What the upstream HTTP/1.1 client costs per request: h11 against httptools (llhttp).

`pooler.upstream.http1` as it was on h11 (read from git, imported as a separate module)
and as it is (httptools) each send requests over one keep-alive connection to a local
origin that answers precomputed bytes; the origin runs in a subprocess, so the figure is
the client process's own CPU (`time.process_time()`): writing the request head, reading
the socket, parsing the response and handing the body out chunk by chunk, as a relay does.
Two answers: a Codex-like SSE stream (28 events, one chunk each, `Transfer-Encoding:
chunked`) and a 1 KB JSON body with a Content-Length. Rounds alternate old, new, old, ...;
the table gives each round's µs per request, the medians and new - old.

    python ops/bench/upstream_client_cost.py [--requests 3000] [--rounds 5] [--old REF]

`--old` is the git revision whose `pooler/upstream/http1.py` is the h11 client; by default
the parent of the last commit that changed `import h11` in that file. Run from the
repository root (`PYTHONPATH=.`); taskset the process to one core on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from types import ModuleType
from typing import Any

import trio

HOST = "127.0.0.1"
MODULE = "pooler/upstream/http1.py"
REQUEST_BODY = json.dumps({"model": "gpt-5.5", "input": "x" * 300, "stream": True}).encode()
REQUEST_HEADERS = [
    (b"authorization", b"Bearer " + b"t" * 900),
    (b"chatgpt-account-id", b"0f3c1d2e-4b5a-6978-8a9b-0c1d2e3f4a5b"),
    (b"content-type", b"application/json"),
    (b"accept", b"text/event-stream"),
    (b"originator", b"codex_cli_rs"),
    (b"user-agent", b"codex_cli_rs/0.169.0 (Linux 6.1; x86_64) xterm"),
    (b"session_id", b"5d2c5e0a-7f1b-4c39-9f6d-3a0b8e2c1d4f"),
]
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 10:00:00 GMT\r\nserver: hypercorn-h11\r\n"
    b"x-request-id: req_0123456789abcdef\r\nopenai-model: gpt-5.5\r\n"
)


def sse_events() -> list[bytes]:
    events = [b'event: response.created\ndata: {"type":"response.created","response":{}}\n\n']
    for i in range(26):
        data = {
            "type": "response.output_text.delta",
            "item_id": "msg_0123456789abcdef0123456789abcdef",
            "output_index": 0,
            "content_index": 0,
            "delta": f" word{i}",
            "sequence_number": i + 1,
        }
        events.append(
            b"event: response.output_text.delta\ndata: %s\n\n" % json.dumps(data).encode()
        )
    events.append(b'event: response.completed\ndata: {"type":"response.completed"}\n\n')
    return events


def answers() -> dict[str, bytes]:
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in sse_events()) + b"0\r\n\r\n"
    body = json.dumps({"id": "resp_1", "object": "response", "output": "y" * 930}).encode()
    return {
        "sse": RESPONSE_HEAD
        + b"content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunked,
        "json": RESPONSE_HEAD
        + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body,
    }


# --- the origin (a subprocess: its CPU is not the client's) -------------------------------


def serve(port_file: str) -> None:
    table = answers()

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                buf = buf[length:]
                target = head.split(b" ", 2)[1]
                await stream.send_all(table[target.rsplit(b"/", 1)[1].decode()])
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
            publish(port_file, listener.socket.getsockname()[1])

    trio.run(main)


def publish(port_file: str, port: int) -> None:
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)


# --- the client -----------------------------------------------------------------------------


def load(source: str, name: str) -> ModuleType:
    path = os.path.join(tempfile.mkdtemp(), name + ".py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def old_revision() -> str:
    out = subprocess.run(
        ["git", "log", "--format=%H", "-S", "import h11", "--", MODULE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out:
        sys.exit("no commit changed `import h11` in " + MODULE + "; pass --old")
    return out[0] + "^"


async def run_round(module: ModuleType, port: int, kind: str, requests: int) -> float:
    pool: Any = module.UpstreamPool(f"http://{HOST}:{port}/backend-api/codex")
    try:
        for _ in range(50):  # warm-up, and the one connection opened
            await one(pool, kind)
        start = time.process_time()
        for _ in range(requests):
            await one(pool, kind)
        return (time.process_time() - start) / requests * 1e6
    finally:
        await pool.aclose()


async def one(pool: Any, kind: str) -> None:
    async with pool.request("POST", "/" + kind, REQUEST_HEADERS, REQUEST_BODY) as resp:
        async for _chunk in resp.aiter_bytes():
            pass


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--old", help="git revision of the h11 client")
    args = parser.parse_args()
    old_ref = args.old or old_revision()
    old_source = subprocess.run(
        ["git", "show", f"{old_ref}:{MODULE}"], capture_output=True, text=True, check=True
    ).stdout
    with open(MODULE) as f:
        new_source = f.read()
    modules = {"h11": load(old_source, "http1_h11"), "httptools": load(new_source, "http1_new")}
    print(f"old: {old_ref}:{MODULE}; new: the working tree's; {args.requests} requests a round")

    port_file = os.path.join(tempfile.mkdtemp(), "port")
    origin = subprocess.Popen([sys.executable, __file__, "--serve", port_file])
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or origin.poll() is not None:
                sys.exit("the origin did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            port = int(f.read())
        for kind in ("sse", "json"):
            figures: dict[str, list[float]] = {name: [] for name in modules}
            for _ in range(args.rounds):
                for name, module in modules.items():
                    figures[name].append(trio.run(run_round, module, port, kind, args.requests))
            print(f"\n{kind}: client CPU µs per request")
            for name, values in figures.items():
                rounds = " ".join(f"{v:7.1f}" for v in values)
                print(f"  {name:10} {rounds}   median {statistics.median(values):7.1f}")
            old, new = (statistics.median(figures[n]) for n in ("h11", "httptools"))
            print(f"  new - old  {new - old:+.1f} µs ({(new - old) / old:+.0%})")
    finally:
        origin.kill()
        origin.wait()


if __name__ == "__main__":
    main()
