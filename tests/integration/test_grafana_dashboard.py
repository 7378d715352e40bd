"""ops/grafana/codex-pooler.json: a valid Grafana dashboard (schema version, a Prometheus
data-source variable every panel and query uses, unique ids, a grid position each) whose
PromQL names only metrics a real gateway exports (scraped from /metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from harness import open_stack, responses_body

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "codex-pooler.json"
METRIC = re.compile(r"\bcodex_pooler_[a-z0-9_]+")
# The names a family's samples take, from its `# TYPE` name (a counter's already ends in
# _total in the text format; a histogram's samples add their suffixes).
SUFFIXES = {"counter": ("",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the dashboard must show (the list), by a metric each.
REQUIRED = {
    "codex_pooler_requests_total",
    "codex_pooler_accounts",
    "codex_pooler_circuits",
    "codex_pooler_admission",
    "codex_pooler_admission_refused_total",
    "codex_pooler_admission_queue_seconds_bucket",
    "codex_pooler_streams_total",
    "codex_pooler_token_refreshes_total",
    "codex_pooler_leases_total",
    "codex_pooler_log_writer_lag_seconds",
    "codex_pooler_log_buffer_rows",
    "codex_pooler_event_loop_lag_seconds",
    "codex_pooler_event_loop_tick_lag_seconds_bucket",
    "codex_pooler_leader",
}


def exported_names(text: str) -> set[str]:
    """The sample names /metrics can carry, from its `# TYPE` lines (a family with no
    sample right now still counts), and those of the samples themselves."""
    names = set(re.findall(r"^([a-z_:][a-z0-9_:]*)[{ ]", text, re.MULTILINE))
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.update(name + suffix for suffix in SUFFIXES[kind])
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["definition"])
    return found


def test_the_dashboard_is_a_valid_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for col in range(grid["x"], grid["x"] + grid["w"]):
                assert (row, col) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((row, col))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["refId"] and target["expr"]


async def test_every_query_names_metrics_the_gateway_exports(db_url: str, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    async with open_stack(db_url, tmp_path) as stack:
        async with stack.client() as client:
            answer = await client.post("/backend-api/codex/responses", json=responses_body())
            assert answer.status_code == 200
        async with httpx.AsyncClient(base_url=stack.url, timeout=10) as anon:
            scraped = (await anon.get("/metrics")).text
    exported = exported_names(scraped)
    used: set[str] = set()
    for expr in queries(dashboard):
        names = set(METRIC.findall(expr))
        assert names, f"no codex_pooler metric in {expr!r}"
        assert names <= exported, (names - exported, expr)
        used |= names
    assert used >= REQUIRED, REQUIRED - used
