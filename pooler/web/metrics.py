"""Prometheus metrics, read from the gateway's state at scrape time (nothing on the hot path)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pooler.actors.leader import Leader
    from pooler.actors.scheduler import Scheduler


class RequestCounters:
    """Plain counters bumped by handlers: a dict increment, no locks, no labels objects."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()

    def count(self, route: str, outcome: str) -> None:
        self.requests[(route, outcome)] += 1


class GatewayCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]], counters: RequestCounters) -> None:
        self._read = read
        self._counters = counters

    def collect(self) -> Iterator[Any]:
        state = self._read()
        requests = CounterMetricFamily(
            "codex_pooler_requests",
            "Runtime requests by route and outcome",
            labels=["route", "outcome"],
        )
        for (route, outcome), value in self._counters.requests.items():
            requests.add_metric([route, outcome], value)
        yield requests
        accounts = GaugeMetricFamily(
            "codex_pooler_accounts", "Upstream accounts by lifecycle", labels=["lifecycle"]
        )
        for lifecycle, value in state["accounts_by_lifecycle"].items():
            accounts.add_metric([lifecycle], value)
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
        lag = GaugeMetricFamily(
            "codex_pooler_event_loop_lag_seconds",
            "How late a 50 ms sleep woke up, over the last minute",
            labels=["quantile"],
        )
        for quantile, value in state["loop_lag"].items():
            lag.add_metric([str(quantile)], value)
        yield lag
        yield CounterMetricFamily(
            "codex_pooler_log_rows_written", "Request-log rows written", value=state["log_written"]
        )
        circuits = GaugeMetricFamily(
            "codex_pooler_circuits",
            "Account circuits by route class and state (closed ones are not listed)",
            labels=["route_class", "state"],
        )
        for (route_class, circuit_state), value in state["circuits"].items():
            circuits.add_metric([route_class, circuit_state], value)
        yield circuits
        yield CounterMetricFamily(
            "codex_pooler_circuit_transitions",
            "Circuit state changes (closed->open, half_open->closed, ...)",
            value=state["circuit_transitions"],
        )
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
        for route_class, stats in state["admission"].items():
            admission.add_metric([route_class, "in_flight"], stats.in_flight)
            admission.add_metric([route_class, "queued"], stats.queued)
            refused.add_metric([route_class, "queue_full"], stats.rejected_total)
            refused.add_metric([route_class, "queue_timeout"], stats.timed_out_total)
        yield admission
        yield refused
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
        for kind in ("quota", "pins"):
            refused.add_metric([kind], state["write_behind_refused"].get(kind, 0))
        yield refused


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
