"""The pure parts of the benchmark's paced extra (ops/bench/paced_run.py): the added
latency of each gateway path against the direct one, and its Markdown table."""

from __future__ import annotations

from tests.unit.bench_support import load_bench

paced_run = load_bench("paced_run")
report = load_bench("report")


def _round(p50: float, p99: float) -> dict[str, float]:
    return {"p50_ms": p50, "p99_ms": p99, "ttfb_p50_ms": 5.0, "rps": 19.0, "requests": 100.0}


def test_added_latency_is_each_path_minus_direct_from_the_same_rounds() -> None:
    plan = paced_run.QUICK_PACED
    rounds = {
        "direct": [_round(2600.0, 2650.0), _round(2602.0, 2660.0)],
        "gateway stream": [_round(2601.0, 2655.0), _round(2603.0, 2661.0)],
        "gateway json": [_round(2617.0, 2680.0), _round(2619.0, 2690.0)],
        "gateway v1 json": [_round(2604.0, 2670.0), _round(2606.0, 2672.0)],
    }
    figures = paced_run.paced_figures(plan, rounds)
    assert "added_p50_ms" not in figures["direct"]
    assert figures["gateway stream"]["added_p50_ms"] == 1.0
    assert figures["gateway json"]["added_p50_ms"] == 17.0
    assert figures["gateway json"]["added_p99_ms"] == 30.0
    assert figures["gateway v1 json"]["added_p50_ms"] == 4.0
    assert figures["gateway json"]["after_stream_p50_ms"] == 16.0
    assert "after_stream_p50_ms" not in figures["gateway stream"]
    lines = report.extras_markdown({"paced": figures})
    table = "\n".join(lines)
    assert (
        "| gateway json | 2,618 ms | 2,685 ms | +17.00 ms | +30.00 ms | +16.00 / +27.00 ms |"
        in (table)
    )
    assert "| direct | 2,601 ms | 2,655 ms | - | - | - |" in table
