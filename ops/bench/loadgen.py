"""A small Trio load generator: HTTP/1.1 keep-alive connections driven by h11.

Theory of operation:

- A round first opens `concurrency` connections and carries one cheap untimed GET over
  each (so every hop behind it is connected too: the relay's upstream socket, say, or a
  server's accept backlog overflowing at c=200), then calls `on_start`, runs
  the load until `duration` has passed, waits for the requests in flight, and calls
  `on_stop` (the caller reads process CPU there, so only the timed window is counted).
- Closed loop: every connection sends its next request as soon as the previous answer
  ends. Open loop: a scheduler releases requests at a fixed rate into a queue the
  connections drain; latency runs from the release, so time spent waiting for a free
  connection counts (no coordinated omission). The release instant is read when the
  scheduler actually wakes, so Trio's ~1 ms timer granularity does not add to latency.
- Per request: time to the first body byte, total time, status, and for every body chunk
  (an h11 `Data` event) the gap since the previous one. Chunks that arrive in one socket
  read share its timestamp, so their gap is 0: batching shows as one long gap.
- With a target's `sent_at` (the emulator's `x-emulator-sent-at` knob in its body), each
  answer's *tail* is recorded too: from when the emulator sent the terminal event (the
  stamp it carries, CLOCK_MONOTONIC) to the answer's last byte here, on the same clock.
  A paced request's duration moves by tens of milliseconds with the pacing's timer
  jitter; its tail does not, so the tail is how a path's end-of-answer cost is compared.
- A request is an error when the status is not 2xx, the body lacks the target's success
  marker (an SSE stream without `response.completed`), a transport error occurs or
  `REQUEST_TIMEOUT_S` passes; the connection is then replaced.
- While a round runs, a lag monitor measures how late this process's own event loop
  wakes (high values mean the load-generator core is saturated), and an optional probe
  times a `GET` on its own connection every `PROBE_INTERVAL_S` (the gateway's `/healthz`:
  an upper bound on its event-loop lag under load).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
import trio
from stats import Histogram, summarize

__all__ = ["Connection", "Probe", "RequestFailed", "RoundResult", "Target", "run_round"]

REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
RECEIVE_SIZE = 64 * 1024
PROBE_INTERVAL_S = 0.02
LAG_INTERVAL_S = 0.005
MARKER_CARRY = 64
SENT_AT_CARRY = 4096  # the end of a body kept to find the stamp: the terminal event's end
SENT_AT = re.compile(rb'"x-emulator-sent-at"\s*:\s*"([0-9.]+)"')
# Any cheap answer will do (the emulator says 404): it proves the whole path is connected.
PRIMING_PATH = b"/healthz"


@dataclass(frozen=True)
class Target:
    """One kind of request, prepared once: h11 validates the events when they are built."""

    host: str
    port: int
    method: bytes
    path: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    success_marker: bytes = b""
    sent_at: bool = False  # record each answer's tail from the emulator's stamp
    request: h11.Request = field(init=False, repr=False)
    data: h11.Data | None = field(init=False, repr=False)
    priming: h11.Request = field(init=False, repr=False)

    def __post_init__(self) -> None:
        host = (b"host", f"{self.host}:{self.port}".encode())
        headers = [host, *self.headers]
        if self.body or self.method == b"POST":
            headers.append((b"content-length", str(len(self.body)).encode()))
        request = h11.Request(method=self.method, target=self.path, headers=headers)
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "data", h11.Data(data=self.body) if self.body else None)
        priming = h11.Request(method=b"GET", target=PRIMING_PATH, headers=[host])
        object.__setattr__(self, "priming", priming)


@dataclass(frozen=True)
class Probe:
    target: Target
    interval_s: float = PROBE_INTERVAL_S


@dataclass
class RoundResult:
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    ttfbs_s: list[float] = field(default_factory=list)
    tails_s: list[float] = field(default_factory=list)
    gaps_s: Histogram = field(default_factory=Histogram)
    chunks: int = 0
    events: int = 0
    first_start: float = math.inf
    last_done: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    loop_lag_s: Histogram = field(default_factory=Histogram)
    probe_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def throughput(self) -> float:
        """Answers per second over the span from the first request to the last answer."""
        span = self.last_done - self.first_start
        return self.ok / span if self.ok and span > 0 else math.nan

    def figures(self) -> dict[str, float]:
        """Milliseconds and counts; NaN where nothing was measured."""
        latency, ttfb = summarize(self.latencies_s), summarize(self.ttfbs_s)
        probe = summarize(self.probe_s)
        ms = 1000.0
        out = {
            "p50_ms": latency.p50 * ms,
            "p99_ms": latency.p99 * ms,
            "ttfb_p50_ms": ttfb.p50 * ms,
            "ttfb_p99_ms": ttfb.p99 * ms,
            "gap_p99_ms": self.gaps_s.percentile(99.0) * ms,
            "gap_max_ms": self.gaps_s.max * ms if self.gaps_s.count else math.nan,
            "rps": self.throughput(),
            "requests": float(self.ok),
            "errors": float(sum(self.errors.values())),
            "events_per_request": self.events / self.ok if self.ok else math.nan,
            "chunks_per_request": self.chunks / self.ok if self.ok else math.nan,
            "loadgen_lag_p99_ms": self.loop_lag_s.percentile(99.0) * ms,
            "probe_p50_ms": probe.p50 * ms,
            "probe_p99_ms": probe.p99 * ms,
        }
        if self.tails_s:  # a target with `sent_at`
            tail = summarize(self.tails_s)
            out["tail_p50_ms"], out["tail_p99_ms"] = tail.p50 * ms, tail.p99 * ms
        return out


class RequestFailed(Exception):
    """The request failed; the connection must be replaced. The message is the error kind."""


class Connection:
    __slots__ = ("_h11", "_stream", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self._stream: trio.SocketStream | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def open(self) -> None:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            self._stream = await trio.open_tcp_stream(self.target.host, self.target.port)
        self._h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.socket.close()
            self._stream = None

    async def exchange(self, started: float, result: RoundResult) -> None:
        """One request/response; records into `result` or counts the error."""
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await self._exchange(started, result)
        except trio.TooSlowError:
            result.errors["timeout"] += 1
            self.close()
        except RequestFailed as exc:
            result.errors[str(exc)] += 1
            self.close()
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            h11.ProtocolError,
        ) as exc:
            result.errors[type(exc).__name__] += 1
            self.close()

    async def _send_request(self) -> trio.SocketStream:
        if self._stream is None:
            await self.open()
        stream, conn, target = self._stream, self._h11, self.target
        assert stream is not None
        out = conn.send(target.request) or b""
        if target.data is not None:
            out += conn.send(target.data) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)
        return stream

    async def prime(self) -> None:
        """Open the connection and carry one cheap untimed request over it, so that every
        hop behind it (the relay's upstream socket, say) is connected before the clock
        starts; any status will do."""
        await self.open()
        assert self._stream is not None
        conn = self._h11
        await self._stream.send_all(
            (conn.send(self.target.priming) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        )
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._stream.receive_some(RECEIVE_SIZE))
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise RequestFailed("closed_by_peer")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()

    async def send_and_read_head(self) -> int:
        """Send the request and read up to the response head; the status code."""
        stream = await self._send_request()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(await stream.receive_some(RECEIVE_SIZE))
            elif type(event) is h11.Response:
                return event.status_code
            elif type(event) is h11.ConnectionClosed:
                raise RequestFailed("closed_by_peer")

    async def _exchange(self, started: float, result: RoundResult) -> None:
        stream = await self._send_request()
        conn, target = self._h11, self.target
        now = trio.current_time()
        status = 0
        first: float | None = None
        last = 0.0
        gaps = result.gaps_s
        marker = target.success_marker
        found = not marker
        carry = b""
        events = chunks = 0
        newline_tail = False
        end = b""  # with target.sent_at: the body's last bytes
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                now = trio.current_time()
                conn.receive_data(data)
                continue
            if type(event) is h11.Data:
                body = event.data
                if first is None:
                    first = now
                else:
                    gaps.record(now - last)
                last = now
                chunks += 1
                events += body.count(b"\n\n") + (newline_tail and body[:1] == b"\n")
                newline_tail = body[-1:] == b"\n"
                if not found:
                    window = carry + bytes(body)
                    found = marker in window
                    carry = window[-MARKER_CARRY:]
                if target.sent_at:
                    end = (end + bytes(body))[-SENT_AT_CARRY:]
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                raise RequestFailed("closed_by_peer")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()
        if not 200 <= status < 300:
            raise RequestFailed(f"http_{status}")
        if not found:
            raise RequestFailed("incomplete_body")
        if target.sent_at:
            result.tails_s.append(tail_since_sent(end, now))
        result.latencies_s.append(now - started)
        result.ttfbs_s.append((first if first is not None else now) - started)
        result.chunks += chunks
        result.events += events
        result.first_start = min(result.first_start, started)
        result.last_done = max(result.last_done, now)


def tail_since_sent(body_end: bytes, done: float) -> float:
    """From the emulator's stamp in `body_end` to `done` (Trio's clock, which is
    CLOCK_MONOTONIC plus an offset of its own)."""
    stamps = SENT_AT.findall(body_end)
    if not stamps:
        raise RequestFailed("no_sent_at_stamp")
    return done - trio.current_time() + time.monotonic() - float(stamps[-1])


async def _prime_all(connections: list[Connection], errors: Counter[str]) -> None:
    async def prime(conn: Connection) -> None:
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await conn.prime()
        except trio.TooSlowError:
            errors["connect_timeout"] += 1
        except RequestFailed as exc:
            errors[f"connect_{exc}"] += 1
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            errors[f"connect_{type(exc).__name__}"] += 1

    async with trio.open_nursery() as nursery:
        for conn in connections:
            nursery.start_soon(prime, conn)


async def _closed_worker(conn: Connection, result: RoundResult, end: float) -> None:
    while (started := trio.current_time()) < end:
        await conn.exchange(started, result)


async def _open_worker(
    conn: Connection, tickets: trio.MemoryReceiveChannel[float], result: RoundResult
) -> None:
    async for released in tickets:
        await conn.exchange(released, result)


async def _schedule(
    tickets: trio.MemorySendChannel[float], rate: float, start: float, end: float
) -> None:
    """Release request k at start + k/rate (as many as are due whenever we wake)."""
    async with tickets:
        k = 0
        while (due := start + k / rate) < end:
            await trio.sleep_until(due)
            now = trio.current_time()
            while (due := start + k / rate) <= now and due < end:
                tickets.send_nowait(now)
                k += 1


async def _watch_lag(result: RoundResult) -> None:
    while True:
        asked = trio.current_time() + LAG_INTERVAL_S
        await trio.sleep_until(asked)
        result.loop_lag_s.record(max(0.0, trio.current_time() - asked))


async def _probe(probe: Probe, result: RoundResult) -> None:
    conn = Connection(probe.target)
    sink = RoundResult()
    try:
        while True:
            before = len(sink.latencies_s)
            await conn.exchange(trio.current_time(), sink)
            if len(sink.latencies_s) > before:
                result.probe_s.append(sink.latencies_s[-1])
            await trio.sleep(probe.interval_s)
    finally:
        conn.close()
        if sink.errors:
            result.errors.update({f"probe_{k}": v for k, v in sink.errors.items()})


async def run_round(
    target: Target,
    concurrency: int,
    duration_s: float,
    *,
    rate: float | None = None,
    probe: Probe | None = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> RoundResult:
    """Closed loop at `concurrency`, or open loop at `rate` requests/s over at most
    `concurrency` connections when `rate` is given."""
    result = RoundResult()
    connections = [Connection(target) for _ in range(concurrency)]
    try:
        await _prime_all(connections, result.errors)
        if result.errors:
            return result
        async with trio.open_nursery() as monitors:
            monitors.start_soon(_watch_lag, result)
            if probe is not None:
                monitors.start_soon(_probe, probe, result)
            if on_start is not None:
                on_start()
            start = trio.current_time()
            end = start + duration_s
            async with trio.open_nursery() as load:
                if rate is None:
                    for conn in connections:
                        load.start_soon(_closed_worker, conn, result, end)
                else:
                    expected = math.ceil(rate * duration_s) + 1
                    send, receive = trio.open_memory_channel[float](expected)
                    load.start_soon(_schedule, send, rate, start, end)
                    async with receive:
                        for conn in connections:
                            load.start_soon(_open_worker, conn, receive.clone(), result)
            if on_stop is not None:
                on_stop()
            result.duration_s = duration_s
            monitors.cancel_scope.cancel()
    finally:
        for conn in connections:
            conn.close()
    return result
