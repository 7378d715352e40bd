"""Two saved bench runs side by side, held to a guard: how much a change may cost.

    python ops/bench/compare.py BEFORE.json [BEFORE2.json ...] --after AFTER.json [--after ...]

Each file is the `--json` output of `bench.py` (run one after the other on the same
machine: an older checkout with `PYTHONPATH=<its worktree>`, then the new one). With
several files per side, each figure is the median over that side's runs. The guard is
issue 12's for the switch to Quart (added c=1 p50 +0.3 ms, CPU per short request
+300 µs, CPU per SSE event +15 µs); the table prints both sides, the difference and the
verdict. Exit status 1 when a figure is over its guard.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Guard:
    label: str
    scenario: str  # "name c=N"
    metric: str
    added: bool  # the gateway's figure minus the direct path's (latency), else the gateway's
    limit: float  # the most AFTER may exceed BEFORE by
    unit: str


GUARDS = (
    Guard("short c=1: added p50", "short c=1", "p50_ms", True, 0.3, "ms"),
    Guard("CPU per short request, c=1", "short c=1", "cpu_us_per_request", False, 300, "µs"),
    Guard("CPU per short request, c=50", "short c=50", "cpu_us_per_request", False, 300, "µs"),
    Guard("CPU per SSE event, c=50", "sse c=50", "cpu_us_per_event", False, 15, "µs"),
    Guard("CPU per SSE event, c=1", "sse c=1", "cpu_us_per_event", False, 15, "µs"),
    Guard("SSE c=1: added TTFB p50", "sse c=1", "ttfb_p50_ms", True, 0.3, "ms"),
)


def figure(run: dict[str, Any], guard: Guard) -> float | None:
    name, _, concurrency = guard.scenario.partition(" c=")
    for scenario in run["scenarios"]:
        if scenario["name"] == name and scenario["concurrency"] == int(concurrency):
            value = scenario["gateway"].get(guard.metric)
            if value is None:
                return None
            if guard.added:
                direct = scenario["direct"].get(guard.metric)
                return None if direct is None else float(value) - float(direct)
            return float(value)
    return None


def side(runs: list[dict[str, Any]], guard: Guard) -> float | None:
    values = [v for v in (figure(run, guard) for run in runs) if v is not None]
    return statistics.median(values) if values else None


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> tuple[str, bool]:
    lines = [
        "| figure | before | after | difference | guard | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    ok = True
    for guard in GUARDS:
        old, new = side(before, guard), side(after, guard)
        if old is None or new is None:
            lines.append(f"| {guard.label} | - | - | - | +{guard.limit:g} {guard.unit} | n/a |")
            continue
        diff = new - old
        met = diff <= guard.limit
        ok &= met
        digits = 2 if guard.unit == "ms" else 0
        lines.append(
            f"| {guard.label} | {old:,.{digits}f} | {new:,.{digits}f} | {diff:+,.{digits}f} "
            f"{guard.unit} | +{guard.limit:g} {guard.unit} | {'met' if met else 'NOT met'} |"
        )
    return "\n".join(lines), ok


def load(path: Path) -> dict[str, Any]:
    run: dict[str, Any] = json.loads(path.read_text())
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", nargs="+", type=Path, help="runs of the old code")
    parser.add_argument("--after", action="append", type=Path, required=True)
    args = parser.parse_args(argv)
    table, ok = compare([load(p) for p in args.before], [load(p) for p in args.after])
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
