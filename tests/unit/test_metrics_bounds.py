"""/metrics label values are bounded where they are counted: a route, outcome or
transport outside its fixed set is counted as "other", so no input grows the series."""

from __future__ import annotations

from pooler.web.metrics import STREAM_OUTCOMES, RequestCounters, stream_outcome


def test_unknown_values_are_counted_as_other() -> None:
    counters = RequestCounters()
    counters.count("responses", "completed")
    for n in range(100):
        counters.count(f"/made/up/{n}", f"evil-{n}")
        counters.count_stream(f"t{n}", f"o{n}", f"code{n}")
    assert dict(counters.requests) == {("responses", "completed"): 1, ("other", "other"): 100}
    assert set(counters.streams) == {("other", "other")}


def test_stream_outcomes_map_into_a_fixed_set() -> None:
    assert stream_outcome("completed", None) == "completed"
    assert stream_outcome("client_disconnected", None) == "client_disconnected"
    assert stream_outcome("stream_failed", "server_stopped") == "server_stopped"
    assert stream_outcome("stream_failed", "server_draining") == "server_stopped"
    assert stream_outcome("stream_failed", "stream_idle_timeout") == "idle_timeout"
    assert stream_outcome("stream_failed", "upstream_stream_closed") == "upstream_failed"
    assert stream_outcome("stream_failed", "anything an upstream said") == "upstream_failed"
    assert stream_outcome("stream_failed", None) == "upstream_failed"
    assert stream_outcome("something new", None) == "other"
    cases = [("completed", None), ("failed", "x"), ("rejected", "y"), ("stream_failed", "z")]
    assert {stream_outcome(o, c) for o, c in cases} <= STREAM_OUTCOMES
