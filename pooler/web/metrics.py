"""Prometheus metrics, read from the gateway's state at scrape time (nothing on the hot path).

Every label value is one of a fixed set (the sets below, or names fixed in code: route
classes, lifecycles, job names): never a key, an account, a model or anything else a client
or an upstream chose. A value outside its set is counted as "other", so no input can grow
the number of series.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from pooler.instance_settings import DEFAULT_BULKHEADS
from pooler.routing.lifecycle import Lifecycle
from pooler.routing.verdict import ROUTE_CLASSES
from pooler.web.admission import QUEUE_TIME_BUCKETS, BulkheadStats
from pooler.web.leasing import LEASE_DECISIONS
from pooler.web.loop_lag import LagHistogram

if TYPE_CHECKING:
    from pooler.actors.leader import Leader
    from pooler.actors.scheduler import Scheduler

OTHER: Final = "other"
# The request log's routes and outcomes (pooler.web.request_record).
ROUTES: Final = frozenset(
    {
        "responses",
        "compact",
        "models",
        "files",
        "transcribe",
        "realtime_calls",
        "v1_responses",
        "v1_chat",
        "v1_images",
        "v1_files",
        "v1_transcriptions",
        "v1_usage",
    }
)
OUTCOMES: Final = frozenset(
    {
        "completed",
        "failed",
        "rejected",
        "stream_failed",
        "client_disconnected",
        "upstream_client_error",
        "upstream_error",
        "unknown",
    }
)
# A stream's transport, from its row's: SSE over HTTP (`http` until the body said it
# streams), or a websocket turn.
_STREAM_TRANSPORTS: Final[Mapping[str, str]] = {
    "http_sse": "sse",
    "http": "sse",
    "websocket": "websocket",
}
STREAM_TRANSPORTS: Final = frozenset({*_STREAM_TRANSPORTS.values(), OTHER})
# How a stream (SSE or a websocket turn) ended, from its row's outcome and, for a stream
# that broke, its error code.
_STREAM_BY_OUTCOME: Final[Mapping[str, str]] = {
    "completed": "completed",
    "failed": "failed",  # the upstream ended the response as failed
    "client_disconnected": "client_disconnected",
    "rejected": "rejected",
    "upstream_client_error": "upstream_refused",
    "upstream_error": "upstream_failed",
}
_STREAM_BY_FAILURE: Final[Mapping[str, str]] = {
    "server_stopped": "server_stopped",
    "server_draining": "server_stopped",
    "stream_idle_timeout": "idle_timeout",
    "turn_superseded": "superseded",
    "key_revoked": "key_revoked",
    "account_crashed": "account_stopped",
    "account_stopped": "account_stopped",
}
STREAM_OUTCOMES: Final = frozenset(
    {*_STREAM_BY_OUTCOME.values(), *_STREAM_BY_FAILURE.values(), "upstream_failed", OTHER}
)
# What a token refresh came to (pooler.web.gateway counts them).
REFRESH_OUTCOMES: Final = ("refreshed", "reauth_required", "failed", "error", "cancelled")
LIFECYCLES: Final = frozenset(str(lifecycle) for lifecycle in Lifecycle)
CIRCUIT_STATES: Final = frozenset({"open", "half_open"})
CIRCUIT_CLASSES: Final = frozenset(ROUTE_CLASSES)
BULKHEAD_CLASSES: Final = frozenset(DEFAULT_BULKHEADS)
WRITE_BEHIND_KINDS: Final = ("quota", "pins")
LOOP_LAG_QUANTILES: Final = (0.5, 0.99, 1.0)


def bounded(value: str, allowed: frozenset[str] | Mapping[str, Any]) -> str:
    return value if value in allowed else OTHER


def stream_outcome(outcome: str, error_code: str | None) -> str:
    """The `codex_pooler_streams` outcome of a stream's request row."""
    if outcome == "stream_failed":
        return _STREAM_BY_FAILURE.get(error_code or "", "upstream_failed")
    return _STREAM_BY_OUTCOME.get(outcome, OTHER)


class RequestCounters:
    """Plain counters bumped in place (a dict increment, no locks, no label objects),
    read at scrape time. Keys are bounded when counted, so no input grows them."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.streams: Counter[tuple[str, str]] = Counter()  # (transport, stream outcome)
        self.leases: Counter[str] = Counter()  # pooler.web.leasing.LEASE_DECISIONS
        self.refreshes: Counter[str] = Counter()  # REFRESH_OUTCOMES

    def count(self, route: str, outcome: str) -> None:
        self.requests[(bounded(route, ROUTES), bounded(outcome, OUTCOMES))] += 1

    def count_stream(self, transport: str, outcome: str, error_code: str | None) -> None:
        kind = _STREAM_TRANSPORTS.get(transport, OTHER)
        self.streams[(kind, stream_outcome(outcome, error_code))] += 1


class GatewayCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]], counters: RequestCounters) -> None:
        self._read = read
        self._counters = counters

    def collect(self) -> Iterator[Any]:
        state = self._read()
        counters = self._counters
        requests = CounterMetricFamily(
            "codex_pooler_requests",
            "Runtime requests by route and outcome",
            labels=["route", "outcome"],
        )
        for (route, outcome), value in sorted(counters.requests.items()):
            requests.add_metric([route, outcome], value)
        yield requests
        streams = CounterMetricFamily(
            "codex_pooler_streams",
            "Streams (SSE responses, websocket turns) by transport (sse, websocket) and how"
            " they ended",
            labels=["transport", "outcome"],
        )
        for (transport, outcome), value in sorted(counters.streams.items()):
            streams.add_metric([transport, outcome], value)
        yield streams
        leases = CounterMetricFamily(
            "codex_pooler_leases",
            "Lease requests by decision (granted, no eligible account, ...)",
            labels=["decision"],
        )
        for decision in LEASE_DECISIONS:
            leases.add_metric([decision], counters.leases.get(decision, 0))
        yield leases
        refreshes = CounterMetricFamily(
            "codex_pooler_token_refreshes",
            "Upstream access-token refreshes by outcome",
            labels=["outcome"],
        )
        for outcome in REFRESH_OUTCOMES:
            refreshes.add_metric([outcome], counters.refreshes.get(outcome, 0))
        yield refreshes
        accounts = GaugeMetricFamily(
            "codex_pooler_accounts", "Upstream accounts by lifecycle", labels=["lifecycle"]
        )
        by_lifecycle: Counter[str] = Counter()
        for lifecycle, value in state["accounts_by_lifecycle"].items():
            by_lifecycle[bounded(str(lifecycle), LIFECYCLES)] += value
        for lifecycle in sorted(LIFECYCLES | set(by_lifecycle)):
            accounts.add_metric([lifecycle], by_lifecycle.get(lifecycle, 0))
        yield accounts
        yield GaugeMetricFamily(
            "codex_pooler_in_flight", "Leases in flight", value=state["in_flight"]
        )
        yield GaugeMetricFamily(
            "codex_pooler_continuity_pins",
            "Conversation pins held in memory, all Pools (at most 100,000 per Pool)",
            value=state["continuity_pins"],
        )
        yield CounterMetricFamily(
            "codex_pooler_actor_crashes", "Account actor crashes", value=state["actor_crashes"]
        )
        yield GaugeMetricFamily(
            "codex_pooler_log_buffer_rows", "Request-log rows waiting", value=state["log_pending"]
        )
        yield GaugeMetricFamily(
            "codex_pooler_log_writer_lag_seconds",
            "How long the oldest request-log row not yet written has waited (0: none waits)",
            value=state["log_lag"],
        )
        lag = GaugeMetricFamily(
            "codex_pooler_event_loop_lag_seconds",
            "How late a 50 ms sleep woke up, over the last minute",
            labels=["quantile"],
        )
        for quantile in LOOP_LAG_QUANTILES:
            lag.add_metric([str(quantile)], state["loop_lag"].get(quantile, 0.0))
        yield lag
        yield loop_lag_histogram(state["loop_lag_histogram"])
        yield CounterMetricFamily(
            "codex_pooler_log_rows_written", "Request-log rows written", value=state["log_written"]
        )
        circuits = GaugeMetricFamily(
            "codex_pooler_circuits",
            "Account circuits by route class and state (closed ones are not listed)",
            labels=["route_class", "state"],
        )
        by_circuit: Counter[tuple[str, str]] = Counter()
        for (route_class, circuit_state), value in state["circuits"].items():
            key = (bounded(route_class, CIRCUIT_CLASSES), bounded(circuit_state, CIRCUIT_STATES))
            by_circuit[key] += value
        for (route_class, circuit_state), value in sorted(by_circuit.items()):
            circuits.add_metric([route_class, circuit_state], value)
        yield circuits
        yield CounterMetricFamily(
            "codex_pooler_circuit_transitions",
            "Circuit state changes (closed->open, half_open->closed, ...)",
            value=state["circuit_transitions"],
        )
        yield from admission_metrics(state["admission"])
        yield CounterMetricFamily(
            "codex_pooler_log_rows_dropped",
            "Request-log rows dropped (buffer full)",
            value=state["log_dropped"],
        )
        yield CounterMetricFamily(
            "codex_pooler_log_rows_reduced",
            "Request-log rows the database refused, stored without client-chosen fields",
            value=state["log_reduced"],
        )
        yield CounterMetricFamily(
            "codex_pooler_log_rows_refused",
            "Request-log rows the database refused even reduced: dropped",
            value=state["log_refused"],
        )
        refused = CounterMetricFamily(
            "codex_pooler_write_behind_refused",
            "Write-behind items (quota evidence, continuity pins) the database refused: dropped",
            labels=["kind"],
        )
        for kind in WRITE_BEHIND_KINDS:
            refused.add_metric([kind], state["write_behind_refused"].get(kind, 0))
        yield refused


LOOP_LAG_HISTOGRAM: Final = "codex_pooler_event_loop_tick_lag_seconds"


def loop_lag_histogram(histogram: LagHistogram) -> HistogramMetricFamily:
    """The loop lag as a cumulative histogram since start (beside the quantile gauges,
    which cover a sliding minute and cannot be cut to a window or summed across replicas)."""
    family = HistogramMetricFamily(
        LOOP_LAG_HISTOGRAM,
        "How late each 50 ms sleep woke up, counted since start",
    )
    buckets = [
        ("+Inf" if math.isinf(bound) else f"{bound:g}", ticks)
        for bound, ticks in histogram.cumulative()
    ]
    family.add_metric([], buckets, histogram.total_s)
    return family


def admission_metrics(stats: Mapping[str, BulkheadStats]) -> Iterator[Any]:
    """The bulkheads: running and waiting, refusals, and the queue time of the admitted."""
    admission = GaugeMetricFamily(
        "codex_pooler_admission",
        "Admission bulkheads: requests running and waiting per route class",
        labels=["route_class", "kind"],
    )
    refused = CounterMetricFamily(
        "codex_pooler_admission_refused",
        "Requests refused by a bulkhead (queue full, or the wait ran out)",
        labels=["route_class", "reason"],
    )
    queue_time = HistogramMetricFamily(
        "codex_pooler_admission_queue_seconds",
        "How long admitted requests waited for a bulkhead slot (0 when admitted at once)",
        labels=["route_class"],
    )
    for route_class, gate in sorted(stats.items()):
        if route_class not in BULKHEAD_CLASSES:  # never: classes come from the settings
            continue
        admission.add_metric([route_class, "in_flight"], gate.in_flight)
        admission.add_metric([route_class, "queued"], gate.queued)
        refused.add_metric([route_class, "queue_full"], gate.rejected_total)
        refused.add_metric([route_class, "queue_timeout"], gate.timed_out_total)
        total = gate.admitted_at_once
        buckets = []
        for bound, waited in zip(QUEUE_TIME_BUCKETS, gate.waited, strict=False):
            total += waited
            buckets.append((f"{bound:g}", total))
        total += sum(gate.waited[len(QUEUE_TIME_BUCKETS) :])
        buckets.append(("+Inf", total))
        queue_time.add_metric([route_class], buckets, gate.waited_seconds)
    yield admission
    yield refused
    yield queue_time


@dataclass(frozen=True, slots=True)
class NodeState:
    leader: bool  # this node leads: it runs the once-per-cluster jobs
    job_runs: dict[str, int]  # scheduled job -> times started (a fixed set of names)


def node_state(leader: Leader | None, schedulers: Iterable[Scheduler]) -> NodeState:
    runs = {name: n for scheduler in schedulers for name, n in scheduler.runs.items()}
    return NodeState(leader is not None and leader.is_leader, runs)


class NodeCollector(Collector):
    """Every role's metrics: leadership and the scheduled jobs this node ran."""

    def __init__(self, read: Callable[[], NodeState]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        state = self._read()
        yield GaugeMetricFamily(
            "codex_pooler_leader",
            "1 while this node leads (runs the once-per-cluster jobs), else 0",
            value=1 if state.leader else 0,
        )
        runs = CounterMetricFamily(
            "codex_pooler_scheduled_job_runs",
            "Scheduled job runs started on this node, by job",
            labels=["job"],
        )
        for job, value in sorted(state.job_runs.items()):
            runs.add_metric([job], value)
        yield runs


class Metrics:
    """The registry: the gateway's state (`read`, None on a node that serves no gateway)
    and the node's own (`node`: leadership, job runs)."""

    def __init__(
        self, read: Callable[[], dict[str, Any]] | None, node: Callable[[], NodeState]
    ) -> None:
        self.counters = RequestCounters()
        self.registry = CollectorRegistry(auto_describe=False)
        if read is not None:
            self.registry.register(GatewayCollector(read, self.counters))
        self.registry.register(NodeCollector(node))

    def render(self) -> bytes:
        return generate_latest(self.registry)
