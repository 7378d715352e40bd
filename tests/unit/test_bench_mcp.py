"""The pure parts of the benchmark's MCP extra (ops/bench/mcp_run.py): how an answer is
counted, the per-mode figures and their Markdown table."""

from __future__ import annotations

import json
from collections import Counter

from tests.unit.bench_support import load_bench

mcp_run = load_bench("mcp_run")
report = load_bench("report")


def test_an_answer_counts_as_ok_only_with_a_result_and_no_tool_error() -> None:
    def body(message: object) -> bytes:
        return json.dumps(message).encode()

    listed = {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}
    failed_tool = {"jsonrpc": "2.0", "id": 2, "result": {"isError": True, "content": []}}
    rpc_error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": "off"}}
    assert mcp_run.answer_kind(200, body(listed)) == "ok"
    assert mcp_run.answer_kind(200, body(failed_tool)) == "tool error"
    assert mcp_run.answer_kind(200, body(rpc_error)) == "JSON-RPC error"
    assert mcp_run.answer_kind(200, b"event: message\n") == "not JSON"
    assert mcp_run.answer_kind(503, body(rpc_error)) == "status 503"


def test_retry_after_is_bounded_and_defaults_to_a_second() -> None:
    assert mcp_run._retry_after("1") == 1.0
    assert mcp_run._retry_after(None) == 1.0
    assert mcp_run._retry_after("soon") == 1.0
    assert mcp_run._retry_after("3600") == 5.0


def test_figures_and_their_table() -> None:
    alone, busy = mcp_run.MODES
    counts = mcp_run.McpCounts(Counter({"ok": 300, "status 503": 12}), [0.004, 0.006, 0.010])
    side = {
        "p99_ms": 9.0,
        "cpu_core_share": 0.5,
        "probe_p99_ms": 2.0,
        "loadgen_lag_p99_ms": 1.0,
        "errors": 0.0,
    }
    figures = mcp_run.figures(
        {alone: [(1.0, 3.0), (2.0, 5.0), (1.5, 4.0)], busy: [(2.0, 6.0)]},
        {alone: [side], busy: [side]},
        [400.0, 420.0],
        counts,
        calling_s=60.0,
    )
    assert figures["modes"][alone]["added_p99_ms"] == 4.0
    assert "mcp_calls_per_s" not in figures["modes"][alone]
    assert figures["modes"][busy]["mcp_calls_per_s"] == 5.0
    assert figures["modes"][busy]["mcp_answers"] == {"ok": 300, "status 503": 12}
    assert figures["offered_rps"] == 410.0
    figures["mcp_only"] = {"calls_per_s": 40.0, "gateway_cpu_us_per_call": 6000.0}
    table = "\n".join(report.extras_markdown({"mcp": report._clean(figures)}))
    assert "40.0 calls/s answered" in table and "6,000 µs per answered call" in table
    assert f"| {alone} | +1.50 ms | +4.00 ms |" in table
    assert f"| {busy} | +2.00 ms | +6.00 ms |" in table
    assert "| 5.0 |" in table and "status 503: 12" in table
