"""`CODEX_POOLER_LOG_FORMAT=json`: a real `pooler serve` writes one JSON object a line,
the request line's fields as fields, and nothing of the prompt or the key; a bad value
stops the CLI with a message naming the variable."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import httpx
import trio
from harness import (
    free_port,
    open_stack,
    process_env,
    responses_body,
    run_client,
    run_process,
    shared_env,
    wait_for_line,
)

PYTHON = [sys.executable, "-m", "pooler.cli.main"]
PROMPT = "the secret prompt zq81"


async def test_json_log_lines_from_a_real_process(db_url: str, tmp_path: Path) -> None:
    async with open_stack(db_url, tmp_path) as stack:
        port = free_port()
        env = process_env(
            stack.config,
            CODEX_POOLER_LOG_FORMAT="json",
            CODEX_POOLER_LOG_LEVEL="info",
            CODEX_POOLER_DATA_DIR=str(tmp_path / "json-node"),
        )
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                proc = await nursery.start(
                    run_process, [*PYTHON, "serve", "--port", str(port)], env
                )
                seen = await wait_for_line(proc, b"listening on", 50)
                url = f"http://127.0.0.1:{port}"
                headers = {"authorization": f"Bearer {stack.key}"}
                async with httpx.AsyncClient(base_url=url, timeout=20, headers=headers) as c:
                    answer = await c.post(
                        "/backend-api/codex/responses", json=responses_body(PROMPT)
                    )
                    assert answer.status_code == 200
                    request_id = answer.headers["x-request-id"]
                assert proc.stdout is not None
                while f'"request_id": "{request_id}"'.encode() not in seen:
                    seen += await proc.stdout.receive_some(65536)
                proc.send_signal(signal.SIGTERM)
                while chunk := await proc.stdout.receive_some(65536):
                    seen += chunk
                await proc.wait()
        lines = [line for line in seen.decode().splitlines() if line.strip()]
        logged = [json.loads(line) for line in lines if not line.startswith("Codex Pooler ")]
        assert logged, lines
        for entry in logged:
            assert {"time", "level", "logger", "message"} <= set(entry), entry
            assert entry["time"].endswith("+00:00")
        [request] = [e for e in logged if e.get("request_id") == request_id]
        assert request["logger"] == "pooler.requests" and request["level"] == "info"
        assert request["method"] == "POST" and request["route"] == "responses"
        assert request["status"] == 200 and isinstance(request["duration_ms"], float)
        assert request["account_label"] in {str(a.label) for a in stack.emulator.accounts}
        text = seen.decode()
        assert PROMPT not in text and stack.key not in text


async def test_a_bad_log_format_stops_the_cli(db_url: str, tmp_path: Path) -> None:
    env = {
        **shared_env(tmp_path, db_url, "http://127.0.0.1:9"),
        "CODEX_POOLER_LOG_FORMAT": "yaml\x1b[31m",
    }
    code, out, err = await run_client([*PYTHON, "serve", "--port", "0"], env, 60)
    assert code == 2, (out, err)
    assert "CODEX_POOLER_LOG_FORMAT must be one of text, json" in err
    assert "\x1b" not in err  # the value is shown escaped
    assert "Traceback" not in err
