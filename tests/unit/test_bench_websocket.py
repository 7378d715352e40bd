"""The pure parts of the benchmark's websocket extra (ops/bench/websocket_run.py): the
turn frame, the per-path figures and their Markdown table."""

from __future__ import annotations

import json

from tests.unit.bench_support import load_bench

websocket_run = load_bench("websocket_run")
report = load_bench("report")


def test_turn_frame_is_a_response_create_with_the_emulator_knobs() -> None:
    frame = json.loads(websocket_run.turn_frame(3))
    assert frame["type"] == "response.create"
    assert frame["model"] == "gpt-5.5"
    assert "stream" not in frame
    assert frame["client_metadata"]["x-emulator-events"] == "3"


def test_figures_are_milliseconds_and_empty_is_none() -> None:
    turns = websocket_run.Turns(first_s=[0.001, 0.002], done_s=[0.003, 0.005])
    turns.errors["timeout"] += 1
    figures = websocket_run._figures(turns)
    assert figures["turns"] == 2
    assert figures["first_p50_ms"] == 1.5
    assert figures["done_p99_ms"] == 4.98
    assert figures["errors"] == {"timeout": 1}
    assert websocket_run._figures(websocket_run.Turns())["first_p50_ms"] is None


def test_markdown_has_both_paths_the_added_row_and_the_held_sessions() -> None:
    side = {"turns": 5, "first_p50_ms": 1.0, "first_p99_ms": 2.0, "done_p50_ms": 3.0}
    side |= {"done_p99_ms": 4.0, "errors": {}}
    added = {"first_p50_ms": 0.5, "first_p99_ms": None, "done_p50_ms": -0.1, "done_p99_ms": 1.0}
    held = {"asked": 10, "opened": 10, "failed": {}, "rss_before_mib": 60.0}
    held |= {"rss_held_mib": 61.0, "kib_per_session": 102.4, "open_ms_p50_all": 3.0}
    held |= {"open_ms_alone_first": 2.0, "open_ms_alone_last": 2.5}
    extra = {"plan": {}, "c=1": {"direct": side, "gateway": side, "added": added}, "held": held}
    text = "\n".join(report.extras_markdown({"websocket": extra}))
    assert "| c=1 | direct | 5 | 1.000 / 2.000 | 3.000 / 4.000 | 0 |" in text
    assert "| c=1 | added | | +0.50 / - | -0.10 / +1.00 | |" in text
    assert "102.4 KiB per session" in text
