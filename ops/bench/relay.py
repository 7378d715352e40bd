"""The floor path: a plain Trio TCP byte relay, the physical limit of one Python hop.

`python ops/bench/relay.py --target-port P [--port 0]` accepts connections, opens one to
the target for each, and pumps bytes both ways until either side closes. No HTTP parsing,
no buffering beyond one read: whatever a real gateway does costs at least this much.
Prints `relay listening on http://HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import trio

READ_SIZE = 64 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(READ_SIZE):
            await sink.send_all(data)
    except _GONE:
        pass


async def relay(target_host: str, target_port: int, client: trio.SocketStream) -> None:
    try:
        upstream = await trio.open_tcp_stream(target_host, target_port)
    except OSError:
        await client.aclose()
        return
    async with client, upstream, trio.open_nursery() as nursery:

        async def both_ways(source: trio.SocketStream, sink: trio.SocketStream) -> None:
            await pump(source, sink)
            nursery.cancel_scope.cancel()  # one side is done: close both

        nursery.start_soon(both_ways, client, upstream)
        nursery.start_soon(both_ways, upstream, client)


async def serve(host: str, port: int, target_host: str, target_port: int) -> None:
    handler = partial(relay, target_host, target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host=host))
        bound = listeners[0].socket.getsockname()[1]
        print(f"relay listening on http://{host}:{bound}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--target-port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.host, args.port, args.target_host, args.target_port)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
