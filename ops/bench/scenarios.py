"""What the benchmark sends over each path, and how long it runs.

- *short*: one text delta. The emulator only streams, so on the direct and floor paths
  this is an SSE request, while the gateway's client asks for JSON (no `"stream": true`)
  and the gateway reads the same upstream stream and answers one JSON object. The
  upstream work is the same, but the client is not: directly it parses 9 SSE chunks
  (~3.7 KB), from the gateway one JSON chunk (~0.7 KB), and that parsing happens on the
  load generator's core. So *short* flatters the gateway's latency; its CPU figures
  are fair.
- *short_stream*: the same request streamed on every path, byte for byte like with
  like: the latency budgets for short requests are judged on it as well.
- *sse*: `SSE_DELTAS` text deltas (28 events in all) streamed on every path.

Knobs reach the emulator in `client_metadata`, which the gateway relays untouched.

With `--baseline-tree`, a second gateway (an older checkout) is one more path,
`baseline`: the gateway's request, sent to that gateway with its own Pool key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cluster import Endpoints
from loadgen import Probe, Target

PATHS = ("direct", "floor", "gateway")
BASELINE = "baseline"
GATEWAYS = ("gateway", BASELINE)  # the paths served by a Codex Pooler process
ROUTE = b"/backend-api/codex/responses"
SHORT_DELTAS = 1
SSE_DELTAS = 20
SSE_DONE = b"event: response.completed"
JSON_DONE = b'"status":"completed"'


@dataclass(frozen=True)
class Scenario:
    kind: str  # "short" | "short_stream" | "sse"
    concurrency: int

    @property
    def key(self) -> str:
        return f"{self.kind} c={self.concurrency}"

    @property
    def deltas(self) -> int:
        return SSE_DELTAS if self.kind == "sse" else SHORT_DELTAS

    @property
    def open_loop(self) -> bool:
        """c=1 is one request at a time; above that latency is taken at a fixed load."""
        return self.concurrency > 1


SCENARIOS = (
    *(Scenario("short", c) for c in (1, 50, 200)),
    *(Scenario("short_stream", c) for c in (1, 50)),
    *(Scenario("sse", c) for c in (1, 50, 200)),
)


@dataclass(frozen=True)
class Plan:
    rounds: int
    saturated_s: float  # closed loop at the scenario's concurrency: rps, CPU
    latency_s: float  # open loop at `load` x the gateway's capacity: latency figures
    warmup_s: float
    load: float = 0.7
    settle_s: float = 0.1


QUICK = Plan(rounds=3, saturated_s=0.8, latency_s=1.2, warmup_s=0.4)
FULL = Plan(rounds=5, saturated_s=3.0, latency_s=4.0, warmup_s=2.0)


def paths(baseline: bool) -> tuple[str, ...]:
    """The paths every round runs, in their unrotated order."""
    return (*PATHS, BASELINE) if baseline else PATHS


def rotated(order: tuple[str, ...], index: int) -> tuple[str, ...]:
    """Round `index`'s order: rotated by one per round, so no path is always first."""
    shift = index % len(order)
    return order[shift:] + order[:shift]


def request_body(
    deltas: int, *, stream: bool, delay_ms: int | None = None, sent_at: bool = False
) -> bytes:
    """`sent_at`: the emulator stamps its terminal event (`loadgen`'s answer tails)."""
    metadata = {"x-emulator-events": str(deltas)}
    if delay_ms is not None:
        metadata["x-emulator-delay-ms"] = str(delay_ms)
    if sent_at:
        metadata["x-emulator-sent-at"] = "1"
    body: dict[str, object] = {"model": "gpt-5.5"}
    if stream:
        body["stream"] = True
    body["store"] = False
    body["input"] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    ]
    body["client_metadata"] = metadata
    return json.dumps(body, separators=(",", ":")).encode()


def targets(
    endpoints: Endpoints,
    kind: str,
    deltas: int,
    delay_ms: int | None = None,
    *,
    pool_key: str | None = None,
    sent_at: bool = False,
) -> dict[str, Target]:
    """The same request over the three paths (the gateway's through `pool_key`'s Pool,
    by default the `bench` Pool), and over the baseline gateway when it runs (always
    through its own `bench` Pool); with `sent_at`, each answer's tail is timed too."""
    upstream_headers = (
        (b"authorization", b"Bearer " + endpoints.access_token.encode()),
        (b"chatgpt-account-id", endpoints.account_id.encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
    )
    sse_body = request_body(deltas, stream=True, delay_ms=delay_ms, sent_at=sent_at)
    pool_auth = (b"authorization", b"Bearer " + (pool_key or endpoints.pool_key).encode())
    if kind != "short":
        gateway_headers = (pool_auth, upstream_headers[2], upstream_headers[3])
        gateway_body, gateway_done = sse_body, SSE_DONE
    else:
        gateway_headers = (pool_auth, upstream_headers[2], (b"accept", b"application/json"))
        gateway_body = request_body(deltas, stream=False, delay_ms=delay_ms, sent_at=sent_at)
        gateway_done = JSON_DONE
    host = "127.0.0.1"

    def gateway(port: int, auth: tuple[bytes, bytes]) -> Target:
        headers = (auth, *gateway_headers[1:])
        return Target(host, port, b"POST", ROUTE, headers, gateway_body, gateway_done, sent_at)

    def upstream(port: int) -> Target:
        return Target(host, port, b"POST", ROUTE, upstream_headers, sse_body, SSE_DONE, sent_at)

    found = {
        "direct": upstream(endpoints.emulator_port),
        "floor": upstream(endpoints.relay_port),
        "gateway": gateway(endpoints.gateway_port, pool_auth),
    }
    baseline = endpoints.baseline
    if baseline is not None:
        found[BASELINE] = gateway(
            baseline.port, (b"authorization", b"Bearer " + baseline.pool_key.encode())
        )
    return found


def health_probe(endpoints: Endpoints, path: str = "gateway") -> Probe:
    """`GET /healthz` on the gateway (or the baseline gateway) while it is measured."""
    port = endpoints.gateway_port
    if path == BASELINE:
        if endpoints.baseline is None:
            raise RuntimeError("no baseline gateway runs (--baseline-tree)")
        port = endpoints.baseline.port
    return Probe(Target("127.0.0.1", port, b"GET", b"/healthz", ()))
