"""/metrics after hostile traffic: every label value is one of a fixed set, and nothing a
client chose (a path, a model name, a key, a header) shows up in it. Also the metrics that
say how streams, leases, token refreshes, admission and the log writer went."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Mapping
from pathlib import Path

import httpx
import trio
import trio_websocket
from harness import Stack, open_stack, responses_body
from prometheus_client.parser import text_string_to_metric_families

from pooler.web import metrics as mx
from pooler.web.admission import QUEUE_TIME_BUCKETS
from pooler.web.ingress import SCOPES as INGRESS_SCOPES
from pooler.web.leasing import LEASE_DECISIONS
from pooler.web.loop_lag import LAG_BUCKETS_S

DEADLINE = 60


def junk(rng: random.Random, n: int = 12) -> str:
    return "zq" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def allowed_labels(stack: Stack) -> Mapping[tuple[str, str], frozenset[str]]:
    """(metric family, label) -> the values it may take; a pair not here must not appear."""
    gw = stack.gateway
    jobs = frozenset(j.name for s in (gw.scheduler, gw.cluster_jobs) for j in s.jobs)
    route_classes = frozenset(mx.BULKHEAD_CLASSES)
    buckets = frozenset({*(f"{b:g}" for b in QUEUE_TIME_BUCKETS), "+Inf"})
    with_other = {
        "routes": mx.ROUTES | {mx.OTHER},
        "outcomes": mx.OUTCOMES | {mx.OTHER},
    }
    return {
        ("codex_pooler_requests", "route"): with_other["routes"],
        ("codex_pooler_requests", "outcome"): with_other["outcomes"],
        ("codex_pooler_streams", "transport"): mx.STREAM_TRANSPORTS,
        ("codex_pooler_streams", "outcome"): mx.STREAM_OUTCOMES,
        ("codex_pooler_leases", "decision"): frozenset(LEASE_DECISIONS),
        ("codex_pooler_token_refreshes", "outcome"): frozenset(mx.REFRESH_OUTCOMES),
        ("codex_pooler_accounts", "lifecycle"): mx.LIFECYCLES | {mx.OTHER},
        ("codex_pooler_event_loop_lag_seconds", "quantile"): frozenset({"0.5", "0.99", "1.0"}),
        ("codex_pooler_event_loop_tick_lag_seconds", "le"): frozenset(
            {*(f"{b:g}" for b in LAG_BUCKETS_S), "+Inf"}
        ),
        ("codex_pooler_circuits", "route_class"): mx.CIRCUIT_CLASSES | {mx.OTHER},
        ("codex_pooler_circuits", "state"): mx.CIRCUIT_STATES | {mx.OTHER},
        ("codex_pooler_admission", "route_class"): route_classes,
        ("codex_pooler_admission", "kind"): frozenset({"in_flight", "queued"}),
        ("codex_pooler_admission_refused", "route_class"): route_classes,
        ("codex_pooler_admission_refused", "reason"): frozenset({"queue_full", "queue_timeout"}),
        ("codex_pooler_admission_queue_seconds", "route_class"): route_classes,
        ("codex_pooler_admission_queue_seconds", "le"): buckets,
        ("codex_pooler_write_behind_refused", "kind"): frozenset({"quota", "pins"}),
        ("codex_pooler_scheduled_job_runs", "job"): jobs,
        ("codex_pooler_ingress_denied", "scope"): frozenset(INGRESS_SCOPES),
    }


async def hostile_traffic(stack: Stack, rng: random.Random) -> list[str]:
    """Requests a client controls every part of; the strings it made up."""
    made_up: list[str] = []
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        for _ in range(40):
            word = junk(rng)
            made_up.append(word)
            path = rng.choice(
                [
                    f"/{word}",
                    f"/backend-api/codex/{word}",
                    f"/v1/{word}",
                    f"/backend-api/{word}/responses",
                    f"/metrics/{word}",
                    f"/admin/{word}",
                ]
            )
            headers = {
                "authorization": f"Bearer sk-cxp-{word}",
                "user-agent": word,
                "x-client-request-id": word,
                "session-id": word,
                "x-forwarded-for": f"{word}, 10.0.0.1",
                "chatgpt-account-id": word,
                "openai-model": word,
            }
            await client.request(rng.choice(methods), path, headers=headers, content=word)
        for _ in range(20):  # random model names, with a real key
            model = junk(rng)
            made_up.append(model)
            body = responses_body(model=model, stream=rng.random() < 0.5)
            await client.post(
                "/backend-api/codex/responses",
                json=body,
                headers={"authorization": f"Bearer {stack.key}", "x-client-request-id": model},
            )
            await client.post(
                "/v1/responses",
                json={"model": model, "input": "hi"},
                headers={"authorization": f"Bearer {stack.key}"},
            )
            await client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {stack.key}"},
            )
    base = stack.url.replace("http://", "ws://")
    for _ in range(5):  # websockets on made-up paths, and made-up frames on the real one
        word = junk(rng)
        made_up.append(word)
        try:
            async with trio_websocket.open_websocket_url(base + f"/{word}"):
                pass
        except trio_websocket.HandshakeError:
            pass
    headers = [(b"authorization", f"Bearer {stack.key}".encode())]
    async with trio_websocket.open_websocket_url(
        base + "/backend-api/codex/responses", extra_headers=headers
    ) as ws:
        for _ in range(5):
            model = junk(rng)
            made_up.append(model)
            await ws.send_message(
                json.dumps({"type": "response.create", **responses_body(model=model)})
            )
            await ws.get_message()  # the refusal frame
    return made_up


async def legitimate_traffic(stack: Stack) -> None:
    """Completed streams (SSE and a websocket turn), a 401 that makes a token refresh, a
    stream the upstream cuts."""
    labels = [str(a.label) for a in stack.emulator.accounts]
    async with stack.client() as client:
        for _ in range(2):
            ok = await client.post("/backend-api/codex/responses", json=responses_body())
            assert ok.status_code == 200
        for label in labels:
            await stack.fault(label, "unauthorized_401")
        for _ in range(len(labels)):
            answer = await client.post(
                "/backend-api/codex/responses", json=responses_body(stream=False)
            )
            assert answer.status_code == 200, answer.text
        for label in labels:
            await stack.fault(label, "disconnect_mid_stream")
        for _ in range(len(labels)):
            await client.post("/backend-api/codex/responses", json=responses_body())
    base = stack.url.replace("http://", "ws://")
    headers = [(b"authorization", f"Bearer {stack.key}".encode())]
    async with trio_websocket.open_websocket_url(
        base + "/backend-api/codex/responses", extra_headers=headers
    ) as ws:
        await ws.send_message(json.dumps({"type": "response.create", **responses_body()}))
        while json.loads(await ws.get_message())["type"] != "response.completed":
            pass


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    found: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= set(ls))


async def test_metrics_labels_stay_in_fixed_sets_under_hostile_traffic(
    db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(16)
    async with open_stack(db_url, tmp_path) as stack:
        with trio.fail_after(DEADLINE):
            await legitimate_traffic(stack)
            made_up = await hostile_traffic(stack, rng)
            await stack.wait_for_logs(1)
            async with httpx.AsyncClient(base_url=stack.url, timeout=10) as anon:
                text = (await anon.get("/metrics")).text
        allowed = allowed_labels(stack)
        for family in text_string_to_metric_families(text):
            assert family.name.startswith("codex_pooler_"), family.name
            for sample in family.samples:
                for label, value in sample.labels.items():
                    key = (family.name, label)
                    assert key in allowed, f"{key} is not a known label"
                    assert value in allowed[key], (key, value)
        for word in made_up:
            assert word not in text, word
        assert stack.key not in text and stack.key[:12] not in text

        found = samples(text)
        streams = "codex_pooler_streams_total"
        assert total(found, streams, transport="sse", outcome="completed") >= 2
        assert total(found, streams, transport="sse", outcome="upstream_failed") >= 1
        assert total(found, streams, transport="websocket", outcome="completed") == 1
        assert total(found, streams, transport="sse", outcome="rejected") >= 1  # a made-up model
        assert total(found, "codex_pooler_leases_total", decision="granted") >= 8
        assert total(found, "codex_pooler_token_refreshes_total", outcome="refreshed") >= 1
        queue = "codex_pooler_admission_queue_seconds"
        assert total(found, f"{queue}_count", route_class="stream") >= 5
        assert total(found, f"{queue}_count", route_class="responses") >= 3
        for route_class in mx.BULKHEAD_CLASSES:
            admitted = total(found, f"{queue}_count", route_class=route_class)
            assert total(found, f"{queue}_bucket", route_class=route_class, le="+Inf") == admitted
            assert total(found, f"{queue}_bucket", route_class=route_class, le="0.001") == admitted
        assert ("codex_pooler_log_writer_lag_seconds", ()) in found
