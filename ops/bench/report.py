"""The DESIGN §9 budgets and how results are printed: one JSON object, or Markdown tables.

`Results.scenarios[key][path]` holds the final figures of one scenario on one path
(medians of round medians). Figures are milliseconds unless the name says otherwise;
NaN means "not measured" and becomes `null` in JSON.

With a baseline gateway (`--baseline-tree`), each scenario also has a `baseline` side,
and `gateway_vs_baseline` lists, per scenario, the figures of both gateways and their
difference (`versus_baseline`); runs without it (saved ones too) render as before.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios import BASELINE, PATHS, SCENARIOS
from stats import Budget, Verdict, evaluate

BUDGETS = (
    Budget("short c=1: added p50", "short c=1", "p50_ms", 0.6, "ms"),
    Budget("short c=1: added p99", "short c=1", "p99_ms", 2.0, "ms"),
    Budget("short c=50 at 70% load: added p50", "short c=50", "p50_ms", 2.0, "ms"),
    Budget("short c=50 at 70% load: added p99", "short c=50", "p99_ms", 10.0, "ms"),
    Budget("short streamed c=1: added p50", "short_stream c=1", "p50_ms", 0.6, "ms"),
    Budget("short streamed c=1: added p99", "short_stream c=1", "p99_ms", 2.0, "ms"),
    Budget("short streamed c=50 at 70%: added p50", "short_stream c=50", "p50_ms", 2.0, "ms"),
    Budget("short streamed c=50 at 70%: added p99", "short_stream c=50", "p99_ms", 10.0, "ms"),
    Budget("SSE c=1: added ttfb p50", "sse c=1", "ttfb_p50_ms", 1.0, "ms"),
    Budget("SSE c=1: added ttfb p99", "sse c=1", "ttfb_p99_ms", 5.0, "ms"),
    Budget("SSE c=50 at 70% load: added ttfb p50", "sse c=50", "ttfb_p50_ms", 1.0, "ms"),
    Budget("SSE c=50 at 70% load: added ttfb p99", "sse c=50", "ttfb_p99_ms", 5.0, "ms"),
    Budget("SSE c=1: added inter-chunk gap p99", "sse c=1", "gap_p99_ms", 1.0, "ms"),
    Budget("SSE c=50 at 70% load: added gap p99", "sse c=50", "gap_p99_ms", 1.0, "ms"),
    Budget(
        "CPU per relayed SSE event (c=50, saturated)",
        "sse c=50",
        "cpu_us_per_event",
        100.0,
        "µs",
        added=False,
    ),
    Budget(
        "short requests/s per core, from CPU per request (c=50)",
        "short c=50",
        "rps_per_core",
        1000.0,
        "req/s",
        added=False,
        at_least=True,
    ),
    Budget(
        "memory per idle SSE stream (RSS growth / streams held)",
        "idle streams",
        "kib_per_stream",
        40.0,
        "KiB",
        added=False,
    ),
    Budget(
        "event-loop lag p99 at c=50 SSE (gateway's histogram, 70% load)",
        "sse c=50",
        "loop_lag_p99_ms",
        5.0,
        "ms",
        added=False,
    ),
    Budget(
        "event-loop lag p99 (bounded by /healthz p99, SSE c=50 at 70%)",
        "sse c=50",
        "probe_p99_ms",
        5.0,
        "ms",
        added=False,
    ),
)


@dataclass
class Results:
    meta: dict[str, Any]
    scenarios: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    loads: dict[str, str] = field(default_factory=dict)
    errors: dict[str, Counter[str]] = field(default_factory=dict)  # by path
    checks: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # "failover", "cache", "websocket"

    @property
    def errors_total(self) -> int:
        return sum(sum(c.values()) for c in self.errors.values())

    def verdicts(self) -> list[Verdict]:
        return evaluate(BUDGETS, self.scenarios)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 3)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class Versus:
    """One figure compared between the gateway and the baseline gateway."""

    label: str
    metric: str
    added: bool = False  # minus the direct path's (the difference is then the same)
    higher_is_better: bool = False
    # A change in % for costs and capacity; latencies (added ones can sit near zero) and
    # the loop lag get their difference in ms only.
    percent: bool = True


VERSUS = (
    Versus("CPU µs/req", "cpu_us_per_request"),
    Versus("CPU µs/event", "cpu_us_per_event"),
    Versus("added p50 ms", "p50_ms", added=True, percent=False),
    Versus("added p99 ms", "p99_ms", added=True, percent=False),
    Versus("added TTFB p50 ms", "ttfb_p50_ms", added=True, percent=False),
    Versus("rps per core", "rps_per_core", higher_is_better=True),
    Versus("loop lag p99 ms", "loop_lag_p99_ms", percent=False),
)
IDLE_VERSUS = Versus("KiB per idle stream", "kib_per_stream")
IDLE_STREAMS = "idle streams"


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    return None


def _versus_row(
    scenario: str, figure: Versus, sides: dict[str, Any], base: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Both gateways' figure and gateway - baseline; None when neither was measured."""
    values = []
    for path in ("gateway", BASELINE):
        value = _number((sides.get(path) or {}).get(figure.metric))
        if value is not None and figure.added:
            direct = _number((base or {}).get(figure.metric))
            value = None if direct is None else value - direct
        values.append(value)
    gateway, baseline = values
    if gateway is None and baseline is None:
        return None
    difference = None if gateway is None or baseline is None else gateway - baseline
    change = (
        difference / abs(baseline)
        if difference is not None and baseline and figure.percent
        else None
    )
    return {
        "scenario": scenario,
        "figure": figure.label,
        "metric": figure.metric,
        "added": figure.added,
        "higher_is_better": figure.higher_is_better,
        "baseline": baseline,
        "gateway": gateway,
        "difference": difference,
        "change": change,
    }


def versus_baseline(scenarios: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """`scenarios[key][path]` (as in `Results`) -> the gateway-vs-baseline rows, in
    scenario order then the idle streams' memory; empty without a baseline side."""
    rows = []
    keys = [s.key for s in SCENARIOS if s.key in scenarios]
    for key in keys:
        sides = scenarios[key]
        if BASELINE not in sides:
            continue
        for figure in VERSUS:
            row = _versus_row(key, figure, sides, sides.get("direct"))
            if row is not None:
                rows.append(row)
    idle = scenarios.get(IDLE_STREAMS, {})
    if BASELINE in idle:
        row = _versus_row(IDLE_STREAMS, IDLE_VERSUS, idle, None)
        if row is not None:
            rows.append(row)
    return rows


def to_json(results: Results) -> dict[str, Any]:
    scenarios = []
    for scenario in SCENARIOS:
        sides = results.scenarios.get(scenario.key)
        if sides is None:
            continue
        entry: dict[str, Any] = {
            "name": scenario.kind,
            "concurrency": scenario.concurrency,
            "load": results.loads.get(scenario.key, ""),
        }
        entry.update({path: sides.get(path, {}) for path in PATHS})
        if BASELINE in sides:
            entry[BASELINE] = sides[BASELINE]
        scenarios.append(entry)
    budgets = [
        {
            "budget": v.budget.label,
            "scenario": v.budget.scenario,
            "metric": v.budget.metric,
            "added": v.budget.added,
            "at_least": v.budget.at_least,
            "limit": v.budget.limit,
            "unit": v.budget.unit,
            "gateway": v.value,
            "floor": v.floor_value,
            "status": v.status,
        }
        for v in results.verdicts()
    ]
    versus = versus_baseline(results.scenarios)
    cleaned: dict[str, Any] = _clean(
        {
            "scenarios": scenarios,
            **({"gateway_vs_baseline": versus} if versus else {}),
            "budgets": budgets,
            "checks": results.checks,
            "extras": results.extras,
            "errors_total": results.errors_total,
            "errors_by_path": {p: dict(c) for p, c in results.errors.items()},
            "meta": results.meta,
        }
    )
    return cleaned


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


SCENARIO_COLUMNS = (
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("ttfb p50", "ttfb_p50_ms"),
    ("ttfb p99", "ttfb_p99_ms"),
    ("gap p99", "gap_p99_ms"),
    ("rps (sat.)", "rps"),
    ("core at 70%", "load_core_share"),
    ("CPU µs/req", "cpu_us_per_request"),
    ("CPU µs/event", "cpu_us_per_event"),
    ("loop lag p99", "loop_lag_p99_ms"),
    ("errors", "errors"),
)


def markdown(report: dict[str, Any]) -> str:
    """Markdown tables from the JSON object `to_json` makes (also read back from a file)."""
    meta = report.get("meta", {})
    lines = [f"Codex Pooler benchmark, {meta.get('date')} — {meta.get('machine')}"]
    if meta.get("other_processes_cores") is not None:
        lines.append(f"Other processes used {meta['other_processes_cores']:.2f} cores meanwhile.")
    if "warning" in meta:
        lines.append(f"WARNING: {meta['warning']}")
    lines += _code_markdown(meta.get("code") or {})
    if report.get("scenarios"):  # absent when only extras ran (--scenario)
        lines += _scenarios_markdown(report)
    lines += extras_markdown(report.get("extras") or {}, meta.get("extras_other_processes_cores"))
    if report.get("checks"):
        lines += ["", "Checks:"]
        lines += [f"- {name}: {value}" for name, value in report["checks"].items()]
    lines.append("")
    errors = report.get("errors_total", 0)
    lines.append(
        f"!!! {errors} FAILED REQUESTS: {report.get('errors_by_path')}"
        if errors
        else "No errors: every request answered 2xx and complete."
    )
    return "\n".join(lines)


def _scenarios_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| scenario | path | " + " | ".join(h for h, _ in SCENARIO_COLUMNS) + " |",
        "|---|---|" + "---:|" * len(SCENARIO_COLUMNS),
    ]
    for entry in report.get("scenarios", []):
        key = f"{entry['name']} c={entry['concurrency']}"
        for path in (*PATHS, BASELINE) if BASELINE in entry else PATHS:
            values = entry.get(path, {})
            cells = [_fmt(values.get(column)) for _, column in SCENARIO_COLUMNS]
            lines.append(f"| {key} | {path} | " + " | ".join(cells) + " |")
    lines += ["", "Load per scenario (latency columns; rps is always closed-loop saturated):"]
    lines += [
        f"- {e['name']} c={e['concurrency']}: {e.get('load', '')}"
        for e in report.get("scenarios", [])
    ]
    lines += _loop_lag_markdown(report.get("scenarios", []))
    lines += versus_markdown(report.get("gateway_vs_baseline") or [])
    lines += [
        "",
        "| budget (DESIGN §9) | limit | gateway | floor | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for b in report.get("budgets", []):
        sign = "≥" if b.get("at_least") else "≤"
        added = " (added)" if b["added"] else ""
        lines.append(
            f"| {b['budget']} | {sign} {_fmt(b['limit'])} {b['unit']}{added} | "
            f"{_fmt(b['gateway'])} | {_fmt(b['floor'])} | {b['status']} |"
        )
    return lines


def _loop_lag_markdown(scenarios: list[dict[str, Any]]) -> list[str]:
    """The gateway's own loop lag per scenario (and the baseline's where it was measured);
    nothing for a run saved before it was measured (no `loop_lag_ticks` anywhere)."""
    baselines = [e[BASELINE] for e in scenarios if BASELINE in e]
    measured = any(side.get("loop_lag_ticks") is not None for side in baselines)
    rows = []
    for e in scenarios:
        rows.append((e, "", e.get("gateway") or {}))
        if measured and BASELINE in e:
            rows.append((e, f" ({BASELINE})", e[BASELINE]))
    if not any("loop_lag_ticks" in gateway for _, _, gateway in rows):
        return []
    lines = [
        "",
        "Gateway event-loop lag (how late its 50 ms sleeps woke; its /metrics histogram read "
        "before and after each window, summed over the rounds, quantiles interpolated "
        "within a bucket; the latency runs above c=1):",
    ]
    if baselines and not measured:
        lines.append(f"- {BASELINE}: not measured (its /metrics has no loop-lag histogram)")
    for entry, which, gateway in rows:
        saturated = (
            f", saturated p99 {_fmt(gateway.get('saturated_loop_lag_p99_ms'))} ms"
            if "saturated_loop_lag_p99_ms" in gateway
            else ""
        )
        lines.append(
            f"- {entry['name']} c={entry['concurrency']}{which}: p50 "
            f"{_fmt(gateway.get('loop_lag_p50_ms'))} ms, p99 "
            f"{_fmt(gateway.get('loop_lag_p99_ms'))} ms over "
            f"{_fmt(gateway.get('loop_lag_ticks'), 0)} ticks{saturated}"
        )
    return lines


def _code_markdown(code: dict[str, Any]) -> list[str]:
    """Which code each gateway ran (recorded only with a baseline tree)."""
    lines = []
    for path, found in code.items():
        commit = (found.get("commit") or "no commit")[:12]
        dirty = " + uncommitted changes" if found.get("dirty") else ""
        subject = f' "{found["subject"]}"' if found.get("subject") else ""
        lines.append(f"- {path}: {commit}{dirty}{subject} ({found.get('pooler')})")
    return ["", "Code under test:", *lines] if lines else []


def _versus_cell(row: dict[str, Any]) -> str:
    """`baseline → gateway (difference)`: a percentage for CPU and memory figures."""
    digits = 0 if row["metric"].startswith(("cpu", "rps")) else 2
    baseline, gateway, change = row.get("baseline"), row.get("gateway"), row.get("change")
    cell = f"{_fmt(baseline, digits)} → {_fmt(gateway, digits)}"
    if change is not None:
        return f"{cell} ({100 * change:+.1f} %)"
    if row.get("difference") is not None:
        return f"{cell} ({row['difference']:+.{max(digits, 2)}f})"
    return cell


def versus_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The gateway-vs-baseline rows (`versus_baseline`, as saved) as one table per
    scenario row: each cell `baseline → gateway (difference)`."""
    if not rows:
        return []
    figures = [f.label for f in VERSUS if any(r["figure"] == f.label for r in rows)]
    by_scenario: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_scenario.setdefault(row["scenario"], {})[row["figure"]] = row
    lines = [
        "",
        "Gateway vs baseline (both measured in every round of this run, in rotating order; "
        "each cell: baseline → gateway (difference, % for CPU, rps and memory); added = "
        "path - direct; lower is better except rps per core):",
        "",
        "| scenario | " + " | ".join(figures) + " |",
        "|---|" + "---:|" * len(figures),
    ]
    idle = by_scenario.pop(IDLE_STREAMS, {})
    for scenario, cells in by_scenario.items():
        values = [_versus_cell(cells[f]) if f in cells else "-" for f in figures]
        lines.append(f"| {scenario} | " + " | ".join(values) + " |")
    for row in idle.values():
        lines += ["", f"Idle streams, {row['figure']}: {_versus_cell(row)}."]
    return lines


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _failover_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Failover: a Pool of {report['pool_accounts']} accounts, one answering "
        f"`{report['fault']}` to everything; {report['load']}.",
        "",
        "| Pool | ok | errors | success | p50 ms | p99 ms | ttfb p50 | ttfb p99 "
        "| upstream attempts | on the failing account |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("healthy", "healthy"), ("faulted", "one account failing")):
        phase = report[name]
        cells = [
            str(phase["requests"]),
            str(phase["errors"]),
            _pct(phase["success_rate"]),
            *(_fmt(phase[key]) for key in ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms")),
            str(phase["upstream_attempts"]),
            str(phase.get("attempts_on_account", "-")),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    added = report["added_vs_healthy"]
    faulted = report["faulted"]
    lines += [
        "",
        f"Added by the failing account: p50 {_signed(added['p50_ms'])} ms, p99 "
        f"{_signed(added['p99_ms'])} ms (TTFB p50 {_signed(added['ttfb_p50_ms'])}, p99 "
        f"{_signed(added['ttfb_p99_ms'])}). Attempts on it by round: "
        f"{faulted['attempts_on_account_by_round']}; in the first round per "
        f"{report['bucket_s']} s: {faulted['timeline_first_round']}; the last "
        f"{_fmt(faulted['last_attempt_on_account_s'])} s after the fault was armed.",
    ]
    return lines


CACHE_RUNS = (
    ("ideal", "ideal: direct, one account"),
    ("healthy", "Pool, healthy"),
    ("failing", "Pool, one account failing from mid-run"),
)


def _cache_markdown(report: dict[str, Any]) -> list[str]:
    plan = report["plan"]
    lines = [
        "",
        f"Cache: {plan['conversations']} conversations x {plan['turns']} turns, "
        f"all under way at once with at most {plan['concurrency']} turns in flight, "
        f"Pool of {report['pool_accounts']} accounts.",
        "",
        "| run | turns | lost | errors | cached tokens | hit rate | full-hit turns "
        "| moved / conversations | moves | turn p50 ms | turn p99 ms | bodies intact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in CACHE_RUNS:
        run = report[name]
        cells = [
            str(run["turns_answered"]),
            str(run["turns_lost"]),
            str(run["errors"]),
            f"{run['cached_tokens']:,}",
            _pct(run.get("hit_rate", 1.0)),
            _pct(run.get("full_hit_turns", 1.0)),
            f"{run['conversations_moved']} / {run['conversations']}",
            str(run["account_moves"]),
            _fmt(run["turn_p50_ms"]),
            _fmt(run["turn_p99_ms"]),
            _pct(run["bodies_intact"]),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    fault = report["failing"].get("fault")
    if fault:
        lines += [
            "",
            f"The failing account (#{fault['account_index'] + 1} of the Pool) was armed after "
            f"{fault['armed_after_turns']} answered turns and still got "
            f"{fault['attempts_on_account_after']} attempts afterwards.",
        ]
    return lines


def extras_markdown(extras: dict[str, Any], other_cores: float | None = None) -> list[str]:
    lines: list[str] = []
    if extras and other_cores is not None:
        lines += ["", f"Extras (other processes used {other_cores:.2f} cores meanwhile):"]
    if "failover" in extras:
        lines += _failover_markdown(extras["failover"])
    if "cache" in extras:
        lines += _cache_markdown(extras["cache"])
    if "websocket" in extras:
        lines += _websocket_markdown(extras["websocket"])
    if "console" in extras:
        lines += ["", "Console extra (an operator paging through the admin pages):", ""]
        lines += _console_markdown(extras["console"])
    if "mcp" in extras:
        lines += ["", "MCP extra (MCP clients on /mcp beside a c=50 short load):", ""]
        lines += _mcp_markdown(extras["mcp"])
    if "paced" in extras:
        lines += _paced_markdown(extras["paced"])
    return lines


def _paced_markdown(figures: dict[str, Any]) -> list[str]:
    """The paced extra: non-streamed answers behind a paced upstream stream."""
    lines = [
        "",
        f"Paced extra (c={figures['concurrency']}, {figures['delay_ms']} ms before each "
        f"upstream event, {figures['rounds']} rounds of {figures['seconds']:g} s, the four "
        "paths at once; done at the last byte; added = path - direct; after stream = path - "
        "gateway stream; tail = from the emulator's terminal event to the last byte, the "
        "pacing's jitter left out):",
        "",
        "| path | p50 | p99 | added p50 | added p99 | after stream p50 / p99 | tail p50 / p99 "
        "| tail after stream p50 / p99 | req/s | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("direct", "gateway stream", "gateway json", "gateway v1 json"):
        row = figures.get(name)
        if not row:
            continue
        added = (
            (f"{_signed(row['added_p50_ms'])} ms", f"{_signed(row['added_p99_ms'])} ms")
            if "added_p50_ms" in row
            else ("-", "-")
        )
        after = (
            f"{_signed(row['after_stream_p50_ms'])} / {_signed(row['after_stream_p99_ms'])} ms"
            if "after_stream_p50_ms" in row
            else "-"
        )
        tail = (
            f"{_fmt(row['tail_p50_ms'], 2)} / {_fmt(row['tail_p99_ms'], 2)} ms"
            if "tail_p50_ms" in row
            else "-"
        )
        tail_after = (
            f"{_signed(row['tail_after_stream_p50_ms'])} / "
            f"{_signed(row['tail_after_stream_p99_ms'])} ms"
            if "tail_after_stream_p50_ms" in row
            else "-"
        )
        lines.append(
            f"| {name} | {_fmt(row.get('p50_ms'), 1)} ms | {_fmt(row.get('p99_ms'), 1)} ms "
            f"| {added[0]} | {added[1]} | {after} | {tail} | {tail_after} "
            f"| {_fmt(row.get('rps'), 1)} "
            f"| {_fmt(row.get('requests'), 0)} | {_fmt(row.get('errors'), 0)} |"
        )
    return lines


def _websocket_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### Websocket sessions",
        "",
        "| sessions | path | turns | first event p50 / p99 ms | completed p50 / p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, run in report.items():
        if not key.startswith("c="):
            continue
        for path in ("direct", "gateway"):
            side = run[path]
            lines.append(
                f"| {key} | {path} | {side['turns']} | {_fmt(side['first_p50_ms'], 3)} / "
                f"{_fmt(side['first_p99_ms'], 3)} | {_fmt(side['done_p50_ms'], 3)} / "
                f"{_fmt(side['done_p99_ms'], 3)} | {sum(side['errors'].values())} |"
            )
        added = run["added"]
        lines.append(
            f"| {key} | added | | {_signed(added['first_p50_ms'])} / "
            f"{_signed(added['first_p99_ms'])} | {_signed(added['done_p50_ms'])} / "
            f"{_signed(added['done_p99_ms'])} | |"
        )
    held = report.get("held")
    if held:
        lines += [
            "",
            f"Idle sessions held through the gateway: {held['opened']} of {held['asked']} "
            f"opened, RSS {held['rss_before_mib']} → {held['rss_held_mib']} MiB "
            f"({_fmt(held['kib_per_session'], 1)} KiB per session); handshake alone "
            f"{_fmt(held['open_ms_alone_first'])} ms with few held, "
            f"{_fmt(held['open_ms_alone_last'])} ms with many (p50 of all "
            f"{_fmt(held['open_ms_p50_all'])} ms); failed {held['failed'] or 0}.",
        ]
    return lines


def _console_markdown(figures: dict[str, Any]) -> list[str]:
    """The console extra as Markdown lines."""
    lines = [
        "| gateway short c=1 while | added p50 | added p99 | console pages/s | other answers |",
        "|---|---:|---:|---:|---|",
    ]
    for mode, row in figures["modes"].items():
        rate = row.get("console_pages_per_s")
        answers = row.get("console_answers", {})
        others = ", ".join(f"{k}: {v}" for k, v in answers.items() if k != "ok") or "none"
        lines.append(
            f"| {mode} | {row['added_p50_ms']:+.2f} ms | {row['added_p99_ms']:+.2f} ms "
            f"| {'-' if rate is None else f'{rate:.1f}'} | {others if rate else '-'} |"
        )
    lines += ["", f"Pages visited in turn: {', '.join(figures['pages'])}."]
    return lines


def _mcp_markdown(figures: dict[str, Any]) -> list[str]:
    """The MCP extra as Markdown lines."""
    lines = [
        "| gateway short c=50 (open loop) | added p50 | added p99 | gateway CPU | "
        "/healthz p99 | MCP calls/s | MCP p50 / p99 | other MCP answers |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, row in figures["modes"].items():
        rate = row.get("mcp_calls_per_s")
        answers = row.get("mcp_answers") or {}
        others = ", ".join(f"{k}: {v}" for k, v in answers.items() if k != "ok") or "none"
        latency = (
            f"{_fmt(row.get('mcp_p50_ms'), 1)} / {_fmt(row.get('mcp_p99_ms'), 1)} ms"
            if rate is not None
            else "-"
        )
        lines.append(
            f"| {mode} | {_signed(row['added_p50_ms'])} ms | {_signed(row['added_p99_ms'])} ms "
            f"| {_pct(row.get('gateway_core_share'))} | {_fmt(row.get('probe_p99_ms'), 1)} ms "
            f"| {'-' if rate is None else _fmt(rate, 1)} | {latency} "
            f"| {others if rate is not None else '-'} |"
        )
    lines += [
        "",
        f"Offered {_fmt(figures.get('offered_rps'), 0)} requests/s (median over rounds); "
        f"{figures['clients']} MCP clients, each calling {' and '.join(figures['calls'])} "
        "in turn; a 503 (the `mcp` bulkhead full) waits its Retry-After.",
    ]
    alone = figures.get("mcp_only")
    if alone:
        lines += [
            "",
            f"The MCP clients alone (no other load): {_fmt(alone.get('calls_per_s'), 1)} "
            f"calls/s answered, {_fmt(alone.get('refused_per_s'), 1)}/s refused (503); "
            f"gateway CPU {_fmt(alone.get('gateway_cpu_us_per_call'), 0)} µs per answered "
            f"call ({_pct(alone.get('gateway_core_share'))} of a core), its PostgreSQL "
            f"{_fmt(alone.get('postgres_cpu_us_per_call'), 0)} µs.",
        ]
    return lines


def error_banner(results: Results) -> str:
    if not results.errors_total:
        return ""
    parts = [
        f"{path}: {sum(c.values())} ({', '.join(f'{k}={n}' for k, n in c.most_common())})"
        for path, c in results.errors.items()
        if c
    ]
    bar = "!" * 78
    failed = f"!!! THIS RUN HAD {results.errors_total} FAILED REQUESTS: {'; '.join(parts)}"
    return f"{bar}\n{failed}\n{bar}"


def main(argv: list[str] | None = None) -> int:
    """`python ops/bench/report.py RESULT.json`: the Markdown tables of a saved run."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: report.py RESULT.json", file=sys.stderr)
        return 2
    print(markdown(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
