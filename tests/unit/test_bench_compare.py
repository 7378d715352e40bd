"""ops/bench/compare.py: two sides of saved bench runs held to the Quart-switch guard."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def _load_compare() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "ops" / "bench" / "compare.py"
    spec = importlib.util.spec_from_file_location("ops_bench_compare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


def run(short_p50: float, cpu_c1: float, sse_event: float) -> dict[str, Any]:
    def scenario(name: str, concurrency: int, **gateway: float) -> dict[str, Any]:
        direct = {"p50_ms": 2.0, "ttfb_p50_ms": 1.0}
        return {"name": name, "concurrency": concurrency, "gateway": gateway, "direct": direct}

    return {
        "scenarios": [
            scenario("short", 1, p50_ms=short_p50, cpu_us_per_request=cpu_c1),
            scenario("short", 50, cpu_us_per_request=2000.0),
            scenario("sse", 1, cpu_us_per_event=sse_event, ttfb_p50_ms=3.0),
            scenario("sse", 50, cpu_us_per_event=sse_event),
        ]
    }


def test_within_the_guard_is_met() -> None:
    table, ok = compare.compare([run(3.0, 2500, 200)], [run(3.2, 2700, 210)])
    assert ok, table
    assert "| short c=1: added p50 | 1.00 | 1.20 | +0.20 ms | +0.3 ms | met |" in table


def test_over_the_guard_is_not_met_and_medians_are_per_side() -> None:
    before = [run(3.0, 2500, 200), run(3.0, 2400, 190), run(3.0, 9000, 200)]
    table, ok = compare.compare(before, [run(3.0, 2900, 200)])
    assert not ok
    assert "| CPU per short request, c=1 | 2,500 | 2,900 | +400 µs | +300 µs | NOT met |" in table
