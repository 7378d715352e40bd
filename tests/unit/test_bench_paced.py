"""The pure parts of the benchmark's paced extra (ops/bench/paced_run.py): the added
latency of each gateway path against the direct one, by duration and by tail (from the
emulator's stamped terminal event to the last byte), and its Markdown table; and how the
load generator reads a tail from an answer's end."""

from __future__ import annotations

import time

import pytest
import trio

from tests.unit.bench_support import load_bench

paced_run = load_bench("paced_run")
report = load_bench("report")
loadgen = load_bench("loadgen")


def _round(p50: float, p99: float, tail: float = 0.5) -> dict[str, float]:
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "ttfb_p50_ms": 5.0,
        "tail_p50_ms": tail,
        "tail_p99_ms": tail * 2,
        "rps": 19.0,
        "requests": 100.0,
    }


def test_added_latency_is_each_path_minus_direct_from_the_same_rounds() -> None:
    plan = paced_run.QUICK_PACED
    rounds = {
        "direct": [_round(2600.0, 2650.0), _round(2602.0, 2660.0)],
        "gateway stream": [_round(2601.0, 2655.0), _round(2603.0, 2661.0)],
        "gateway json": [_round(2617.0, 2680.0, 1.5), _round(2619.0, 2690.0, 1.7)],
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
    assert figures["gateway json"]["tail_added_p50_ms"] == 1.1
    assert figures["gateway json"]["tail_after_stream_p50_ms"] == 1.1
    assert figures["gateway json"]["tail_after_stream_p99_ms"] == 2.2
    assert figures["gateway v1 json"]["tail_after_stream_p50_ms"] == 0.0
    lines = report.extras_markdown({"paced": figures})
    table = "\n".join(lines)
    assert (
        "| gateway json | 2,618 ms | 2,685 ms | +17.00 ms | +30.00 ms | +16.00 / +27.00 ms "
        "| 1.60 / 3.20 ms | +1.10 / +2.20 ms |" in table
    )
    assert "| direct | 2,601 ms | 2,655 ms | - | - | - | 0.50 / 1.00 ms | - |" in table


def test_rounds_without_tails_still_give_the_duration_figures() -> None:
    rounds = {name: [{"p50_ms": 10.0, "p99_ms": 20.0}] for name in paced_run.PATHS}
    figures = paced_run.paced_figures(paced_run.QUICK_PACED, rounds)
    assert figures["gateway json"]["after_stream_p50_ms"] == 0.0
    assert "tail_after_stream_p50_ms" not in figures["gateway json"]


async def test_a_tail_runs_from_the_emulators_stamp_to_the_last_byte() -> None:
    sent = time.monotonic() - 0.25
    end = b'"status":"completed","metadata":{"x-emulator-sent-at":"%.6f"}}}\n\n' % sent
    tail = loadgen.tail_since_sent(b"x" * 5000 + end, trio.current_time())
    assert 0.25 <= tail < 0.3
    with pytest.raises(loadgen.RequestFailed, match="no_sent_at_stamp"):
        loadgen.tail_since_sent(b'{"metadata":{}}', trio.current_time())
